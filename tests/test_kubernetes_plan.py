"""The kubernetes backend's pure half (backends/kubernetes/plan.py): which configurations run, what objects they are
made of, how Pods and kubelet figures are read, and the metrics of a finished load test. No cluster needed."""

from __future__ import annotations

import datetime
import re

import pytest

from rightsizer.backends.kubernetes import plan as kplan
from rightsizer.backends.kubernetes.policy import POLICY
from rightsizer.loadtest.load_generator import LoadResult, StopReason
from rightsizer.model import Owner
from rightsizer.spec import parse

OWNER = Owner("ml", "fraud-kubernetes", "0b7e5a3c-1111-2222-3333-444455556666")
T0 = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.timezone.utc)


def spec(**changes):
    raw = {
        "backend": "kubernetes",
        "model": {"kubernetes": {"framework": "xgboost", "modelUri": "file:///opt/rightsizer/models/fraud/model.ubj",
                                 "payload": {"path": "/opt/rightsizer/models/fraud/payload.csv"}}},
        "kubernetes": {"candidates": [
            {"name": "half-cpu", "instanceType": "m5.large",
             "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "500m"}}},
            {"name": "gpu", "nodeSelector": {"node.kubernetes.io/instance-type": "g4dn.xlarge"}, "replicas": 2,
             "resources": {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}}}]},
        "environmentParameterRanges": {"OMP_NUM_THREADS": ["1", "2"]},
        "stoppingConditions": {"maxInvocations": 30000,
                               "modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]},
    }
    raw.update(changes)
    return parse(raw)


def test_every_candidate_is_crossed_with_the_grid_and_max_tests_skips_the_rest():
    planned = kplan.plan_experiment(spec(resourceLimit={"maxNumberOfTests": 3}), "fraud-abc-g1")
    assert [(p.instance_type, dict(p.environment)) for p in planned] == [
        ("half-cpu", {"OMP_NUM_THREADS": "1"}), ("half-cpu", {"OMP_NUM_THREADS": "2"}),
        ("gpu", {"OMP_NUM_THREADS": "1"}), ("gpu", {"OMP_NUM_THREADS": "2"})]
    assert [p.skipped for p in planned] == [False, False, False, True]
    assert "maxNumberOfTests is 3" in planned[3].skipped_reason
    assert planned[1].recommendation_id == "fraud-abc-g1/00000001"


def test_object_names_are_deterministic_dns_labels():
    long_name = "a" * 50 + "-0123abcd-g12"
    first, again = kplan.names(long_name, 7), kplan.names(long_name, 7)
    assert first == again and first != kplan.names(long_name, 8) and first != kplan.names("other-g1", 7)
    for name in (first.server, first.load, first.workers):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


def test_the_server_is_the_candidates_size_and_place_owned_by_the_rightsizejob():
    parsed = spec()
    candidate = parsed.kubernetes.candidates[1]
    container = kplan.server_container(parsed.model.kubernetes, "localhost/rightsizer:dev")
    deployment, service = kplan.server_objects(job_name="job-g1", index=2, owner=OWNER, container=container,
                                               candidate=candidate, environment={"OMP_NUM_THREADS": "2"},
                                               pull_policy="Never", spread=True)
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "RightsizeJob", OWNER.name, OWNER.uid, True)
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["resources"] == {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g4dn.xlarge"}
    assert main["command"] == ["python", "-m", "rightsizer.reference.model_server"]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["OMP_NUM_THREADS"] == "2" and env["RIGHTSIZER_MODEL_URI"].endswith("model.ubj")
    assert main["readinessProbe"]["httpGet"] == {"path": "/ping", "port": 8080}
    assert main["imagePullPolicy"] == "Never"
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchExpressions"] == [
        {"key": kplan.CONFIGURATION_LABEL, "operator": "NotIn", "values": ["2"]}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    alone = kplan.server_objects(job_name="job-g1", index=2, owner=OWNER, container=container, candidate=candidate,
                                 environment={}, pull_policy="Never", spread=False)[0]
    assert "affinity" not in alone["spec"]["template"]["spec"]


def test_a_teams_own_server_runs_as_given():
    container = kplan.server_container({"server": {"image": "example.com/triton:24.01", "args": ["--model", "m"],
                                                   "port": 9000, "readyPath": "/v2/health/ready",
                                                   "invokePath": "/v2/models/m/infer"},
                                        "payload": {"path": "/p"}}, "unused")
    assert (container.image, container.command, container.args, container.port) == (
        "example.com/triton:24.01", None, ("--model", "m"), 9000)
    assert container.environment == {}


def test_the_load_generator_is_a_master_job_then_workers_aimed_at_its_service():
    parsed = spec(model={"kubernetes": {"framework": "xgboost", "modelUri": "/m",
                                        "payload": {"configMapKeyRef": {"name": "fraud-payload", "key": "body.csv"}}}})
    common = dict(job_name="job-g1", index=0, owner=OWNER, settings=parsed.kubernetes, image="img", workers=3,
                  config_json="{}", payload=parsed.model.kubernetes["payload"], deadline_seconds=400)
    before = kplan.load_objects(master_address=None, **common)
    assert [o["kind"] for o in before] == ["Service", "Job"]
    master = before[1]["spec"]["template"]["spec"]["containers"][0]
    assert master["args"][-4:] == ["--expect-workers", "3", "--bind-port", str(kplan.LOCUST_PORT)]
    assert before[1]["spec"]["backoffLimit"] == 0 and before[1]["spec"]["activeDeadlineSeconds"] == 400
    after = kplan.load_objects(master_address="10.96.0.9", **common)
    workers = after[2]
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == 3
    pod = workers["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][-4:] == ["--master-host", "10.96.0.9", "--master-port", "5557"]
    assert pod["volumes"][0]["configMap"] == {"name": "fraud-payload", "items": [{"key": "body.csv", "path": "payload"}]}
    assert kplan.payload_path(parsed.model.kubernetes["payload"]) == f"{kplan.PAYLOAD_MOUNT}/payload"


def test_workers_follow_the_patterns_peak_unless_set():
    parsed = spec(trafficPattern={"trafficType": "PHASES",
                                  "phases": [{"initialNumberOfUsers": 1, "spawnRate": 120, "durationInSeconds": 60}]})
    assert kplan.worker_count(parsed.kubernetes, parsed.traffic_pattern) == 3  # 121 users, 50 each
    stairs = spec(trafficPattern={"trafficType": "STAIRS", "stairs": {"durationInSeconds": 10, "numberOfSteps": 100,
                                                                       "usersPerStep": 20}})
    assert kplan.worker_count(stairs.kubernetes, stairs.traffic_pattern) == kplan.DEFAULT_MAX_WORKERS
    fixed = spec(kubernetes={"candidates": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
                             "loadGenerator": {"workers": 7}})
    assert kplan.worker_count(fixed.kubernetes, parsed.traffic_pattern) == 7


def pod(name="p", *, ready=False, scheduled=None, waiting=None, terminated=None, restarts=0, started=None,
        ready_at=None, deleting=False):
    conditions = []
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled})
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ready_at or "2026-12-05T12:00:09Z"})
    state = {}
    if waiting:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    elif terminated:
        state = {"terminated": terminated}
    elif started:
        state = {"running": {"startedAt": started}}
    return {"metadata": {"name": name, "creationTimestamp": "2026-12-05T12:00:00Z"},
            "spec": {"nodeName": None if scheduled else "node-1"},
            "status": {"phase": "Running" if ready else "Pending", "conditions": conditions,
                       "containerStatuses": [{"restartCount": restarts, "state": state}] if state else []}}


def test_a_server_that_cannot_be_scheduled_waits_until_the_timeout_then_fails_with_the_schedulers_reason():
    message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    pods = [kplan.pod_view(pod(scheduled=message))]
    waiting = kplan.judge_server(pods, 1, waited_seconds=5, timeout_seconds=30)
    assert waiting.state == kplan.STARTING and message in waiting.detail
    failed = kplan.judge_server(pods, 1, waited_seconds=30, timeout_seconds=30)
    assert failed.state == kplan.FAILED and message in failed.detail and "readyTimeoutSeconds (30 s)" in failed.detail


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "ImagePullBackOff", "CreateContainerConfigError"])
def test_an_image_or_config_that_will_never_start_fails_at_once(reason):
    verdict = kplan.judge_server([kplan.pod_view(pod(waiting=(reason, "details")))], 1, waited_seconds=0,
                                 timeout_seconds=300)
    assert verdict.state == kplan.FAILED and f"{reason}: details" in verdict.detail


def test_a_crash_looping_server_fails_with_its_exit():
    crashed = pod(waiting=("CrashLoopBackOff", "back-off"), restarts=3)
    crashed["status"]["containerStatuses"][0]["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error",
                                                                            "message": "no model at /m"}}
    verdict = kplan.judge_server([kplan.pod_view(crashed)], 1, waited_seconds=1, timeout_seconds=300)
    assert verdict.state == kplan.FAILED and "exit code 1 (Error): no model at /m" in verdict.detail


def test_ready_when_every_replica_is_and_setup_time_is_start_to_ready():
    pods = [kplan.pod_view(pod("a", ready=True, started="2026-12-05T12:00:02Z", ready_at="2026-12-05T12:00:05Z")),
            kplan.pod_view(pod("b", started="2026-12-05T12:00:02Z"))]
    assert kplan.judge_server(pods, 2, waited_seconds=1, timeout_seconds=300).state == kplan.STARTING
    assert kplan.judge_server(pods[:1], 1, waited_seconds=1, timeout_seconds=300).state == kplan.READY
    assert kplan.setup_seconds(pods) == 3.0


def test_the_load_ends_with_the_masters_termination_or_a_pod_that_cannot_start():
    assert kplan.load_finished([kplan.pod_view(pod(started="2026-12-05T12:00:02Z"))]) is None
    message, terminated = kplan.load_finished([kplan.pod_view(pod(terminated={"exitCode": 0, "message": "{}"}))])
    assert message == "{}" and terminated["exitCode"] == 0
    message, terminated = kplan.load_finished([kplan.pod_view(pod(waiting=("ErrImageNeverPull", "not here")))])
    assert "ErrImageNeverPull: not here" in message and terminated is None


def summary(*points):
    return {"pods": [{"podRef": {"name": name, "namespace": "ml"},
                      "cpu": {"time": time, "usageCoreNanoSeconds": cpu}, "memory": {"workingSetBytes": memory}}
                     for name, time, cpu, memory in points]
            + [{"podRef": {"name": "other", "namespace": "kube-system"},
                "cpu": {"time": "2026-12-05T12:00:00Z", "usageCoreNanoSeconds": 1}}]}


def test_cpu_over_the_window_comes_from_the_kubelets_cumulative_counters():
    samples = []
    for second, used in ((0, 0), (10, 5e9), (20, 14e9), (30, 24e9)):
        at = f"2026-12-05T12:00:{second:02d}Z"
        samples += kplan.stats_samples(summary(("a", at, int(used), 100 * 2**20), ("b", at, int(used / 2), 2**20)),
                                       "ml", ["a", "b"])
    assert {s.pod for s in samples} == {"a", "b"}
    usage = kplan.usage_over(samples, T0 + datetime.timedelta(seconds=19), T0 + datetime.timedelta(seconds=31))
    # a: 10 s of 1 core = 100 %, b half of it: averaged over the replicas.
    assert usage.cpu_percent == pytest.approx(75.0) and usage.seconds == 10 and usage.memory_bytes == 100 * 2**20
    assert kplan.usage_over(samples[:2], T0, T0) is None  # one sample per Pod: no rate


def test_samples_span_the_load_only_with_one_on_each_side_of_its_end_for_every_pod():
    def at(second, *pods):
        stamp = f"2026-12-05T12:00:{second:02d}Z"
        return kplan.stats_samples(summary(*((pod, stamp, second * 10**9, 2**20) for pod in pods)), "ml", pods)

    end = T0 + datetime.timedelta(seconds=15)
    # A 15-s load between two kubelet refreshes: only the sample before it has been seen so far.
    assert not kplan.samples_span_load(at(5, "a", "b"), ["a", "b"], end)
    assert not kplan.samples_span_load(at(5, "a", "b") + at(16, "a"), ["a", "b"], end)  # b not refreshed yet
    assert kplan.samples_span_load(at(5, "a", "b") + at(16, "a", "b"), ["a", "b"], end)
    assert kplan.samples_span_load(at(5, "a") + at(15, "a"), ["a"], end)  # a refresh at the very end counts


def test_cost_is_the_nodes_price_prorated_by_the_larger_request_share():
    parsed = spec(kubernetes={"candidates": [
        {"name": "a", "instanceType": "m5.large", "resources": {"requests": {"cpu": "500m", "memory": "6Gi"}}}],
        "pricePerHour": {"m5.large": 0.2}})
    candidate = parsed.kubernetes.candidates[0]
    assert kplan.node_share(candidate, {"cpu": "2", "memory": "8Gi"}) == 0.75  # memory's share is the larger
    quote = kplan.node_price("m5.large", parsed.kubernetes)
    assert quote == (0.2, "spec.kubernetes.pricePerHour")
    catalog = kplan.node_price("c5.xlarge", parsed.kubernetes)
    assert catalog.price and catalog.source.endswith("as ml.c5.xlarge")
    assert kplan.node_price("local-2cpu-24gi", parsed.kubernetes).price is None


def result(per_minute=12000.0, **changes):
    values = dict(stop_reason=StopReason.THROUGHPUT_FLAT, detail="flat", max_invocations_per_minute=per_minute,
                  model_latency_p50_ms=10.0, model_latency_p95_ms=41.2, model_latency_p99_ms=60.0,
                  users_at_max_invocations=9, total_requests=5000, total_failures=0, run_p50_ms=9.0,
                  run_p95_ms=40.0, run_p99_ms=70.0, locust_p95_ms=41.0, cpu_warning=False, duration_s=60.0,
                  timeline=(), max_invocations_window_s=(40.0, 45.0))
    values.update(changes)
    return LoadResult(**values)


def test_metrics_are_shaped_like_sagemakers_with_the_replicas_the_sla_needs():
    parsed = spec()
    planned = kplan.plan_experiment(parsed, "job-g1")[2]  # gpu, 2 replicas
    outcome = kplan.measured_outcome(planned, kplan.Measured(
        result=result(12000.0, cpu_warning=True), setup_seconds=3.4,
        usage=kplan.PodUsage(cpu_percent=180.456, memory_bytes=2 * 2**30, seconds=10), replicas=2,
        price_per_pod_hour=0.5, memory_capacity_bytes=8 * 2**30,
        placement=kplan.placement_of(parsed.kubernetes.candidates[1])), parsed.stopping_conditions)
    metrics = outcome.recommendation.metrics
    # The row carries the Pods' place and size, for a KServe promotion.
    assert outcome.recommendation.to_status_row()["placement"] == {
        "nodeSelector": {"node.kubernetes.io/instance-type": "g4dn.xlarge"},
        "resources": {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}}}
    assert metrics["maxInvocationsPerInstance"] == 6000
    assert outcome.recommendation.initial_instance_count == 5  # 30,000/min at 6,000 per replica
    assert metrics["maxInvocations"] == 30000 and metrics["costPerHour"] == 2.5
    assert metrics["costPerInference"] == pytest.approx(0.5 / (6000 * 60))
    assert (metrics["modelLatency"], metrics["modelSetupTime"], metrics["cpuUtilization"],
            metrics["memoryUtilization"]) == (42, 3, 180.46, 25.0)
    assert "load generator's" in outcome.detail
    failed = kplan.measured_outcome(planned, kplan.Measured(
        result=LoadResult.without_measurements(StopReason.GENERATOR_ERROR, "workers never came"),
        setup_seconds=None, usage=None, replicas=1, price_per_pod_hour=None, memory_capacity_bytes=None),
        parsed.stopping_conditions)
    assert failed.recommendation is None and "workers never came" in failed.failure_reason


def test_the_policy_warns_when_the_price_depends_on_where_pods_land():
    parsed = spec(kubernetes={"candidates": [{"name": "anywhere", "resources": {"requests": {"cpu": "1"}}}]})
    (warning,) = POLICY.warnings(parsed)
    assert "anywhere" in warning and "node.kubernetes.io/instance-type" in warning
    assert POLICY.warnings(spec()) == []
    (retain,) = POLICY.warnings(spec(deletionPolicy="Retain"))
    assert "deleted with it" in retain
