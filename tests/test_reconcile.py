"""reconcile() and the condition bookkeeping of status.py as plain functions: no API server, no kopf."""

from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path

import pytest
import yaml

from rightsizer import schema
from rightsizer import status as st
from rightsizer.reconcile import EmitEvent, Observation, Outcome, reconcile

SAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "samples"
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
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "RightsizeJob" and document["metadata"]["name"] == name:
                return document["spec"]
    raise LookupError(name)


def apply(status: dict, outcome: Outcome) -> dict:
    """The status after the handler's merge patch (a None value removes the key)."""
    merged = {**status, **outcome.status_patch}
    return {key: value for key, value in merged.items() if value is not None}


def by_type(conditions: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conditions}


def summary(conditions: list[dict]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in conditions]


CONDITION_SCHEMA = schema.openapi_schema()["properties"]["status"]["properties"]["conditions"]["items"]
WARNINGS_SCHEMA = schema.openapi_schema()["properties"]["status"]["properties"]["warnings"]


def assert_admissible(patch: dict) -> None:
    """What the CRD's status schema would check on the patch the handler writes."""
    for condition in patch["conditions"]:
        assert set(CONDITION_SCHEMA["required"]) <= set(condition)
        assert condition["status"] in CONDITION_SCHEMA["properties"]["status"]["enum"]
        assert re.fullmatch(CONDITION_SCHEMA["properties"]["reason"]["pattern"], condition["reason"])
        assert len(condition["message"]) <= CONDITION_SCHEMA["properties"]["message"]["maxLength"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", condition["lastTransitionTime"])
    assert [c["type"] for c in patch["conditions"]] == \
        sorted((c["type"] for c in patch["conditions"]), key=st.CONDITION_ORDER.index)
    if patch.get("warnings") is not None:
        assert 1 <= len(patch["warnings"]) <= WARNINGS_SCHEMA["maxItems"]
        assert all(len(w) <= WARNINGS_SCHEMA["items"]["maxLength"] for w in patch["warnings"])


# --- First visit ------------------------------------------------------------------------------------------------

def test_first_visit_of_a_valid_spec_sets_every_condition():
    outcome = reconcile(VALID, {}, Observation(generation=1, now=T0))
    common = {"observedGeneration": 1, "lastTransitionTime": T0_STAMP}
    assert outcome.status_patch == {
        "observedGeneration": 1,
        "phase": "Pending",
        "warnings": None,
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
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),)
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
    assert outcome.actions == (EmitEvent("Warning", "ValidWithWarnings", f"1 warning(s): {warning}"),)
    assert_admissible(outcome.status_patch)


def test_first_visit_of_the_local_sample():
    outcome = reconcile(sample("fraud-local"), {}, Observation(generation=1, now=T0))
    assert by_type(outcome.status_patch["conditions"])["Ready"]["message"] == \
        "the spec is valid; the local load test of 8 configuration(s) is not submitted yet"
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),)


def test_first_visit_of_an_invalid_spec():
    outcome = reconcile(INVALID, {}, Observation(generation=1, now=T0))
    common = {"reason": "InvalidSpec", "message": INVALID_MESSAGE, "observedGeneration": 1,
              "lastTransitionTime": T0_STAMP}
    assert outcome.status_patch == {
        "observedGeneration": 1, "phase": "Pending", "warnings": None,
        "conditions": [{"type": "Ready", "status": "False", **common},
                       {"type": "Validated", "status": "False", **common}],
    }
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", INVALID_MESSAGE),)
    assert_admissible(outcome.status_patch)


def test_invalid_spec_message_joins_every_error():
    spec = {**VALID, "instanceTypes": ["ml.m5.huge", "ml.t2.medium"],
            "trafficPattern": {"trafficType": "STAIRS",
                               "stairs": {"durationInSeconds": 10, "numberOfSteps": 11, "usersPerStep": 1}}}
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0))
    message = ("invalid spec: spec.trafficPattern.stairs: 11 steps do not fit in 10 s (each step needs at least 1 s); "
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
    assert second.actions == ()
    assert second.status_patch == first.status_patch
    assert {c["lastTransitionTime"] for c in second.status_patch["conditions"]} == {T0_STAMP}
    assert apply(status, second) == status
    third = reconcile(spec, apply(status, second), Observation(generation=1, now=T2 + datetime.timedelta(days=1)))
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
    assert outcome.actions == (EmitEvent("Normal", "Valid", "the spec is valid"),)
    conditions = outcome.status_patch["conditions"]
    assert summary(conditions) == [("Ready", "Unknown", "JobPending"), ("Validated", "True", "Valid"),
                                   ("JobSubmitted", "False", "NotSubmitted"), ("Succeeded", "Unknown", "JobPending"),
                                   ("SLASatisfied", "Unknown", "NoResults")]
    assert {(c["observedGeneration"], c["lastTransitionTime"]) for c in conditions} == {(2, T1_STAMP)}
    assert outcome.status_patch["phase"] == "Pending"


def test_invalid_then_valid_with_warnings_emits_a_warning_event():
    status = apply({}, reconcile(INVALID, {}, Observation(generation=1, now=T0)))
    outcome = reconcile(sample("fraud-advanced"), status, Observation(generation=2, now=T1))
    message = "1 warning(s): spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"
    assert outcome.actions == (EmitEvent("Warning", "ValidWithWarnings", message),)
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


def test_a_submitted_job_is_left_alone_and_its_phase_kept():
    job_condition = {"type": "JobSubmitted", "status": "True", "reason": "Submitted", "message": "job j1",
                     "observedGeneration": 1, "lastTransitionTime": T0_STAMP}
    status = {"jobName": "j1", "phase": "InProgress", "conditions": [job_condition]}
    outcome = reconcile(VALID, status, Observation(generation=1, now=T1))
    assert outcome.status_patch["phase"] == "InProgress"
    assert summary(outcome.status_patch["conditions"]) == [("Validated", "True", "Valid"),
                                                           ("JobSubmitted", "True", "Submitted")]
    assert by_type(outcome.status_patch["conditions"])["JobSubmitted"] == job_condition


def test_phase_is_kept_on_an_invalid_spec():
    outcome = reconcile(INVALID, {"phase": "Completed"}, Observation(generation=4, now=T0))
    assert (outcome.status_patch["phase"], outcome.status_patch["observedGeneration"]) == ("Completed", 4)


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

def test_set_condition_adds_a_condition_with_the_current_time():
    conditions = st.set_condition(None, st.READY, st.TRUE, "Done", "ok", 7, T0)
    assert conditions == [{"type": "Ready", "status": "True", "reason": "Done", "message": "ok",
                           "observedGeneration": 7, "lastTransitionTime": T0_STAMP}]


def test_set_condition_keeps_the_transition_time_iff_the_status_is_unchanged():
    before = st.set_condition([], st.SUCCEEDED, st.UNKNOWN, "JobPending", "waiting", 1, T0)
    same_status = st.set_condition(before, st.SUCCEEDED, st.UNKNOWN, "StillWaiting", "other message", 2, T1)
    assert same_status == [{"type": "Succeeded", "status": "Unknown", "reason": "StillWaiting",
                            "message": "other message", "observedGeneration": 2, "lastTransitionTime": T0_STAMP}]
    flipped = st.set_condition(same_status, st.SUCCEEDED, st.TRUE, "JobPending", "waiting", 2, T2)
    assert flipped[0]["lastTransitionTime"] == T2_STAMP
    back = st.set_condition(flipped, st.SUCCEEDED, st.UNKNOWN, "JobPending", "waiting", 2, T1)
    assert back[0]["lastTransitionTime"] == T1_STAMP


def test_set_condition_only_touches_its_own_type_and_does_not_mutate():
    before = st.set_condition(st.set_condition([], st.VALIDATED, st.TRUE, "Valid", "v", 1, T0),
                              st.READY, st.FALSE, "Nope", "r", 1, T0)
    snapshot = copy.deepcopy(before)
    after = st.set_condition(before, st.READY, st.TRUE, "Yes", "r2", 2, T1)
    assert before == snapshot
    assert after == [{"type": "Ready", "status": "True", "reason": "Yes", "message": "r2", "observedGeneration": 2,
                      "lastTransitionTime": T1_STAMP}, snapshot[1]]


def test_set_condition_orders_known_types_then_unknown_types_by_name():
    conditions: list[dict] = []
    for kind in ("Zeta", st.PROMOTED, "Alpha", st.SUCCEEDED, st.READY, st.VALIDATED):
        conditions = st.set_condition(conditions, kind, st.TRUE, "R", "m", 1, T0)
    assert [c["type"] for c in conditions] == ["Ready", "Validated", "Succeeded", "Promoted", "Alpha", "Zeta"]


@pytest.mark.parametrize("length, kept", [(32767, 32767), (32768, 32768), (32769, 32768), (100000, 32768)])
def test_set_condition_truncates_messages_at_32768(length, kept):
    message = "".join(chr(ord("a") + i % 26) for i in range(length))
    [condition] = st.set_condition([], st.READY, st.FALSE, "Long", message, 1, T0)
    assert st.MAX_MESSAGE_CHARS == 32768
    assert condition["message"] == message[:kept]


def test_a_huge_invalid_spec_message_is_truncated_in_the_conditions_and_event():
    spec = {**VALID, "instanceTypes": [f"ml.bogus{i}.large" for i in range(3000)]}
    outcome = reconcile(spec, {}, Observation(generation=1, now=T0))
    ready = by_type(outcome.status_patch["conditions"])["Ready"]
    assert len(ready["message"]) == 32768
    assert ready["message"].startswith("invalid spec: spec.instanceTypes[0]: ml.bogus0.large is not")
    assert outcome.actions == (EmitEvent("Warning", "InvalidSpec", ready["message"]),)


def test_find():
    conditions = [{"type": "Ready", "status": "True"}, {"type": "Validated", "status": "False"}]
    assert st.find(conditions, "Validated") is conditions[1]
    assert st.find(conditions, "Promoted") is None
    assert st.find(None, "Ready") is None
    assert st.find([], "Ready") is None


def test_changed_looks_at_status_and_reason_only():
    before = st.set_condition([], st.READY, st.UNKNOWN, "JobPending", "a", 1, T0)
    assert st.changed(None, before, st.READY)
    assert not st.changed(before, before, st.VALIDATED)
    assert not st.changed(before, st.set_condition(before, st.READY, st.UNKNOWN, "JobPending", "b", 2, T1), st.READY)
    assert st.changed(before, st.set_condition(before, st.READY, st.UNKNOWN, "Other", "a", 1, T1), st.READY)
    assert st.changed(before, st.set_condition(before, st.READY, st.TRUE, "JobPending", "a", 1, T1), st.READY)


def test_timestamp_is_utc_seconds_with_z():
    assert st.timestamp(T0) == T0_STAMP
    assert st.timestamp(datetime.datetime(2026, 3, 1, 7, 0, 0, 123456,
                                          tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))) == T0_STAMP
