-- Argo CD health of a vigil Playbook (vigil.dev/v1alpha1), from its Ready condition.
-- Ready=True -> Healthy; Ready=False -> Degraded (the playbook does not compile);
-- no condition yet, or one for an older generation -> Progressing.
-- Written for gopher-lua (Lua 5.1), as Argo CD runs it.
local hs = {}

local ready = nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the playbook"
  return hs
end

local generation = obj.metadata.generation
local observed = ready.observedGeneration
if observed == nil and obj.status.observedGeneration ~= nil then
  observed = obj.status.observedGeneration
end
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the latest spec"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
else
  hs.status = "Progressing"
  hs.message = ready.message or "Ready is Unknown"
end
return hs
