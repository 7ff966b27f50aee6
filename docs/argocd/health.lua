-- Argo CD health check for the llmops.dev kinds: Deployment, Dataset, PretrainJob, FineTune and Evaluation.
-- One script for all five: install it under resource.customizations.health.llmops.dev_<Kind> (docs/argocd.md).
-- Argo CD sets the global `obj` to the live resource; the script returns {status = ..., message = ...} with
-- status Healthy, Progressing, Degraded or Suspended (Argo CD itself reports Missing for an absent resource).
-- Only the base library is used (ipairs, tostring), as Argo CD's sandboxed Lua VM allows.

local function conditionOf(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- The message of the first of `kinds` that has one, else `fallback`.
local function messageOf(status, kinds, fallback)
  for _, kind in ipairs(kinds) do
    local c = conditionOf(status, kind)
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return fallback
end

local function result(health, message)
  return {status = health, message = message}
end

-- A status written for an older generation says nothing about the current spec yet.
local function behind(resource)
  local generation = resource.metadata and resource.metadata.generation
  local observed = resource.status.observedGeneration
  if generation == nil then
    return nil
  end
  if observed == nil or observed < generation then
    return result("Progressing", "Waiting for the operator to observe generation " .. tostring(generation)
      .. " (status is of generation " .. tostring(observed or "none") .. ")")
  end
  return nil
end

local function deploymentHealth(resource)
  local status = resource.status
  local phase = status.phase
  if phase == "Degraded" or phase == "Failed" or phase == "RollingBack" then
    return result("Degraded", phase .. ": " .. messageOf(status, {"Degraded", "Ready"}, "the newest revision failed"))
  end
  local progressing = conditionOf(status, "Progressing")
  local heldByCondition = progressing ~= nil and progressing.status == "False"
    and (progressing.reason == "AnalysisInconclusive" or progressing.reason == "Paused")
  local heldBySpec = resource.spec ~= nil and resource.spec.paused == true and phase == "Progressing"
  if heldByCondition or heldBySpec then
    local why = (heldByCondition and progressing.reason) or "Paused"
    local detail = messageOf(status, {"Progressing"}, nil)
    return result("Suspended", "Rollout paused (" .. why .. (detail and ("): " .. detail) or ")")
      .. "; `llmops rollout promote` resumes it, `llmops rollout abort` rolls it back")
  end
  if phase == "Available" then
    return result("Healthy", messageOf(status, {"Ready"}, "Available"))
  end
  if phase == "Waiting" then
    return result("Progressing", "Waiting: " .. messageOf(status, {"Gated", "Ready"}, "for the model or its gate"))
  end
  return result("Progressing", messageOf(status, {"Progressing", "Ready"}, "Waiting for the operator"))
end

local function workloadHealth(resource)
  local status = resource.status
  local phase = status.phase
  if phase == "Succeeded" then
    if resource.kind == "Evaluation" and status.verdict == "Failed" then
      return result("Degraded", "Verdict Failed: " .. messageOf(status, {"Passed", "Ready"}, "a threshold did not hold"))
    end
    return result("Healthy", messageOf(status, {"Succeeded", "Ready"}, "Succeeded"))
  end
  if phase == "Failed" then
    return result("Degraded", messageOf(status, {"Failed", "Ready"}, "Failed"))
  end
  if status.waitingFor ~= nil then
    return result("Progressing", "Waiting for " .. status.waitingFor)
  end
  return result("Progressing", messageOf(status, {"Progressing", "Ready"}, tostring(phase or "Pending")))
end

local function health(resource)
  if resource.status == nil then
    return result("Progressing", "Waiting for the operator to report status")
  end
  local lagging = behind(resource)
  if lagging ~= nil then
    return lagging
  end
  if resource.kind == "Deployment" then
    return deploymentHealth(resource)
  end
  return workloadHealth(resource)
end

return health(obj)
