-- Argo CD health of a vigil Run (vigil.dev/v1alpha1).
-- Pending, Queued, Running -> Progressing; a Run waiting on an approval step -> Suspended;
-- Succeeded -> Healthy; Failed and Cancelled -> Degraded (a cancelled Run did not do its work).
-- Written for gopher-lua (Lua 5.1), as Argo CD runs it.
local hs = {}

local function describe(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if status.reason ~= nil and status.reason ~= "" then
    return status.reason
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(status, "Succeeded")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status, "Failed")
elseif phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = "Cancelled: " .. describe(status, "the Run was cancelled")
elseif phase == "Queued" then
  hs.status = "Progressing"
  hs.message = describe(status, "Waiting for a concurrency slot of the playbook")
elseif phase == "Running" then
  local waiting = {}
  if status.steps ~= nil then
    for name, step in pairs(status.steps) do
      if step.phase == "AwaitingApproval" then
        table.insert(waiting, name)
      end
    end
  end
  if #waiting > 0 then
    table.sort(waiting)
    hs.status = "Suspended"
    hs.message = "Waiting for approval: " .. table.concat(waiting, ", ")
  else
    hs.status = "Progressing"
    local progress = status.progress
    if progress ~= nil then
      hs.message = "Running, " .. progress .. " steps done"
    else
      hs.message = "Running"
    end
  end
else
  -- Pending and any phase a newer operator may add.
  hs.status = "Progressing"
  hs.message = describe(status, phase)
end
return hs
