-- Argo CD health of a vigil Approval (vigil.dev/v1alpha1).
-- Undecided -> Suspended ("waiting for approval"): a person has to act. Decided (approved,
-- denied, or by timeout) -> Healthy: the Approval did its job; the Run reports the outcome.
-- Written for gopher-lua (Lua 5.1), as Argo CD runs it.
local hs = {}

if obj.status == nil or obj.status.decision == nil then
  hs.status = "Suspended"
  hs.message = "waiting for approval"
  return hs
end

hs.status = "Healthy"
hs.message = obj.status.decision
if obj.status.decidedBy ~= nil then
  hs.message = hs.message .. " by " .. obj.status.decidedBy
end
if obj.status.reason ~= nil and obj.status.reason ~= "" then
  hs.message = hs.message .. ": " .. obj.status.reason
end
return hs
