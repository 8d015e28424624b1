-- Argo CD health of a rightsizer.io/RightsizeJob, from its conditions (the contract; phase is informational).
-- Progressing while the operator has not seen the latest spec or a job is in flight, Suspended while a promotion
-- waits for approval, Healthy when Ready is True, Degraded when Ready is False. Needs no optional Lua library.
local retried = {AccessDenied = true, RoleNotAssumable = true, ResourceLimitExceeded = true,
                 NoCredentials = true, RegionUnknown = true, BackendError = true}

local function find(conditions, kind)
  if conditions == nil then return nil end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then return condition end
  end
  return nil
end

local function health(obj)
  local generation = obj.metadata and obj.metadata.generation
  local status = obj.status
  if status == nil or status.observedGeneration == nil or
      (generation ~= nil and status.observedGeneration < generation) then
    return {status = "Progressing",
            message = "waiting for the operator to observe generation " .. tostring(generation or "?")}
  end
  local approval = find(status.conditions, "AwaitingApproval")
  if approval ~= nil and approval.status == "True" then
    return {status = "Suspended", message = approval.message or "waiting for approval"}
  end
  local ready = find(status.conditions, "Ready")
  if ready == nil then
    return {status = "Progressing", message = "the operator has not reported Ready yet"}
  end
  local message = (ready.reason or "") .. ": " .. (ready.message or "")
  if ready.status == "True" then
    return {status = "Healthy", message = message}
  end
  if ready.status == "False" then
    if retried[ready.reason] then
      return {status = "Degraded", message = message .. " (the operator retries this on its own)"}
    end
    return {status = "Degraded", message = message}
  end
  return {status = "Progressing", message = message}
end

return health(obj)
