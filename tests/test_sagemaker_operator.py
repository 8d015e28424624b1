"""End to end: the operator (KopfRunner) against the real API server and Inference Recommender played behind
botocore's Stubber (tests/sagemaker_sim.py). Each test follows one RightsizeJob through its life."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import urllib3
from kopf.testing import KopfRunner
from prometheus_client import REGISTRY
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from conftest import load_samples, wait_for
from rightsizer import schema
from rightsizer.model import Owner
from rightsizer.backends.sagemaker import translate
from rightsizer import spec as spec_module
from sagemaker_sim import SimulatedInferenceRecommender, advanced_recommendations
from seed import seed_step
from test_sagemaker_client import without_credentials

pytestmark = pytest.mark.cluster
def operator_args(namespace: str) -> list[str]:
    # One operator per test, watching only that test's namespace: what earlier tests left running is not ours.
    return ["run", "--standalone", f"--namespace={namespace}", "-m", "rightsizer.handlers"]


@pytest.fixture
def operator(control_plane, crd_installed, namespace):
    with KopfRunner(operator_args(namespace)) as runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def sample(name: str) -> dict:
    return copy.deepcopy(next(s for s in load_samples() if s["metadata"]["name"] == name))


def objects(api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api, namespace: str, body: dict) -> dict:
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    return objects(api).create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, body)


def read(api, namespace: str, name: str) -> dict | None:
    try:
        return objects(api).get_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(body: dict, kind: str) -> dict:
    return next((c for c in (body.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def wait_for_ready(api, namespace: str, name: str, status: str, reason: str | None = None, timeout: float = 40.0):
    def check():
        body = read(api, namespace, name)
        ready = condition(body or {}, "Ready")
        return body if ready.get("status") == status and (reason is None or ready.get("reason") == reason) else None
    return wait_for(check, timeout)


def events(api, namespace: str, name: str) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
            if e.involved_object.name == name]


def expected_request(body: dict) -> dict:
    metadata = body["metadata"]
    return translate.build_request(spec_module.parse(body["spec"]),
                                   Owner(metadata["namespace"], metadata["name"], metadata["uid"]),
                                   metadata["generation"])


def creates(sim: SimulatedInferenceRecommender) -> list[dict]:
    return [params for operation, params in sim.calls if operation == "CreateInferenceRecommendationsJob"]


def test_default_job_runs_to_a_selected_best(api, namespace, operator):
    sim = SimulatedInferenceRecommender()
    sim.install()
    created = create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")

    assert creates(sim) == [expected_request(created)]  # exactly the rendered request, exactly once
    status = body["status"]
    assert status["jobName"] == creates(sim)[0]["JobName"] and status["jobArn"].endswith(status["jobName"].lower())
    assert (status["phase"], status["backendStatus"]) == ("Completed", "COMPLETED")
    assert condition(body, "Succeeded")["reason"] == "JobCompleted"
    assert condition(body, "SLASatisfied")["status"] == "True"
    assert len(status["recommendations"]) == status["recommendationsTotal"] == 5
    best = status["best"]
    # Cheapest per inference among those meeting P95 <= 100 ms and 30,000/min: m5.2xlarge (0.461 USD/h, 32427/min).
    assert (best["instanceType"], best["initialInstanceCount"]) == ("ml.m5.2xlarge", 1)
    assert best["environment"] == {"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}
    assert "3 of 5 configurations" in best["reason"]
    rows = {row["instanceType"]: row for row in status["recommendations"]}
    assert rows["ml.m5.large"]["meetsSLA"] is False and "13793 invocations/min < 30000" in rows["ml.m5.large"]["slaMessage"]
    assert rows["ml.m5.4xlarge"]["metrics"]["cpuUtilization"] == pytest.approx(220.57001)
    assert status["steps"]["byStatus"] == {"COMPLETED": 5} and status["completionTime"]
    assert all(row["recommended"] for row in status["recommendations"])  # each benchmark is one IR recommends
    assert "nextPollTime" not in status
    wait_for(lambda: {("Normal", "JobSubmitted"), ("Normal", "BestSelected")} <= set(events(api, namespace,
                                                                                         "fraud-default")))


def test_a_benchmark_sagemaker_did_not_recommend_is_judged_and_can_win(api, namespace, operator):
    # IR also benchmarked the seed's ml.c5.9xlarge (too slow here) and an ml.c5.xlarge cheaper per inference than
    # all five it recommends: every measured benchmark is a row, and selection judges them all.
    cheaper = seed_step("unused")
    cheaper["InferenceBenchmark"] = {**cheaper["InferenceBenchmark"], "Metrics": {
        "CostPerHour": 0.204, "MaxInvocations": 31000, "ModelLatency": 20},
        "EndpointConfiguration": {"EndpointName": "sm-epc-c5x", "VariantName": "sm-epc-c5x",
                                  "InstanceType": "ml.c5.xlarge", "InitialInstanceCount": 1}}
    sim = SimulatedInferenceRecommender(extra_benchmarks=[seed_step("unused"), cheaper])
    sim.install()
    create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")
    status = body["status"]
    assert status["recommendationsTotal"] == 7 and status["steps"]["byStatus"] == {"COMPLETED": 7}
    rows = {row["instanceType"]: row for row in status["recommendations"]}
    assert [rows[t]["recommended"] for t in ("ml.c5.9xlarge", "ml.c5.xlarge", "ml.m5.2xlarge")] == [False, False, True]
    assert rows["ml.c5.9xlarge"]["slaMessage"] == "18199 invocations/min < 30000"
    best = status["best"]
    assert (best["instanceType"], best["recommended"]) == ("ml.c5.xlarge", False)
    assert best["recommendationId"] == f"{status['jobName']}/sm-epc-c5x"


def test_advanced_job_with_a_policy_edit_reselects_without_a_new_job(api, namespace, operator):
    sim = SimulatedInferenceRecommender(results=advanced_recommendations)
    sim.install()
    body = sample("fraud-advanced")
    body["spec"]["selection"] = {"objective": "CostPerHour", "constraints": {"maxModelLatencyMs": 100}}
    created = create(api, namespace, body)
    done = wait_for_ready(api, namespace, "fraud-advanced", "True", "BestSelected")
    assert creates(sim) == [expected_request(created)]
    assert done["status"]["best"]["instanceType"] == "ml.m5.2xlarge"

    objects(api).patch_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL,
                                                "fraud-advanced", {"spec": {"selection": {"objective": "ModelLatency"}}})
    reselected = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                          and b["status"].get("observedGeneration") == 2 and b)
    assert reselected["status"]["best"]["instanceType"] == "ml.m5.4xlarge"
    assert reselected["status"]["jobName"] == done["status"]["jobName"]
    assert len(creates(sim)) == 1 and sim.count("StopInferenceRecommendationsJob") == 0


def test_failed_job_reports_the_reason_and_failed_steps(api, namespace, operator):
    failed_step = {"ModelConfiguration": {"EnvironmentParameters": [
                       {"Key": "OMP_NUM_THREADS", "ValueType": "String", "Value": "5"}]},
                   "EndpointConfiguration": {"EndpointName": "sm-epc-x", "VariantName": "sm-epc-x",
                                             "InstanceType": "ml.m5.4xlarge"},
                   "FailureReason": "ModelError: the model returned a 500"}
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "FAILED"], failed_steps=[failed_step],
                                        failure_reason="INVALID_INPUT : 1. Model returned 4xx or 5xx error code")
    sim.install()
    create(api, namespace, sample("fraud-advanced"))
    body = wait_for_ready(api, namespace, "fraud-advanced", "False", "JobFailed")
    message = condition(body, "Ready")["message"]
    assert "INVALID_INPUT : 1. Model returned 4xx or 5xx error code" in message
    assert "ml.m5.4xlarge (OMP_NUM_THREADS=5): ModelError: the model returned a 500" in message
    assert body["status"]["phase"] == "Failed" and body["status"]["steps"]["failures"][0]["instanceType"] == "ml.m5.4xlarge"
    assert condition(body, "Succeeded")["status"] == "False"
    wait_for(lambda: ("Warning", "JobFailed") in events(api, namespace, "fraud-advanced"))


def test_a_stopped_job_is_not_a_success_but_its_results_are_judged_as_partial(api, namespace, operator):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "STOPPED"])
    sim.install()
    create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelectedFromPartialResults")
    assert body["status"]["phase"] == "Stopped"
    assert condition(body, "Succeeded")["status"] == "False" and condition(body, "Succeeded")["reason"] == "JobStopped"
    assert len(body["status"]["recommendations"]) == 2  # what the two finished benchmarks measured
    assert body["status"]["best"]["partial"] == "the job was stopped with 3 benchmark(s) unfinished"
    assert body["status"]["steps"]["byStatus"] == {"COMPLETED": 2, "STOPPED": 3}


def test_delete_mid_run_stops_the_job_once_and_releases_the_finalizer(api, namespace, operator):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS"])
    sim.install()
    create(api, namespace, sample("fraud-default"))
    running = wait_for_ready(api, namespace, "fraud-default", "Unknown", "JobInProgress")
    assert "rightsizer.io/finalizer" in running["metadata"]["finalizers"]
    objects(api).delete_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL,
                                                 "fraud-default")
    wait_for(lambda: read(api, namespace, "fraud-default") is None)
    stops = [p for operation, p in sim.calls if operation == "StopInferenceRecommendationsJob"]
    assert stops == [{"JobName": running["status"]["jobName"]}]


def test_delete_with_retain_leaves_the_job_running(api, namespace, operator):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS"])
    sim.install()
    body = sample("fraud-default")
    body["spec"]["deletionPolicy"] = "Retain"
    create(api, namespace, body)
    wait_for_ready(api, namespace, "fraud-default", "Unknown", "JobInProgress")
    objects(api).delete_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL,
                                                 "fraud-default")
    wait_for(lambda: read(api, namespace, "fraud-default") is None)
    assert sim.count("StopInferenceRecommendationsJob") == 0


def test_a_finished_job_holds_no_finalizer(api, namespace, operator):
    sim = SimulatedInferenceRecommender(script=["COMPLETED"])
    sim.install()
    create(api, namespace, sample("fraud-default"))
    wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")
    wait_for(lambda: not (read(api, namespace, "fraud-default")["metadata"].get("finalizers")))


def test_a_job_defining_edit_stops_the_running_job_and_submits_a_new_one(api, namespace, operator):
    sim = SimulatedInferenceRecommender(results=advanced_recommendations,
                                        script=["IN_PROGRESS", "IN_PROGRESS", "IN_PROGRESS", "IN_PROGRESS",
                                                "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"])
    sim.install()
    create(api, namespace, sample("fraud-advanced"))
    first = wait_for_ready(api, namespace, "fraud-advanced", "Unknown", "JobInProgress")
    objects(api).patch_namespaced_custom_object(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "fraud-advanced",
        {"spec": {"environmentParameterRanges": {"OMP_NUM_THREADS": ["4", "5", "6"]}}})
    done = wait_for_ready(api, namespace, "fraud-advanced", "True", "BestSelected", timeout=60)
    old, new = first["status"]["jobName"], done["status"]["jobName"]
    assert old != new and new.endswith("-g2")
    assert [p["JobName"] for p in creates(sim)] == [old, new]
    assert [p for operation, p in sim.calls if operation == "StopInferenceRecommendationsJob"] == [{"JobName": old}]
    ranges = creates(sim)[1]["InputConfig"]["EndpointConfigurations"][0]["EnvironmentParameterRanges"]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "OMP_NUM_THREADS", "Value": ["4", "5", "6"]}]
    wait_for(lambda: ("Normal", "JobReplaced") in events(api, namespace, "fraud-advanced"))


def test_a_restart_mid_run_never_submits_twice(api, namespace, control_plane, crd_installed):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS"] * 6 + ["COMPLETED"])
    sim.install()
    with KopfRunner(operator_args(namespace)) as first_run:
        create(api, namespace, sample("fraud-default"))
        running = wait_for_ready(api, namespace, "fraud-default", "Unknown", "JobInProgress")
    assert first_run.exception is None
    with KopfRunner(operator_args(namespace)) as second_run:
        done = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")
    assert second_run.exception is None
    assert len(creates(sim)) == 1 and done["status"]["jobName"] == running["status"]["jobName"]


def test_a_restart_after_create_but_before_the_status_write_adopts_the_job(api, namespace, control_plane,
                                                                           crd_installed):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "COMPLETED"])
    sim.install()
    created = create(api, namespace, sample("fraud-default"))
    request = expected_request(created)
    # What an operator that died right after CreateInferenceRecommendationsJob leaves behind: the job exists and
    # the status names it (written ahead) but never learnt that the create succeeded.
    sim.add_existing_job(request)
    objects(api).patch_namespaced_custom_object_status(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "fraud-default", {"status": {
            "jobName": request["JobName"], "phase": "Pending", "observedGeneration": 1,
            "conditions": [{"type": "JobSubmitted", "status": "Unknown", "reason": "Submitting",
                            "message": "submitting", "lastTransitionTime": "2026-11-29T08:00:00Z",
                            "observedGeneration": 1}]}})
    with KopfRunner(operator_args(namespace)) as runner:
        done = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")
    assert runner.exception is None
    assert creates(sim) == []
    assert condition(done, "JobSubmitted")["reason"] == "JobAdopted"


def test_a_name_collision_with_our_own_job_is_adopted_and_a_foreign_one_refused(api, namespace, control_plane,
                                                                                  crd_installed):
    sim = SimulatedInferenceRecommender(script=["COMPLETED"])
    sim.install()
    ours = create(api, namespace, sample("fraud-default"))
    theirs_body = sample("fraud-default")
    theirs_body["metadata"]["name"] = "fraud-other"
    theirs = create(api, namespace, theirs_body)
    # Both jobs exist before the operator runs and neither status names them: Create meets ResourceInUse.
    sim.add_existing_job(expected_request(ours))
    foreign = expected_request(theirs)
    foreign["Tags"] = [tag if tag["Key"] != "rightsizer.io/uid" else {"Key": tag["Key"], "Value": "someone-else"}
                       for tag in foreign["Tags"]]
    sim.add_existing_job(foreign)
    with KopfRunner(operator_args(namespace)) as runner:
        adopted = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected")
        refused = wait_for_ready(api, namespace, "fraud-other", "False", "NameTaken")
    assert runner.exception is None
    assert condition(adopted, "JobSubmitted")["reason"] == "JobAdopted"
    assert "its tags do not name this RightsizeJob" in condition(refused, "Ready")["message"]
    assert sim.count("ListTags") == 2 and len(sim.jobs) == 2


def test_a_burst_of_throttling_still_completes(api, namespace, operator):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"])
    sim.install()
    sim.inject("CreateInferenceRecommendationsJob", "ThrottlingException", times=2, message="Rate exceeded")
    sim.inject("DescribeInferenceRecommendationsJob", "ThrottlingException", times=3, message="Rate exceeded")
    throttled_before = REGISTRY.get_sample_value("rightsizer_sagemaker_api_calls_total", {
        "operation": "describe_inference_recommendations_job", "outcome": "ThrottlingException"}) or 0
    create(api, namespace, sample("fraud-default"))
    wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected", timeout=60)
    # Two throttled attempts and the one that went through, under one deterministic name.
    assert len(creates(sim)) == 3 and len({p["JobName"] for p in creates(sim)}) == 1
    assert len(sim.jobs) == 1
    assert REGISTRY.get_sample_value("rightsizer_sagemaker_api_calls_total", {
        "operation": "describe_inference_recommendations_job", "outcome": "ThrottlingException"}) == throttled_before + 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sustained_faults_on_a_third_of_calls_still_give_the_right_answer_once(api, namespace, operator, seed):
    # Throttling, 5xx and connection resets (a reset Create sometimes created the job) on 30 % of calls over two
    # whole jobs: each finishes with the fault-free winner, one SageMaker job per RightsizeJob, and the calls stay
    # within a bound (the fault-free run makes about 12 per job).
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"], fault_rate=0.3, seed=seed)
    sim.install()
    create(api, namespace, sample("fraud-default"))
    create(api, namespace, sample("fraud-advanced"))
    default = wait_for_ready(api, namespace, "fraud-default", "True", "BestSelected", timeout=120)
    advanced = wait_for_ready(api, namespace, "fraud-advanced", "True", "BestSelected", timeout=120)
    for body in (default, advanced):  # the simulator answers both with the seed's Default results
        assert (body["status"]["best"]["instanceType"], body["status"]["best"]["environment"]) == \
            ("ml.m5.2xlarge", {"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
        assert body["status"]["recommendationsTotal"] == 5
    assert sorted(sim.jobs) == sorted({default["status"]["jobName"], advanced["status"]["jobName"]})
    assert len(sim.faults) >= 3, "the seed injected too few faults to test anything"
    assert len(sim.calls) <= 80, f"{len(sim.calls)} calls for two jobs ({len(sim.faults)} faults)"


def test_access_denied_is_not_ready_without_a_retry_storm(api, namespace, operator):
    sim = SimulatedInferenceRecommender()
    sim.install()
    sim.inject("CreateInferenceRecommendationsJob", "AccessDeniedException", times=100,
               message="User is not authorized to perform: sagemaker:CreateInferenceRecommendationsJob")
    create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "False", "AccessDenied")
    assert "not authorized to perform: sagemaker:CreateInferenceRecommendationsJob" in condition(body, "Ready")["message"]
    assert condition(body, "JobSubmitted")["reason"] == "AccessDenied"
    wait_for(lambda: ("Warning", "AccessDenied") in events(api, namespace, "fraud-default"))
    time.sleep(3)  # 3 s is 150 s of operator time at the tests' time scale: the retry comes after 300 s
    assert len(creates(sim)) == 1
    assert body["status"]["submitAttempts"] == 1 and body["status"]["nextPollTime"]


def test_without_credentials_a_job_is_refused_at_once_with_nothing_written_ahead(api, namespace, operator, monkeypatch,
                                                                                 tmp_path):
    # What 1,000 jobs synced before the operator's role is set up meet: each refused in its first status write, with
    # no write-ahead and no finalizer of ours for a submit that cannot happen (benchmarks/operator_scale.py).
    without_credentials(monkeypatch, tmp_path)
    versions: list[dict] = []
    objects_api = objects(api)
    listed = objects_api.list_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL)
    stream = watch.Watch()

    def record() -> None:
        try:
            for event in stream.stream(objects_api.list_namespaced_custom_object, schema.GROUP, schema.VERSION,
                                       namespace, schema.PLURAL, resource_version=listed["metadata"]["resourceVersion"],
                                       timeout_seconds=60):
                versions.append(event["object"])
        except urllib3.exceptions.HTTPError:  # the stream cut when the test has what it waited for
            pass
    watcher = threading.Thread(target=record, daemon=True)
    watcher.start()
    create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "False", "NoCredentials")
    assert body["status"]["submitAttempts"] == 1 and body["status"]["nextPollTime"]
    assert condition(body, "Ready")["message"].startswith("job ") and "was not submitted to SageMaker" in \
        condition(body, "Ready")["message"]
    wait_for(lambda: ("Warning", "NoCredentials") in events(api, namespace, "fraud-default"))
    wait_for(lambda: any(v["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"] for v in versions))
    stream.stop()
    # One status write, refused already: no "submitting" that never happened. No finalizer either: nothing runs
    # that a delete would have to stop, and the retry is the poll scheduler's, which holds none (a kopf timer would).
    written = [v for v in versions if v.get("status")]
    assert not any(v["metadata"].get("finalizers") for v in versions)
    assert written and condition(written[0], "Ready").get("reason") == "NoCredentials"
    assert {condition(v, "Ready").get("reason") for v in written} == {"NoCredentials"}
    assert sorted(events(api, namespace, "fraud-default")) == [("Normal", "Valid"), ("Warning", "NoCredentials")]


def test_a_validation_error_is_not_retried(api, namespace, operator):
    sim = SimulatedInferenceRecommender()
    sim.install()
    sim.inject("CreateInferenceRecommendationsJob", "ValidationException", times=10,
               message="Model package does not specify Domain, a mandatory parameter")
    create(api, namespace, sample("fraud-default"))
    body = wait_for_ready(api, namespace, "fraud-default", "False", "ValidationFailed")
    assert "not retried until a job-defining field of the spec changes" in condition(body, "Ready")["message"]
    time.sleep(2)
    assert len(creates(sim)) == 1 and "nextPollTime" not in read(api, namespace, "fraud-default")["status"]
    assert not (read(api, namespace, "fraud-default")["metadata"].get("finalizers"))


def test_a_refused_scaling_request_is_a_warning_asked_once_and_the_best_stays_selected(api, namespace, operator):
    sim = SimulatedInferenceRecommender()
    sim.install()
    sim.inject("GetScalingConfigurationRecommendation", "AccessDeniedException", times=10,
               message="User is not authorized to perform: sagemaker:GetScalingConfigurationRecommendation")
    body = sample("fraud-default")
    body["spec"]["autoscaling"] = {"minInvocationsPerMinute": 1000, "maxInvocationsPerMinute": 60000}
    create(api, namespace, body)

    def refused():
        found = read(api, namespace, "fraud-default") or {}
        return found if condition(found, "ScalingRecommended").get("status") == "False" else None
    found = wait_for(refused)
    scaling = condition(found, "ScalingRecommended")
    assert scaling["reason"] == "AccessDenied" and "GetScalingConfigurationRecommendation" in scaling["message"]
    assert found["status"]["best"]["scaling"]["refused"]["reason"] == "AccessDenied"
    assert (condition(found, "Ready")["status"], condition(found, "Ready")["reason"]) == ("True", "BestSelected")
    wait_for(lambda: ("Warning", "AccessDenied") in events(api, namespace, "fraud-default"))
    time.sleep(2)  # 100 s of operator time: a refusal is not asked again on its own
    assert sim.count("GetScalingConfigurationRecommendation") == 1
    assert "nextPollTime" not in read(api, namespace, "fraud-default")["status"]


def test_an_invalid_spec_makes_no_sagemaker_call(api, namespace, operator):
    sim = SimulatedInferenceRecommender()
    sim.install()
    body = sample("fraud-advanced")
    body["spec"]["jobDurationInSeconds"] = 200
    create(api, namespace, body)
    wait_for_ready(api, namespace, "fraud-advanced", "False", "InvalidSpec")
    time.sleep(1)
    assert sim.calls == []


def test_an_existing_endpoint_job_reports_the_endpoint_against_the_sla(api, namespace, operator):
    sim = SimulatedInferenceRecommender(
        script=["IN_PROGRESS", "COMPLETED"], results=lambda job_name: [],
        endpoint_performances=[{"Metrics": {"MaxInvocations": 34600, "ModelLatency": 9},
                                "EndpointInfo": {"EndpointName": "fraud-staging"}}])
    sim.install()
    body = sample("fraud-existing-endpoint")
    body["spec"]["selection"] = {"constraints": {"maxModelLatencyMs": 100, "minInvocationsPerMinute": 30000}}
    created = create(api, namespace, body)
    done = wait_for_ready(api, namespace, "fraud-existing-endpoint", "True", "EndpointBenchmarked")
    assert creates(sim) == [expected_request(created)]
    assert creates(sim)[0]["InputConfig"]["Endpoints"] == [{"EndpointName": "fraud-staging"}]
    assert done["status"]["endpointPerformances"] == [
        {"endpointName": "fraud-staging", "maxInvocations": 34600, "modelLatency": 9}]
    assert condition(done, "SLASatisfied")["reason"] == "EndpointMeetsSLA"
    assert "best" not in done["status"]
