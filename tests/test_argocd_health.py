"""The Argo CD health script, run in real Lua runtimes (lupa) over status fixtures, as Argo CD runs it: the object
is the global `obj`, and only Lua's base library is there (Argo CD's gopher-lua implements Lua 5.1 and opens no
string library without useOpenLibs; these tests take away even the table/os/package libraries it does open).

`manifests/argocd/argocd-cm.yaml` is generated from `manifests/argocd/health.lua`; after editing the script,
regenerate it with `.venv/bin/python tests/test_argocd_health.py` (the tests fail while the two differ). Needs
no API server."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import lupa.lua51
import lupa.lua55
import pytest
import yaml

from rightsizer import status as st
from rightsizer.promotion import flow
from rightsizer.promotion.reasons import Reason

REPO = Path(__file__).resolve().parents[1]
ARGOCD = REPO / "manifests" / "argocd"
SCRIPT_PATH = ARGOCD / "health.lua"
CONFIGMAP_PATH = ARGOCD / "argocd-cm.yaml"
SCRIPT = SCRIPT_PATH.read_text()
KEY = "resource.customizations.health.rightsizer.io_RightsizeJob"

HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}
# gopher-lua (Argo CD) implements Lua 5.1; 5.5 catches anything that only works in one dialect.
RUNTIMES = {"lua5.1": lupa.lua51, "lua5.5": lupa.lua55}

CONFIGMAP_HEADER = f"""\
# Merge into argocd-cm (namespace argocd) so Argo CD knows when a RightsizeJob is healthy, e.g.
#   kubectl -n argocd patch configmap argocd-cm --patch-file manifests/argocd/argocd-cm.yaml
# GENERATED from manifests/argocd/health.lua by `.venv/bin/python tests/test_argocd_health.py`: edit the script,
# not this file (tests/test_argocd_health.py fails while the two differ).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  {KEY}: |
"""


def render_configmap(script: str) -> str:
    """argocd-cm.yaml for `script`: the script as a literal block, indented, blank lines left empty."""
    return CONFIGMAP_HEADER + "".join(f"    {line}" if line.strip() else "\n"
                                      for line in script.splitlines(keepends=True))


# Leave the base library only, and make string methods ("x"):find(...) fail as they do without the string library.
BASE_ONLY = """
getmetatable("").__index = nil
for name, value in pairs(_G) do
  if type(value) == "table" and name ~= "_G" then _G[name] = nil end
end
require, module = nil, nil
"""


def to_lua(lua, value):
    """A Python value as Lua sees an object decoded from JSON: dicts become tables, lists 1-based arrays."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = to_lua(lua, item)
        return table
    if isinstance(value, (list, tuple)):
        return lua.table_from([to_lua(lua, item) for item in value])  # keys 1..n
    return value


def run(obj: dict, script: str = SCRIPT, runtime: str = "lua5.1") -> tuple[str, str]:
    module = RUNTIMES[runtime]
    lua = module.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    lua.execute(BASE_ONLY)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    assert module.lua_type(result) == "table"
    assert set(result.keys()) == {"status", "message"}
    status, message = result["status"], result["message"]
    assert status in HEALTH_STATUSES and isinstance(message, str)
    return status, message


def condition(kind: str, status: str, reason: str | None = "Reason", message: str | None = "message") -> dict:
    found = {"type": kind, "status": status, "lastTransitionTime": "2026-11-29T08:00:00Z", "observedGeneration": 2}
    if reason is not None:
        found["reason"] = reason
    if message is not None:
        found["message"] = message
    return found


def job(*conditions: dict, generation: int | None = 2, observed: int | None = 2) -> dict:
    status = {"phase": "InProgress", "conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    metadata = {"name": "fraud", "namespace": "ml"}
    if generation is not None:
        metadata["generation"] = generation
    return {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob", "metadata": metadata, "status": status}


def without(obj: dict, *keys: str) -> dict:
    status = {key: value for key, value in obj["status"].items() if key not in keys}
    return {**obj, "status": status}


VALID = condition("Validated", "True", "Valid", "the spec is valid")
SUBMITTED = condition("JobSubmitted", "True", "JobSubmitted", "submitted fraud-1a2b-g2")
COMPLETED = condition("Succeeded", "True", "JobCompleted", "job fraud-1a2b-g2 COMPLETED")
MEETS = condition("SLASatisfied", "True", "CandidateMeetsSLA", "ml.c5.xlarge x2 meets P95 < 100 ms")
BEST = condition("Ready", "True", "BestSelected", "ml.c5.xlarge x2: cheapest per inference meeting the SLA")
RETRIED = "retried by the operator"

# (case, object, Argo CD status, a substring of the message)
CASES = [
    ("no status yet", {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob",
                       "metadata": {"name": "fraud", "generation": 1}}, "Progressing", "observe generation 1"),
    ("empty status", {"metadata": {"generation": 1}, "status": {}}, "Progressing", "observe generation 1"),
    ("generation ahead of a Ready=True status", job(BEST, generation=3, observed=2), "Progressing",
     "waiting for the operator to observe generation 3"),
    ("generation ahead of a Ready=False status (an InvalidSpec being fixed)",
     job(condition("Ready", "False", "InvalidSpec"), generation=5, observed=4), "Progressing", "generation 5"),
    ("observedGeneration absent", job(BEST, observed=None), "Progressing", "observe generation 2"),
    ("no generation anywhere", job(BEST, generation=None, observed=None), "Progressing", "observe generation ?"),
    ("metadata.generation absent, status observed", job(BEST, generation=None), "Healthy", "BestSelected"),
    ("conditions absent", without(job(), "conditions"), "Progressing", "report the Ready condition"),
    ("conditions empty", job(), "Progressing", "report the Ready condition"),
    ("no Ready among other conditions", job(VALID, condition("JobSubmitted", "Unknown", "Submitting")),
     "Progressing", "report the Ready condition"),
    ("JobPending", job(condition("Ready", "Unknown", "JobPending", "not submitted yet")), "Progressing",
     "JobPending: not submitted yet"),
    ("JobSubmitting", job(condition("Ready", "Unknown", "JobSubmitting", "submitting Advanced job as fraud-1")),
     "Progressing", "JobSubmitting: submitting Advanced job"),
    ("JobInProgress", job(VALID, SUBMITTED, condition("Ready", "Unknown", "JobInProgress", "job j is IN_PROGRESS")),
     "Progressing", "JobInProgress: job j is IN_PROGRESS"),
    ("JobReplacing", job(condition("Ready", "Unknown", "JobReplacing", "stopping job a for b")), "Progressing",
     "JobReplacing: stopping job a for b"),
    ("Ready without status", job({"type": "Ready", "reason": "JobPending"}), "Progressing", "JobPending"),
    ("BestSelected", job(BEST, VALID, SUBMITTED, COMPLETED, MEETS), "Healthy",
     "BestSelected: ml.c5.xlarge x2: cheapest per inference"),
    ("EndpointBenchmarked", job(condition("Ready", "True", "EndpointBenchmarked", "endpoint e meets the SLA")),
     "Healthy", "EndpointBenchmarked: endpoint e meets the SLA"),
    ("Ready=True without a message", job(condition("Ready", "True", "BestSelected", None)), "Healthy",
     "BestSelected"),
    ("AwaitingApproval=True", job(BEST, condition("AwaitingApproval", "True", "ApprovalRequired",
                                                  "annotate rightsizer.io/approve to promote ml.c5.xlarge")),
     "Suspended", "annotate rightsizer.io/approve to promote ml.c5.xlarge"),
    ("AwaitingApproval=True before Ready", job(condition("AwaitingApproval", "True", "ApprovalRequired", "approve"),
                                               VALID, BEST), "Suspended", "approve"),
    ("AwaitingApproval=True without a message", job(BEST, {"type": "AwaitingApproval", "status": "True"}),
     "Suspended", "waiting for approval"),
    ("AwaitingApproval=False", job(condition("AwaitingApproval", "False", "Approved"),
                                   condition("Ready", "True", "Promoted", "ml.c5.xlarge x2 promoted")),
     "Healthy", "Promoted: ml.c5.xlarge x2 promoted"),
    ("generation ahead of an AwaitingApproval", job(BEST, condition("AwaitingApproval", "True"), generation=3),
     "Progressing", "observe generation 3"),
    # Conditions in any order: Ready first, in the middle, last.
    ("Ready first, a False one after", job(BEST, condition("Succeeded", "False", "JobFailed")), "Healthy",
     "BestSelected"),
    ("Ready in the middle", job(VALID, condition("Ready", "False", "JobFailed", "job j failed: OOM"),
                                condition("Succeeded", "False", "JobFailed")), "Degraded", "JobFailed: job j failed"),
    ("Ready last among many", job(VALID, SUBMITTED, COMPLETED, MEETS, BEST), "Healthy", "BestSelected"),
    # spec.promotion.minSavingsPercent held the promotion back: the job did its work, the target keeps its config.
    ("InsufficientSavings", job(VALID, COMPLETED, MEETS,
                                condition("AwaitingApproval", "False", "InsufficientSavings", "saves 5 %"),
                                condition("Promoted", "False", "InsufficientSavings", "saves 5 %"),
                                condition("Ready", "True", "InsufficientSavings", "saves 5 % per inference, below 20")),
     "Healthy", "InsufficientSavings: saves 5 % per inference, below 20"),
]

# Ready=False reasons the operator does not retry (they wait for an edit or are final) and the ones it retries.
TERMINAL = ["InvalidSpec", "ValidationFailed", "NameTaken", "JobFailed", "JobStopped", "JobNotFound", "JobDeleted",
            "NoCandidateMeetsSLA", "ObjectiveUnmeasured", "EndpointUpdateFailed", "ResourceRejected", "UnsupportedTarget",
            "UnsupportedConfiguration", "NothingToRollBack", "SavingsUnknown"]
RETRIED_REASONS = ["AccessDenied", "RoleNotAssumable", "ResourceLimitExceeded", "NoCredentials", "RegionUnknown",
                   "BackendError", "ServiceQuotaExceededException", "SomethingNew", "FieldConflict", "TargetNotFound",
                   "TargetKindNotServed", "SourceNotFound", "Forbidden", "TargetError", "BaselineUnreadable",
                   "BaselineUnsupported"]

CASES += [(f"Ready=False {reason} (terminal)", job(VALID, condition("Ready", "False", reason, f"why {reason}")),
           "Degraded", f"{reason}: why {reason}") for reason in TERMINAL]
CASES += [(f"Ready=False {reason} (retried)", job(condition("Ready", "False", reason, f"why {reason}"), VALID),
           "Degraded", f"{reason}: why {reason} ({RETRIED}") for reason in RETRIED_REASONS]
CASES += [("Ready=False without a reason (retried)", job(condition("Ready", "False", None, "odd")), "Degraded",
           f"odd ({RETRIED}")]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case,obj,status,message", CASES, ids=[case[0] for case in CASES])
def test_health(case, obj, status, message, runtime):
    got_status, got_message = run(obj, runtime=runtime)
    assert (got_status, message in got_message) == (status, True), got_message


@pytest.mark.parametrize("reason", TERMINAL)
def test_a_terminal_reason_does_not_claim_a_retry(reason):
    assert RETRIED not in run(job(condition("Ready", "False", reason)))[1]


# Argo CD decodes numbers as float64, or as strings (json.Number); fields may be missing or of another type.
ODD = [
    {},
    {"metadata": "x", "status": "y"},
    {"metadata": {"generation": "3"}, "status": {"observedGeneration": "3", "conditions": [BEST]}},
    {"metadata": {"generation": "10"}, "status": {"observedGeneration": "9", "conditions": [BEST]}},
    {"metadata": {"generation": 2.0}, "status": {"observedGeneration": 2.0, "conditions": [BEST]}},
    {"metadata": {"generation": True}, "status": {"observedGeneration": [], "conditions": [BEST]}},
    {**job(), "status": {"observedGeneration": 2, "conditions": "Ready"}},
    {**job(), "status": {"observedGeneration": 2, "conditions": ["Ready", 7, None, []]}},
    {**job(), "status": {"observedGeneration": 2, "conditions": {"type": "Ready"}}},
    job({"type": "Ready", "status": "False", "reason": [], "message": 42}),
    job({"type": "AwaitingApproval", "status": "True", "reason": {}, "message": False}),
]
ODD_EXPECTED = ["Progressing", "Progressing", "Healthy", "Progressing", "Healthy", "Progressing", "Progressing",
                "Progressing", "Progressing", "Degraded", "Suspended"]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("obj,expected", list(zip(ODD, ODD_EXPECTED)), ids=[f"odd{i}" for i in range(len(ODD))])
def test_odd_objects_never_break_the_script(obj, expected, runtime):
    assert run(obj, runtime=runtime)[0] == expected


def test_lists_become_one_based_arrays():
    lua = lupa.lua51.LuaRuntime()
    first = lua.eval("function(o) return o.status.conditions[1].type, #o.status.conditions end")
    assert first(to_lua(lua, job(VALID, BEST))) == ("Validated", 2)


def test_the_argocd_cm_snippet_is_the_script_byte_for_byte():
    text = CONFIGMAP_PATH.read_text()
    assert text == render_configmap(SCRIPT), "regenerate: .venv/bin/python tests/test_argocd_health.py"
    config = yaml.safe_load(text)
    assert (config["kind"], config["metadata"]) == ("ConfigMap", {"name": "argocd-cm", "namespace": "argocd"})
    embedded = config["data"][KEY]
    assert embedded == SCRIPT
    assert embedded.encode() == SCRIPT_PATH.read_bytes()
    for case, obj, status, message in CASES:
        assert run(obj, script=embedded) == run(obj), case


def test_the_script_ends_as_a_yaml_literal_block_keeps_it():
    # `|` keeps exactly one final newline; tabs cannot indent YAML.
    assert SCRIPT.endswith("\n") and not SCRIPT.endswith("\n\n") and "\t" not in SCRIPT


def test_the_script_needs_no_optional_library():
    code = re.sub(r"--[^\n]*", "", SCRIPT)  # comments may name libraries
    assert not re.search(r"\b(string|os|io|table|math|debug|utf8|coroutine|package)\s*\.", code)
    assert not re.search(r"\b(require|load|loadstring|dofile|loadfile|setfenv|getfenv)\b", code)
    assert not re.search(r":\s*[A-Za-z_]\w*\s*[(\"{]", code), "string methods need the string library"


def _lua_terminal_reasons() -> set[str]:
    table = re.search(r"local terminal = \{(.*?)\}", SCRIPT, re.DOTALL).group(1)
    return set(re.findall(r"(\w+) = true", table))


def test_the_terminal_reasons_match_the_operator():
    assert _lua_terminal_reasons() == set(TERMINAL)
    # Every reason reconcile.py writes literally into Ready=False is final or waits for an edit.
    reconcile = (REPO / "operator" / "rightsizer" / "reconcile.py").read_text()
    literal = {st.Reason[m] for m in re.findall(r"condition\(st\.READY, st\.FALSE, Reason\.(\w+)", reconcile)}
    assert literal and literal <= set(TERMINAL), literal - set(TERMINAL)
    # Promotion: what it fails for good (and does not retry) is terminal; its retried problems are not.
    promotion = "".join((REPO / "operator" / "rightsizer" / "promotion" / f).read_text() for f in ("flow.py", "targets.py"))
    failed = {Reason[m] for m in re.findall(r"_fail\(step, Reason\.(\w+)", promotion)}
    final = {Reason[m] for m in re.findall(r"TargetProblem\(Reason\.(\w+),[^()]*(?:\([^()]*\)[^()]*)*retry=False",
                                           promotion)}
    retried = {Reason[m] for m in re.findall(r"TargetProblem\(Reason\.(\w+)", promotion)} - final
    assert failed and final and retried
    # UnsupportedConfiguration and SavingsUnknown are set by the gate, which neither fails an attempt nor raises.
    assert failed | final | {"UnsupportedConfiguration", "SavingsUnknown"} == set(flow.FINAL_REASONS) <= set(TERMINAL)
    assert not retried & set(TERMINAL), retried & set(TERMINAL)
    # What the SageMaker client classifies as worth retrying later is not terminal for the health check.
    client = (REPO / "operator" / "rightsizer" / "backends" / "sagemaker" / "client.py").read_text()
    rejected = {re.search(r"\"([A-Z]\w+)\"", args).group(1): retry == "True"
                for args, retry in re.findall(r"Rejected\((.*?)retryable_later=(True|False)", client, re.DOTALL)}
    assert {reason for reason, retry in rejected.items() if retry} == {
        "NoCredentials", "AccessDenied", "ResourceLimitExceeded", "RoleNotAssumable", "BackendError"}
    assert not {reason for reason, retry in rejected.items() if retry} & set(TERMINAL)


def test_the_application_respects_the_operators_fields():
    application = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    spec = application["spec"]
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert spec["source"]["path"] == "manifests/default"
    assert spec["source"]["repoURL"] == "https://git.example.com/platform/rightsizer.git"
    assert {"ServerSideApply=true", "RespectIgnoreDifferences=true"} <= set(spec["syncPolicy"]["syncOptions"])
    assert {(d["group"], d["kind"]) for d in spec["ignoreDifferences"]
            if d.get("managedFieldsManagers") == ["rightsizer"]} == {
        ("sagemaker.services.k8s.aws", "Endpoint"), ("serving.kserve.io", "InferenceService")}
    # The manager name is the operator's field manager.
    kube = (REPO / "operator" / "rightsizer" / "kube.py").read_text()
    assert 'FIELD_MANAGER = "rightsizer"' in kube


if __name__ == "__main__":  # regenerate manifests/argocd/argocd-cm.yaml from health.lua
    CONFIGMAP_PATH.write_text(render_configmap(SCRIPT))
    print(f"wrote {CONFIGMAP_PATH.relative_to(REPO)}", file=sys.stderr)
