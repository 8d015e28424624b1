"""The local backend's experiment engine: plans from specs and made-up hosts, and real runs on 127.0.0.1 with the
built-in model server (a tiny fraud model) or small stand-in servers, traffic patterns compressed to seconds."""

from __future__ import annotations

import dataclasses
import datetime
import math
import sys
import textwrap
import threading
import time

import psutil
import pytest

from conftest import wait_for
from rightsizer import selection, spec as spec_module
from rightsizer.backends.base import JobPlan, ResumeState, Submitted
from rightsizer.model import JobStatus, Owner, Recommendation, StepFailure, Uncertainty
from rightsizer.backends.local.backend import LocalBackend
from rightsizer.backends.local.experiment import Experiment, ExperimentProgress
from rightsizer.backends.local.plan import (ConfigurationOutcome, max_invocations_window, measured_outcome,
                                            median_outcome, plan_experiment, step_summary)
from rightsizer.reference import fraud_model
from rightsizer.loadtest.load_generator import LoadResult, StopReason, TimelinePoint
from rightsizer.loadtest.placement import GIB, HostFacts
from rightsizer.loadtest.server_process import ResourceUsage

PRICE = 0.05
# Far above what one core serves, so that the instance count comes out of the measurement.
TARGET_INVOCATIONS = 600_000
# 50 s at 0.1 = 5 s of load: one user more every 0.5 s, from 1 to 11.
QUICK_TRAFFIC = {"trafficType": "PHASES",
                 "phases": [{"initialNumberOfUsers": 1, "spawnRate": 12, "durationInSeconds": 50}]}
QUICK_SCALE = 0.1

# A stand-in for a custom model server: it notes every start in the file named by its first argument, then
# behaves as the MODE of its configuration says.
STAND_IN_SERVER = textwrap.dedent("""
    import os, sys, time
    with open(sys.argv[1], "a") as starts:
        starts.write(os.environ["MODE"] + "\\n")
    if os.environ["MODE"] == "crash":
        sys.exit("cannot load the model: model.ubj is corrupt")
    if os.environ["MODE"] == "slow-crash":
        time.sleep(1.0)
        sys.exit("gave up after a second")
    from rightsizer.reference.model_server import main
    main()
""")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return fraud_model.write_example(tmp_path_factory.mktemp("fraud"), trees=20, legitimate_rows=20000,
                                     fraud_rows=100)


@pytest.fixture
def no_leftover_processes():
    """Every process a test starts (servers, their workers, load generators) must be gone when it ends."""
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 3
    while True:
        left = []
        for child in me.children(recursive=True):
            try:
                if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE:
                    left.append(child)
            except psutil.NoSuchProcess:
                continue
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


@pytest.fixture
def stand_in(tmp_path):
    """The stand-in server's command, and a function returning the MODEs it was started with, in order."""
    script = tmp_path / "stand_in_server.py"
    script.write_text(STAND_IN_SERVER)
    starts = tmp_path / "starts.txt"

    def started() -> list[str]:
        return starts.read_text().split() if starts.exists() else []

    return [sys.executable, str(script), str(starts)], started


def local_spec(example, **choices) -> spec_module.RightsizeJobSpec:
    return spec_module.parse(raw_local_spec(example, **choices))


def raw_local_spec(example, *, instance_types=("local-1cpu",), ranges=None, traffic=QUICK_TRAFFIC,
                   stopping=None, server_command=None, **fields) -> dict:
    model = {"modelUri": example.model.as_uri(),
             "payload": {"path": str(example.payload_row), "contentType": "text/csv"}}
    if server_command:
        model["server"] = {"command": server_command}
    else:
        model["framework"] = "xgboost"
    raw = {"backend": "local", "model": {"local": model}, "instanceTypes": list(instance_types),
           "environmentParameterRanges": ranges or {"OMP_NUM_THREADS": ["1", "2"]},
           "trafficPattern": traffic,
           "stoppingConditions": stopping or {"maxInvocations": TARGET_INVOCATIONS,
                                              "modelLatencyThresholds": [{"percentile": "P95",
                                                                          "valueInMilliseconds": 500}]},
           "local": {"pricePerHour": {"local-1cpu": PRICE, "local-2cpu": 2 * PRICE}, "loadGeneratorCpus": [1]},
           **fields}
    return raw


# ---- plan ---------------------------------------------------------------------------------------------------------

TWO_CPU_HOST = HostFacts(cpus=(0, 1), memory_total_bytes=16 * GIB, memory_available_bytes=12 * GIB)


def test_plan_lists_candidates_in_spec_order_then_their_grid_with_sagemaker_ids(example):
    spec = local_spec(example, instance_types=["local-2cpu", "local-1cpu"],
                      ranges={"OMP_NUM_THREADS": ["1", "2"], "SAGEMAKER_MODEL_SERVER_WORKERS": ["1", "2"]})

    planned = plan_experiment(spec, "fraud-local-3f9a2c1e-g1", TWO_CPU_HOST)

    assert [p.index for p in planned] == list(range(8))
    assert [p.recommendation_id for p in planned] == [f"fraud-local-3f9a2c1e-g1/{i:08d}" for i in range(8)]
    assert [p.instance_type for p in planned] == ["local-2cpu"] * 4 + ["local-1cpu"] * 4
    grid = [{"OMP_NUM_THREADS": omp, "SAGEMAKER_MODEL_SERVER_WORKERS": workers}
            for omp in ("1", "2") for workers in ("1", "2")]
    assert [dict(p.environment) for p in planned] == grid * 2
    # The load generator keeps CPU 1, so two server CPUs do not fit on this host.
    for skipped in planned[:4]:
        assert skipped.placement is None
        assert "local-2cpu needs 2 vCPUs" in skipped.skipped_reason
    for placed in planned[4:]:
        assert placed.skipped_reason is None
        assert placed.placement.cpus == (0,) and placed.placement.load_generator_cpus == (1,)
        assert placed.placement.price_per_hour == PRICE
    assert planned[4].label == "local-1cpu (OMP_NUM_THREADS=1, SAGEMAKER_MODEL_SERVER_WORKERS=1)"
    assert plan_experiment(spec, "fraud-local-3f9a2c1e-g1", TWO_CPU_HOST) == planned


def test_plan_skips_what_is_beyond_max_number_of_tests(example):
    spec = local_spec(example, ranges={"OMP_NUM_THREADS": ["1", "2", "3"]}, resourceLimit={"maxNumberOfTests": 2})

    planned = plan_experiment(spec, "job", TWO_CPU_HOST)

    assert [p.skipped_reason is None for p in planned] == [True, True, False]
    assert "spec.resourceLimit.maxNumberOfTests is 2" in planned[2].skipped_reason


# ---- metrics and steps (pure) -------------------------------------------------------------------------------------


def load_result(*, max_invocations, p95, run_p95, stop_reason=StopReason.TRAFFIC_PATTERN_COMPLETE,
                timeline=()) -> LoadResult:
    return LoadResult(stop_reason=stop_reason, detail="details", max_invocations_per_minute=max_invocations,
                      model_latency_p50_ms=p95 and p95 / 2, model_latency_p95_ms=p95,
                      model_latency_p99_ms=p95 and p95 * 2, users_at_max_invocations=3 if max_invocations else None,
                      total_requests=1000, total_failures=0, run_p50_ms=run_p95 and run_p95 / 2, run_p95_ms=run_p95,
                      run_p99_ms=run_p95 and run_p95 * 2, locust_p95_ms=run_p95, cpu_warning=False, duration_s=10.0,
                      timeline=tuple(timeline))


USAGE = ResourceUsage(start=0.0, end=5.0, cpu_percent=97.5, cpu_percent_max=100.0, rss_bytes=GIB // 10,
                      memory_percent=5.0, samples=5)


def test_a_threshold_breached_before_any_window_held_is_completed_with_zero_invocations_and_never_selected(example):
    spec = local_spec(example, stopping={"modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 5}]})
    planned = plan_experiment(spec, "job", TWO_CPU_HOST)[0]
    breached = load_result(max_invocations=None, p95=None, run_p95=12.2, stop_reason=StopReason.LATENCY_THRESHOLD)

    outcome = measured_outcome(planned, breached, setup_seconds=1.4, usage=USAGE, stopping=spec.stopping_conditions)

    assert outcome.status == JobStatus.COMPLETED and outcome.failure_reason is None
    assert outcome.recommendation.initial_instance_count == 1
    assert outcome.recommendation.metrics == {"maxInvocations": 0, "maxInvocationsPerInstance": 0,
                                              "modelLatency": 13, "modelSetupTime": 1, "cpuUtilization": 97.5,
                                              "memoryUtilization": 5.0, "costPerHour": PRICE}
    assert "LatencyThresholdBreached" in outcome.detail
    for objective in ("CostPerInference", "CostPerHour", "ModelLatency", "MaxInvocations"):
        assert selection.select([outcome.recommendation], objective,
                                selection.constraints_for(spec)).best is None


def test_latency_is_the_thresholds_percentile_rounded_up_and_the_count_meets_max_invocations(example):
    spec = local_spec(example, stopping={"maxInvocations": 25_000,
                                         "modelLatencyThresholds": [{"percentile": "P99", "valueInMilliseconds": 50}]})
    planned = plan_experiment(spec, "job", TWO_CPU_HOST)[0]
    result = load_result(max_invocations=12_000.4, p95=20.1, run_p95=25.0)

    metrics = measured_outcome(planned, result, setup_seconds=0.4, usage=None,
                               stopping=spec.stopping_conditions).recommendation.metrics

    assert metrics["modelLatency"] == 41  # P99 = 40.2 ms
    # One instance measured 12000/min; ceil(25000 / 12000) = 3 of them make the endpoint, as SageMaker reports it.
    assert (metrics["maxInvocationsPerInstance"], metrics["maxInvocations"]) == (12_000, 36_000)
    assert metrics["costPerHour"] == pytest.approx(3 * PRICE)
    assert metrics["costPerInference"] == pytest.approx(3 * PRICE / (36_000 * 60))
    assert metrics["costPerInference"] == pytest.approx(PRICE / (12_000 * 60))  # the same as one instance's
    assert "cpuUtilization" not in metrics


def test_a_run_without_one_successful_request_is_a_failure(example):
    spec = local_spec(example)
    planned = plan_experiment(spec, "job", TWO_CPU_HOST)[0]

    outcome = measured_outcome(planned, load_result(max_invocations=None, p95=None, run_p95=None), setup_seconds=1,
                               usage=None, stopping=spec.stopping_conditions)

    assert outcome.status == JobStatus.FAILED and "no successful invocation" in outcome.failure_reason


def test_the_max_invocations_window_is_found_on_the_timeline():
    rates = [100, 200, 300, 300, 300, 250, 100]
    timeline = [TimelinePoint(elapsed_s=float(second + 1), duration_s=1.0, users=second + 1, stage="phase 1/1",
                              requests=rate, failures=0, rps=float(rate), p50_ms=1.0, p95_ms=2.0, p99_ms=3.0)
                for second, rate in enumerate(rates)]
    # The load generator's best 3-interval window: seconds 2-5, 300 req/s.
    result = load_result(max_invocations=300 * 60, p95=2.0, run_p95=2.0, timeline=timeline)

    assert max_invocations_window(result, window_s=3) == (2.0, 5.0)
    # When the load generator names its window (it does), that is the one: two windows can share a rate.
    named = dataclasses.replace(result, max_invocations_window_s=(3.0, 6.0))
    assert max_invocations_window(named, window_s=3) == (3.0, 6.0)


def test_step_summary_counts_by_status_with_the_failures_reasons(example):
    spec = local_spec(example, instance_types=["local-2cpu", "local-1cpu"])
    planned = plan_experiment(spec, "job", TWO_CPU_HOST)
    recommendation = Recommendation(planned[2].recommendation_id, "local-1cpu", 1, planned[2].environment,
                                    {"maxInvocations": 100})
    outcomes = [ConfigurationOutcome(planned[0], None, planned[0].skipped_reason, None),
                ConfigurationOutcome(planned[2], recommendation, None, None)]

    running = step_summary(outcomes, len(planned))
    ended = step_summary(outcomes, len(planned), unfinished_status=JobStatus.STOPPED)

    assert running.total == 4 and running.by_status == {JobStatus.FAILED: 1, JobStatus.COMPLETED: 1, JobStatus.PENDING: 2}
    assert ended.by_status == {JobStatus.FAILED: 1, JobStatus.COMPLETED: 1, JobStatus.STOPPED: 2}
    (failure,) = running.failures
    assert failure.instance_type == "local-2cpu" and failure.environment == {"OMP_NUM_THREADS": "1"}
    assert "needs 2 vCPUs" in failure.failure_reason
    assert failure.skipped  # so that a resumed job places it again rather than taking the reason as final


# ---- runs ---------------------------------------------------------------------------------------------------------


def test_a_small_experiment_recommends_every_configuration_with_sane_metrics(example, no_leftover_processes):
    spec = local_spec(example)
    progress: list[ExperimentProgress] = []
    reported: list[ConfigurationOutcome] = []

    experiment = Experiment(spec, "fraud-local", time_scale=QUICK_SCALE, on_progress=progress.append,
                            on_outcome=reported.append)
    outcomes = experiment.run()

    assert [o.planned.recommendation_id for o in outcomes] == ["fraud-local/00000000", "fraud-local/00000001"]
    assert reported == outcomes and experiment.end_reason is None
    for outcome, threads in zip(outcomes, ("1", "2")):
        assert outcome.failure_reason is None, outcome.failure_reason
        recommendation = outcome.recommendation
        assert recommendation.environment == {"OMP_NUM_THREADS": threads}
        metrics = recommendation.metrics
        per_instance = metrics["maxInvocationsPerInstance"]
        assert isinstance(per_instance, int) and per_instance > 0
        assert isinstance(metrics["modelLatency"], int) and 0 < metrics["modelLatency"] <= 500
        assert metrics["cpuUtilization"] > 0 and 0 < metrics["memoryUtilization"] < 100
        assert isinstance(metrics["modelSetupTime"], int) and metrics["modelSetupTime"] < 60
        instances = math.ceil(TARGET_INVOCATIONS / per_instance)
        assert recommendation.initial_instance_count == instances
        assert metrics["maxInvocations"] == per_instance * instances >= TARGET_INVOCATIONS
        assert metrics["costPerHour"] == pytest.approx(PRICE * instances)
        assert metrics["costPerInference"] == pytest.approx(PRICE * instances / (metrics["maxInvocations"] * 60))
        assert recommendation.invocation_start < recommendation.invocation_end
        assert outcome.load.timeline and outcome.load.max_invocations_per_minute > 0
    assert step_summary(outcomes, len(experiment.plan)).by_status == {JobStatus.COMPLETED: 2}
    during_load = [p for p in progress if p.load is not None]
    assert during_load and "users" in during_load[-1].current and during_load[-1].configuration is not None
    assert (progress[-1].completed, progress[-1].total, progress[-1].current) == (2, 2, None)
    assert selection.select([o.recommendation for o in outcomes], "CostPerInference",
                            selection.constraints_for(spec)).best is not None


def test_a_server_that_exits_at_once_fails_only_its_configuration(example, stand_in, no_leftover_processes):
    command, started = stand_in
    spec = local_spec(example, server_command=command, ranges={"MODE": ["crash", "serve"]})

    outcomes = Experiment(spec, "job", time_scale=QUICK_SCALE).run()

    crashed, served = outcomes
    assert crashed.status == JobStatus.FAILED and crashed.recommendation is None and crashed.load is None
    assert "exited with code 1 before it was ready" in crashed.failure_reason
    assert "model.ubj is corrupt" in crashed.failure_reason
    assert served.status == JobStatus.COMPLETED and served.recommendation.metrics["maxInvocations"] > 0
    assert started() == ["crash", "serve"]
    (failure,) = step_summary(outcomes, 2).failures
    assert failure.environment == {"MODE": "crash"} and "model.ubj is corrupt" in failure.failure_reason


def test_finished_configurations_are_not_run_again(example, stand_in, no_leftover_processes):
    command, started = stand_in
    spec = local_spec(example, server_command=command, ranges={"MODE": ["serve", "crash"]})
    earlier = Recommendation("job/00000000", "local-1cpu", 1, {"MODE": "serve"}, {"maxInvocations": 1234})
    reported: list[ConfigurationOutcome] = []

    outcomes = Experiment(spec, "job", time_scale=QUICK_SCALE, completed={"job/00000000": earlier},
                          on_outcome=reported.append).run()

    assert started() == ["crash"]
    assert outcomes[0].recommendation is earlier and outcomes[0].load is None
    assert outcomes[1].status == JobStatus.FAILED
    assert reported == [outcomes[1]]


def test_configurations_that_failed_before_are_not_run_again(example, stand_in, no_leftover_processes):
    command, started = stand_in
    spec = local_spec(example, server_command=command, ranges={"MODE": ["serve", "crash"]})
    earlier = StepFailure("local-1cpu", {"MODE": "crash"}, "exited with code 1 before it was ready")
    elsewhere = StepFailure("local-2cpu", {"MODE": "serve"}, "not in this plan: matches nothing")

    experiment = Experiment(spec, "job", time_scale=QUICK_SCALE, failed=[earlier, elsewhere])
    outcomes = experiment.run()

    assert started() == ["serve"]
    assert experiment.restored == (outcomes[1],)
    assert outcomes[1].status == JobStatus.FAILED and outcomes[1].failure_reason == earlier.failure_reason
    assert outcomes[0].status == JobStatus.COMPLETED
    assert step_summary(outcomes, 2).failures == (earlier,)


def test_the_backend_resumes_without_what_status_recorded_as_measured_or_failed(example, stand_in,
                                                                                  no_leftover_processes):
    command, started = stand_in
    raw = raw_local_spec(example, server_command=command, ranges={"MODE": ["serve", "crash"]})
    name = "fraud-local-0123abcd-g1"
    measured = {"recommendationId": f"{name}/00000000", "instanceType": "local-1cpu", "initialInstanceCount": 1,
                "environment": {"MODE": "serve"}, "metrics": {"maxInvocations": 1234}}
    failed = {"instanceType": "local-1cpu", "environment": {"MODE": "crash"},
              "failureReason": "exited with code 1 before it was ready"}
    backend = LocalBackend(time_scale=QUICK_SCALE)
    resume = ResumeState(completed=(Recommendation.from_status_row(measured),),
                         failed=(StepFailure.from_status_row(failed),),
                         started_at=datetime.datetime(2026, 11, 29, 9, tzinfo=datetime.timezone.utc))
    plan = JobPlan(name, spec_module.parse(raw), {"JobName": name}, resume)

    assert isinstance(backend.submit(plan, Owner("ml", "fraud-local", "uid-1")), Submitted)
    snapshot = wait_for(lambda: (s := backend.describe(name)) and s.status == JobStatus.COMPLETED and s, timeout=20)

    assert started() == []  # nothing to run again
    assert [r.recommendation_id for r in snapshot.recommendations] == [measured["recommendationId"]]
    assert snapshot.steps.by_status == {JobStatus.COMPLETED: 1, JobStatus.FAILED: 1}
    assert snapshot.steps.failures == (StepFailure("local-1cpu", {"MODE": "crash"}, failed["failureReason"]),)
    assert snapshot.creation_time == datetime.datetime(2026, 11, 29, 9, tzinfo=datetime.timezone.utc)


def test_the_backend_places_a_job_when_its_turn_comes_not_when_it_was_submitted(example, stand_in, monkeypatch,
                                                                                   no_leftover_processes):
    command, started = stand_in
    raw = raw_local_spec(example, server_command=command, ranges={"MODE": ["serve"]})
    hosts = iter([HostFacts(cpus=(0, 1), memory_total_bytes=GIB, memory_available_bytes=64 << 20),  # busy
                  TWO_CPU_HOST])
    monkeypatch.setattr(HostFacts, "detect", classmethod(lambda cls: next(hosts)))
    backend, name = LocalBackend(time_scale=QUICK_SCALE), "fraud-local-4567cdef-g1"

    assert isinstance(backend.submit(JobPlan(name, spec_module.parse(raw), {"JobName": name}), Owner("ml", "f", "u")),
                      Submitted)
    snapshot = wait_for(lambda: (s := backend.describe(name)) and s.status == JobStatus.COMPLETED and s, timeout=30)

    # At submit another job's server held the memory and the configuration would not have fitted; it ran.
    assert started() == ["serve"] and snapshot.steps.by_status == {JobStatus.COMPLETED: 1}


def test_a_job_waiting_for_the_host_does_not_spend_its_duration_waiting(example, stand_in, no_leftover_processes):
    from rightsizer.backends.local import backend as backend_module
    command, started = stand_in
    # 90 s at 0.1: a 9 s job (its 5 s pattern fits), which waits 10 s for the host (another job holds it).
    raw = raw_local_spec(example, server_command=command, ranges={"MODE": ["serve"]}, jobDurationInSeconds=90)
    backend, name = LocalBackend(time_scale=QUICK_SCALE), "fraud-local-89abcdef-g1"
    with backend_module._host:
        assert isinstance(backend.submit(JobPlan(name, spec_module.parse(raw), {"JobName": name}), Owner("ml", "f", "u")),
                          Submitted)
        time.sleep(10)
        assert backend.describe(name).status == JobStatus.PENDING
    snapshot = wait_for(lambda: (s := backend.describe(name)) and s.status == JobStatus.COMPLETED and s, timeout=30)
    assert started() == ["serve"] and snapshot.steps.by_status == {JobStatus.COMPLETED: 1}


def test_stop_mid_run_returns_promptly_and_leaves_no_process(example, no_leftover_processes):
    # 300 s at 0.1 = 30 s of steady load that flat throughput does not end: only stop() ends it early.
    spec = local_spec(example, ranges={"OMP_NUM_THREADS": ["1", "2"]},
                      traffic={"trafficType": "PHASES",
                               "phases": [{"initialNumberOfUsers": 2, "spawnRate": 0, "durationInSeconds": 300}]},
                      stopping={"flatInvocations": "Continue"})
    loaded = threading.Event()
    experiment = Experiment(spec, "job", time_scale=QUICK_SCALE,
                            on_progress=lambda progress: progress.load and loaded.set())
    returned: list[list[ConfigurationOutcome]] = []
    runner = threading.Thread(target=lambda: returned.append(experiment.run()))
    runner.start()
    try:
        assert loaded.wait(20), "the load test never reported progress"
        stopping_at = time.monotonic()
        experiment.stop()
        runner.join(10)
        took = time.monotonic() - stopping_at
    finally:
        experiment.stop()
        runner.join(10)

    assert not runner.is_alive() and took < 8
    assert returned == [[]]
    assert experiment.stopped and experiment.end_reason == "stopped"


def test_job_duration_stops_scheduling_new_configurations(example, stand_in, no_leftover_processes):
    command, started = stand_in
    # 20 s at 0.025 = a 0.5 s job; the first server takes a second to fail.
    spec = local_spec(example, server_command=command, ranges={"MODE": ["slow-crash", "serve", "crash"]},
                      traffic={"trafficType": "PHASES",
                               "phases": [{"initialNumberOfUsers": 1, "spawnRate": 0, "durationInSeconds": 20}]},
                      jobDurationInSeconds=20)
    experiment = Experiment(spec, "job", time_scale=0.025)

    outcomes = experiment.run()

    assert started() == ["slow-crash"]
    assert [o.planned.index for o in outcomes] == [0] and "gave up after a second" in outcomes[0].failure_reason
    assert "spec.jobDurationInSeconds (20 s) was reached; 2 configurations not measured" == experiment.end_reason
    assert step_summary(outcomes, len(experiment.plan), unfinished_status=JobStatus.STOPPED).by_status == {JobStatus.FAILED: 1,
                                                                                                  JobStatus.STOPPED: 2}


def test_a_load_test_cut_by_the_job_duration_is_not_a_measurement(example, stand_in, no_leftover_processes):
    command, started = stand_in
    # A 10 s job (100 s at 0.1) and 5 s patterns: the first configuration runs whole, the second starts with
    # a few seconds left and its load is cut at the deadline.
    spec = local_spec(example, server_command=command, ranges={"MODE": ["serve"], "RUN": ["1", "2"]},
                      traffic={"trafficType": "PHASES",
                               "phases": [{"initialNumberOfUsers": 1, "spawnRate": 12, "durationInSeconds": 50}]},
                      stopping={"flatInvocations": "Continue"}, jobDurationInSeconds=100)
    experiment = Experiment(spec, "job", time_scale=QUICK_SCALE)

    outcomes = experiment.run()

    assert [o.planned.index for o in outcomes] == [0] and outcomes[0].status == JobStatus.COMPLETED
    # The second one's maximum would be only what its first users reached: no outcome, as for a stop.
    assert experiment.end_reason == "spec.jobDurationInSeconds (100 s) was reached; 1 configuration not measured"


def test_a_configuration_failing_in_a_later_repetition_is_failed_once(example):
    spec = local_spec(example, ranges={"OMP_NUM_THREADS": ["1", "2"]}, local={
        "pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1], "repetitions": 2})
    reported: list[ConfigurationOutcome] = []

    class Scripted(Experiment):
        """Run 1 measures both; run 2 fails the first and the job duration ends the second."""
        script: list = []

        def _run_configuration(self, planned, deadline, probe=False):
            outcome = self.script.pop(0)(planned)
            if outcome is None:
                self.end_reason = "spec.jobDurationInSeconds (600 s) was reached; 1 configuration not measured"
            return outcome

    def measured(planned):
        return ConfigurationOutcome(planned, Recommendation(planned.recommendation_id, "local-1cpu", 1, {},
                                                            {"maxInvocations": 6000, "modelLatency": 5}), None, None)

    def crashed(planned):
        return ConfigurationOutcome(planned, None, "the server passed its memory cap", None)

    Scripted.script = [measured, measured, crashed, lambda planned: None]
    outcomes = Scripted(spec, "job", host=TWO_CPU_HOST, on_outcome=reported.append).run()

    assert [o.status for o in outcomes] == [JobStatus.FAILED, JobStatus.COMPLETED]
    assert [o.planned.index for o in reported] == [0, 1]  # the failed one is not recorded again as measured
    assert outcomes[1].recommendation.metrics["maxInvocations"] == 6000  # its one run still counts


def test_job_duration_counts_from_when_the_job_started(example, stand_in):
    command, started = stand_in
    spec = local_spec(example, server_command=command, ranges={"MODE": ["serve"]}, jobDurationInSeconds=600)
    an_hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)

    experiment = Experiment(spec, "job", job_started_at=an_hour_ago)

    assert experiment.run() == [] and started() == []
    assert "jobDurationInSeconds (600 s) was reached" in experiment.end_reason


# Any HTTP model server, with its own port variable and paths (here a KServe-V1-like one, in the standard
# library so the test needs nothing else): the experiment only needs its command, ready path and invoke path.
OTHER_SERVER = textwrap.dedent("""
    import http.server, os
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def _answer(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            self._answer(200 if self.path == "/v1/models/fraud" else 404, b"{}")
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(200 if self.path == "/v1/models/fraud:predict" else 404, b'{"predictions": [0.01]}')
        def log_message(self, *_):
            pass
    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Handler).serve_forever()
""")


def test_any_http_server_is_measured_through_its_own_port_variable_and_paths(example, tmp_path,
                                                                            no_leftover_processes):
    script = tmp_path / "other_server.py"
    script.write_text(OTHER_SERVER)
    raw_spec = {"backend": "local", "instanceTypes": ["local-1cpu"],
                "model": {"local": {"server": {"command": [sys.executable, str(script)], "portEnv": "APP_PORT",
                                               "readyPath": "/v1/models/fraud",
                                               "invokePath": "/v1/models/fraud:predict"},
                                    "payload": {"path": str(example.payload_row), "contentType": "text/csv"}}},
                "trafficPattern": QUICK_TRAFFIC,
                "stoppingConditions": {"modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 500}]},
                "local": {"pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1]}}
    (outcome,) = Experiment(spec_module.parse(raw_spec), "job", time_scale=QUICK_SCALE).run()
    assert outcome.failure_reason is None, outcome.failure_reason
    assert outcome.recommendation.metrics["maxInvocations"] > 0 and outcome.load.total_failures == 0


def test_repetitions_are_interleaved_and_reported_as_medians(example, stand_in, no_leftover_processes):
    command, started = stand_in
    spec = local_spec(example, server_command=command, ranges={"MODE": ["a", "b"]},
                      local={"pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1], "repetitions": 2})
    reported: list[ConfigurationOutcome] = []
    texts: list[str] = []
    experiment = Experiment(spec, "job", time_scale=QUICK_SCALE, on_outcome=reported.append,
                            on_progress=lambda progress: texts.append(progress.current or ""))
    outcomes = experiment.run()
    assert started() == ["a", "b", "a", "b"]  # every configuration once, then again
    assert [o.planned.environment["MODE"] for o in reported] == ["a", "b"]  # each reported once, when both ran
    assert any(text.startswith("run 2/2: local-1cpu (MODE=b)") for text in texts)
    for outcome in outcomes:
        assert outcome.detail.startswith("median of 2 runs: maxInvocationsPerInstance ")
        metrics = outcome.recommendation.metrics
        assert metrics["costPerInference"] == pytest.approx(PRICE / (metrics["maxInvocationsPerInstance"] * 60))
        assert metrics["maxInvocations"] == \
            metrics["maxInvocationsPerInstance"] * outcome.recommendation.initial_instance_count


def test_the_median_of_runs_takes_each_metric_and_the_typical_runs_timeline(example):
    (planned,) = [p for p in plan_experiment(local_spec(example, ranges={"OMP_NUM_THREADS": ["1"]}), "job",
                                             TWO_CPU_HOST)]
    def run(invocations: int, latency: int, cpu: float) -> ConfigurationOutcome:
        return ConfigurationOutcome(planned, Recommendation(planned.recommendation_id, "local-1cpu", 1, {},
                                                            {"maxInvocations": invocations,
                                                             "maxInvocationsPerInstance": invocations,
                                                             "modelLatency": latency, "cpuUtilization": cpu,
                                                             "costPerHour": PRICE}),
                                    None, None, f"run at {invocations}")
    combined = median_outcome([run(60000, 9, 90.0), run(48000, 12, 80.0), run(54000, 10, 99.0)])
    metrics = combined.recommendation.metrics
    assert (metrics["maxInvocations"], metrics["modelLatency"], metrics["cpuUtilization"]) == (54000, 10, 90.0)
    assert metrics["costPerInference"] == pytest.approx(PRICE / (54000 * 60))
    assert combined.detail == ("median of 3 runs: maxInvocationsPerInstance 48000-60000/min, modelLatency 9-12 ms; "
                               "run at 54000")
    # Instances for a target follow the median throughput, not the median of each run's count (3 and 1 -> 2).
    target = 100_000
    counted = median_outcome([dataclasses.replace(run(34000, 9, 90.0), recommendation=dataclasses.replace(
        run(34000, 9, 90.0).recommendation, initial_instance_count=3)), dataclasses.replace(
        run(100000, 9, 90.0), recommendation=dataclasses.replace(run(100000, 9, 90.0).recommendation,
                                                                 initial_instance_count=1))], target)
    assert counted.recommendation.metrics["maxInvocationsPerInstance"] == 67000
    assert counted.recommendation.initial_instance_count == 2
    assert counted.recommendation.metrics["maxInvocations"] == 134000  # the endpoint of two
    two = median_outcome([run(50000, 9, 90.0), run(40000, 10, 80.0)])
    assert two.recommendation.metrics["modelLatency"] == 10  # 9.5 rounded up: latency is never flattered


# ---- the host queue, durability and restored runs (#16) -----------------------------------------------------------

def test_queued_jobs_get_the_host_first_come_first_served_and_say_behind_whom(example, stand_in,
                                                                            no_leftover_processes):
    from rightsizer.backends.local import backend as backend_module
    command, started = stand_in
    backend = LocalBackend(time_scale=QUICK_SCALE)
    now = datetime.datetime.now(datetime.timezone.utc)
    jobs = {}
    with backend_module._host:  # another holder: every job below queues
        # Submitted in this order; "early" was first submitted before an operator restart, so it goes first.
        for mode, submitted in (("first", None), ("second", None), ("early", now - datetime.timedelta(hours=1))):
            name = f"fraud-local-{mode}-g1"
            raw = raw_local_spec(example, server_command=command, ranges={"MODE": [mode]})
            resume = ResumeState((), (), None, submitted_at=submitted) if submitted else None
            assert isinstance(backend.submit(JobPlan(name, spec_module.parse(raw), {"JobName": name}, resume),
                                             Owner("ml", mode, f"uid-{mode}")), Submitted)
            jobs[mode] = name
        queued = backend.describe(jobs["second"])
        assert queued.status == JobStatus.PENDING
        assert queued.progress.current == "waiting for this host; 2 more jobs ahead in the queue"
        assert queued.progress.started is None
    # "early" runs first; "second" waits behind it and "first".
    waiting = wait_for(lambda: (s := backend.describe(jobs["second"])) and s.progress.current
                       and "where job" in s.progress.current and s, timeout=20)
    assert waiting.progress.current == (f"waiting for this host, where job {jobs['early']} of RightsizeJob ml/early "
                                        f"runs; 1 more job ahead in the queue")
    for name in jobs.values():
        wait_for(lambda: backend.describe(name).status == JobStatus.COMPLETED, timeout=60)
    assert started() == ["early", "first", "second"]
    first, second = backend.describe(jobs["first"]), backend.describe(jobs["second"])
    assert first.progress.started < second.progress.started  # each from when it got the host


def test_no_load_test_starts_before_status_holds_every_finished_one(example, stand_in, no_leftover_processes):
    command, started = stand_in
    raw = raw_local_spec(example, server_command=command, ranges={"MODE": ["a", "b"]},
                         local={"pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1], "repetitions": 2})
    backend, name = LocalBackend(time_scale=QUICK_SCALE), "fraud-local-durable-g1"
    assert isinstance(backend.submit(JobPlan(name, spec_module.parse(raw), {"JobName": name}),
                                     Owner("ml", "durable", "uid-d")), Submitted)
    for expected_starts, held in ((["a"], 1), (["a", "b"], 2), (["a", "b", "a"], 3)):
        # Run 1 of a finished (or b, or a's second run with a's median): the next waits until status holds it.
        snapshot = wait_for(lambda: (s := backend.describe(name)) and s.results_version == held and s, timeout=30)
        time.sleep(1.5)  # time enough to start the next server, were it not held back
        assert started() == expected_starts
        assert len(snapshot.progress.runs) + len(snapshot.recommendations) == min(held, 2)
        backend.persisted(snapshot)  # what the operator does once it has written status
        wait_for(lambda: len(started()) == len(expected_starts) + 1, timeout=10)
    done = wait_for(lambda: (s := backend.describe(name)) and s.status == JobStatus.COMPLETED and s, timeout=30)
    assert started() == ["a", "b", "a", "b"] and len(done.recommendations) == 2 and done.progress.runs == ()


def test_a_resumed_job_runs_no_finished_repetition_again(example, stand_in, no_leftover_processes):
    command, started = stand_in
    raw = raw_local_spec(example, server_command=command, ranges={"MODE": ["a"]},
                         local={"pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1], "repetitions": 2})
    name = "fraud-local-resumed-g1"
    (planned,) = plan_experiment(spec_module.parse(raw), name, HostFacts.detect())
    earlier = datetime.datetime(2026, 11, 29, 9, tzinfo=datetime.timezone.utc)
    finished_run = Recommendation(planned.recommendation_id, "local-1cpu", 1, {"MODE": "a"},
                                  {"maxInvocations": 6000, "maxInvocationsPerInstance": 6000, "modelLatency": 9},
                                  invocation_start=earlier, invocation_end=earlier + datetime.timedelta(seconds=5))
    backend = LocalBackend(time_scale=QUICK_SCALE)
    resume = ResumeState((), (), None, runs=(finished_run,))
    assert isinstance(backend.submit(JobPlan(name, spec_module.parse(raw), {"JobName": name}, resume),
                                     Owner("ml", "resumed", "uid-r")), Submitted)
    assert backend.describe(name).progress.runs == (finished_run,)  # status keeps it while the job runs
    done = wait_for(lambda: (s := backend.describe(name)) and s.status == JobStatus.COMPLETED and s, timeout=30)
    assert started() == ["a"]  # only the second run
    (row,) = done.recommendations
    assert row.invocation_start == earlier  # the median of the kept run and the new one


# ---- spec.search Adaptive over recorded measurements (the load itself is the other tests') ------------------------

# Per OMP_NUM_THREADS/WORKERS: what a probe and the full runs measured (invocations/min) on this host.
ADAPTIVE_FIGURES = {("1", "1"): (125_000, [130_000, 128_000]), ("2", "1"): (121_000, [127_000, 126_000]),
                    ("3", "1"): (90_000, [95_000, 96_000]), ("1", "2"): (70_000, [75_000, 74_000]),
                    ("2", "2"): (60_000, [62_000, 61_000]), ("3", "2"): (50_000, [52_000, 51_000])}


class RecordedExperiment(Experiment):
    """Answers each load test from ADAPTIVE_FIGURES, noting what was asked: (configuration, probe)."""

    def _run_configuration(self, planned, deadline, probe=False):
        self.asked.append((planned.recommendation_id, probe))
        probe_figure, full = ADAPTIVE_FIGURES[(planned.environment["OMP_NUM_THREADS"], planned.environment["WORKERS"])]
        per_minute = probe_figure if probe else full[sum(1 for a in self.asked if a == (planned.recommendation_id,
                                                                                      False)) - 1]
        metrics = {"maxInvocations": per_minute, "maxInvocationsPerInstance": per_minute, "modelLatency": 20,
                   "costPerHour": PRICE, "costPerInference": PRICE / per_minute / 60}
        return ConfigurationOutcome(planned, Recommendation(
            planned.recommendation_id, "local-1cpu", 1, dict(planned.environment), metrics,
            uncertainty=Uncertainty(1.0, 2.0, 1, 3)), None, None)


def adaptive_spec(example):
    return local_spec(example, ranges={"OMP_NUM_THREADS": ["1", "2", "3"], "WORKERS": ["1", "2"]},
                      stopping={"modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]},
                      local={"pricePerHour": {"local-1cpu": PRICE}, "loadGeneratorCpus": [1], "repetitions": 2},
                      search={"strategy": "Adaptive", "reductionFactor": 3})


def test_an_adaptive_search_probes_all_measures_the_best_third_in_full_and_says_why_for_the_rest(example):
    outcomes, runs = [], []
    experiment = RecordedExperiment(adaptive_spec(example), "job", host=TWO_CPU_HOST, on_outcome=outcomes.append,
                                    on_run=runs.append)
    experiment.asked = []

    final = experiment.run()

    probes = [rid for rid, probe in experiment.asked if probe]
    full = [rid for rid, probe in experiment.asked if not probe]
    assert probes == [f"job/{n:08d}" for n in range(6)]  # every configuration once, in plan order
    # ceil(6/3) = 2 go on (OMP 1 and 2 with one worker: the grid is OMP-major). After one run each, OMP 2 is
    # behind OMP 1 within noise (it could not win the tie), so neither needs its second run.
    assert full == ["job/00000000", "job/00000002"]
    assert [o.status for o in final] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED] + [
        JobStatus.FAILED] * 3
    cut = final[1]
    assert cut.planned.skipped and cut.failure_reason.startswith(
        "not measured in full: spec.search Adaptive measures the best 2 of 6 probes in full")
    assert all(r.recommendation.probe for r in runs[:6])  # each probe reached status before the next load test
    assert final[0].recommendation.metrics["maxInvocations"] == 130_000 and not final[0].recommendation.probe
    assert "measured it in 1 of 2 runs: no other configuration can still beat it" in final[0].detail


def test_a_restarted_adaptive_search_runs_no_probe_again_and_keeps_its_cut(example):
    first, runs = [], []
    interrupted = RecordedExperiment(adaptive_spec(example), "job", host=TWO_CPU_HOST, on_outcome=first.append,
                                     on_run=runs.append)
    interrupted.asked = []
    interrupted.run()
    # What status held after the probes and the cut, before any full run: the probes and the cut configurations.
    probes = [r.recommendation for r in runs if r.recommendation.probe]
    cut = [o for o in first if o.planned.skipped]
    failures = [StepFailure(o.planned.instance_type, dict(o.planned.environment), o.failure_reason, skipped=True)
                for o in cut]

    resumed = RecordedExperiment(adaptive_spec(example), "job", host=TWO_CPU_HOST, runs=probes, failed=failures)
    resumed.asked = []
    final = resumed.run()

    assert [probe for _, probe in resumed.asked] == [False] * 2  # only the survivors' full runs
    assert [o.status for o in final] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED] + [
        JobStatus.FAILED] * 3
