-- Argo CD health of a rightsizer.io/RightsizeJob, read from its conditions (the contract; status.phase is
-- informational). Install: manifests/argocd/argocd-cm.yaml, which embeds this file verbatim.
--   Progressing  the operator has not observed metadata.generation yet, or Ready is Unknown or missing (work in
--                flight: JobPending, JobSubmitting, JobInProgress, JobReplacing)
--   Suspended    AwaitingApproval=True: a promotion waits for a person
--   Healthy      Ready=True (also InsufficientSavings: the winner saves too little against spec.baseline, so
--                the target keeps what it serves; a decision, not a fault)
--   Degraded     Ready=False; when the operator retries the reason on its own, the message says so
-- Lua 5.1 base library only (Argo CD runs health scripts in gopher-lua without useOpenLibs: no string library),
-- and every field may be absent or of an unexpected type.

-- Ready=False reasons the operator does not retry: they wait for a spec edit or are final. Any other reason
-- (AccessDenied, RoleNotAssumable, ResourceLimitExceeded, NoCredentials, RegionUnknown, BackendError, an AWS
-- error code the operator passes through, a promotion's TargetNotFound, FieldConflict, Forbidden, or spec.baseline's
-- BaselineUnreadable and BaselineUnsupported, read again as the target may change) is retried with back-off until
-- it clears.
local terminal = {
  InvalidSpec = true, ValidationFailed = true, NameTaken = true, JobFailed = true, JobStopped = true,
  JobNotFound = true, JobDeleted = true, NoCandidateMeetsSLA = true, ObjectiveUnmeasured = true,
  EndpointUpdateFailed = true,
  ResourceRejected = true, UnsupportedTarget = true, UnsupportedConfiguration = true, NothingToRollBack = true,
  SavingsUnknown = true,
}

local function field(value, key)
  if type(value) == "table" then return value[key] end
  return nil
end

local function text(value)
  if value == nil then return "" end
  return tostring(value)
end

local function find(conditions, kind)
  if type(conditions) ~= "table" then return nil end
  for _, condition in ipairs(conditions) do
    if field(condition, "type") == kind then return condition end
  end
  return nil
end

-- "Reason: message", or whichever of the two is there.
local function describe(condition)
  local reason, message = text(field(condition, "reason")), text(field(condition, "message"))
  if reason ~= "" and message ~= "" then return reason .. ": " .. message end
  return reason .. message
end

local function health(obj)
  local generation = tonumber(field(field(obj, "metadata"), "generation"))
  local status = field(obj, "status")
  local observed = tonumber(field(status, "observedGeneration"))
  if observed == nil or (generation ~= nil and observed < generation) then
    return {status = "Progressing",
            message = "waiting for the operator to observe generation " .. text(generation or "?")}
  end
  local conditions = field(status, "conditions")
  local approval = find(conditions, "AwaitingApproval")
  if field(approval, "status") == "True" then
    local message = describe(approval)
    if message == "" then message = "a promotion is waiting for approval" end
    return {status = "Suspended", message = message}
  end
  local ready = find(conditions, "Ready")
  if ready == nil then
    return {status = "Progressing", message = "waiting for the operator to report the Ready condition"}
  end
  local readiness, reason, message = field(ready, "status"), field(ready, "reason"), describe(ready)
  if readiness == "True" then
    return {status = "Healthy", message = message}
  end
  if readiness == "False" then
    if reason ~= nil and terminal[reason] then
      return {status = "Degraded", message = message}
    end
    return {status = "Degraded",
            message = message .. " (retried by the operator with back-off; status.nextPollTime says when)"}
  end
  return {status = "Progressing", message = message}
end

return health(obj)
