"""The operator (kopf, in a KopfRunner thread) against the real API server: initial status, semantic
validation as Ready=False with a Warning Event, and no retry loop. SageMaker is played behind botocore's
Stubber (tests/sagemaker_sim.py)."""

from __future__ import annotations

import copy
import time

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client

from conftest import SAMPLES, load_samples, wait_for
from rightsizer import schema
from sagemaker_sim import SimulatedInferenceRecommender

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(control_plane, crd_installed, namespace):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS"])
    sim.install()
    with KopfRunner(["run", "--standalone", f"--namespace={namespace}", "-m", "rightsizer.handlers"]) as runner:
        runner.sim = sim
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


def condition(body: dict, kind: str) -> dict:
    return next((c for c in (body.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def events_for(api, namespace: str, name: str) -> list:
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [e for e in events if e.involved_object.name == name]


def create(api, namespace: str, body: dict) -> dict:
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, body)


def read(api, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, name)


def test_a_sample_gets_its_initial_status(api, operator, namespace):
    create(api, namespace, sample("fraud-local"))
    # Ready is Unknown (JobSubmitting) while the submission is written ahead; wait for the refusal that follows.
    body = wait_for(lambda: (b := read(api, namespace, "fraud-local")) and condition(b, "Ready")
                    and condition(b, "Ready")["status"] != "Unknown" and b)
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    assert status["phase"] == "Failed"  # refused until an edit (it stayed Pending before #16)
    # The sample's model lives at /models/fraud (`rightsizer example fraud-model /models/fraud` makes it): absent
    # here, so the local backend refuses the job, saying which file, and waits for an edit.
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "ValidationFailed", 1)
    assert ready["message"].startswith(f"the local backend refused job {status['jobName']}: ")
    assert "/models/fraud/payload.csv" in ready["message"]
    assert condition(body, "JobSubmitted")["reason"] == "ValidationFailed"
    assert condition(body, "Validated")["reason"] == "Valid"
    for entry in status["conditions"]:
        assert entry["lastTransitionTime"].endswith("Z") and entry["message"]
    assert operator.sim.calls == []


def test_soft_rules_are_warnings_and_the_job_still_runs(api, operator, namespace):
    create(api, namespace, sample("fraud-advanced"))
    body = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                    and condition(b, "JobSubmitted").get("status") == "True" and b)
    validated = condition(body, "Validated")
    # The seed's second phase starts 6 users: SageMaker's guidance says 1-3, a warning, not a rejection.
    assert (validated["status"], validated["reason"]) == ("True", "ValidWithWarnings")
    assert body["status"]["warnings"] == [
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"]
    warnings = wait_for(lambda: [e for e in events_for(api, namespace, "fraud-advanced")
                                 if e.reason == "ValidWithWarnings"])
    assert warnings[0].type == "Warning" and "initialNumberOfUsers is 6" in warnings[0].message


def test_a_semantically_bad_spec_is_not_ready_with_a_precise_message_and_one_warning_event(api, operator, namespace):
    bad = sample("fraud-advanced")
    bad["metadata"]["name"] = "too-short"
    bad["spec"]["jobDurationInSeconds"] = 200  # the two phases last 240 s
    create(api, namespace, bad)
    body = wait_for(lambda: (b := read(api, namespace, "too-short")) and condition(b, "Ready") and b)
    ready = condition(body, "Ready")
    expected = ("invalid spec: spec.trafficPattern.phases last 240 s in total, longer than "
                "spec.jobDurationInSeconds (200 s)")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", expected)
    assert condition(body, "Validated")["status"] == "False"
    event = wait_for(lambda: [e for e in events_for(api, namespace, "too-short") if e.reason == "InvalidSpec"])[0]
    assert event.type == "Warning" and event.message == expected

    # Not a crash loop: the handler finished (no kopf retry state left behind) and posted a single Event.
    time.sleep(3)
    assert operator.sim.calls == []  # and SageMaker was never called
    annotations = read(api, namespace, "too-short")["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("rightsizer.io/reconcile_spec")], annotations
    assert len([e for e in events_for(api, namespace, "too-short") if e.reason == "InvalidSpec"]) == 1
    assert (event.count or 1) == 1

    # Fixing the spec is an ordinary edit: the operator re-validates the new generation.
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "too-short", {"spec": {"jobDurationInSeconds": 7200}})
    fixed = wait_for(lambda: (b := read(api, namespace, "too-short"))
                     and condition(b, "Ready").get("reason") == "JobInProgress" and b)
    assert condition(fixed, "Ready")["observedGeneration"] == 2 and fixed["status"]["jobName"].endswith("-g2")
    assert condition(fixed, "Validated")["reason"] == "ValidWithWarnings"
    assert operator.sim.count("CreateInferenceRecommendationsJob") == 1


def test_every_sample_is_reconciled(api, operator, namespace):
    names = []
    for body in load_samples():
        create(api, namespace, body)
        names.append((body["metadata"]["name"], body["spec"]["backend"]))
    for name, backend in names:
        body = wait_for(lambda: (b := read(api, namespace, name)) and condition(b, "Ready") and b)
        assert condition(body, "Validated")["status"] == "True", body["status"]
        if backend == "local":
            assert condition(body, "Ready")["reason"] == "ValidationFailed"  # its model is not on this machine
        elif backend == "kubernetes":
            # Outside a Pod, with no spec.kubernetes.image, the operator has no image for the load generator.
            ready = condition(body, "Ready")
            assert ready["reason"] == "ValidationFailed" and "spec.kubernetes.image" in ready["message"], ready
        else:
            wait_for(lambda: condition(read(api, namespace, name), "JobSubmitted").get("status") == "True")
    assert len(operator.sim.jobs) == len([n for n, backend in names if backend == "sagemaker"])
