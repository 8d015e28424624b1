"""reconcile() and the condition bookkeeping of status.py as plain functions: no API server, no kopf."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re

import pytest

from rightsizer import schema
from rightsizer import selection
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import base, registry
from rightsizer.backends.base import Adopted, NameTaken, Rejected, StopDone, Submitted, Timing
from rightsizer.backends.sagemaker import translate
from rightsizer import model
from rightsizer.model import EndpointPerformance, JobSnapshot, Owner, Progress, Recommendation, StepFailure, StepSummary
from rightsizer.reconcile import (CallRefused, DescribeJob, EmitEvent, JobMissing, JobSeen, Observation, Outcome,
                                  RecommendScaling, RetryLater, ScalingAnswer, ScalingRefused, StopJob, SubmitJob,
                                  job_may_be_running, reconcile, stops_on_delete)
from rightsizer import reconcile as core
from rightsizer import state as state_module
from rightsizer.state import JobState
from conftest import load_samples
from seed import ADVANCED_RESULTS, DEFAULT_RESULTS, seed_step

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + datetime.timedelta(minutes=5)
T2 = T0 + datetime.timedelta(hours=1)
T0_STAMP, T1_STAMP, T2_STAMP = "2026-03-01T12:00:00Z", "2026-03-01T12:05:00Z", "2026-03-01T13:00:00Z"

ARN = "arn:aws:sagemaker:us-east-1:111122223333:model-package/fraud/1"
VALID = {"backend": "sagemaker", "model": {"modelPackageVersionArn": ARN},
         "sagemaker": {"roleArn": "arn:aws:iam::111122223333:role/IR"},
         "instanceTypes": ["ml.m5.large", "ml.m5.xlarge"]}
INVALID = {**VALID, "instanceTypes": ["ml.t2.medium"]}
INVALID_MESSAGE = "invalid spec: spec.instanceTypes[0]: Inference Recommender rejects burstable ml.t2.medium"


def sample(name: str) -> dict:
    return next(document["spec"] for document in load_samples() if document["metadata"]["name"] == name)


def apply(status: dict, outcome: Outcome) -> dict:
    """The status after the handler's merge patch (a None value removes the key)."""
    merged = {**status, **outcome.status_patch}
    return {key: value for key, value in merged.items() if value is not None}


def by_type(conditions: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conditions}


def summary(conditions: list[dict]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in conditions]


STATUS_SCHEMA = schema.openapi_schema()["properties"]["status"]
CONDITION_SCHEMA = STATUS_SCHEMA["properties"]["conditions"]["items"]
WARNINGS_SCHEMA = STATUS_SCHEMA["properties"]["warnings"]
DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def schema_violations(value, node: dict, path: str) -> list[str]:
    """What the API server would refuse (or, for unknown fields, silently prune) in `value` under `node`: the
    subset of OpenAPI v3 the CRD's status schema uses. None is a merge-patch deletion and always admissible."""
    if value is None:
        return []
    errors: list[str] = []
    kind = node.get("type")
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: {value!r} is not one of {node['enum']}")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            errors.append(f"{path}: {len(value)} properties > {node['maxProperties']}")
        errors += [f"{path}.{key}: required" for key in node.get("required", ()) if key not in value]
        properties, additional = node.get("properties") or {}, node.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                errors += schema_violations(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, dict):
                errors += schema_violations(item, additional, f"{path}.{key}")
            elif properties and not node.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: not in the schema, the API server would prune it")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not an array"]
        if "maxItems" in node and len(value) > node["maxItems"]:
            errors.append(f"{path}: {len(value)} items > {node['maxItems']}")
        for index, item in enumerate(value):
            errors += schema_violations(item, node.get("items") or {}, f"{path}[{index}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: {value!r} is not a string"]
        if len(value) > node.get("maxLength", len(value)) or len(value) < node.get("minLength", 0):
            errors.append(f"{path}: length {len(value)} outside the schema's bounds")
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {node['pattern']}")
        if node.get("format") == "date-time" and not DATE_TIME.fullmatch(value):
            errors.append(f"{path}: {value!r} is not an RFC 3339 UTC time")
    elif kind in ("integer", "number"):
        types = (int,) if kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            return [f"{path}: {value!r} is not an {kind}"]
        if "minimum" in node and value < node["minimum"]:
            errors.append(f"{path}: {value} < {node['minimum']}")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{path}: {value!r} is not a boolean")
    return errors


def assert_admissible(patch: dict) -> None:
    """What the CRD's status schema would check on the patch the handler writes (or on a whole status)."""
    assert schema_violations(patch, STATUS_SCHEMA, "status") == []
    conditions = patch.get("conditions") or []
    for condition in conditions:
        assert set(CONDITION_SCHEMA["required"]) <= set(condition)
        assert condition["status"] in CONDITION_SCHEMA["properties"]["status"]["enum"]
        assert re.fullmatch(CONDITION_SCHEMA["properties"]["reason"]["pattern"], condition["reason"])
        assert len(condition["message"]) <= CONDITION_SCHEMA["properties"]["message"]["maxLength"]
        assert DATE_TIME.fullmatch(condition["lastTransitionTime"])
    assert [c["type"] for c in conditions] == sorted((c["type"] for c in conditions), key=st.CONDITION_ORDER.index)
    assert len({c["type"] for c in conditions}) == len(conditions)  # a list-map keyed by type
    if patch.get("warnings") is not None:
        assert 1 <= len(patch["warnings"]) <= WARNINGS_SCHEMA["maxItems"]
        assert all(len(w) <= WARNINGS_SCHEMA["items"]["maxLength"] for w in patch["warnings"])
    if patch.get("recommendations") is not None:
        assert len(patch["recommendations"]) <= STATUS_SCHEMA["properties"]["recommendations"]["maxItems"] == 20


def test_the_admissibility_check_itself_catches_what_the_schema_forbids():
    too_many_rows = [{"recommendationId": f"r{i}"} for i in range(21)]
    assert schema_violations({"recommendations": too_many_rows}, STATUS_SCHEMA, "status") == \
        ["status.recommendations: 21 items > 20"]
    condition = {"type": "Ready", "status": "Maybe", "reason": "Not-a-reason", "message": "",
                 "lastTransitionTime": "2026-03-01 12:00"}
    assert schema_violations({"conditions": [condition], "phase": "Running", "nextPollTime": None,
                              "surprise": 1, "submitAttempts": -1}, STATUS_SCHEMA, "status") == [
        "status.conditions[0].status: 'Maybe' is not one of ['True', 'False', 'Unknown']",
        "status.conditions[0].reason: 'Not-a-reason' does not match " + CONDITION_SCHEMA["properties"]["reason"]["pattern"],
        "status.conditions[0].lastTransitionTime: '2026-03-01 12:00' is not an RFC 3339 UTC time",
        "status.phase: 'Running' is not one of " + str(STATUS_SCHEMA["properties"]["phase"]["enum"]),
        "status.surprise: not in the schema, the API server would prune it",
        "status.submitAttempts: -1 < 0",
    ]
    assert schema_violations({"best": {"metrics": {"maxInvocations": 1.5}}, "steps": {"failures": [{}] * 11}},
                             STATUS_SCHEMA, "status") == ["status.best.metrics.maxInvocations: 1.5 is not an integer",
                                                          "status.steps.failures: 11 items > 10"]


# --- First visit ------------------------------------------------------------------------------------------------

PENDING_MESSAGE = "the spec is valid; the SageMaker Default job of 2 configuration(s) is not submitted yet"


def test_first_visit_of_a_valid_spec_sets_every_condition():
    """Without an owner (nothing to name a job after) the core only validates and says nothing has started."""
    outcome = reconcile(VALID, {}, Observation(generation=1, now=T0))
    common = {"observedGeneration": 1, "lastTransitionTime": T0_STAMP}
    assert outcome.status_patch == {  # no "warnings": None, since there were none to remove
        "observedGeneration": 1,
        "phase": "Pending",
        "conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "JobPending",
             "message": "the spec is valid; the SageMaker Default job of 2 configuration(s) is not submitted yet",
             **common},
            {"type": "Validated", "status": "True", "reason": "Valid", "message": "the spec is valid", **common},
            {"type": "JobSubmitted", "status": "False", "reason": "NotSubmitted",
             "message": "no job has been submitted for generation 1", **common},
            {"type": "Succeeded", "status": "Unknown", "reason": "JobPending", "message": "no job has run yet",
             **common},
            {"type": "SLASatisfied", "status": "Unknown", "reason": "NoResults",
             "message": "no configuration has been benchmarked yet", **common},
        ],
    }
    # One Event per transition: Validated, then JobSubmitted (not submitted is no warning) and Ready; the Unknown
    # conditions other than Ready are not worth one.
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),
                               EmitEvent("Normal", "NotSubmitted", "no job has been submitted for generation 1"),
                               EmitEvent("Normal", "JobPending", PENDING_MESSAGE))
    assert_admissible(outcome.status_patch)


def test_first_visit_with_warnings_says_so_and_lists_them():
    outcome = reconcile(sample("fraud-advanced"), {}, Observation(generation=3, now=T0))
    warning = "spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"
    conditions = by_type(outcome.status_patch["conditions"])
    assert conditions["Validated"] == {"type": "Validated", "status": "True", "reason": "ValidWithWarnings",
                                       "message": f"1 warning(s): {warning}", "observedGeneration": 3,
                                       "lastTransitionTime": T0_STAMP}
    assert conditions["Ready"]["message"] == \
        "the spec is valid; the SageMaker Advanced job of 3 configuration(s) is not submitted yet"
    assert outcome.status_patch["warnings"] == [warning]
    assert outcome.actions == (
        EmitEvent("Warning", "ValidWithWarnings", f"1 warning(s): {warning}"),
        EmitEvent("Normal", "NotSubmitted", "no job has been submitted for generation 3"),
        EmitEvent("Normal", "JobPending",
                  "the spec is valid; the SageMaker Advanced job of 3 configuration(s) is not submitted yet"))
    assert_admissible(outcome.status_patch)


LOCAL_PENDING_MESSAGE = "the spec is valid; the local load test of 8 configuration(s) is not submitted yet"
LOCAL_OWNER = Owner("ml", "fraud-local", "uid-local")


def test_first_visit_of_the_local_sample_without_an_owner_waits():
    outcome = reconcile(sample("fraud-local"), {}, Observation(generation=1, now=T0))
    assert summary(outcome.status_patch["conditions"]) == [
        ("Ready", "Unknown", "JobPending"), ("Validated", "True", "Valid"), ("JobSubmitted", "False", "NotSubmitted"),
        ("Succeeded", "Unknown", "JobPending"), ("SLASatisfied", "Unknown", "NoResults")]
    assert by_type(outcome.status_patch["conditions"])["Ready"]["message"] == LOCAL_PENDING_MESSAGE
    assert outcome.effect is None and "jobName" not in outcome.status_patch
    assert_admissible(outcome.status_patch)


def local_rows(name: str, count: int) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(f"{name}/{i:08d}", "local-1cpu", 2, {"OMP_NUM_THREADS": str(i + 1)},
                                # As the local backend reports them: the endpoint's throughput for its 2 instances.
                                {"maxInvocations": 2 * (20000 + 1000 * i), "maxInvocationsPerInstance": 20000 + 1000 * i,
                                 "modelLatency": 40 - i, "costPerHour": 0.1,
                                 "cpuUtilization": 99.0, "memoryUtilization": 3.5, "modelSetupTime": 1})
                 for i in range(count))


def test_a_local_job_is_written_ahead_then_followed_configuration_by_configuration():
    spec = sample("fraud-local")
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER))
    submit = outcome.effect
    name = submit.plan.job_name
    assert re.fullmatch(r"fraud-local-[0-9a-f]{8}-g1", name)
    assert outcome.status_patch["jobName"] == name  # written ahead of the start, as for SageMaker
    # The plan carries the parsed spec; its name hashes what defines the experiment, so selection, promotion and
    # deletion edits keep the job.
    assert submit.plan.spec.backend == "local" and "selection" not in submit.plan.spec.job_definition
    assert [c.instance_type for c in submit.plan.spec.candidates] == ["local-1cpu", "local-2cpu"]
    status = apply({}, outcome)
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T0, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    assert status["phase"] == "Submitted" and by_type(status["conditions"])["JobSubmitted"]["status"] == "True"
    assert status["nextPollTime"] == "2026-03-01T12:00:02Z"  # not SageMaker's first 30 s

    crashed = StepFailure("local-2cpu", {"OMP_NUM_THREADS": "1"}, "the model server exited with code 137")
    too_big = StepFailure("local-2cpu", {"OMP_NUM_THREADS": "2"}, "local-2cpu needs 2 vCPUs", skipped=True)
    running = JobSnapshot(name, "IN_PROGRESS", recommendations=local_rows(name, 1),
                          steps=StepSummary(8, {"COMPLETED": 1, "FAILED": 2}, failures=(crashed, too_big)),
                          progress=Progress(1, 8, "local-1cpu (OMP_NUM_THREADS=2): phase 1/2"))
    outcome = reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER, result=JobSeen(running)))
    status = apply(status, outcome)
    assert status["progress"] == {"completed": 1, "total": 8, "current": "local-1cpu (OMP_NUM_THREADS=2): phase 1/2"}
    assert status["nextPollTime"] == "2026-03-01T12:05:02Z"  # every 2 s: a local describe costs nothing
    assert len(status["recommendations"]) == 1 and "best" not in status
    assert by_type(status["conditions"])["Ready"]["message"].endswith("(1 of 8 benchmarks completed)")

    # The operator restarted: the job is gone from its memory; it runs again without the finished configuration.
    outcome = reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER, result=JobMissing()))
    resubmit = outcome.effect
    assert isinstance(resubmit, SubmitJob) and resubmit.plan.job_name == name
    assert [row.recommendation_id for row in resubmit.plan.resume.completed] == [f"{name}/00000000"]
    # Nor the one that failed: it would only fail again. The skipped one is placed afresh (the pod may have grown).
    assert status["steps"]["failures"][1]["skipped"] is True and "skipped" not in status["steps"]["failures"][0]
    assert resubmit.plan.resume.failed == (StepFailure("local-2cpu", {"OMP_NUM_THREADS": "1"},
                                                       "the model server exited with code 137"),)
    # the job duration counts from the first start
    assert resubmit.plan.resume.started_at == st.parse_timestamp(status["startTime"])
    assert ("Normal", "JobResumed") in [(a.type, a.reason) for a in outcome.actions if isinstance(a, EmitEvent)]
    status = apply(status, outcome)
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    assert status["jobName"] == name and status["nextPollTime"] == "2026-03-01T12:05:02Z"

    done = JobSnapshot(name, "COMPLETED", completion_time=T2, recommendations=local_rows(name, 3),
                       steps=StepSummary(8, {"COMPLETED": 3, "FAILED": 5}), progress=Progress(8, 8))
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER, result=JobSeen(done))))
    # The cheapest per inference: the same price per hour, the most invocations; x2 instances reach 30000/min.
    assert status["best"]["recommendationId"] == f"{name}/00000002"
    assert status["phase"] == "Completed" and "nextPollTime" not in status
    assert_admissible(status)


def local_job_submitted(spec: dict) -> tuple[dict, str]:
    status = apply({}, reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER)))
    name = status["jobName"]
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T0, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    return status, name


def test_a_queued_local_job_says_what_it_waits_for_and_resumes_with_its_whole_duration():
    spec = sample("fraud-local")
    status, name = local_job_submitted(spec)
    waiting = "waiting for this host, where job other-0123abcd-g1 of RightsizeJob ml/other runs"
    queued = JobSnapshot(name, "PENDING", steps=StepSummary(8, {"PENDING": 8}), progress=Progress(0, 8, waiting))
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER,
                                                               result=JobSeen(queued))))
    assert by_type(status["conditions"])["Ready"]["message"] == \
        f"job {name} is PENDING (0 of 8 benchmarks completed): {waiting}"
    assert "startedAt" not in status["progress"]
    # Killed while it waited: resumed, its duration counts from when it gets the host, not from its submission
    # (status.startTime); it keeps its place in the queue by that submission.
    resubmit = reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER, result=JobMissing())).effect
    assert resubmit.plan.resume.started_at is None
    assert resubmit.plan.resume.submitted_at == T0 == st.parse_timestamp(status["startTime"])


def test_a_resumed_local_job_counts_its_duration_from_when_it_got_the_host_and_keeps_finished_runs():
    spec = sample("fraud-local")
    status, name = local_job_submitted(spec)
    got_host = T0 + datetime.timedelta(seconds=43)  # after 43 s behind another job
    (finished_run,) = local_rows(name, 1)
    running = JobSnapshot(name, "IN_PROGRESS", steps=StepSummary(8, {"PENDING": 8}),
                          progress=Progress(0, 8, "run 2/2: local-1cpu (OMP_NUM_THREADS=1): phase 1/1",
                                            started=got_host, runs=(finished_run,)), results_version=1)
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER,
                                                               result=JobSeen(running))))
    assert status["progress"]["startedAt"] == "2026-03-01T12:00:43Z"
    assert [r["recommendationId"] for r in status["progress"]["runs"]] == [finished_run.recommendation_id]
    assert_admissible(status)
    outcome = reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER, result=JobMissing()))
    resume = outcome.effect.plan.resume
    assert resume.started_at == got_host and resume.submitted_at == T0
    assert resume.runs == (finished_run,)  # read back from status as written: not run again
    resumed = [a.message for a in outcome.actions if isinstance(a, EmitEvent) and a.reason == "JobResumed"]
    assert resumed == [f"job {name} was interrupted (the operator restarted); running the configurations it had "
                       f"not finished (0 measured and 0 failed before, 1 run(s) of repeated ones kept)"]


def test_a_local_job_without_a_price_meets_its_sla_and_says_why_nothing_is_selected():
    spec = {**sample("fraud-local"), "instanceTypes": ["local-1cpu"]}
    spec["local"] = {k: v for k, v in (spec.get("local") or {}).items() if k != "pricePerHour"}
    status = apply({}, reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER)))
    name = status["jobName"]
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T0, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    # Warned at validation, before any load test ran.
    assert status["warnings"] == ["no price known for local-1cpu: spec.selection.objective CostPerInference cannot "
                                  "rank it; set spec.local.pricePerHour or choose objective ModelLatency or "
                                  "MaxInvocations"]
    unpriced = tuple(dataclasses.replace(r, metrics={k: v for k, v in r.metrics.items() if k != "costPerHour"})
                     for r in local_rows(name, 1))
    done = JobSnapshot(name, "COMPLETED", completion_time=T2, recommendations=unpriced,
                       steps=StepSummary(4, {"COMPLETED": 1, "FAILED": 3}), progress=Progress(4, 4))
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER,
                                                               result=JobSeen(done))))
    conditions = by_type(status["conditions"])
    assert status["recommendations"][0]["meetsSLA"] is True
    # The SLA is met: saying otherwise (NoCandidateMeetsSLA, "none of the 1 configurations meets") was false.
    assert (conditions["SLASatisfied"]["status"], conditions["SLASatisfied"]["reason"]) == ("True",
                                                                                          "CandidateMeetsSLA")
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "ObjectiveUnmeasured")
    assert conditions["Ready"]["message"].startswith(
        "1 of 1 configurations meet P95 latency <= 100 ms and >= 30000 invocations/min, but lowest cost per "
        "inference cannot rank them: no "
        "price known for local-1cpu; set spec.local.pricePerHour or choose spec.selection.objective")
    assert "none of" not in conditions["Ready"]["message"] and "best" not in status
    assert status["phase"] == "Completed"
    assert_admissible(status)


def test_editing_the_local_selection_keeps_the_job():
    spec = sample("fraud-local")
    first = reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER)).effect.plan.job_name
    edited = {**spec, "selection": {"objective": "ModelLatency"}}
    status = {"jobName": first}
    assert reconcile(edited, status, Observation(generation=2, now=T0, owner=LOCAL_OWNER)).effect.plan.job_name == first
    redefined = {**spec, "instanceTypes": ["local-1cpu"]}
    outcome = reconcile(redefined, {}, Observation(generation=3, now=T0, owner=LOCAL_OWNER))
    assert outcome.effect.plan.job_name != first and outcome.effect.plan.job_name.endswith("-g3")


def test_first_visit_of_an_invalid_spec():
    outcome = reconcile(INVALID, {}, Observation(generation=1, now=T0))
    common = {"reason": "InvalidSpec", "message": INVALID_MESSAGE, "observedGeneration": 1,
              "lastTransitionTime": T0_STAMP}
    assert outcome.status_patch == {
        "observedGeneration": 1, "phase": "Failed",  # refused: nothing is about to run (Pending said it was)
        "conditions": [{"type": "Ready", "status": "False", **common},
                       {"type": "Validated", "status": "False", **common}],
    }
    # Validated and Ready say the same thing: one Event (de-duplicated by reason and message).
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", INVALID_MESSAGE),)
    assert_admissible(outcome.status_patch)


def test_invalid_spec_message_joins_every_error():
    spec = {**VALID, "instanceTypes": ["ml.m5.huge", "ml.t2.medium"],
            "trafficPattern": {"trafficType": "STAIRS",
                               "stairs": {"durationInSeconds": 10, "numberOfSteps": 11, "usersPerStep": 1}},
            "jobDurationInSeconds": 100}
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0))
    message = ("invalid spec: spec.trafficPattern.stairs last 11 steps x 10 s = 110 s in total, longer than "
               "spec.jobDurationInSeconds (100 s); "
               "spec.instanceTypes[0]: ml.m5.huge is not a SageMaker real-time hosting instance type; "
               "spec.instanceTypes[1]: Inference Recommender rejects burstable ml.t2.medium")
    assert by_type(outcome.status_patch["conditions"])["Ready"]["message"] == message
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", message),)


def test_reconcile_does_not_mutate_its_inputs():
    spec, status = copy.deepcopy(sample("fraud-advanced")), {"conditions": [
        {"type": "Validated", "status": "False", "reason": "InvalidSpec", "message": "x", "observedGeneration": 1,
         "lastTransitionTime": T0_STAMP}]}
    spec_before, status_before = copy.deepcopy(spec), copy.deepcopy(status)
    reconcile(spec, status, Observation(generation=2, now=T1))
    assert (spec, status) == (spec_before, status_before)


def test_now_in_another_timezone_is_written_in_utc():
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    outcome = reconcile(VALID, {}, Observation(generation=1, now=datetime.datetime(2026, 3, 1, 14, 0, 0, 999,
                                                                                   tzinfo=plus_two)))
    assert {c["lastTransitionTime"] for c in outcome.status_patch["conditions"]} == {T0_STAMP}


# --- Level-triggered: running again converges -------------------------------------------------------------------

@pytest.mark.parametrize("spec", [VALID, INVALID, sample("fraud-advanced")], ids=["valid", "invalid", "warnings"])
def test_reconciling_its_own_output_is_a_no_op(spec):
    first = reconcile(spec, {}, Observation(generation=1, now=T0))
    status = apply({}, first)
    second = reconcile(spec, status, Observation(generation=1, now=T2))
    # A converged object costs no write and says nothing: an empty patch, no Event.
    assert second == Outcome((), {})
    assert apply(status, second) == status
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {T0_STAMP}
    third = reconcile(spec, status, Observation(generation=1, now=T2 + datetime.timedelta(days=1)))
    assert third == second


def test_generation_bump_with_the_same_verdict_keeps_transition_times():
    status = apply({}, reconcile(VALID, {}, Observation(generation=1, now=T0)))
    changed_spec = {**VALID, "deletionPolicy": "Retain"}
    outcome = reconcile(changed_spec, status, Observation(generation=2, now=T1))
    assert outcome.actions == ()
    assert outcome.status_patch["observedGeneration"] == 2
    conditions = outcome.status_patch["conditions"]
    assert [(c["type"], c["observedGeneration"], c["lastTransitionTime"]) for c in conditions] == [
        (kind, 2, T0_STAMP) for kind in ("Ready", "Validated", "JobSubmitted", "Succeeded", "SLASatisfied")]
    assert summary(conditions) == summary(status["conditions"])
    assert by_type(conditions)["JobSubmitted"]["message"] == "no job has been submitted for generation 2"


def test_generation_bump_of_an_invalid_spec_with_the_same_errors_emits_nothing():
    status = apply({}, reconcile(INVALID, {}, Observation(generation=1, now=T0)))
    outcome = reconcile({**INVALID, "jobDescription": "edited"}, status, Observation(generation=2, now=T1))
    assert outcome.actions == ()
    assert [(c["type"], c["status"], c["observedGeneration"], c["lastTransitionTime"])
            for c in outcome.status_patch["conditions"]] == [("Ready", "False", 2, T0_STAMP),
                                                             ("Validated", "False", 2, T0_STAMP)]


def test_a_different_invalid_message_emits_a_new_warning_but_keeps_transition_time():
    status = apply({}, reconcile(INVALID, {}, Observation(generation=1, now=T0)))
    outcome = reconcile({**VALID, "instanceTypes": ["ml.m5.huge"]}, status, Observation(generation=2, now=T1))
    message = "invalid spec: spec.instanceTypes[0]: ml.m5.huge is not a SageMaker real-time hosting instance type"
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", message),)
    assert {c["lastTransitionTime"] for c in outcome.status_patch["conditions"]} == {T0_STAMP}


def test_invalid_then_valid_flips_ready_and_validated():
    status = apply({}, reconcile(INVALID, {}, Observation(generation=1, now=T0)))
    outcome = reconcile(VALID, status, Observation(generation=2, now=T1))
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),
                               EmitEvent("Normal", "NotSubmitted", "no job has been submitted for generation 2"),
                               EmitEvent("Normal", "JobPending", PENDING_MESSAGE))
    conditions = outcome.status_patch["conditions"]
    assert summary(conditions) == [("Ready", "Unknown", "JobPending"), ("Validated", "True", "Valid"),
                                   ("JobSubmitted", "False", "NotSubmitted"), ("Succeeded", "Unknown", "JobPending"),
                                   ("SLASatisfied", "Unknown", "NoResults")]
    assert {(c["observedGeneration"], c["lastTransitionTime"]) for c in conditions} == {(2, T1_STAMP)}
    # Refused, it was Failed; valid, it waits to be submitted again.
    assert status["phase"] == "Failed" and outcome.status_patch["phase"] == "Pending"


def test_invalid_then_valid_with_warnings_emits_a_warning_event():
    status = apply({}, reconcile(INVALID, {}, Observation(generation=1, now=T0)))
    outcome = reconcile(sample("fraud-advanced"), status, Observation(generation=2, now=T1))
    message = "1 warning(s): spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"
    assert outcome.actions == (
        EmitEvent("Warning", "ValidWithWarnings", message),
        EmitEvent("Normal", "NotSubmitted", "no job has been submitted for generation 2"),
        EmitEvent("Normal", "JobPending",
                  "the spec is valid; the SageMaker Advanced job of 3 configuration(s) is not submitted yet"))
    assert by_type(outcome.status_patch["conditions"])["Validated"]["lastTransitionTime"] == T1_STAMP


def test_valid_then_invalid_flips_ready_to_false_and_clears_warnings():
    status = apply({}, reconcile(sample("fraud-advanced"), {}, Observation(generation=1, now=T0)))
    assert status["warnings"]
    outcome = reconcile(INVALID, status, Observation(generation=2, now=T1))
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", INVALID_MESSAGE),)
    conditions = by_type(outcome.status_patch["conditions"])
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"], conditions["Ready"]["lastTransitionTime"]) \
        == ("False", "InvalidSpec", T1_STAMP)
    assert (conditions["Validated"]["status"], conditions["Validated"]["lastTransitionTime"]) == ("False", T1_STAMP)
    assert outcome.status_patch["warnings"] is None
    assert "warnings" not in apply(status, outcome)
    assert [c["type"] for c in outcome.status_patch["conditions"]][0] == "Ready"


def test_warnings_then_clean_emits_normal_and_clears_the_list():
    status = apply({}, reconcile(sample("fraud-advanced"), {}, Observation(generation=1, now=T0)))
    clean = copy.deepcopy(sample("fraud-advanced"))
    clean["trafficPattern"]["phases"][1]["initialNumberOfUsers"] = 3
    outcome = reconcile(clean, status, Observation(generation=2, now=T1))
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),)
    assert outcome.status_patch["warnings"] is None
    # Validated stayed True: a reason change is not a transition.
    assert by_type(outcome.status_patch["conditions"])["Validated"]["lastTransitionTime"] == T0_STAMP


def test_a_submitted_job_waits_for_its_poll_time_and_keeps_its_phase():
    status, name = submitted(DEFAULT)
    assert status["phase"] == "Submitted"
    before_due = reconcile(DEFAULT, status, at(T0 + datetime.timedelta(seconds=29)))
    assert before_due == Outcome((), {})  # nothing is patched, so the phase stays as it was
    assert apply(status, before_due)["phase"] == "Submitted"


def test_phase_is_kept_on_an_invalid_spec():
    status = {"phase": "Completed"}
    outcome = reconcile(INVALID, status, Observation(generation=4, now=T0))
    assert "phase" not in outcome.status_patch and outcome.status_patch["observedGeneration"] == 4
    assert apply(status, outcome)["phase"] == "Completed"


def test_an_invalid_spec_with_an_owner_makes_no_backend_call():
    outcome = reconcile(INVALID, {}, at(T0))
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", INVALID_MESSAGE),)
    assert "jobName" not in outcome.status_patch


def test_a_request_sagemaker_would_refuse_is_an_invalid_spec_and_makes_no_call():
    spec = {**VALID, "sagemaker": {"roleArn": "not-an-arn"}}
    outcome = reconcile(spec, {}, at(T0))
    [event] = outcome.actions
    assert (event.type, event.reason) == ("Warning", "InvalidSpec")
    assert event.message.startswith("invalid spec: the SageMaker request would be refused: ")
    assert "RoleArn: 'not-an-arn' does not match the service's pattern" in event.message
    conditions = by_type(outcome.status_patch["conditions"])
    assert (conditions["Ready"]["status"], conditions["Ready"]["message"]) == ("False", event.message)
    assert (conditions["Validated"]["status"], conditions["Validated"]["reason"]) == ("False", "InvalidSpec")
    assert "jobName" not in outcome.status_patch and outcome.effect is None


# --- Bounds -----------------------------------------------------------------------------------------------------

def test_warnings_are_bounded_but_the_condition_counts_them_all():
    # 20 phases, each breaking three pieces of guidance (users, spawn rate, duration) but continuous.
    phases = [{"initialNumberOfUsers": 5, "spawnRate": 4, "durationInSeconds": 30} for _ in range(20)]
    spec = {**VALID, "trafficPattern": {"trafficType": "PHASES", "phases": phases},
            "stoppingConditions": {"maxInvocations": 1000}}
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0))
    warnings = outcome.status_patch["warnings"]
    assert len(warnings) == st.MAX_WARNINGS == 20
    assert warnings[:3] == ["spec.trafficPattern.phases[0].initialNumberOfUsers is 5; SageMaker documents 1-3",
                            "spec.trafficPattern.phases[0].spawnRate is 4; SageMaker documents 0-3 users per minute",
                            "spec.trafficPattern.phases[0].durationInSeconds is 30; SageMaker documents 120-3600 s"]
    assert warnings[-1] == "spec.trafficPattern.phases[6].spawnRate is 4; SageMaker documents 0-3 users per minute"
    validated = by_type(outcome.status_patch["conditions"])["Validated"]
    assert validated["message"].startswith("60 warning(s): spec.trafficPattern.phases[0].initialNumberOfUsers is 5;")
    assert validated["message"].endswith("spec.trafficPattern.phases[19].durationInSeconds is 30; "
                                         "SageMaker documents 120-3600 s")
    assert_admissible(outcome.status_patch)


def test_conditions_come_ready_first_whatever_the_input_order():
    status = {"conditions": [
        {"type": "Promoted", "status": "False", "reason": "NotPromoted", "message": "", "observedGeneration": 1,
         "lastTransitionTime": T0_STAMP},
        {"type": "example.com/Custom", "status": "True", "reason": "X", "message": "", "observedGeneration": 1,
         "lastTransitionTime": T0_STAMP},
        {"type": "AwaitingApproval", "status": "False", "reason": "NotYet", "message": "", "observedGeneration": 1,
         "lastTransitionTime": T0_STAMP},
    ]}
    outcome = reconcile(VALID, status, Observation(generation=1, now=T1))
    assert [c["type"] for c in outcome.status_patch["conditions"]] == [
        "Ready", "Validated", "JobSubmitted", "Succeeded", "SLASatisfied", "AwaitingApproval", "Promoted",
        "example.com/Custom"]


# --- status.set_condition, find, changed, timestamp -------------------------------------------------------------

def stored(conditions):
    return [c.for_storage() for c in conditions]


def test_set_condition_adds_a_condition_with_the_current_time():
    conditions = st.set_condition((), st.READY, st.TRUE, "Done", "ok", 7, T0)
    assert stored(conditions) == [{"type": "Ready", "status": "True", "reason": "Done", "message": "ok",
                                   "observedGeneration": 7, "lastTransitionTime": T0_STAMP}]


def test_set_condition_keeps_the_transition_time_iff_the_status_is_unchanged():
    before = st.set_condition((), st.SUCCEEDED, st.UNKNOWN, "JobPending", "waiting", 1, T0)
    same_status = st.set_condition(before, st.SUCCEEDED, st.UNKNOWN, "StillWaiting", "other message", 2, T1)
    assert stored(same_status) == [{"type": "Succeeded", "status": "Unknown", "reason": "StillWaiting",
                                    "message": "other message", "observedGeneration": 2,
                                    "lastTransitionTime": T0_STAMP}]
    flipped = st.set_condition(same_status, st.SUCCEEDED, st.TRUE, "JobPending", "waiting", 2, T2)
    assert stored(flipped)[0]["lastTransitionTime"] == T2_STAMP
    back = st.set_condition(flipped, st.SUCCEEDED, st.UNKNOWN, "JobPending", "waiting", 2, T1)
    assert stored(back)[0]["lastTransitionTime"] == T1_STAMP


def test_set_condition_only_touches_its_own_type_and_does_not_mutate():
    before = st.set_condition(st.set_condition((), st.VALIDATED, st.TRUE, "Valid", "v", 1, T0),
                              st.READY, st.FALSE, "Nope", "r", 1, T0)
    snapshot = stored(before)
    after = st.set_condition(before, st.READY, st.TRUE, "Yes", "r2", 2, T1)
    assert stored(before) == snapshot
    assert stored(after) == [{"type": "Ready", "status": "True", "reason": "Yes", "message": "r2",
                              "observedGeneration": 2, "lastTransitionTime": T1_STAMP}, snapshot[1]]


def test_set_condition_orders_known_types_then_unknown_types_by_name():
    conditions: st.Conditions = ()
    for kind in ("Zeta", st.PROMOTED, "Alpha", st.SUCCEEDED, st.READY, st.VALIDATED):
        conditions = st.set_condition(conditions, kind, st.TRUE, "R", "m", 1, T0)
    assert [c.type for c in conditions] == ["Ready", "Validated", "Succeeded", "Promoted", "Alpha", "Zeta"]


@pytest.mark.parametrize("length, kept", [(32767, 32767), (32768, 32768), (32769, 32768), (100000, 32768)])
def test_set_condition_truncates_messages_at_32768(length, kept):
    message = "".join(chr(ord("a") + i % 26) for i in range(length))
    [condition] = st.set_condition((), st.READY, st.FALSE, "Long", message, 1, T0)
    assert st.MAX_MESSAGE_CHARS == 32768
    assert condition.message == message[:kept]


def test_a_huge_invalid_spec_message_is_truncated_in_the_conditions_and_event():
    spec = {**VALID, "instanceTypes": [f"ml.bogus{i}.large" for i in range(3000)]}
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0))
    ready = by_type(outcome.status_patch["conditions"])["Ready"]
    assert len(ready["message"]) == 32768
    assert ready["message"].startswith("invalid spec: spec.instanceTypes[0]: ml.bogus0.large is not")
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", ready["message"]),)


def test_find():
    conditions = tuple(st.ConditionRecord.from_storage(c) for c in (
        {"type": "Ready", "status": "True", "lastTransitionTime": T0_STAMP},
        {"type": "Validated", "status": "False", "lastTransitionTime": T0_STAMP}))
    assert st.find(conditions, "Validated") is conditions[1]
    assert st.find(conditions, "Promoted") is None
    assert st.find((), "Ready") is None


def test_changed_looks_at_status_and_reason_only():
    before = st.set_condition((), st.READY, st.UNKNOWN, "JobPending", "a", 1, T0)
    assert st.changed((), before, st.READY)
    assert not st.changed(before, before, st.VALIDATED)
    assert not st.changed(before, st.set_condition(before, st.READY, st.UNKNOWN, "JobPending", "b", 2, T1), st.READY)
    assert st.changed(before, st.set_condition(before, st.READY, st.UNKNOWN, "Other", "a", 1, T1), st.READY)
    assert st.changed(before, st.set_condition(before, st.READY, st.TRUE, "JobPending", "a", 1, T1), st.READY)


def test_timestamp_is_utc_seconds_with_z():
    assert st.timestamp(T0) == T0_STAMP
    assert st.timestamp(datetime.datetime(2026, 3, 1, 7, 0, 0, 123456,
                                          tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))) == T0_STAMP


# --- SageMaker: the core driven the way handlers.drive drives it -------------------------------------------------

OWNER = Owner("ml", "fraud", "uid-1")
TIMING = Timing()
SAGEMAKER = registry.policy("sagemaker")
DEFAULT = sample("fraud-default")
ADVANCED = sample("fraud-advanced")
ENDPOINT = sample("fraud-existing-endpoint")
ROLE = "arn:aws:iam::111122223333:role/SageMakerInferenceRecommender"
PACKAGE = "arn:aws:sagemaker:us-east-1:111122223333:model-package/credit-card-fraud/1"
OWNER_TAGS = [{"Key": "rightsizer.io/namespace", "Value": "ml"}, {"Key": "rightsizer.io/name", "Value": "fraud"},
              {"Key": "rightsizer.io/uid", "Value": "uid-1"}]
DENIED = Rejected("AccessDenied", "AccessDeniedException: User is not authorized to perform: "
                  "sagemaker:CreateInferenceRecommendationsJob", retryable_later=True)
SLA = "latency <= 100 ms and >= 30000 invocations/min"


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def answer(job: JobSnapshot | None = None, job_missing: bool = False, rejected: Rejected | None = None,
           submit_result=None, stop_result=None, world=None, applied=None, deleted=None, scaling_answer=None):
    """The one result of the last action, named by what it answers."""
    given = [value for value in (JobSeen(job) if job is not None else None, JobMissing() if job_missing else None,
                                 CallRefused(rejected) if rejected is not None else None, submit_result, stop_result,
                                 world, applied, deleted, scaling_answer) if value is not None]
    assert len(given) <= 1
    return given[0] if given else None


def at(now: datetime.datetime, generation: int = 1, deleting: bool = False, annotations: dict | None = None,
       timing: Timing = Timing(), **result) -> Observation:
    """One reconcile call as drive makes it: the owner, default timing, and the result of the last action."""
    return Observation(generation=generation, now=now, owner=OWNER, deleting=deleting, annotations=annotations or {},
                       timing=timing, result=answer(**result))


def plan_of(name: str, request: dict) -> base.JobPlan:
    """The plan a SubmitJob carries, compared by what identifies the job: its name and request."""
    return base.JobPlan(name, spec_module.parse(VALID), request)


def arn(name: str) -> str:
    return f"arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/{name}"


def request_for(spec: dict, generation: int = 1, current_name: str | None = None) -> dict:
    return translate.build_request(spec_module.parse(spec), OWNER, generation, current_name=current_name)


def events_of(outcome: Outcome) -> list[EmitEvent]:
    return [a for a in outcome.actions if isinstance(a, EmitEvent)]


# Which action each result field of an Observation answers.
ANSWERS = {"submit_result": (SubmitJob,), "job": (DescribeJob,), "job_missing": (DescribeJob,),
           "stop_result": (StopJob,), "rejected": (SubmitJob, DescribeJob, StopJob),
           "scaling_answer": (RecommendScaling,)}  # the shell refuses any call it cannot make


@dataclasses.dataclass
class Trace:
    status: dict
    outcomes: list[Outcome]

    @property
    def last(self) -> Outcome:
        return self.outcomes[-1]

    @property
    def events(self) -> list[EmitEvent]:
        return [event for outcome in self.outcomes for event in events_of(outcome)]

    @property
    def effects(self) -> list:
        return [outcome.effect for outcome in self.outcomes]


def run(spec: dict, status: dict, *observations: Observation) -> Trace:
    """What `drive` does, over as many visits as there are observations: reconcile, write the patch (checked
    against the CRD's status schema) and merge it, and feed the scripted result of the one action back in. The
    script must answer the action that was asked for, and every outcome keeps drive's invariants."""
    trace = Trace(copy.deepcopy(status), [])
    for observation in observations:
        answered = [field for field in ANSWERS if getattr(observation, field) not in (None, False)]
        assert len(answered) <= 1
        if answered and trace.outcomes:
            effect = trace.last.effect
            assert isinstance(effect, ANSWERS[answered[0]]), f"{answered[0]} does not answer {effect!r}"
            if observation.job is not None:
                assert observation.job.job_name == effect.job_name
            if isinstance(observation.submit_result, Adopted):
                assert observation.submit_result.snapshot.job_name == effect.plan.job_name
        outcome = reconcile(spec, trace.status, observation)
        effects = [a for a in outcome.actions if isinstance(a, (SubmitJob, DescribeJob, StopJob, RecommendScaling))]
        assert len(effects) <= 1 and outcome.actions[len(outcome.actions) - len(effects):] == tuple(effects)
        said = [(event.reason, event.message) for event in events_of(outcome)]
        assert len(said) == len(set(said)), "events are de-duplicated by (reason, message)"
        assert_admissible(outcome.status_patch)
        trace.status = apply(trace.status, outcome)
        assert_admissible(trace.status)
        # Typed state: every status the core writes reads back as what it wrote, and a visit that moves nothing
        # patches nothing.
        typed = JobState.from_storage(trace.status)
        assert typed.for_storage() == trace.status and state_module.changes(typed, typed) == {}
        if effects and not observation.deleting and not isinstance(effects[0], RecommendScaling):
            # Write-ahead: the status names a job before any action can create, look at or stop it.
            named = effects[0].plan.job_name if isinstance(effects[0], SubmitJob) else effects[0].job_name
            assert trace.status["jobName"] == named
            if isinstance(effects[0], SubmitJob):
                assert (by_type(trace.status["conditions"])["JobSubmitted"]["status"]) == "Unknown"
        trace.outcomes.append(outcome)
    return trace


def assert_settled(spec: dict, status: dict, now: datetime.datetime, generation: int = 1) -> None:
    """Level-triggered: reconciling a converged status again writes nothing and says nothing."""
    assert reconcile(spec, status, at(now, generation)) == Outcome((), {})


def default_recommendations(job_name: str) -> tuple[Recommendation, ...]:
    # No CostPerInference from the service: the core computes it from cost/h and invocations.
    return tuple(Recommendation(f"{job_name}/{index:08d}", instance, 1,
                                {"OMP_NUM_THREADS": omp, "SAGEMAKER_MODEL_SERVER_WORKERS": workers},
                                {"costPerHour": cost, "maxInvocations": invocations, "modelLatency": latency,
                                 "cpuUtilization": cpu, "memoryUtilization": memory})
                 for index, (instance, omp, cost, invocations, latency, cpu, memory, workers)
                 in enumerate(DEFAULT_RESULTS))


def advanced_recommendations(job_name: str) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(f"{job_name}/{index:08d}", instance, 2, {"OMP_NUM_THREADS": omp},
                                {"costPerHour": cost, "maxInvocations": invocations, "modelLatency": latency,
                                 "cpuUtilization": cpu, "memoryUtilization": memory})
                 for index, (instance, omp, cost, invocations, latency, cpu, memory)
                 in enumerate(ADVANCED_RESULTS))


SEED_STEP = seed_step("SMPYTHONSDK-<JOB_NAME>")
RUNNING_STEP = {"StepType": "BENCHMARK", "Status": "IN_PROGRESS", "InferenceBenchmark": {"ModelConfiguration": {}}}


def failed_step(instance: str, omp: str, reason: str) -> dict:
    return {"StepType": "BENCHMARK", "Status": "FAILED", "InferenceBenchmark": {
        "EndpointConfiguration": {"InstanceType": instance},
        "ModelConfiguration": {"EnvironmentParameters": [{"Key": "OMP_NUM_THREADS", "ValueType": "String",
                                                          "Value": omp}]},
        "FailureReason": reason}}


def step_summary(steps: list[dict]) -> StepSummary:
    """Steps as a backend reports them: counted by status, with what failed and why."""
    by_status: dict[str, int] = {}
    failures = []
    for step in steps:
        by_status[step["Status"]] = by_status.get(step["Status"], 0) + 1
        if step["Status"] == "FAILED":
            benchmark = step["InferenceBenchmark"]
            failures.append(StepFailure(benchmark["EndpointConfiguration"]["InstanceType"],
                                        {p["Key"]: p["Value"] for p in
                                         benchmark["ModelConfiguration"]["EnvironmentParameters"]},
                                        benchmark["FailureReason"]))
    return StepSummary(len(steps), by_status, tuple(failures))


def snapshot(name: str, status: str, **fields) -> JobSnapshot:
    return JobSnapshot(name, status, job_arn=arn(name), creation_time=T0, **fields)


def written_ahead(spec: dict, now: datetime.datetime = T0) -> tuple[dict, str]:
    """The status after the first visit wrote the job's name ahead: what a crash before the create returned leaves."""
    trace = run(spec, {}, at(now))
    return trace.status, trace.last.effect.plan.job_name


def submitted(spec: dict, now: datetime.datetime = T0) -> tuple[dict, str]:
    status, name = written_ahead(spec, now)
    return run(spec, status, at(now, submit_result=Submitted(arn(name)))).status, name


def running(spec: dict) -> tuple[dict, str]:
    """Submitted at T0 and seen IN_PROGRESS at its first poll (T0 + 30 s)."""
    status, name = submitted(spec)
    due = T0 + seconds(SAGEMAKER.first_poll(TIMING))
    trace = run(spec, status, at(due), at(due, job=snapshot(name, "IN_PROGRESS")))
    return trace.status, name


def completed(spec: dict, rows, now: datetime.datetime = T2) -> tuple[dict, str]:
    status, name = running(spec)
    trace = run(spec, status, at(now), at(now, job=snapshot(name, "COMPLETED", completion_time=now,
                                                            recommendations=rows(name))))
    return trace.status, name


def test_timing_polls_every_30_s_at_first_slowing_to_120_s_over_an_hour():
    assert SAGEMAKER.first_poll(TIMING) == 30
    assert (TIMING.retry_first, TIMING.retry_max, TIMING.not_found_grace) == (300, 3600, 300)
    assert [SAGEMAKER.poll_interval(TIMING, s) for s in (-5, 0, 30, 1800, 3600, 7200)] == [30, 30, 30.75, 75, 120, 120]
    assert st.timestamp(TIMING.after(T0, 30.75)) == "2026-03-01T12:00:30Z"  # whole seconds, as the CRD's date-time
    assert TIMING.after(T0, 30.75) == T0 + datetime.timedelta(seconds=30)  # is written, so it reads back the same
    assert TIMING.scaled(0.5) == Timing(150, 1800, 150, 15, 60, factor=0.5)
    half = TIMING.scaled(0.5)
    assert SAGEMAKER.first_poll(half) == 15 and SAGEMAKER.poll_interval(half, 7200) == 60
    assert registry.policy("local").poll_interval(half, 7200) == 1  # a local look every 2 s, scaled


def test_the_seed_step_cost_per_inference_is_cost_per_hour_over_an_hour_of_invocations():
    metrics = SEED_STEP["InferenceBenchmark"]["Metrics"]
    computed = selection.cost_per_inference({"costPerHour": metrics["CostPerHour"],
                                             "maxInvocations": metrics["MaxInvocations"]})
    assert computed == pytest.approx(metrics["CostPerInference"], rel=1e-12)
    # SageMaker's own figure wins when it is given.
    assert selection.cost_per_inference({"costPerInference": 1e-6, "costPerHour": 1, "maxInvocations": 1}) == 1e-6
    assert step_summary([SEED_STEP]) == StepSummary(1, {"COMPLETED": 1})


def test_the_requests_are_the_seed_requests():
    default = request_for(DEFAULT)
    assert re.fullmatch(r"fraud-[0-9a-f]{8}-g1", default["JobName"])
    assert default == {
        "JobName": default["JobName"], "JobType": "Default", "RoleArn": ROLE,
        "InputConfig": {"ModelPackageVersionArn": PACKAGE, "ContainerConfig": {"SupportedInstanceTypes": [
            "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge"]}},
        "JobDescription": "rightsizer: RightsizeJob ml/fraud", "Tags": OWNER_TAGS}
    advanced = request_for(ADVANCED, generation=3)
    assert re.fullmatch(r"fraud-[0-9a-f]{8}-g3", advanced["JobName"])
    assert (advanced["JobType"], advanced["RoleArn"]) == ("Advanced", ROLE)
    assert advanced["InputConfig"] == {
        "ModelPackageVersionArn": PACKAGE, "JobDurationInSeconds": 7200,
        "TrafficPattern": {"TrafficType": "PHASES", "Phases": [
            {"InitialNumberOfUsers": 2, "SpawnRate": 2, "DurationInSeconds": 120},
            {"InitialNumberOfUsers": 6, "SpawnRate": 2, "DurationInSeconds": 120}]},
        "ResourceLimit": {"MaxNumberOfTests": 10, "MaxParallelOfTests": 3},
        "EndpointConfigurations": [{"InstanceType": "ml.m5.4xlarge", "EnvironmentParameterRanges": {
            "CategoricalParameterRanges": [{"Name": "OMP_NUM_THREADS", "Value": ["3", "4", "5"]}]}}]}
    assert advanced["StoppingConditions"] == {"MaxInvocations": 30000, "ModelLatencyThresholds": [
        {"Percentile": "P95", "ValueInMilliseconds": 100}]}
    assert advanced["Tags"] == [{"Key": "team", "Value": "fraud"}, *OWNER_TAGS]
    # The same definition keeps its name whatever the generation; only a job-defining edit changes it.
    assert request_for(ADVANCED, generation=9, current_name=advanced["JobName"])["JobName"] == advanced["JobName"]


# --- The Default job from first visit to the best configuration --------------------------------------------------

DEFAULT_BEST_REASON = ("ml.m5.2xlarge x1 (OMP_NUM_THREADS=2, SAGEMAKER_MODEL_SERVER_WORKERS=3): lowest cost per "
                       f"inference (costPerInference 2.37e-07) among 3 of 5 configurations meeting {SLA}")


def test_first_visit_writes_the_job_name_ahead_and_submits_the_rendered_request():
    request = request_for(DEFAULT)
    name = request["JobName"]
    outcome = run(DEFAULT, {}, at(T0)).last
    submitting = f"submitting the SageMaker Default job of 5 configuration(s) as {name}"
    common = {"observedGeneration": 1, "lastTransitionTime": T0_STAMP}
    assert outcome.status_patch == {
        "phase": "Pending", "jobName": name, "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "JobSubmitting", "message": submitting, **common},
            {"type": "Validated", "status": "True", "reason": "Valid", "message": "the spec is valid", **common},
            {"type": "JobSubmitted", "status": "Unknown", "reason": "Submitting", "message": f"submitting job {name}",
             **common},
            {"type": "Succeeded", "status": "Unknown", "reason": "JobPending", "message": "the job has not run yet",
             **common},
            {"type": "SLASatisfied", "status": "Unknown", "reason": "NoResults",
             "message": "no configuration has been benchmarked yet", **common},
        ]}
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),
                               EmitEvent("Normal", "JobSubmitting", submitting),
                               SubmitJob(plan_of(name, request)))
    assert outcome.effect == SubmitJob(plan_of(name, request))


def test_default_job_lifecycle_to_the_best_configuration():
    name = request_for(DEFAULT)["JobName"]
    first_poll = T0 + seconds(30)
    in_progress = snapshot(name, "IN_PROGRESS", steps=step_summary([SEED_STEP] + [RUNNING_STEP] * 4))
    trace = run(DEFAULT, {},
                at(T0),                                            # 0: write ahead, SubmitJob
                at(T0, submit_result=Submitted(arn(name))),        # 1: submitted: poll in 30 s
                at(first_poll - seconds(1)),                       # 2: not due: nothing
                at(first_poll),                                    # 3: due: DescribeJob
                at(first_poll, job=in_progress))                   # 4: in progress
    assert trace.effects == [SubmitJob(plan_of(name, request_for(DEFAULT))), None, None, DescribeJob(name), None]

    # 1: Submitted -> JobSubmitted True, phase Submitted, the first poll 30 s later.
    assert trace.outcomes[1].status_patch == {
        "jobArn": arn(name), "startTime": T0_STAMP, "phase": "Submitted", "backendStatus": "PENDING",
        "nextPollTime": "2026-03-01T12:00:30Z", "conditions": trace.outcomes[1].status_patch["conditions"]}
    conditions = by_type(trace.outcomes[1].status_patch["conditions"])
    assert conditions["JobSubmitted"] == {"type": "JobSubmitted", "status": "True", "reason": "JobSubmitted",
                                          "message": f"job {name} was submitted", "observedGeneration": 1,
                                          "lastTransitionTime": T0_STAMP}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"], conditions["Ready"]["message"]) == \
        ("Unknown", "JobInProgress", f"job {name} is PENDING")
    assert trace.outcomes[1].actions == (EmitEvent("Normal", "JobSubmitted", f"job {name} was submitted"),
                                         EmitEvent("Normal", "JobInProgress", f"job {name} is PENDING"))
    # 2 and 3: nothing before the poll time; at it, one look and no write.
    assert trace.outcomes[2] == Outcome((), {})
    assert trace.outcomes[3] == Outcome((DescribeJob(name),), {})
    # 4: IN_PROGRESS with its steps.
    progress = f"job {name} is IN_PROGRESS (1 of 5 benchmarks completed)"
    patch = trace.outcomes[4].status_patch
    assert {key: value for key, value in patch.items() if key != "conditions"} == {
        "backendStatus": "IN_PROGRESS", "lastPolledTime": "2026-03-01T12:00:30Z", "phase": "InProgress",
        "steps": {"total": 5, "byStatus": {"COMPLETED": 1, "IN_PROGRESS": 4}, "failures": []},
        "nextPollTime": st.timestamp(first_poll + seconds(30.75))}
    assert [(c["type"], c["status"], c["reason"], c["message"], c["lastTransitionTime"]) for c in patch["conditions"]
            if c["type"] in ("Ready", "Succeeded")] == [("Ready", "Unknown", "JobInProgress", progress, T0_STAMP),
                                                        ("Succeeded", "Unknown", "JobInProgress", progress, T0_STAMP)]
    assert trace.outcomes[4].actions == ()  # Ready's reason did not change: no second JobInProgress Event
    assert trace.status["nextPollTime"] == "2026-03-01T12:01:00Z"
    assert_settled(DEFAULT, trace.status, first_poll + seconds(29))

    # The poll interval grows with the time since the start, up to 120 s.
    status = trace.status
    for elapsed, interval in ((60, 31.5), (1800, 75), (3600, 120), (7000, 120)):
        now = T0 + seconds(elapsed)
        more = run(DEFAULT, status, at(now), at(now, job=in_progress))
        assert more.effects == [DescribeJob(name), None] and more.events == []
        assert more.status["nextPollTime"] == st.timestamp(now + seconds(interval))
        assert SAGEMAKER.poll_interval(TIMING, elapsed) == interval
        status = more.status

    # COMPLETED with the seed's five rows.
    done_at = T0 + seconds(7200)
    finished = snapshot(name, "COMPLETED", completion_time=T0 + seconds(7100), recommendations=default_recommendations(name),
                        steps=step_summary([SEED_STEP] * 5))
    done = run(DEFAULT, status, at(done_at), at(done_at, job=finished))
    assert done.effects == [DescribeJob(name), None]
    status, stamp = done.status, st.timestamp(done_at)
    assert set(status) == {"observedGeneration", "phase", "conditions", "jobName", "jobArn", "startTime",
                           "backendStatus", "lastPolledTime", "completionTime", "steps", "recommendations",
                           "recommendationsTotal", "best"}  # nextPollTime removed: nothing left to poll
    assert (status["phase"], status["backendStatus"], status["completionTime"], status["lastPolledTime"]) == \
        ("Completed", "COMPLETED", "2026-03-01T13:58:20Z", stamp)
    assert status["steps"] == {"total": 5, "byStatus": {"COMPLETED": 5}, "failures": []}
    assert [(c["type"], c["status"], c["reason"], c["message"], c["lastTransitionTime"])
            for c in status["conditions"]] == [
        ("Ready", "True", "BestSelected", DEFAULT_BEST_REASON, stamp),
        ("Validated", "True", "Valid", "the spec is valid", T0_STAMP),
        ("JobSubmitted", "True", "JobSubmitted", f"job {name} was submitted", T0_STAMP),
        ("Succeeded", "True", "JobCompleted", f"job {name} completed (5 of 5 benchmarks completed)", stamp),
        ("SLASatisfied", "True", "CandidateMeetsSLA", DEFAULT_BEST_REASON, stamp)]
    # Every row, best first, then the others by the objective; cost per inference computed where SageMaker gave none.
    rows = status["recommendations"]
    assert status["recommendationsTotal"] == len(rows) == 5
    assert [(r["instanceType"], r["meetsSLA"], r["slaMessage"]) for r in rows] == [
        ("ml.m5.2xlarge", True, "meets the SLA"), ("ml.m5.4xlarge", True, "meets the SLA"),
        ("ml.m5.12xlarge", True, "meets the SLA"), ("ml.m5.large", False, "13793 invocations/min < 30000"),
        ("ml.m5.xlarge", False, "15189 invocations/min < 30000")]
    by_instance = {row[0]: row for row in DEFAULT_RESULTS}
    for row in rows:
        _, omp, cost, invocations, latency, cpu, memory, workers = by_instance[row["instanceType"]]
        assert row["metrics"] == {"costPerHour": cost, "maxInvocations": invocations, "modelLatency": latency,
                                  "cpuUtilization": cpu, "memoryUtilization": memory,
                                  "costPerInference": pytest.approx(cost / (invocations * 60), rel=1e-12),
                                  "maxInvocationsPerInstance": invocations}  # one instance: the endpoint's
        assert row["environment"] == {"OMP_NUM_THREADS": omp, "SAGEMAKER_MODEL_SERVER_WORKERS": workers}
        assert row["initialInstanceCount"] == 1
    assert status["best"] == {
        "recommendationId": f"{name}/00000004", "instanceType": "ml.m5.2xlarge", "initialInstanceCount": 1,
        "environment": {"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"},
        "metrics": {"costPerHour": 0.461, "maxInvocations": 32427, "modelLatency": 13, "cpuUtilization": 248.673,
                    "memoryUtilization": 1.43109, "costPerInference": pytest.approx(0.461 / (32427 * 60)),
                    "maxInvocationsPerInstance": 32427},
        "reason": DEFAULT_BEST_REASON}
    # A Normal Event per transition, each once.
    assert done.events == [EmitEvent("Normal", "JobCompleted", f"job {name} completed (5 of 5 benchmarks completed)"),
                           EmitEvent("Normal", "CandidateMeetsSLA", DEFAULT_BEST_REASON),
                           EmitEvent("Normal", "BestSelected", DEFAULT_BEST_REASON)]
    assert_settled(DEFAULT, status, done_at + datetime.timedelta(days=3))


def test_the_whole_default_lifecycle_emits_each_event_once():
    name = request_for(DEFAULT)["JobName"]
    polls = [T0 + seconds(s) for s in (30, 61, 93, 125)]
    observations = [at(T0), at(T0, submit_result=Submitted(arn(name)))]
    for index, now in enumerate(polls):
        status = "COMPLETED" if index == len(polls) - 1 else "IN_PROGRESS"
        rows = default_recommendations(name) if status == "COMPLETED" else ()
        steps = step_summary([SEED_STEP] * 5 if status == "COMPLETED" else
                             [SEED_STEP] * (index + 1) + [RUNNING_STEP] * (4 - index))
        observations += [at(now), at(now, job=snapshot(name, status, recommendations=rows, steps=steps))]
    trace = run(DEFAULT, {}, *observations)
    assert [outcome.effect.__class__.__name__ for outcome in trace.outcomes] == \
        ["SubmitJob", "NoneType"] + ["DescribeJob", "NoneType"] * 4
    assert [(e.type, e.reason) for e in trace.events] == [
        ("Normal", "Valid"), ("Normal", "JobSubmitting"), ("Normal", "JobSubmitted"), ("Normal", "JobInProgress"),
        ("Normal", "JobCompleted"), ("Normal", "CandidateMeetsSLA"), ("Normal", "BestSelected")]
    assert trace.status["best"]["instanceType"] == "ml.m5.2xlarge"


def test_advanced_job_selects_from_the_six_seed_rows():
    status, name = completed(ADVANCED, advanced_recommendations)
    reason = ("ml.m5.2xlarge x2 (OMP_NUM_THREADS=4): lowest cost per inference (costPerInference 3.61e-07) among "
              f"6 of 6 configurations meeting P95 {SLA}")  # its stopping condition names the percentile
    assert status["best"]["reason"] == reason and status["best"]["recommendationId"] == f"{name}/00000001"
    assert (status["best"]["instanceType"], status["best"]["initialInstanceCount"], status["best"]["environment"]) == \
        ("ml.m5.2xlarge", 2, {"OMP_NUM_THREADS": "4"})
    assert [(r["instanceType"], r["environment"]["OMP_NUM_THREADS"]) for r in status["recommendations"]] == [
        ("ml.m5.2xlarge", "4"), ("ml.m5.2xlarge", "3"), ("ml.m5.2xlarge", "5"),
        ("ml.m5.4xlarge", "5"), ("ml.m5.4xlarge", "4"), ("ml.m5.4xlarge", "3")]
    assert all(row["meetsSLA"] for row in status["recommendations"])
    assert summary(status["conditions"]) == [
        ("Ready", "True", "BestSelected"), ("Validated", "True", "ValidWithWarnings"),
        ("JobSubmitted", "True", "JobSubmitted"), ("Succeeded", "True", "JobCompleted"),
        ("SLASatisfied", "True", "CandidateMeetsSLA"), ("AwaitingApproval", "True", "ApprovalRequired"),
        ("Promoted", "False", "AwaitingApproval")]
    assert status["promotion"]["state"] == "AwaitingApproval"  # the sample promotes by hand: nothing is touched
    assert status["warnings"] == ["spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"]
    assert_settled(ADVANCED, status, T2 + datetime.timedelta(hours=5))


def test_no_candidate_meeting_the_sla_is_not_ready():
    spec = copy.deepcopy(DEFAULT)
    spec["selection"]["constraints"]["minInvocationsPerMinute"] = 40000
    status, name = running(spec)
    trace = run(spec, status, at(T2), at(T2, job=snapshot(name, "COMPLETED", recommendations=default_recommendations(name))))
    reason = "none of the 5 configurations meets latency <= 100 ms and >= 40000 invocations/min"
    conditions = by_type(trace.status["conditions"])
    assert (conditions["SLASatisfied"]["status"], conditions["SLASatisfied"]["reason"],
            conditions["SLASatisfied"]["message"]) == ("False", "NoCandidateMeetsSLA", reason)
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"], conditions["Ready"]["message"]) == \
        ("False", "NoCandidateMeetsSLA", reason)
    assert (conditions["Succeeded"]["status"], trace.status["phase"]) == ("True", "Completed")
    assert "best" not in trace.status
    assert [row["meetsSLA"] for row in trace.status["recommendations"]] == [False] * 5
    # SLASatisfied and Ready say the same thing: one Warning.
    assert trace.events == [EmitEvent("Normal", "JobCompleted", f"job {name} completed"),
                            EmitEvent("Warning", "NoCandidateMeetsSLA", reason)]
    assert_settled(spec, trace.status, T2 + seconds(600))


# --- Failed and stopped jobs ------------------------------------------------------------------------------------

def test_failed_job_reports_the_reason_and_every_failed_step():
    status, name = running(ADVANCED)
    reason = "INVALID_INPUT : 1. Model returned 4xx or 5xx error code"
    steps = step_summary([failed_step("ml.m5.4xlarge", "3", "ModelError: the model returned a 500"),
                          failed_step("ml.m5.4xlarge", "5", "ModelError: timed out"), RUNNING_STEP])
    trace = run(ADVANCED, status, at(T1), at(T1, job=snapshot(name, "FAILED", failure_reason=reason, steps=steps,
                                                              completion_time=T1)))
    message = (f"job {name} failed: {reason}; failed benchmarks: ml.m5.4xlarge (OMP_NUM_THREADS=3): ModelError: "
               "the model returned a 500; ml.m5.4xlarge (OMP_NUM_THREADS=5): ModelError: timed out")
    conditions = by_type(trace.status["conditions"])
    for kind in ("Succeeded", "Ready"):
        assert (conditions[kind]["status"], conditions[kind]["reason"], conditions[kind]["message"],
                conditions[kind]["lastTransitionTime"]) == ("False", "JobFailed", message, T1_STAMP)
    assert (conditions["SLASatisfied"]["status"], conditions["SLASatisfied"]["reason"],
            conditions["SLASatisfied"]["message"]) == ("Unknown", "NoResults", "the job did not complete")
    assert (trace.status["phase"], trace.status["backendStatus"], trace.status["failureReason"]) == \
        ("Failed", "FAILED", reason)
    assert trace.status["steps"] == {"total": 3, "byStatus": {"FAILED": 2, "IN_PROGRESS": 1}, "failures": [
        {"instanceType": "ml.m5.4xlarge", "environment": {"OMP_NUM_THREADS": "3"},
         "failureReason": "ModelError: the model returned a 500"},
        {"instanceType": "ml.m5.4xlarge", "environment": {"OMP_NUM_THREADS": "5"}, "failureReason": "ModelError: timed out"}]}
    assert "best" not in trace.status and "nextPollTime" not in trace.status
    assert trace.events == [EmitEvent("Warning", "JobFailed", message)]
    assert not job_may_be_running(JobState.from_storage(trace.status))
    assert_settled(ADVANCED, trace.status, T2)


def test_failed_job_without_a_reason_says_so():
    status, name = running(DEFAULT)
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "FAILED")))
    assert by_type(trace.status["conditions"])["Ready"]["message"] == f"job {name} failed: SageMaker gave no reason"
    assert "failureReason" not in trace.status


def test_a_stopped_job_selects_from_what_it_measured_and_says_the_selection_is_partial():
    status, name = running(DEFAULT)
    partial = default_recommendations(name)[:2]
    steps = StepSummary(5, {"COMPLETED": 2, "STOPPED": 3})
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "STOPPED", recommendations=partial, steps=steps)))
    stopped = f"job {name} was stopped before it completed (2 of 5 benchmarks completed)"
    why = "the job was stopped with 3 benchmark(s) unfinished"
    reason = (f"ml.m5.4xlarge x1 (OMP_NUM_THREADS=3, SAGEMAKER_MODEL_SERVER_WORKERS=3): lowest cost per inference "
              f"(costPerInference 4.71e-07) among 1 of 2 configurations meeting {SLA}")
    conditions = by_type(trace.status["conditions"])
    assert (conditions["Succeeded"]["status"], conditions["Succeeded"]["reason"], conditions["Succeeded"]["message"]) \
        == ("False", "JobStopped", stopped)
    # Kept and judged, as the SDK uses a STOPPED job's results; Ready's reason says the selection is partial.
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"], conditions["Ready"]["message"]) == \
        ("True", "BestSelectedFromPartialResults", f"{reason} (partial results: {why})")
    assert (conditions["SLASatisfied"]["status"], conditions["SLASatisfied"]["reason"]) == ("True", "CandidateMeetsSLA")
    assert trace.status["phase"] == "Stopped"
    assert (trace.status["best"]["instanceType"], trace.status["best"]["partial"]) == ("ml.m5.4xlarge", why)
    assert [(r["instanceType"], r["meetsSLA"]) for r in trace.status["recommendations"]] == \
        [("ml.m5.4xlarge", True), ("ml.m5.xlarge", False)]
    assert [(e.type, e.reason) for e in trace.events] == [
        ("Warning", "JobStopped"), ("Normal", "CandidateMeetsSLA"), ("Normal", "BestSelectedFromPartialResults")]
    assert_settled(DEFAULT, trace.status, T2)

    # A policy edit judges the same rows again, and the selection stays marked partial.
    stricter = {**DEFAULT, "selection": {"objective": "ModelLatency"}}
    edited = run(stricter, trace.status, at(T2, generation=2))
    assert edited.status["best"]["partial"] == why
    assert by_type(edited.status["conditions"])["Ready"]["reason"] == "BestSelectedFromPartialResults"


def test_a_job_stopped_before_measuring_anything_has_nothing_to_select():
    status, name = running(DEFAULT)
    steps = StepSummary(5, {"STOPPED": 5})
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "STOPPED", steps=steps)))
    message = f"job {name} was stopped before it measured any configuration (0 of 5 benchmarks completed)"
    conditions = by_type(trace.status["conditions"])
    assert [(conditions[k]["status"], conditions[k]["reason"], conditions[k]["message"]) for k in ("Ready", "Succeeded")] \
        == [("False", "JobStopped", message)] * 2
    assert conditions["SLASatisfied"]["status"] == "Unknown"
    assert trace.status["phase"] == "Stopped" and "best" not in trace.status
    assert trace.events == [EmitEvent("Warning", "JobStopped", message)]


def test_a_job_that_ran_out_of_time_completes_with_a_partial_selection():
    status, name = running(DEFAULT)
    ended = "spec.jobDurationInSeconds (600 s) was reached; 3 configurations not measured"
    done = snapshot(name, "COMPLETED", recommendations=default_recommendations(name)[:2],
                    steps=StepSummary(5, {"COMPLETED": 2, "STOPPED": 3}))
    trace = run(DEFAULT, status, at(T1), at(T1, job=dataclasses.replace(done, ended_early=ended)))
    conditions = by_type(trace.status["conditions"])
    assert conditions["Succeeded"]["message"] == f"job {name} completed (2 of 5 benchmarks completed); {ended}"
    assert conditions["Ready"]["reason"] == "BestSelectedFromPartialResults"
    assert conditions["Ready"]["message"].endswith(f" (partial results: {ended})")
    assert trace.status["best"]["partial"] == ended and trace.status["phase"] == "Completed"
    # Without the backend's word, unfinished steps at the end say it.
    trace = run(DEFAULT, status, at(T1), at(T1, job=done))
    assert trace.status["best"]["partial"] == "the job ended with 3 benchmark(s) unfinished"


def test_a_deleted_job_ends_like_a_failure():
    status, name = running(DEFAULT)
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "DELETED")))
    message = f"job {name} is DELETED, which no operation of this operator causes"
    assert summary(trace.status["conditions"])[0] == ("Ready", "False", "JobDeleted")
    assert trace.status["phase"] == "Failed" and trace.events == [EmitEvent("Warning", "JobDeleted", message)]


# --- Restart safety: the written-ahead name is looked up before anything is created -------------------------------

def test_a_written_ahead_job_that_exists_is_adopted_not_resubmitted():
    status, name = written_ahead(DEFAULT)
    steps = step_summary([SEED_STEP, RUNNING_STEP])
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "IN_PROGRESS", steps=steps)))
    assert trace.outcomes[0] == Outcome((DescribeJob(name),), {})
    adopted = f"job {name} was created by an earlier attempt"
    assert trace.outcomes[1].effect is None
    conditions = by_type(trace.status["conditions"])
    assert (conditions["JobSubmitted"]["status"], conditions["JobSubmitted"]["reason"],
            conditions["JobSubmitted"]["message"], conditions["JobSubmitted"]["lastTransitionTime"]) == \
        ("True", "JobAdopted", adopted, T1_STAMP)
    assert (conditions["Ready"]["reason"], conditions["Ready"]["message"]) == \
        ("JobInProgress", f"job {name} is IN_PROGRESS (1 of 2 benchmarks completed)")
    assert (trace.status["jobArn"], trace.status["startTime"], trace.status["phase"], trace.status["nextPollTime"]) == \
        (arn(name), T1_STAMP, "InProgress", st.timestamp(T1 + seconds(30)))
    assert trace.events == [EmitEvent("Normal", "JobAdopted", adopted),
                            EmitEvent("Normal", "JobInProgress", f"job {name} is IN_PROGRESS (1 of 2 benchmarks completed)")]


def test_a_written_ahead_job_that_completed_meanwhile_is_adopted_and_selected_from():
    status, name = written_ahead(DEFAULT)
    trace = run(DEFAULT, status, at(T2), at(T2, job=snapshot(name, "COMPLETED",
                                                             recommendations=default_recommendations(name))))
    assert trace.effects == [DescribeJob(name), None]
    assert summary(trace.status["conditions"]) == [
        ("Ready", "True", "BestSelected"), ("Validated", "True", "Valid"), ("JobSubmitted", "True", "JobAdopted"),
        ("Succeeded", "True", "JobCompleted"), ("SLASatisfied", "True", "CandidateMeetsSLA")]
    assert trace.status["best"]["reason"] == DEFAULT_BEST_REASON


def test_a_written_ahead_job_that_does_not_exist_is_submitted_under_the_same_name():
    status, name = written_ahead(DEFAULT)
    trace = run(DEFAULT, status, at(T1), at(T1, job_missing=True), at(T1, submit_result=Submitted(arn(name))))
    assert trace.outcomes[0] == Outcome((DescribeJob(name),), {})
    assert trace.outcomes[1] == Outcome((SubmitJob(plan_of(name, request_for(DEFAULT))),), {})  # already named
    assert trace.status["jobName"] == name
    assert summary(trace.status["conditions"])[2] == ("JobSubmitted", "True", "JobSubmitted")
    assert trace.status["nextPollTime"] == st.timestamp(T1 + seconds(30))


def test_an_adopted_submit_result_is_a_submission_plus_the_snapshot():
    status, name = written_ahead(DEFAULT)
    existing = snapshot(name, "IN_PROGRESS", steps=step_summary([SEED_STEP] + [RUNNING_STEP] * 4))
    trace = run(DEFAULT, status, at(T0, submit_result=Adopted(existing)))
    adopted = f"job {name} was created by an earlier attempt"
    assert trace.last.effect is None
    assert {key: trace.status[key] for key in ("jobArn", "startTime", "phase", "backendStatus", "nextPollTime",
                                               "lastPolledTime")} == {
        "jobArn": arn(name), "startTime": T0_STAMP, "phase": "InProgress", "backendStatus": "IN_PROGRESS",
        "nextPollTime": "2026-03-01T12:00:30Z", "lastPolledTime": T0_STAMP}
    assert trace.status["steps"]["byStatus"] == {"COMPLETED": 1, "IN_PROGRESS": 4}
    assert by_type(trace.status["conditions"])["JobSubmitted"]["reason"] == "JobAdopted"
    assert trace.events == [EmitEvent("Normal", "JobAdopted", adopted),
                            EmitEvent("Normal", "JobInProgress", f"job {name} is IN_PROGRESS (1 of 5 benchmarks completed)")]
    assert_settled(DEFAULT, trace.status, T0 + seconds(29))


def test_a_refused_look_at_a_written_ahead_job_waits_instead_of_spinning():
    status, name = written_ahead(DEFAULT)
    denied = Rejected("AccessDenied", "AccessDeniedException: not authorized to perform: "
                      "sagemaker:DescribeInferenceRecommendationsJob", retryable_later=True)
    trace = run(DEFAULT, status, at(T1), at(T1, rejected=denied))
    retry_at = T1 + seconds(300)
    message = f"cannot reach SageMaker for job {name}: {denied.message}; retrying at {st.timestamp(retry_at)}"
    assert trace.last.effect is None  # neither another describe nor a create while the look is refused
    assert trace.last.actions == (EmitEvent("Warning", "AccessDenied", message),)
    conditions = by_type(trace.status["conditions"])
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"], conditions["Ready"]["message"]) == \
        ("False", "AccessDenied", message)
    assert conditions["JobSubmitted"]["status"] == "Unknown"  # the job may still exist: deletion must stop it
    assert job_may_be_running(JobState.from_storage(trace.status)) and trace.status["nextPollTime"] == st.timestamp(retry_at)
    assert_settled(DEFAULT, trace.status, retry_at - seconds(1))
    later = run(DEFAULT, trace.status, at(retry_at), at(retry_at, job=snapshot(name, "IN_PROGRESS")))
    assert later.effects == [DescribeJob(name), None]
    assert summary(later.status["conditions"])[0] == ("Ready", "Unknown", "JobInProgress")


# --- Policy edits and job-defining edits -------------------------------------------------------------------------

def latency_policy(spec: dict) -> dict:
    edited = copy.deepcopy(spec)
    edited["selection"] = {"objective": "ModelLatency",
                           "constraints": {**spec["selection"]["constraints"], "maxCostPerHour": 2.0}}
    return edited


def test_a_selection_edit_reselects_from_the_status_without_any_backend_action():
    status, name = completed(DEFAULT, default_recommendations)
    edited = latency_policy(DEFAULT)
    assert request_for(edited, 2, current_name=name)["JobName"] == name  # the job is still the one asked for
    trace = run(edited, status, at(T2 + seconds(60), generation=2))
    assert trace.last.effect is None
    reason = ("ml.m5.4xlarge x1 (OMP_NUM_THREADS=3, SAGEMAKER_MODEL_SERVER_WORKERS=3): lowest model latency "
              f"(modelLatency 9) among 2 of 5 configurations meeting {SLA} and <= 2 USD/h")
    after = trace.status
    assert after["jobName"] == name and after["observedGeneration"] == 2
    assert (after["best"]["instanceType"], after["best"]["recommendationId"], after["best"]["reason"]) == \
        ("ml.m5.4xlarge", f"{name}/00000001", reason)
    assert [(r["instanceType"], r["meetsSLA"], r["slaMessage"]) for r in after["recommendations"]] == [
        ("ml.m5.4xlarge", True, "meets the SLA"), ("ml.m5.2xlarge", True, "meets the SLA"),
        ("ml.m5.12xlarge", False, "2.765 USD/h > 2"), ("ml.m5.xlarge", False, "15189 invocations/min < 30000"),
        ("ml.m5.large", False, "13793 invocations/min < 30000")]
    ready = by_type(after["conditions"])["Ready"]
    # Still Ready True BestSelected: the same status, so the transition time stays; one Event says the best moved.
    assert (ready["status"], ready["reason"], ready["message"], ready["observedGeneration"],
            ready["lastTransitionTime"]) == ("True", "BestSelected", reason, 2, st.timestamp(T2))
    assert trace.events == [EmitEvent("Normal", "BestChanged", f"the selection now prefers {reason}")]
    for key in ("jobArn", "startTime", "completionTime", "backendStatus", "recommendationsTotal"):
        assert after[key] == status[key]
    assert_settled(edited, after, T2 + seconds(120), generation=2)
    # Back to the original policy: back to the original choice.
    back = run(DEFAULT, after, at(T2 + seconds(180), generation=3)).status
    assert back["best"] == status["best"] and back["recommendations"] == status["recommendations"]


def test_a_selection_edit_of_a_running_job_looks_at_once():
    status, name = running(DEFAULT)
    not_due = T0 + seconds(31)
    assert st.timestamp(not_due) < status["nextPollTime"]
    assert reconcile(DEFAULT, status, at(not_due)) == Outcome((), {})
    assert run(latency_policy(DEFAULT), status, at(not_due, generation=2)).last.effect == DescribeJob(name)


def test_a_job_defining_edit_stops_the_running_job_then_submits_a_new_one():
    status, old = running(ADVANCED)
    edited = copy.deepcopy(ADVANCED)
    edited["environmentParameterRanges"] = {"OMP_NUM_THREADS": ["4", "5", "6"]}
    request = request_for(edited, 2, current_name=old)
    new = request["JobName"]
    assert new != old and new.endswith("-g2") and re.fullmatch(r"fraud-[0-9a-f]{8}-g2", new)
    assert request["InputConfig"]["EndpointConfigurations"][0]["EnvironmentParameterRanges"] == \
        {"CategoricalParameterRanges": [{"Name": "OMP_NUM_THREADS", "Value": ["4", "5", "6"]}]}
    trace = run(edited, status, at(T1, generation=2), at(T1, generation=2, stop_result=StopDone()))
    replacing = f"the spec changed: stopping job {old} before submitting {new}"
    # First the old job is stopped; the status still names it.
    assert trace.outcomes[0].actions == (EmitEvent("Normal", "JobReplacing", replacing), StopJob(old))
    assert trace.outcomes[0].status_patch["observedGeneration"] == 2
    assert "jobName" not in trace.outcomes[0].status_patch
    # Then its fields go, and the new name is written ahead of its submission.
    second = trace.outcomes[1]
    assert second.effect == SubmitJob(plan_of(new, request))
    assert EmitEvent("Normal", "JobReplaced", f"the spec changed: job {old} is replaced by {new}") in second.actions
    assert [e.reason for e in events_of(second)] == ["JobSubmitting", "JobReplaced"]
    assert {key: value for key, value in second.status_patch.items() if key != "conditions"} == {
        "jobName": new, "jobArn": None, "backendStatus": None, "startTime": None, "lastPolledTime": None,
        "nextPollTime": None, "phase": "Pending"}
    assert set(trace.status) == {"observedGeneration", "phase", "conditions", "jobName", "warnings"}
    assert summary(trace.status["conditions"]) == [
        ("Ready", "Unknown", "JobSubmitting"), ("Validated", "True", "ValidWithWarnings"),
        ("JobSubmitted", "Unknown", "Submitting"), ("Succeeded", "Unknown", "JobPending"),
        ("SLASatisfied", "Unknown", "NoResults")]
    # The new job then runs its course.
    done = run(edited, trace.status, at(T1, generation=2, submit_result=Submitted(arn(new))),
               at(T2, generation=2), at(T2, generation=2, job=snapshot(new, "COMPLETED",
                                                                       recommendations=advanced_recommendations(new))))
    assert done.effects == [None, DescribeJob(new), None]
    assert done.status["jobName"] == new and summary(done.status["conditions"])[0] == ("Ready", "True", "BestSelected")
    assert_settled(edited, done.status, T2 + seconds(60), generation=2)


def test_a_job_defining_edit_after_the_job_finished_submits_without_stopping():
    status, old = completed(ADVANCED, advanced_recommendations)
    edited = copy.deepcopy(ADVANCED)
    edited["environmentParameterRanges"] = {"OMP_NUM_THREADS": ["4", "5", "6"]}
    new = request_for(edited, 2, current_name=old)["JobName"]
    trace = run(edited, status, at(T2 + seconds(60), generation=2))
    assert trace.effects == [SubmitJob(plan_of(new, request_for(edited, 2)))]
    assert EmitEvent("Normal", "JobReplaced", f"the spec changed: job {old} is replaced by {new}") in trace.events
    for key in ("recommendations", "recommendationsTotal", "best", "completionTime", "jobArn", "startTime"):
        assert key in status and trace.last.status_patch[key] is None and key not in trace.status
    assert trace.status["jobName"] == new and trace.status["phase"] == "Pending"


def test_a_refused_stop_of_the_replaced_job_retries_later():
    status, old = running(ADVANCED)
    edited = copy.deepcopy(ADVANCED)
    edited["environmentParameterRanges"] = {"OMP_NUM_THREADS": ["4", "5", "6"]}
    denied = Rejected("AccessDenied", "AccessDeniedException: no sagemaker:StopInferenceRecommendationsJob", True)
    trace = run(edited, status, at(T1, generation=2), at(T1, generation=2, rejected=denied))
    retry_at = st.timestamp(T1 + seconds(300))
    message = f"cannot stop job {old}, which the spec no longer describes: {denied.message}; retrying at {retry_at}"
    assert trace.effects == [StopJob(old), None]
    assert trace.outcomes[1].actions == (EmitEvent("Warning", "AccessDenied", message),)
    assert (trace.status["jobName"], trace.status["nextPollTime"]) == (old, retry_at)
    assert summary(trace.status["conditions"])[0] == ("Ready", "False", "AccessDenied")


# --- Refused submissions ----------------------------------------------------------------------------------------

def test_no_credentials_says_the_job_was_not_submitted_and_retries_later():
    status, name = written_ahead(DEFAULT)
    no_credentials = Rejected("NoCredentials", "the operator has no AWS credentials (IRSA, EKS Pod Identity or the "
                              "environment)", retryable_later=True, unsent=True)
    trace = run(DEFAULT, status, at(T0, submit_result=no_credentials))
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NoCredentials")
    # No request left the operator: SageMaker refused nothing.
    assert ready["message"].startswith(f"job {name} was not submitted to SageMaker: the operator has no AWS "
                                       f"credentials") and "refused" not in ready["message"]
    assert trace.status["nextPollTime"] == st.timestamp(T0 + seconds(300))


def test_a_job_the_backend_could_not_send_is_refused_in_one_visit_with_nothing_written_ahead():
    # The shell asks the backend before a submit: with no credentials, nothing could leave the operator, so the
    # job is refused at once, as the refused call would have ended it, with no write-ahead and no SubmitJob.
    no_credentials = Rejected("NoCredentials", "the operator has no AWS credentials (IRSA, EKS Pod Identity or the "
                              "environment)", retryable_later=True, unsent=True)
    status, _ = written_ahead(DEFAULT)
    by_the_call = run(DEFAULT, status, at(T0, submit_result=no_credentials))
    first = dataclasses.replace(at(T0), unsendable=no_credentials)
    trace = run(DEFAULT, {}, first)
    assert [outcome.effect for outcome in trace.outcomes] == [None]
    assert trace.status == by_the_call.status
    assert [(e.type, e.reason) for e in trace.events] == [("Normal", "Valid"), ("Warning", "NoCredentials")]
    # The retry is due at nextPollTime: asked again then, and refused again as attempt 2.
    retry = dataclasses.replace(at(T0 + seconds(300)), unsendable=no_credentials)
    again = run(DEFAULT, trace.status, retry)
    assert again.last.effect is None and again.status["submitAttempts"] == 2
    assert by_type(again.status["conditions"])["Ready"]["message"].endswith(
        f"(attempt 2; next attempt at {st.timestamp(T0 + seconds(900))})")
    # Credentials found by then: the submit goes ahead, written ahead as ever.
    sent = run(DEFAULT, trace.status, at(T0 + seconds(300)))
    assert isinstance(sent.last.effect, SubmitJob)
    assert by_type(sent.status["conditions"])["Ready"]["reason"] == "JobSubmitting"


def test_access_denied_is_retried_with_a_doubling_backoff():
    status, name = written_ahead(DEFAULT)
    trace = run(DEFAULT, status, at(T0, submit_result=DENIED))
    retry_at = T0 + seconds(300)
    message = (f"SageMaker refused job {name}: {DENIED.message} (attempt 1; next attempt at "
               f"{st.timestamp(retry_at)})")
    status = trace.status
    conditions = by_type(status["conditions"])
    for kind in ("JobSubmitted", "Ready"):
        assert (conditions[kind]["status"], conditions[kind]["reason"], conditions[kind]["message"]) == \
            ("False", "AccessDenied", message)
    assert (status["submitAttempts"], status["nextPollTime"]) == (1, st.timestamp(retry_at))
    assert trace.events == [EmitEvent("Warning", "AccessDenied", message)]
    assert not job_may_be_running(JobState.from_storage(status))  # refused: nothing was created
    assert_settled(DEFAULT, status, retry_at - seconds(1))

    now = retry_at
    for attempt, delay in ((2, 600), (3, 1200), (4, 2400), (5, 3600), (6, 3600)):
        retry = run(DEFAULT, status, at(now - seconds(1)), at(now), at(now, submit_result=DENIED))
        assert retry.effects == [None, SubmitJob(plan_of(name, request_for(DEFAULT))), None]
        assert retry.outcomes[0] == Outcome((), {})
        status = retry.status
        assert (status["submitAttempts"], status["nextPollTime"]) == (attempt, st.timestamp(now + seconds(delay)))
        assert f"(attempt {attempt}; next attempt at {st.timestamp(now + seconds(delay))})" in \
            by_type(status["conditions"])["Ready"]["message"]
        now += seconds(delay)

    fixed = run(DEFAULT, status, at(now), at(now, submit_result=Submitted(arn(name))))
    assert "submitAttempts" not in fixed.status
    assert fixed.status["nextPollTime"] == st.timestamp(now + seconds(30))
    assert summary(fixed.status["conditions"])[:3] == [("Ready", "Unknown", "JobInProgress"),
                                                       ("Validated", "True", "Valid"),
                                                       ("JobSubmitted", "True", "JobSubmitted")]


def test_a_validation_failure_is_never_retried_for_the_same_generation():
    status, name = written_ahead(DEFAULT)
    refused = Rejected("ValidationFailed", "Model package does not specify Domain, a mandatory parameter", False)
    trace = run(DEFAULT, status, at(T0, submit_result=refused))
    message = (f"SageMaker refused job {name}: Model package does not specify Domain, a mandatory parameter "
               "(not retried until a job-defining field of the spec changes)")
    assert summary(trace.status["conditions"])[:3] == [("Ready", "False", "ValidationFailed"),
                                                       ("Validated", "True", "Valid"),
                                                       ("JobSubmitted", "False", "ValidationFailed")]
    assert by_type(trace.status["conditions"])["Ready"]["message"] == message
    assert "nextPollTime" not in trace.status and trace.status["submitAttempts"] == 1
    assert trace.status["phase"] == "Failed"  # refused for good: not Pending
    assert trace.events == [EmitEvent("Warning", "ValidationFailed", message)]
    for later in (T1, T2, T2 + datetime.timedelta(days=30)):
        assert_settled(DEFAULT, trace.status, later)
    # A job-defining edit is a new question: it is submitted under its own name.
    edited = {**DEFAULT, "containerConfig": {"domain": "MACHINE_LEARNING"}}
    new = request_for(edited, 2)["JobName"]
    again = run(edited, trace.status, at(T2, generation=2))
    assert again.last.effect == SubmitJob(plan_of(new, request_for(edited, 2)))
    assert "submitAttempts" not in again.status


def test_a_name_taken_by_someone_else_is_not_ready():
    status, name = written_ahead(DEFAULT)
    taken = NameTaken(f"a SageMaker job named {name} exists and its tags do not name this RightsizeJob (uid uid-1)")
    trace = run(DEFAULT, status, at(T0, submit_result=taken))
    conditions = by_type(trace.status["conditions"])
    for kind in ("JobSubmitted", "Ready"):
        assert (conditions[kind]["status"], conditions[kind]["reason"], conditions[kind]["message"]) == \
            ("False", "NameTaken", taken.message)
    assert "nextPollTime" not in trace.status and "submitAttempts" not in trace.status
    assert trace.status["phase"] == "Failed"
    assert trace.events == [EmitEvent("Warning", "NameTaken", taken.message)]
    assert_settled(DEFAULT, trace.status, T2)


# --- Deletion ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("result, detail, recorded", [
    (StopDone(), "stop requested", "STOPPING"),
    (StopDone(already_finished=True), "it had already finished", "STOPPED"),
    (StopDone(not_found=True), "SageMaker did not know it", "STOPPED")])
def test_deleting_with_a_running_job_stops_it_once(result, detail, recorded):
    status, name = running(DEFAULT)
    assert stops_on_delete(DEFAULT, status)
    trace = run(DEFAULT, status, at(T1, deleting=True), at(T1, deleting=True, stop_result=result))
    # Only the backend status is recorded, so that the delete handler's filter stops matching (the finalizer goes).
    assert trace.outcomes == [Outcome((StopJob(name),), {}), Outcome(
        (EmitEvent("Normal", "JobStopped", f"the RightsizeJob is being deleted: job {name}: {detail}"),),
        {"backendStatus": recorded})]
    assert not stops_on_delete(DEFAULT, trace.status)
    assert reconcile(DEFAULT, trace.status, at(T1 + seconds(1), deleting=True)) == Outcome((), {})


def test_the_delete_filter_reads_only_what_it_needs_and_answers_as_the_whole_status_would():
    # kopf asks the delete handler's filter on every watch event: it parses three fields, not the results.
    no_credentials = Rejected("NoCredentials", "none", retryable_later=True, unsent=True)
    statuses = [written_ahead(DEFAULT)[0], submitted(DEFAULT)[0], running(DEFAULT)[0],
                completed(DEFAULT, default_recommendations)[0], completed(DEFAULT, many_recommendations)[0],
                run(DEFAULT, {}, dataclasses.replace(at(T0), unsendable=no_credentials)).status]
    stopping = run(DEFAULT, running(DEFAULT)[0], at(T1, deleting=True), at(T1, deleting=True,
                                                                          stop_result=StopDone())).status
    for status in [*statuses, stopping]:
        for spec in (DEFAULT, {**DEFAULT, "deletionPolicy": "Retain"}):
            whole = core._stops_on_delete(spec, JobState.from_storage(status))
            assert stops_on_delete(spec, status) == whole
    assert [stops_on_delete(DEFAULT, status) for status in statuses] == [True, True, True, False, False, False]
    assert not stops_on_delete(DEFAULT, stopping)
    assert set(core.DELETION_FIELDS) < set(statuses[3])  # the results are there, and not read


def submitted_local_job() -> tuple[dict, dict, str]:
    """The fraud-local sample's job, written ahead and submitted: (spec, status, job name)."""
    spec = sample("fraud-local")
    status = apply({}, reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER)))
    name = status["jobName"]
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T0, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    return spec, status, name


def test_a_failed_local_jobs_message_says_each_reason_once():
    spec, status, name = submitted_local_job()
    crash = "the model server exited with code 1 before it was ready: ValueError: OMP_NUM_THREADS"
    failures = (StepFailure("local-1cpu", {"OMP_NUM_THREADS": "99999999"}, crash),
                StepFailure("local-2cpu", {"OMP_NUM_THREADS": "1"}, "local-2cpu needs 2 vCPUs", skipped=True))
    # As the local backend words it: every configuration's reason is in the job's.
    reason = f"no configuration could be measured: local-1cpu (OMP_NUM_THREADS=99999999): {crash}; " \
             f"local-2cpu (OMP_NUM_THREADS=1): local-2cpu needs 2 vCPUs"
    failed = JobSnapshot(name, "FAILED", failure_reason=reason, completion_time=T2,
                         steps=StepSummary(2, {"FAILED": 2}, failures=failures))
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER,
                                                               result=JobSeen(failed))))
    message = by_type(status["conditions"])["Ready"]["message"]
    assert message == f"job {name} failed: {reason}"
    assert message.count(crash) == 1 and status["phase"] == "Failed"
    # A reason that does not list them (SageMaker's) still gets the failed benchmarks after it.
    other = dataclasses.replace(failed, failure_reason="the job ran out of capacity")
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER,
                                                               result=JobSeen(other))))
    assert by_type(status["conditions"])["Ready"]["message"] == (
        f"job {name} failed: the job ran out of capacity; failed benchmarks: local-1cpu (OMP_NUM_THREADS=99999999): "
        f"{crash}; local-2cpu (OMP_NUM_THREADS=1): local-2cpu needs 2 vCPUs")


def test_deleting_a_local_job_after_a_restart_does_not_blame_sagemaker():
    spec, status, name = submitted_local_job()
    assert stops_on_delete(spec, status)
    outcome = reconcile(spec, status, Observation(generation=1, now=T1, owner=LOCAL_OWNER, deleting=True,
                                                  result=StopDone(not_found=True)))
    assert outcome == Outcome((EmitEvent("Normal", "JobStopped", f"the RightsizeJob is being deleted: job {name}: "
                                         f"it was not running on the local backend (it ended when the operator "
                                         f"restarted)"),), {"backendStatus": "STOPPED"})


def test_a_refused_stop_on_deletion_keeps_the_finalizer_and_retries():
    status, name = running(DEFAULT)
    denied = Rejected("AccessDenied", "AccessDeniedException: no sagemaker:StopInferenceRecommendationsJob", True)
    trace = run(DEFAULT, status, at(T1, deleting=True), at(T1, deleting=True, rejected=denied))
    message = (f"cannot stop job {name} before deletion: {denied.message}; set spec.deletionPolicy to Retain to "
               "delete without stopping it")
    assert trace.outcomes[1] == Outcome((EmitEvent("Warning", "JobStopFailed", message),
                                         RetryLater(TIMING.retry_first, message)), {})
    assert stops_on_delete(DEFAULT, trace.status)


def test_deleting_a_written_ahead_job_stops_it_in_case_it_exists():
    status, name = written_ahead(DEFAULT)
    assert reconcile(DEFAULT, status, at(T1, deleting=True)) == Outcome((StopJob(name),), {})


def test_deleting_with_retain_leaves_the_job_running():
    spec = {**DEFAULT, "deletionPolicy": "Retain"}
    status, _ = running(spec)
    assert job_may_be_running(JobState.from_storage(status)) and not stops_on_delete(spec, status)
    assert reconcile(spec, status, at(T1, deleting=True)) == Outcome((), {})


def test_deleting_while_the_job_is_already_stopping_does_nothing():
    status, name = running(DEFAULT)
    status = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "STOPPING"))).status
    assert status["backendStatus"] == "STOPPING" and job_may_be_running(JobState.from_storage(status))
    assert not stops_on_delete(DEFAULT, status)
    assert reconcile(DEFAULT, status, at(T1, deleting=True)) == Outcome((), {})


@pytest.mark.parametrize("finish", ["completed", "refused", "never-started"])
def test_deleting_with_nothing_running_does_nothing(finish):
    if finish == "completed":
        status, _ = completed(DEFAULT, default_recommendations)
    elif finish == "refused":
        status, _ = written_ahead(DEFAULT)
        status = run(DEFAULT, status, at(T0, submit_result=DENIED)).status
    else:
        status = {}
    assert not stops_on_delete(DEFAULT, status)
    assert reconcile(DEFAULT, status, at(T2, deleting=True)) == Outcome((), {})


def _condition(status: str, reason: str) -> list[dict]:
    return [{"type": "JobSubmitted", "status": status, "reason": reason, "message": "", "observedGeneration": 1,
             "lastTransitionTime": T0_STAMP}]


@pytest.mark.parametrize("status, expected", [
    ({}, False),
    ({"jobName": "j"}, True),                                                                  # named, never told
    ({"jobName": "j", "conditions": _condition("Unknown", "Submitting")}, True),               # written ahead
    ({"jobName": "j", "conditions": _condition("False", "AccessDenied")}, False),              # refused
    ({"jobName": "j", "conditions": _condition("False", "NameTaken")}, False),
    ({"jobName": "j", "backendStatus": "PENDING", "conditions": _condition("True", "JobSubmitted")}, True),
    ({"jobName": "j", "backendStatus": "IN_PROGRESS", "conditions": _condition("True", "JobAdopted")}, True),
    ({"jobName": "j", "backendStatus": "STOPPING", "conditions": _condition("True", "JobSubmitted")}, True),
    *[({"jobName": "j", "backendStatus": done, "conditions": _condition("True", "JobSubmitted")}, False)
      for done in ("COMPLETED", "FAILED", "STOPPED", "DELETING", "DELETED")],
    ({"backendStatus": "IN_PROGRESS", "conditions": _condition("True", "JobSubmitted")}, False),  # no name
], ids=lambda value: repr(value)[:60] if isinstance(value, dict) else str(value))
def test_job_may_be_running(status, expected):
    assert job_may_be_running(JobState.from_storage(status)) is expected


# --- A look that fails ------------------------------------------------------------------------------------------

def test_a_refused_describe_is_not_ready_and_retried_after_retry_first():
    status, name = submitted(DEFAULT)
    due = T0 + seconds(30)
    denied = Rejected("AccessDenied", "AccessDeniedException: not authorized to perform: "
                      "sagemaker:DescribeInferenceRecommendationsJob", retryable_later=True)
    trace = run(DEFAULT, status, at(due), at(due, rejected=denied))
    retry_at = due + seconds(300)
    message = f"cannot read job {name}: {denied.message}; retrying at {st.timestamp(retry_at)}"
    assert trace.effects == [DescribeJob(name), None]
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"], ready["message"], ready["lastTransitionTime"]) == \
        ("False", "AccessDenied", message, st.timestamp(due))
    assert trace.status["nextPollTime"] == st.timestamp(retry_at)
    assert trace.events == [EmitEvent("Warning", "AccessDenied", message)]
    assert_settled(DEFAULT, trace.status, retry_at - seconds(1))
    healed = run(DEFAULT, trace.status, at(retry_at), at(retry_at, job=snapshot(name, "IN_PROGRESS")))
    assert healed.effects == [DescribeJob(name), None]
    assert healed.events == [EmitEvent("Normal", "JobInProgress", f"job {name} is IN_PROGRESS")]


def test_a_job_not_found_right_after_submit_is_waited_for_then_reported():
    status, name = submitted(DEFAULT)
    trace = run(DEFAULT, status, at(T0 + seconds(30)), at(T0 + seconds(30), job_missing=True))
    # Within timing.not_found_grace: eventual consistency, look again after the first-poll interval.
    assert trace.outcomes[1] == Outcome((), {"nextPollTime": "2026-03-01T12:01:00Z"})
    late = T0 + seconds(TIMING.not_found_grace - 1)
    still = run(DEFAULT, trace.status, at(late), at(late, job_missing=True))
    assert still.events == [] and still.status["nextPollTime"] == st.timestamp(late + seconds(30))
    gone_at = T0 + seconds(TIMING.not_found_grace - 1 + 30)  # the next look, past the grace
    assert still.status["nextPollTime"] == st.timestamp(gone_at)
    gone = run(DEFAULT, still.status, at(gone_at), at(gone_at, job_missing=True))
    message = f"job {name} was submitted but SageMaker no longer knows it"
    conditions = by_type(gone.status["conditions"])
    for kind in ("Succeeded", "Ready"):
        assert (conditions[kind]["status"], conditions[kind]["reason"], conditions[kind]["message"]) == \
            ("False", "JobNotFound", message)
    assert gone.status["phase"] == "Failed" and "nextPollTime" not in gone.status
    assert gone.events == [EmitEvent("Warning", "JobNotFound", message)]
    again = reconcile(DEFAULT, gone.status, at(gone_at + seconds(600)))
    assert events_of(again) == [] and again.status_patch == {}


# --- A job on an existing endpoint -----------------------------------------------------------------------------

def endpoint_job(spec: dict, invocations: int, latency: int) -> Trace:
    status, name = running(spec)
    performance = EndpointPerformance("fraud-staging", invocations, latency)
    return run(spec, status, at(T2), at(T2, job=snapshot(name, "COMPLETED", completion_time=T2,
                                                         endpoint_performances=(performance,))))


def test_an_existing_endpoint_job_renders_the_endpoint_request():
    request = request_for(ENDPOINT)
    assert (request["JobType"], request["InputConfig"]) == ("Default", {"Endpoints": [{"EndpointName": "fraud-staging"}]})
    assert run(ENDPOINT, {}, at(T0)).last.effect == SubmitJob(plan_of(request["JobName"], request))


def test_an_existing_endpoint_without_constraints_is_benchmarked():
    trace = endpoint_job(ENDPOINT, 32628, 9)
    message = "endpoint fraud-staging sustains 32628 invocations/min at 9 ms, meeting no constraints"
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in trace.status["conditions"]
            if c["type"] in ("Ready", "SLASatisfied")] == [("Ready", "True", "EndpointBenchmarked", message),
                                                           ("SLASatisfied", "True", "EndpointMeetsSLA", message)]
    assert trace.status["endpointPerformances"] == [{"endpointName": "fraud-staging", "maxInvocations": 32628,
                                                     "modelLatency": 9}]
    assert "recommendations" not in trace.status and "best" not in trace.status
    assert_settled(ENDPOINT, trace.status, T2 + seconds(60))  # the verdict is kept, not overturned


def test_an_existing_endpoint_is_judged_against_the_constraints():
    spec = {**ENDPOINT, "selection": {"constraints": {"maxModelLatencyMs": 100, "minInvocationsPerMinute": 30000}}}
    meets = endpoint_job(spec, 32628, 9)
    message = f"endpoint fraud-staging sustains 32628 invocations/min at 9 ms, meeting {SLA}"
    assert summary(meets.status["conditions"])[0] == ("Ready", "True", "EndpointBenchmarked")
    assert by_type(meets.status["conditions"])["Ready"]["message"] == message
    assert_settled(spec, meets.status, T2 + seconds(60))

    short = endpoint_job(spec, 13793, 19)
    message = ("endpoint fraud-staging sustains 13793 invocations/min at 19 ms: none of the 1 configurations meets "
               f"{SLA}")
    conditions = by_type(short.status["conditions"])
    for kind in ("Ready", "SLASatisfied"):
        assert (conditions[kind]["status"], conditions[kind]["reason"], conditions[kind]["message"]) == \
            ("False", "NoCandidateMeetsSLA", message)
    assert (conditions["Succeeded"]["status"], short.status["phase"]) == ("True", "Completed")
    assert EmitEvent("Warning", "NoCandidateMeetsSLA", message) in short.events
    assert_settled(spec, short.status, T2 + seconds(60))

    # A constraints edit judges the stored measurement again, with no backend call.
    relaxed = {**spec, "selection": {"constraints": {"minInvocationsPerMinute": 10000}}}
    again = run(relaxed, short.status, at(T2 + seconds(120), generation=2))
    assert again.last.effect is None
    assert summary(again.status["conditions"])[0] == ("Ready", "True", "EndpointBenchmarked")


# --- Bounds of what the status holds -----------------------------------------------------------------------------

def many_recommendations(job_name: str, count: int = 25) -> tuple[Recommendation, ...]:
    start = T0 + seconds(600)
    return tuple(Recommendation(f"{job_name}/{index:08d}", "ml.m5.2xlarge", 1, {"OMP_NUM_THREADS": str(index)},
                                {"costPerHour": 0.461, "maxInvocations": 30000 + index * 100, "modelLatency": 13},
                                invocation_start=start, invocation_end=start + seconds(120))
                 for index in range(count))


def test_recommendations_are_bounded_at_20_rows_but_counted_in_full():
    status, name = completed(DEFAULT, many_recommendations)
    rows = status["recommendations"]
    assert len(rows) == 20 and status["recommendationsTotal"] == 25
    assert rows[0]["recommendationId"] == status["best"]["recommendationId"] == f"{name}/00000024"
    assert (rows[0]["invocationStartTime"], rows[0]["invocationEndTime"]) == ("2026-03-01T12:10:00Z",
                                                                              "2026-03-01T12:12:00Z")
    assert "among 25 of 25 configurations" in status["best"]["reason"]
    assert_settled(DEFAULT, status, T2 + seconds(60))  # re-reading the 20 stored rows changes nothing
    # A policy edit re-selects from the stored rows and keeps the job's total and the rows' times.
    edited = run(latency_policy(DEFAULT), status, at(T2 + seconds(120), generation=2)).status
    assert edited["recommendationsTotal"] == 25 and len(edited["recommendations"]) == 20
    assert all(row["invocationStartTime"] == "2026-03-01T12:10:00Z" for row in edited["recommendations"])


def test_failed_steps_are_bounded_at_10_in_status_and_message():
    status, name = running(DEFAULT)
    steps = step_summary([failed_step("ml.m5.large", str(i), f"reason {i} " + "x" * 2000) for i in range(12)])
    # A local job's reason names every configuration's: longer than status.failureReason may be.
    reason = "no configuration could be measured: " + "; ".join("server exited: " + "y" * 1024 for _ in range(12))
    trace = run(DEFAULT, status, at(T1), at(T1, job=snapshot(name, "FAILED", failure_reason=reason, steps=steps)))
    assert trace.status["failureReason"] == reason[:4096]  # run() checks every patch against the CRD schema
    failures = trace.status["steps"]["failures"]
    assert len(failures) == 10 and trace.status["steps"]["total"] == 12
    assert all(len(failure["failureReason"]) == 1024 for failure in failures)
    message = by_type(trace.status["conditions"])["Ready"]["message"]
    assert message.count("ml.m5.large (OMP_NUM_THREADS=") == 10 and "OMP_NUM_THREADS=10)" not in message


def test_no_region_is_not_ready_and_retried_later_without_a_create():
    no_region = Rejected("RegionUnknown", "no AWS region: set spec.sagemaker.region or AWS_REGION in the "
                         "operator's environment", retryable_later=False)
    trace = run(DEFAULT, {}, at(T0), at(T0, rejected=no_region))
    name = trace.status["jobName"]
    message = (f"cannot reach SageMaker for job {name}: {no_region.message}; retrying at "
               f"{st.timestamp(T0 + seconds(300))}")
    assert trace.last.effect is None
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "RegionUnknown", message)
    assert trace.status["nextPollTime"] == st.timestamp(T0 + seconds(300))


def test_a_job_sagemaker_no_longer_knows_is_neither_polled_nor_stopped():
    status = {"jobName": "fraud-0123abcd-g1", "backendStatus": "IN_PROGRESS",
              "conditions": [{"type": "JobSubmitted", "status": "True", "reason": "JobSubmitted", "message": "m",
                              "lastTransitionTime": T0_STAMP},
                             {"type": "Succeeded", "status": "False", "reason": "JobNotFound", "message": "m",
                              "lastTransitionTime": T0_STAMP}]}
    assert job_may_be_running(JobState.from_storage(status)) is False
    assert stops_on_delete({"deletionPolicy": "Stop"}, status) is False


def test_removing_the_promotion_withdraws_a_pending_approval():
    spec = copy.deepcopy(ADVANCED)
    status, name = completed(spec, advanced_recommendations)
    assert by_type(status["conditions"])["AwaitingApproval"]["status"] == "True"
    del spec["promotion"]
    outcome = reconcile(spec, status, Observation(generation=2, now=T2, owner=OWNER))
    awaiting = by_type(apply(status, outcome)["conditions"])["AwaitingApproval"]
    assert (awaiting["status"], awaiting["reason"]) == ("False", "NotRequired") and outcome.effect is None


def test_a_promotion_past_its_deadline_warns_once_and_still_succeeds_late():
    from rightsizer.promotion.objects import ApplyResult, ObjectRef, World
    spec = copy.deepcopy(ADVANCED)
    spec["promotion"] = {"mode": "Automatic", "progressDeadlineSeconds": 600,
                         "target": {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                    "name": "fraud"}}
    status, _ = completed(spec, advanced_recommendations)
    ref = ObjectRef("serving.kserve.io/v1beta1", "InferenceService", OWNER.namespace, "fraud")

    def service(generation: int, ready: str) -> World:
        return World({ref: {"metadata": {"name": "fraud", "generation": generation},
                            "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}}}},
                            "status": {"observedGeneration": generation, "conditions": [
                                {"type": "Ready", "status": ready, "message": "0/3 nodes are available"}]}}})

    minute = datetime.timedelta(minutes=1)
    trace = run(spec, status, at(T2), at(T2, world=service(1, "True")),
                at(T2, applied=ApplyResult((ref,))), at(T2 + 5 * minute, world=service(2, "False")))
    assert trace.status["promotion"]["startedAt"] == st.timestamp(T2)
    assert by_type(trace.status["conditions"])["Promoted"]["reason"] == "Promoting"
    late = run(spec, trace.status, at(T2 + 11 * minute), at(T2 + 11 * minute, world=service(2, "False")),
               at(T2 + 14 * minute), at(T2 + 14 * minute, world=service(2, "False")))
    conditions = by_type(late.status["conditions"])
    for kind in ("Promoted", "Ready"):
        assert (conditions[kind]["status"], conditions[kind]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert [(e.type, e.reason) for e in late.events] == [("Warning", "ProgressDeadlineExceeded")]  # once
    assert late.status["nextPollTime"] == st.timestamp(TIMING.after(T2 + 14 * minute, TIMING.promotion_retry))
    served = run(spec, late.status, at(T2 + 20 * minute), at(T2 + 20 * minute, world=service(2, "True")))
    conditions = by_type(served.status["conditions"])
    assert (conditions["Promoted"]["status"], conditions["Promoted"]["reason"]) == ("True", "Promoted")
    assert conditions["Ready"]["status"] == "True" and "startedAt" not in served.status["promotion"]


def test_rows_and_best_keep_what_inference_recommender_measured_exactly():
    # The Neo compilation job, the package's inference specification and IR's benchmark endpoint and variant.
    def named(job_name: str) -> tuple[Recommendation, ...]:
        return tuple(dataclasses.replace(r, compilation_job_name=f"neo-{i}" if i == 4 else None,
                                         inference_specification_name="xgboost-cpu",
                                         endpoint_name=f"sm-epc-{i}", variant_name=f"sm-epc-v-{i}")
                     for i, r in enumerate(default_recommendations(job_name)))
    status, name = completed(DEFAULT, named)
    rows = {row["recommendationId"]: row for row in status["recommendations"]}
    assert {(row["instanceType"], row.get("compilationJobName"), row["inferenceSpecificationName"],
             row["endpointName"], row["variantName"]) for row in rows.values()} == {
        (r.instance_type, r.compilation_job_name, "xgboost-cpu", r.endpoint_name, r.variant_name)
        for r in named(name)}
    best = status["best"]
    assert best["instanceType"] == "ml.m5.2xlarge"  # the seed's winner, index 4
    assert (best["compilationJobName"], best["endpointName"], best["variantName"]) == ("neo-4", "sm-epc-4",
                                                                                       "sm-epc-v-4")
    assert_admissible(status)
    # Re-selected from status (an edit of spec.selection), the names stay.
    reread = [Recommendation.from_status_row(row) for row in status["recommendations"]]
    assert {r.recommendation_id: r.provenance() for r in reread} == {r.recommendation_id: r.provenance()
                                                                      for r in named(name)}


# -- spec.autoscaling -> status.best.scaling ------------------------------------------------------------------------

AUTOSCALING = {"minInvocationsPerMinute": 1000, "maxInvocationsPerMinute": 60000}
OBJECTIVE = spec_module.Autoscaling(50, 1000, 60000)
SCALED = {**DEFAULT, "autoscaling": AUTOSCALING}
SAGEMAKER_SCALING = model.Scaling(
    OBJECTIVE, "SageMaker", "GetScalingConfigurationRecommendation for the recommendation x of job y",
    min_capacity=1, max_capacity=4, scale_in_cooldown=300, scale_out_cooldown=60,
    policies=(model.TargetTrackingPolicy(16213.0, model.INVOCATIONS_PER_INSTANCE),), invocations_per_instance=32427,
    model_latency=13)


def scaling_condition(status: dict) -> tuple[str, str, str]:
    found = by_type(status["conditions"])["ScalingRecommended"]
    return found["status"], found["reason"], found["message"]


def test_a_completed_job_asks_for_the_scaling_of_its_best_once():
    running_status, name = running(SCALED)
    assert scaling_condition(running_status)[:2] == ("Unknown", "ScalingPending")
    status, name = completed(SCALED, default_recommendations)
    done = reconcile(SCALED, status, at(T2))  # what the shell sees again if it died before the answer came
    assert done.effect == RecommendScaling(base.ScalingCall(OBJECTIVE, {
        "InferenceRecommendationsJobName": name, "RecommendationId": f"{name}/00000004",
        "TargetCpuUtilizationPerCore": 50,
        "ScalingPolicyObjective": {"MinInvocationsPerMinute": 1000, "MaxInvocationsPerMinute": 60000}}))
    assert "scaling" not in status["best"]
    # A look is due soon while the call is out: a restart asks again, and the poll timer stays on for a promotion.
    assert status["nextPollTime"] == st.timestamp(T2 + seconds(SAGEMAKER.first_poll(TIMING)))

    answered = run(SCALED, status, at(T2), at(T2, scaling_answer=ScalingAnswer(SAGEMAKER_SCALING)))
    assert answered.effects == [done.effect, None] and "nextPollTime" not in answered.status
    assert answered.status["best"]["scaling"] == {
        "source": "SageMaker", "derivation": "GetScalingConfigurationRecommendation for the recommendation x of job y",
        "objective": {"targetCpuUtilizationPerCore": 50, "minInvocationsPerMinute": 1000,
                      "maxInvocationsPerMinute": 60000},
        "minCapacity": 1, "maxCapacity": 4, "scaleInCooldown": 300, "scaleOutCooldown": 60,
        "policies": [{"targetValue": 16213.0, "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}],
        "metrics": {"invocationsPerInstance": 32427, "modelLatency": 13}}
    message = ("ml.m5.2xlarge for 1000-60000 invocations/min at 50 % CPU per core: 1-4 instances, "
               "SageMakerVariantInvocationsPerInstance at 16213 (SageMaker)")
    assert scaling_condition(answered.status) == ("True", "ScalingRecommended", message)
    assert answered.events == [EmitEvent("Normal", "ScalingRecommended", message)]
    # Status is the memory: a restart, a poll, days later, ask nothing again.
    assert_settled(SCALED, answered.status, T2 + datetime.timedelta(days=3))


def test_a_refused_scaling_request_is_a_warning_and_not_asked_again_until_spec_autoscaling_changes():
    status, name = completed(SCALED, default_recommendations)
    denied = Rejected("AccessDenied", "AccessDeniedException: not authorized to perform "
                                      "sagemaker:GetScalingConfigurationRecommendation", retryable_later=True)
    refused = run(SCALED, status, at(T2), at(T2, scaling_answer=ScalingRefused(denied)))
    assert refused.status["best"]["scaling"]["refused"] == {"reason": "AccessDenied", "message": denied.message}
    status_, reason, message = scaling_condition(refused.status)
    assert (status_, reason) == ("False", "AccessDenied") and message.startswith(f"SageMaker: {denied.message}")
    assert refused.events == [EmitEvent("Warning", "AccessDenied", message)]
    # Ready stays as selected: the best configuration is still the answer to the job.
    assert by_type(refused.status["conditions"])["Ready"]["reason"] == "BestSelected"
    assert_settled(SCALED, refused.status, T2 + datetime.timedelta(hours=1))
    # An edit of spec.autoscaling asks again; the job is not run again.
    busier = {**SCALED, "autoscaling": {**AUTOSCALING, "maxInvocationsPerMinute": 90000}}
    again = reconcile(busier, refused.status, at(T2, generation=2))
    assert isinstance(again.effect, RecommendScaling)
    assert again.effect.call.request["ScalingPolicyObjective"]["MaxInvocationsPerMinute"] == 90000


def test_removing_spec_autoscaling_removes_the_scaling_and_its_condition():
    status, name = completed(SCALED, default_recommendations)
    status = run(SCALED, status, at(T2, scaling_answer=ScalingAnswer(SAGEMAKER_SCALING))).status
    trace = run(DEFAULT, status, at(T2, generation=2))
    assert "scaling" not in trace.status["best"]
    assert "ScalingRecommended" not in by_type(trace.status["conditions"]) and trace.last.effect is None


def test_a_re_selection_keeps_the_scaling_of_a_best_that_stays_and_asks_for_a_new_one():
    status, name = completed(SCALED, default_recommendations)
    status = run(SCALED, status, at(T2, scaling_answer=ScalingAnswer(SAGEMAKER_SCALING))).status
    cheaper_per_hour = {**SCALED, "selection": {"objective": "CostPerInference", "constraints": {
        "maxModelLatencyMs": 100, "minInvocationsPerMinute": 30000}}}
    kept = run(cheaper_per_hour, status, at(T2, generation=2))
    assert kept.status["best"]["recommendationId"] == status["best"]["recommendationId"]
    assert kept.status["best"]["scaling"] == status["best"]["scaling"] and kept.last.effect is None
    fastest = {**SCALED, "selection": {"objective": "ModelLatency"}}
    moved = reconcile(fastest, status, at(T2, generation=3))
    best = apply(status, moved)["best"]
    assert best["recommendationId"] != status["best"]["recommendationId"] and "scaling" not in best
    assert moved.effect.call.request["RecommendationId"] == best["recommendationId"]


def test_a_stopped_sagemaker_jobs_partial_best_gets_no_scaling_and_no_call():
    status, name = running(SCALED)
    partial = default_recommendations(name)[:2]
    trace = run(SCALED, status, at(T1), at(T1, job=snapshot(name, "STOPPED", recommendations=partial,
                                                            steps=StepSummary(5, {"COMPLETED": 2, "STOPPED": 3}))))
    assert trace.effects == [DescribeJob(name), None]
    assert trace.status["best"]["scaling"]["refused"]["reason"] == "JobNotCompleted"
    status_, reason, message = scaling_condition(trace.status)
    assert (status_, reason) == ("False", "JobNotCompleted")
    assert f"job {name} is STOPPED: SageMaker recommends scaling only for a completed" in message


def test_a_job_whose_configurations_all_miss_the_sla_has_nothing_to_scale():
    strict = {**SCALED, "selection": {"constraints": {"maxModelLatencyMs": 1}}}
    status, _ = completed(strict, default_recommendations)
    assert scaling_condition(status) == ("False", "NoBestConfiguration",
                                         "no configuration was selected: there is nothing to scale")
    assert reconcile(strict, status, at(T2)).effect is None


def test_a_local_job_derives_its_scaling_in_the_visit_it_completes():
    spec = {**sample("fraud-local"), "autoscaling": {"minInvocationsPerMinute": 0, "maxInvocationsPerMinute": 60000}}
    status = apply({}, reconcile(spec, {}, Observation(generation=1, now=T0, owner=LOCAL_OWNER)))
    name = status["jobName"]
    status = apply(status, reconcile(spec, status, Observation(generation=1, now=T0, owner=LOCAL_OWNER,
                                                               result=Submitted(f"local:ml/{name}"))))
    done = JobSnapshot(name, "COMPLETED", completion_time=T2, recommendations=local_rows(name, 3),
                       steps=StepSummary(8, {"COMPLETED": 3, "FAILED": 5}), progress=Progress(8, 8))
    outcome = reconcile(spec, status, Observation(generation=1, now=T2, owner=LOCAL_OWNER, result=JobSeen(done)))
    status = apply(status, outcome)
    assert outcome.effect is None
    scaling = status["best"]["scaling"]
    # local-1cpu at 22000/min per instance and 99 % CPU: 50 % per core at 22000 x 50/99 = 11111/min.
    assert (scaling["source"], scaling["minCapacity"], scaling["maxCapacity"]) == ("the local backend", 1, 3)
    assert scaling["policies"] == [{"targetValue": 11111.0,
                                    "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}]
    assert scaling_condition(status)[:2] == ("True", "ScalingRecommended")
    assert_admissible(status)


def test_promotion_waits_for_the_scaling_and_gives_it_to_the_kserve_predictor():
    from rightsizer.promotion.objects import ObjectRef, ReadWorld, World
    spec = {**copy.deepcopy(ADVANCED), "autoscaling": AUTOSCALING}
    spec["promotion"] = {"mode": "Automatic", "target": {"apiVersion": "serving.kserve.io/v1beta1",
                                                         "kind": "InferenceService", "name": "fraud"}}
    status, name = completed(spec, advanced_recommendations)
    assert "promotion" not in status  # the completing visit asked for the scaling instead of reading the target
    ref = ObjectRef("serving.kserve.io/v1beta1", "InferenceService", OWNER.namespace, "fraud")
    live = {"metadata": {"name": "fraud", "generation": 1},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}}}}}
    trace = run(spec, status, at(T2), at(T2, scaling_answer=ScalingAnswer(SAGEMAKER_SCALING)),
                at(T2, world=World({ref: live})))
    assert isinstance(trace.effects[0], RecommendScaling) and trace.effects[1] == ReadWorld((ref,))
    predictor = trace.last.effect.bodies[0]["spec"]["predictor"]
    # 16213 invocations/min per instance -> 270 requests/s per replica for the Knative autoscaler.
    assert {k: predictor[k] for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")} == {
        "minReplicas": 1, "maxReplicas": 4, "scaleMetric": "rps", "scaleTarget": 270}
