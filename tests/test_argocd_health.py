"""The Argo CD health script, run in a real Lua runtime (lupa) over status fixtures, as Argo CD runs it: the
object is the global `obj`, standard libraries beyond the base are not opened."""

from __future__ import annotations

import re

import pytest
import yaml
from lupa import LuaRuntime

from conftest import REPO

SCRIPT = (REPO / "manifests" / "argocd" / "health.lua").read_text()


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({key: to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, item) for item in value])  # a list becomes a 1-based Lua array
    return value


def run(obj: dict, script: str = SCRIPT) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    lua.globals().obj = to_lua(lua, obj)
    # As in Argo CD without useOpenLibs: the base library only.
    lua.execute("string, os, io, table, math, require, debug, package = nil, nil, nil, nil, nil, nil, nil, nil")
    result = lua.execute(script)
    return result["status"], result["message"]


def condition(kind: str, status: str, reason: str = "Reason", message: str = "message") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-29T08:00:00Z"}


def job(*conditions: dict, generation: int = 2, observed: int | None = 2) -> dict:
    status = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob",
            "metadata": {"name": "fraud", "generation": generation}, "status": status}


VALID = condition("Validated", "True", "Valid", "the spec is valid")
CASES = [
    ("no status yet", {"metadata": {"name": "fraud", "generation": 1}}, "Progressing", "observe generation 1"),
    ("generation ahead", job(condition("Ready", "True", "BestSelected"), generation=3, observed=2),
     "Progressing", "observe generation 3"),
    ("observedGeneration absent", job(condition("Ready", "True", "BestSelected"), observed=None),
     "Progressing", "observe generation 2"),
    ("no Ready yet", job(VALID), "Progressing", "not reported Ready"),
    ("pending", job(condition("Ready", "Unknown", "JobPending", "not submitted yet")), "Progressing",
     "JobPending: not submitted yet"),
    ("submitting", job(condition("Ready", "Unknown", "JobSubmitting")), "Progressing", "JobSubmitting"),
    ("in progress", job(condition("Ready", "Unknown", "JobInProgress", "job j is IN_PROGRESS")), "Progressing",
     "IN_PROGRESS"),
    ("replacing", job(condition("Ready", "Unknown", "JobReplacing")), "Progressing", "JobReplacing"),
    ("best selected", job(condition("Ready", "True", "BestSelected", "ml.m5.2xlarge x1")), "Healthy",
     "BestSelected: ml.m5.2xlarge x1"),
    ("endpoint benchmarked", job(condition("Ready", "True", "EndpointBenchmarked")), "Healthy",
     "EndpointBenchmarked"),
    ("awaiting approval", job(condition("Ready", "True", "BestSelected"),
                              condition("AwaitingApproval", "True", "ApprovalRequired", "annotate to approve")),
     "Suspended", "annotate to approve"),
    ("approval given", job(condition("AwaitingApproval", "False", "Approved"), condition("Ready", "True", "Promoted")),
     "Healthy", "Promoted"),
    ("invalid spec", job(condition("Ready", "False", "InvalidSpec", "invalid spec: x")), "Degraded",
     "InvalidSpec: invalid spec: x"),
    ("job failed", job(condition("Ready", "False", "JobFailed", "job j failed")), "Degraded", "job j failed"),
    ("job stopped", job(condition("Ready", "False", "JobStopped")), "Degraded", "JobStopped"),
    ("no candidate", job(condition("Ready", "False", "NoCandidateMeetsSLA")), "Degraded", "NoCandidateMeetsSLA"),
    ("validation failed", job(condition("Ready", "False", "ValidationFailed")), "Degraded", "ValidationFailed"),
    ("access denied is retried", job(condition("Ready", "False", "AccessDenied", "not authorized")), "Degraded",
     "not authorized (the operator retries this on its own)"),
    ("quota is retried", job(condition("Ready", "False", "ResourceLimitExceeded")), "Degraded",
     "retries this on its own"),
    ("Ready last among many", job(VALID, condition("Succeeded", "True", "JobCompleted"),
                                  condition("SLASatisfied", "True", "CandidateMeetsSLA"),
                                  condition("Ready", "True", "BestSelected")), "Healthy", "BestSelected"),
    ("Ready first, a False one after", job(condition("Ready", "True", "BestSelected"),
                                           condition("Succeeded", "False", "Other")), "Healthy", "BestSelected"),
]


@pytest.mark.parametrize("case,obj,status,message", CASES, ids=[case[0] for case in CASES])
def test_health(case, obj, status, message):
    got_status, got_message = run(obj)
    assert got_status == status
    assert message in got_message


def test_the_argocd_cm_snippet_is_the_script():
    config = yaml.safe_load((REPO / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    embedded = config["data"]["resource.customizations.health.rightsizer.io_RightsizeJob"]
    assert embedded == SCRIPT
    assert run(job(condition("Ready", "True", "BestSelected")), script=embedded)[0] == "Healthy"


def test_the_script_needs_no_optional_library():
    # Argo CD opens only the base library unless useOpenLibs is set for the kind.
    assert not re.search(r"\b(string|os|io|table|math)\.", SCRIPT)


def test_the_application_respects_the_operators_fields():
    application = yaml.safe_load((REPO / "manifests" / "argocd" / "application.yaml").read_text())
    assert "RespectIgnoreDifferences=true" in application["spec"]["syncPolicy"]["syncOptions"]
    assert application["spec"]["source"]["path"] == "manifests/default"
    assert {(d["group"], d["kind"]) for d in application["spec"]["ignoreDifferences"]
            if d.get("managedFieldsManagers") == ["rightsizer"]} == {
        ("sagemaker.services.k8s.aws", "Endpoint"), ("serving.kserve.io", "InferenceService")}
