"""The local backend's experiment: every configuration of a RightsizeJob benchmarked on this host, one after another,
the way SageMaker Inference Recommender benchmarks every endpoint configuration of an Advanced job.

Plan. `plan_experiment` lists the configurations in a fixed order (candidates in spec order, then each candidate's
parameter_grid order) under SageMaker-shaped ids `<job name>/<index:08d>`. The order and ids depend only on the
spec, the job name and the host, so a restarted operator finds the same ids and does not re-run what finished.
Each candidate is placed on the host (rightsizer.loadtest.placement). A configuration is skipped, with the reason,
when its candidate does not fit, or when spec.resourceLimit.maxNumberOfTests configurations that do fit come
before it (SageMaker's cap on the number of load tests).

Run. Configurations run one at a time, whatever spec.resourceLimit.maxParallelOfTests says: the model server and
the load generator each need cores of their own (loadtest-anchors §6), and two benchmarks side by side would
measure each other. For each configuration, Experiment.run:
1. starts the model server (ServerProcess) pinned to the placement's CPUs, held to its memory cap, with the
   configuration's environment on top of the server's own settings, and waits for it to be ready; start to ready
   is ModelSetupTime;
2. load-tests it on 127.0.0.1 with the spec's trafficPattern (DEFAULT_TRAFFIC_PATTERN when absent) and
   stoppingConditions, from a load generator pinned to the placement's load-generator CPUs;
3. reads the server's CPU and memory over the window that gave the maximum invocations, and stops the server.

Metrics (SageMaker's RecommendationMetrics in the lowerCamelCase of status.recommendations[].metrics; the CRD
declares maxInvocations, modelLatency and modelSetupTime as integers, as SageMaker reports them):
- maxInvocations: the load result's best sustained invocations per minute within the latency threshold.
- modelLatency: the latency at that load for the threshold's percentile, in whole ms rounded up, so that a
  latency a fraction above the threshold never reads as meeting it. The load result keeps P50, P95 and P99:
  another percentile (P90) is reported as P95, the stricter neighbour. Without a threshold: P95. The exact
  value stays in ConfigurationOutcome.load.
- cpuUtilization: percent summed over cores (200 = two busy cores), the mean over that window.
- memoryUtilization: the peak resident memory of the server's process tree in that window, in percent of the
  emulated instance's memory (not of the possibly lower cap).
- costPerHour: the placement's price x initialInstanceCount; costPerInference: the price of one instance-hour
  over an hour of invocations at maxInvocations. Both left out when the instance has no price.
- initialInstanceCount: ceil(stoppingConditions.maxInvocations / maxInvocations) when maxInvocations is a
  stopping condition, else 1.

Decisions:
- A configuration whose latency threshold was breached before any window held it (even the lightest load was
  too slow) is COMPLETED, not failed: the server worked, and the measurement is the answer. It reports
  maxInvocations 0, modelLatency from every successful request of the run (above the threshold), no
  costPerInference and one instance. Selection then never picks it for a throughput or cost-per-inference
  objective, nor under a latency constraint at or below the threshold. A run without a single successful
  request is a failure.
- A crashed server, one that never became ready or passed its memory cap, and a failed load generator fail only
  their configuration, with the reason (the server's output tail is in ServerProcess's reasons).
- The load generator passing 90 % CPU (Locust's warning) does not fail a configuration, but its detail says
  that the maximum may be the generator's rather than the server's.
- spec.jobDurationInSeconds (x time_scale) counts from job_started_at, or from run() when it is not given: no
  configuration starts after it, and the running load test is cut at it. A server's start-up is not cut: it
  ends within SERVER_READY_TIMEOUT_S.
- stop() and the job duration leave the configuration in flight unfinished: it gets no outcome, so a restart
  runs it again.

Threads: run() blocks; start and stop the experiment from one long-lived thread (ServerProcess ties a server's
life to the thread that started it). on_progress runs on run()'s thread and on the load generator's reader
thread; on_outcome runs on run()'s thread. stop() may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import statistics
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import rightsizer
from rightsizer.model import JobStatus, Recommendation, StepFailure, StepSummary, describe_environment
from rightsizer.loadtest.load_generator import (LoadProgress, LoadResult, LoadTarget, LoadTest, RunSettings,
                                             StoppingConditions as LoadStoppingConditions, StopReason)
from rightsizer.loadtest.load_shape import LoadShape
from rightsizer.loadtest.placement import HostFacts, Placement, PlacementError, Skipped, plan as place_candidates
from rightsizer.loadtest.server_process import ResourceUsage, ServerFailed, ServerProcess
from rightsizer.spec import RightsizeJobSpec, StoppingConditions, TrafficPattern, parameter_grid

log = logging.getLogger(__name__)

# Used when the spec has no trafficPattern. SageMaker's own defaults are not published for Advanced jobs, so this
# is chosen for a CPU model server: one user more every 10 s from 1 to 19 users over 3 minutes. Each user level
# then fills two of the load generator's 5 s windows, and its flat-throughput rule (4 levels) ends the test about
# 40 s after the server saturates.
DEFAULT_TRAFFIC_PATTERN: Mapping[str, Any] = types.MappingProxyType({
    "trafficType": "PHASES",
    "phases": ({"initialNumberOfUsers": 1, "spawnRate": 6, "durationInSeconds": 180},),
})
# Real seconds, never scaled: loading a model takes as long in a compressed test as in a real one.
SERVER_READY_TIMEOUT_S = 120.0
SERVER_STOP_GRACE_S = 5.0
BUILT_IN_SERVER_MODULE = "rightsizer.reference.model_server"
BUILT_IN_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
# status.progress.current is declared with this maxLength in the CRD.
PROGRESS_TEXT_MAX = 256
# The percentiles a LoadResult keeps, and the fields that hold them over the max-invocations window and the run.
_LATENCY_FIELDS = {50.0: ("model_latency_p50_ms", "run_p50_ms"),
                   95.0: ("model_latency_p95_ms", "run_p95_ms"),
                   99.0: ("model_latency_p99_ms", "run_p99_ms")}


class ExperimentError(ValueError):
    """The job cannot run on this host at all (not a problem of one configuration); the message says why."""


@dataclasses.dataclass(frozen=True)
class PlannedConfiguration:
    index: int  # position in the deterministic plan
    recommendation_id: str  # f"{job_name}/{index:08d}", SageMaker's own id shape
    instance_type: str
    environment: Mapping[str, str]
    placement: Placement | None  # None when skipped
    skipped_reason: str | None

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None

    @property
    def label(self) -> str:
        """`local-1cpu (OMP_NUM_THREADS=1, SAGEMAKER_MODEL_SERVER_WORKERS=1)`, for progress and logs."""
        environment = describe_environment(self.environment)
        return f"{self.instance_type} ({environment})" if environment else self.instance_type


@dataclasses.dataclass(frozen=True)
class ExperimentProgress:
    completed: int
    total: int
    current: str | None  # what runs now, at most PROGRESS_TEXT_MAX characters; None between configurations
    configuration: PlannedConfiguration | None
    load: LoadProgress | None


@dataclasses.dataclass(frozen=True)
class ConfigurationOutcome:
    planned: PlannedConfiguration
    recommendation: Recommendation | None  # None when the configuration failed or was skipped
    failure_reason: str | None
    load: LoadResult | None  # the raw load test (its timeline is for charts); None if no load ran
    # How the load test ended (stop reason and its explanation) and what qualifies the measurement.
    detail: str | None = None

    @property
    def status(self) -> str:
        """The step status SageMaker's ListInferenceRecommendationsJobSteps would give: COMPLETED or FAILED."""
        return JobStatus.COMPLETED if self.recommendation is not None else JobStatus.FAILED


# ---- plan ---------------------------------------------------------------------------------------------------------


def plan_experiment(spec: RightsizeJobSpec, job_name: str, host: HostFacts) -> list[PlannedConfiguration]:
    """Every configuration of the job, in order, placed on `host` or skipped with the reason. Pure.

    Raises PlacementError when the job's local settings cannot work on this host (spec.local.loadGeneratorCpus
    names CPUs this process cannot use)."""
    local = spec.local or {}
    instance_types = list(dict.fromkeys(c.instance_type for c in spec.candidates if c.instance_type))
    placements = dict(zip(instance_types, place_candidates(
        instance_types, host, local.get("loadGeneratorCpus"), local.get("pricePerHour")).placements))
    max_tests = (spec.resource_limit or {}).get("maxNumberOfTests")
    planned: list[PlannedConfiguration] = []
    runnable = 0
    for candidate in spec.candidates:
        where = placements.get(candidate.instance_type) if candidate.instance_type else None
        for environment in parameter_grid(candidate):
            index = len(planned)
            reason: str | None = None
            if candidate.instance_type is None:
                reason = ("a serverless configuration: the local backend emulates instances, not SageMaker "
                          "Serverless Inference")
            elif isinstance(where, Skipped):
                reason = where.reason
            elif max_tests is not None and runnable >= max_tests:
                reason = (f"not tested: spec.resourceLimit.maxNumberOfTests is {max_tests}, and {max_tests} "
                          "configurations come before this one")
            else:
                runnable += 1
            planned.append(PlannedConfiguration(
                index=index, recommendation_id=f"{job_name}/{index:08d}",
                instance_type=candidate.instance_type or "serverless", environment=dict(environment),
                placement=where if reason is None else None, skipped_reason=reason))
    return planned


def traffic_pattern_dict(pattern: TrafficPattern | None) -> dict[str, Any]:
    """The CRD's trafficPattern for the load generator, or DEFAULT_TRAFFIC_PATTERN."""
    if pattern is None:
        return {"trafficType": DEFAULT_TRAFFIC_PATTERN["trafficType"],
                "phases": [dict(phase) for phase in DEFAULT_TRAFFIC_PATTERN["phases"]]}
    if pattern.stairs is not None:
        return {"trafficType": pattern.traffic_type,
                "stairs": {"durationInSeconds": pattern.stairs.duration_seconds,
                           "numberOfSteps": pattern.stairs.steps, "usersPerStep": pattern.stairs.users_per_step}}
    return {"trafficType": pattern.traffic_type,
            "phases": [{"initialNumberOfUsers": phase.initial_users, "spawnRate": phase.spawn_rate_per_minute,
                        "durationInSeconds": phase.duration_seconds} for phase in pattern.phases]}


def stopping_conditions_dict(stopping: StoppingConditions | None) -> dict[str, Any]:
    """The CRD's stoppingConditions for the load generator (absent conditions stay absent)."""
    if stopping is None:
        return {}
    raw: dict[str, Any] = {}
    if stopping.max_invocations is not None:
        raw["maxInvocations"] = stopping.max_invocations
    if stopping.latency_threshold is not None:
        raw["modelLatencyThresholds"] = [{"percentile": stopping.latency_threshold.percentile,
                                          "valueInMilliseconds": stopping.latency_threshold.milliseconds}]
    if stopping.flat_invocations is not None:
        raw["flatInvocations"] = stopping.flat_invocations
    return raw


# ---- metrics ------------------------------------------------------------------------------------------------------


def _reported_percentile(stopping: StoppingConditions | None) -> float:
    """The LoadResult percentile that stands for the threshold's: itself when kept, else the next stricter."""
    if stopping is None or stopping.latency_threshold is None:
        return 95.0
    wanted = float(stopping.latency_threshold.percentile.lstrip("pP"))
    return min((p for p in _LATENCY_FIELDS if p >= wanted), default=99.0)


def max_invocations_window(result: LoadResult, window_s: float) -> tuple[float, float] | None:
    """Start and end (seconds on the load test's clock) of the window that gave max_invocations_per_minute: as
    the load generator reports it, or, for a result without it, the run of round(window_s) consecutive timeline
    intervals whose rate is closest."""
    points = result.timeline
    if result.max_invocations_per_minute is None or not points:
        return None
    if result.max_invocations_window_s is not None:
        return result.max_invocations_window_s
    size = min(max(1, round(window_s)), len(points))
    best: tuple[float, float, float] | None = None
    for end in range(size, len(points) + 1):
        window = points[end - size:end]
        seconds = sum(point.duration_s for point in window)
        if seconds <= 0:
            continue
        per_minute = 60.0 * sum(point.rps * point.duration_s for point in window) / seconds
        gap = abs(per_minute - result.max_invocations_per_minute)
        if best is None or gap < best[0]:
            best = (gap, window[0].elapsed_s - window[0].duration_s, window[-1].elapsed_s)
    return None if best is None else (best[1], best[2])


def measured_outcome(planned: PlannedConfiguration, result: LoadResult, *, setup_seconds: float,
                     usage: ResourceUsage | None, stopping: StoppingConditions | None,
                     server_failure: str | None = None, invocation_start: datetime.datetime | None = None,
                     invocation_end: datetime.datetime | None = None) -> ConfigurationOutcome:
    """The outcome of one configuration whose load test ran to an end (not interrupted by stop()). Pure."""
    placement = planned.placement
    if placement is None:
        raise ValueError(f"{planned.recommendation_id} was skipped; it has no measurement")
    notes = [f"{result.stop_reason}: {result.detail}"]
    if result.cpu_warning:
        notes.append("the load generator passed 90 % CPU: the maximum may be the generator's, not the server's")
    notes.extend(placement.notes)
    detail = "; ".join(notes)
    if server_failure:
        return ConfigurationOutcome(planned, None, server_failure, result, detail)
    if result.failed or result.stop_reason is StopReason.CANCELLED:
        return ConfigurationOutcome(planned, None, f"the load test failed ({result.stop_reason}): {result.detail}",
                                    result, detail)
    window_field, run_field = _LATENCY_FIELDS[_reported_percentile(stopping)]
    if result.max_invocations_per_minute is not None:
        max_invocations = round(result.max_invocations_per_minute)
        latency_ms = getattr(result, window_field)
    else:
        # No window held the threshold: see the module docstring.
        max_invocations = 0
        latency_ms = getattr(result, run_field)
    if latency_ms is None:
        return ConfigurationOutcome(planned, None, f"no successful invocation ({result.stop_reason}: "
                                                   f"{result.detail})", result, detail)
    target = stopping.max_invocations if stopping else None
    instances = math.ceil(target / max_invocations) if target and max_invocations > 0 else 1
    metrics: dict[str, float | int] = {"maxInvocations": max_invocations, "modelLatency": math.ceil(latency_ms),
                                       "modelSetupTime": round(setup_seconds)}
    if usage is not None:
        metrics["cpuUtilization"] = round(usage.cpu_percent, 2)
        metrics["memoryUtilization"] = round(100.0 * usage.rss_bytes / placement.instance_memory_bytes, 2)
    metrics.update(_costs(placement.price_per_hour, instances, max_invocations))
    recommendation = Recommendation(
        recommendation_id=planned.recommendation_id, instance_type=planned.instance_type,
        initial_instance_count=instances, environment=dict(planned.environment), metrics=metrics,
        invocation_start=invocation_start, invocation_end=invocation_end)
    return ConfigurationOutcome(planned, recommendation, None, result, detail)


def _costs(price_per_hour: float | None, instances: int, max_invocations: int) -> dict[str, float]:
    """costPerHour for the instances; costPerInference as one instance-hour over its invocations."""
    if price_per_hour is None:
        return {}
    costs = {"costPerHour": round(price_per_hour * instances, 10)}
    if max_invocations > 0:
        costs["costPerInference"] = price_per_hour / (max_invocations * 60)
    return costs


def median_outcome(runs: Sequence[ConfigurationOutcome], target_invocations: int | None = None) -> ConfigurationOutcome:
    """Several measured runs of one configuration as one: each metric's median (latency rounded up, like a
    single run's), the instances that median needs for `target_invocations` (stoppingConditions.maxInvocations),
    the median run's timeline for charts, the spread in the detail. Pure."""
    if len(runs) == 1:
        return runs[0]
    recommendations = [run.recommendation for run in runs]
    metrics: dict[str, float | int] = {}
    for key in recommendations[0].metrics:
        values = [r.metrics[key] for r in recommendations if r.metrics.get(key) is not None]
        if not values:
            continue
        middle = statistics.median(values)
        if all(isinstance(v, int) for v in values):
            middle = math.ceil(middle) if key == "modelLatency" else round(middle)
        metrics[key] = middle
    median_invocations = metrics.get("maxInvocations") or 0
    # As for a single run: the median of the counts could need more instances than the median throughput does.
    count = (math.ceil(target_invocations / median_invocations) if target_invocations and median_invocations > 0
             else math.ceil(statistics.median(r.initial_instance_count or 1 for r in recommendations)))
    # Cost follows the median throughput and count, as a single run's does.
    metrics.pop("costPerHour", None)
    metrics.pop("costPerInference", None)
    metrics.update(_costs(runs[0].planned.placement.price_per_hour, count, metrics.get("maxInvocations") or 0))
    by_throughput = sorted(runs, key=lambda run: run.recommendation.metrics.get("maxInvocations") or 0)
    typical = by_throughput[len(by_throughput) // 2]
    throughputs = [r.metrics.get("maxInvocations") or 0 for r in recommendations]
    latencies = [r.metrics.get("modelLatency") for r in recommendations if r.metrics.get("modelLatency") is not None]
    spread = (f"median of {len(runs)} runs: maxInvocations {min(throughputs)}-{max(throughputs)}/min"
              + (f", modelLatency {min(latencies)}-{max(latencies)} ms" if latencies else ""))
    recommendation = dataclasses.replace(
        recommendations[0], metrics=metrics, initial_instance_count=count,
        invocation_start=recommendations[0].invocation_start, invocation_end=recommendations[-1].invocation_end)
    return ConfigurationOutcome(typical.planned, recommendation, None, typical.load,
                                "; ".join(part for part in (spread, typical.detail) if part))


def step_summary(outcomes: Iterable[ConfigurationOutcome], total: int, *,
                 unfinished_status: str = JobStatus.PENDING) -> StepSummary:
    """The job's benchmark steps as ListInferenceRecommendationsJobSteps reports them: counted by status, with
    each failure's reason. Skipped configurations are FAILED steps. Configurations without an outcome count as
    `unfinished_status` (PENDING while the job runs; the backend may say STOPPED once it has ended)."""
    by_status: dict[str, int] = {}
    failures: list[StepFailure] = []
    finished = 0
    for outcome in outcomes:
        finished += 1
        by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
        if outcome.status == JobStatus.FAILED:
            failures.append(StepFailure(instance_type=outcome.planned.instance_type,
                                        environment=dict(outcome.planned.environment),
                                        failure_reason=outcome.failure_reason or "no reason given",
                                        skipped=outcome.planned.skipped))
    if total > finished:
        by_status[unfinished_status] = by_status.get(unfinished_status, 0) + total - finished
    return StepSummary(total=max(total, finished), by_status=by_status, failures=tuple(failures))


# ---- run ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ServerCommand:
    command: tuple[str, ...]
    ready_path: str
    invoke_path: str
    port_env: str
    environment: Mapping[str, str]  # under the configuration's environment


def _server_command(local_model: Mapping[str, Any]) -> _ServerCommand:
    environment: dict[str, str] = {}
    if local_model.get("modelUri"):
        # A custom server may ignore it; the built-in one needs it.
        environment["RIGHTSIZER_MODEL_URI"] = local_model["modelUri"]
    server = local_model.get("server")
    if server:
        return _ServerCommand(tuple(server["command"]), server.get("readyPath", "/ping"),
                              server.get("invokePath", "/invocations"), server.get("portEnv", BUILT_IN_PORT_ENV),
                              environment)
    # The built-in server must import this package whether or not it is installed (a source checkout).
    package_root = str(Path(rightsizer.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return _ServerCommand((sys.executable, "-m", BUILT_IN_SERVER_MODULE), "/ping", "/invocations",
                          BUILT_IN_PORT_ENV, environment)


def _read_payload(local_model: Mapping[str, Any]) -> tuple[bytes, str]:
    payload = local_model.get("payload") or {}
    path = payload.get("path")
    if not path:
        raise ExperimentError("spec.model.local.payload.path is required: the request body every user sends")
    try:
        return Path(path).read_bytes(), payload.get("contentType") or "text/csv"
    except OSError as error:
        raise ExperimentError(f"cannot read spec.model.local.payload.path {path}: "
                              f"{error.strerror or error}") from error


class _LoadClock:
    """Maps the load generator's clock (seconds since its first tick) onto time.monotonic() here.

    Each progress message is received some delay after it was sent, so the smallest received-minus-elapsed is
    the closest estimate of when the load test's clock started."""

    def __init__(self):
        self.offset: float | None = None

    def observe(self, elapsed_s: float) -> None:
        offset = time.monotonic() - elapsed_s
        if self.offset is None or offset < self.offset:
            self.offset = offset


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Experiment:
    """Runs every planned configuration of one job on this host; see the module docstring."""

    def __init__(self, spec: RightsizeJobSpec, job_name: str, *, host: HostFacts | None = None,
                 time_scale: float = 1.0,
                 completed: Mapping[str, ConfigurationOutcome | Recommendation] = types.MappingProxyType({}),
                 on_progress: Callable[[ExperimentProgress], None] | None = None,
                 on_outcome: Callable[[ConfigurationOutcome], None] | None = None,
                 job_started_at: datetime.datetime | None = None,
                 failed: Iterable[StepFailure] = ()):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if not spec.model.local:
            raise ExperimentError("spec.model.local is required with spec.backend: local")
        self.spec = spec
        self.job_name = job_name
        self.time_scale = float(time_scale)
        self.repetitions = int((spec.local or {}).get("repetitions") or 1)
        self._run_number = 1
        self.job_started_at = job_started_at
        try:
            self.plan: tuple[PlannedConfiguration, ...] = tuple(
                plan_experiment(spec, job_name, host or HostFacts.detect()))
        except PlacementError as error:
            raise ExperimentError(str(error)) from error
        self._payload, self._content_type = _read_payload(spec.model.local)
        self._server_command = _server_command(spec.model.local)
        self._traffic = traffic_pattern_dict(spec.traffic_pattern)
        self._stopping = stopping_conditions_dict(spec.stopping_conditions)
        try:
            LoadShape(self._traffic, time_scale=self.time_scale)
            LoadStoppingConditions.from_spec(self._stopping)
        except ValueError as error:
            raise ExperimentError(str(error)) from error
        self._run_settings = RunSettings()
        self._target_invocations = spec.stopping_conditions.max_invocations if spec.stopping_conditions else None
        by_id = {planned.recommendation_id: planned for planned in self.plan}
        self._restored: dict[str, ConfigurationOutcome] = {}
        for recommendation_id, finished in completed.items():
            planned = by_id.get(recommendation_id)
            if planned is None:
                log.warning("%s: finished configuration %s is not in the plan; ignored", job_name, recommendation_id)
                continue
            self._restored[recommendation_id] = (
                finished if isinstance(finished, ConfigurationOutcome)
                else ConfigurationOutcome(planned, finished, None, None, "restored from an earlier run"))
        # Failures are known by instance type and environment (SageMaker's step shape). Skipped configurations are
        # judged afresh: the host may have changed.
        for failure in failed:
            for planned in self.plan:
                if (not planned.skipped and planned.recommendation_id not in self._restored
                        and (planned.instance_type, dict(planned.environment))
                        == (failure.instance_type, dict(failure.environment))):
                    self._restored[planned.recommendation_id] = ConfigurationOutcome(
                        planned, None, failure.failure_reason, None, "failed in an earlier run")
        self._on_progress = on_progress
        self._on_outcome = on_outcome
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._running_server: ServerProcess | None = None
        self._running_load: LoadTest | None = None
        self._started = False
        self._finished_count = len(self._restored)
        self.end_reason: str | None = None  # why run() returned before every configuration had an outcome

    @property
    def restored(self) -> tuple[ConfigurationOutcome, ...]:
        """The outcomes passed in as `completed` (finished before a restart), in plan order."""
        return tuple(self._restored[p.recommendation_id] for p in self.plan if p.recommendation_id in self._restored)

    @property
    def stopped(self) -> bool:
        return self._stop_requested.is_set()

    def stop(self) -> None:
        """Stop the load test and the server now running, and start no other configuration. Returns once both
        have exited (a few seconds at most: call it off an event loop). Thread-safe, idempotent.

        Not from on_progress: load progress arrives on the thread that must read the load test's final message,
        so stopping from there can make the stop wait for the load generator's kill timeout."""
        with self._lock:
            self._stop_requested.set()
            load, server = self._running_load, self._running_server
        if load is not None:
            load.stop()
        if server is not None:
            server.stop(grace_seconds=SERVER_STOP_GRACE_S)

    def run(self) -> list[ConfigurationOutcome]:
        """Run the configurations that have no outcome yet; return every outcome (restored ones included) in plan
        order. Skipped configurations get theirs first, at once."""
        with self._lock:
            if self._started:
                raise RuntimeError("an Experiment runs once")
            self._started = True
        deadline = self._deadline()
        outcomes = dict(self._restored)
        for planned in self.plan:
            if planned.skipped and planned.recommendation_id not in outcomes:
                self._record(outcomes, ConfigurationOutcome(planned, None, planned.skipped_reason, None))
        # Repetitions are interleaved (all configurations once, then again) so that a slow minute of the host
        # does not land on one configuration's every run.
        runs: dict[str, list[ConfigurationOutcome]] = {}
        try:
            for self._run_number in range(1, self.repetitions + 1):
                for planned in self.plan:
                    if planned.recommendation_id in outcomes:
                        continue
                    if self.stopped:
                        self.end_reason = "stopped"
                        return self._sorted(outcomes)
                    if deadline is not None and time.monotonic() >= deadline:
                        self.end_reason = self._duration_reason()
                        self._record_partial_runs(outcomes, runs)
                        return self._sorted(outcomes)
                    outcome = self._run_configuration(planned, deadline)
                    if outcome is None:
                        if self.end_reason != "stopped":
                            self._record_partial_runs(outcomes, runs)
                        return self._sorted(outcomes)
                    if outcome.recommendation is None:  # a failure is not worth repeating
                        runs.pop(planned.recommendation_id, None)  # nor are its earlier runs a result
                        self._record(outcomes, outcome)
                        continue
                    runs.setdefault(planned.recommendation_id, []).append(outcome)
                    if len(runs[planned.recommendation_id]) == self.repetitions:
                        self._record(outcomes, median_outcome(runs.pop(planned.recommendation_id),
                                                              self._target_invocations))
        finally:
            self._report(None, None)
        return self._sorted(outcomes)

    @staticmethod
    def _sorted(outcomes: Mapping[str, ConfigurationOutcome]) -> list[ConfigurationOutcome]:
        return sorted(outcomes.values(), key=lambda outcome: outcome.planned.index)

    def _record_partial_runs(self, outcomes: dict[str, ConfigurationOutcome],
                             runs: dict[str, list[ConfigurationOutcome]]) -> None:
        """The job duration ended the repetitions: what was measured still counts, as SageMaker's does."""
        for measured in runs.values():
            self._record(outcomes, median_outcome(measured, self._target_invocations))
        runs.clear()

    # -- one configuration --------------------------------------------------------------------------------------

    def _run_configuration(self, planned: PlannedConfiguration,
                           deadline: float | None) -> ConfigurationOutcome | None:
        """The configuration's outcome, or None when stop() or the job duration interrupted it."""
        placement = planned.placement
        self._report(planned, f"{planned.label}: starting the model server")
        command = self._server_command
        server = ServerProcess(command.command, cpus=placement.cpus, memory_limit_bytes=placement.memory_limit_bytes,
                               environment={**command.environment, **planned.environment},
                               port_env=command.port_env, ready_path=command.ready_path)
        try:
            with self._lock:
                if self.stopped:
                    self.end_reason = "stopped"
                    return None
                self._running_server = server
                server.start()
            return self._benchmark(planned, server, deadline)
        except Exception as error:  # noqa: BLE001 - one configuration's surprise must not end the others
            if self.stopped:
                self.end_reason = "stopped"
                return None
            log.exception("%s: benchmarking %s failed", self.job_name, planned.label)
            return ConfigurationOutcome(planned, None, f"the benchmark failed: {type(error).__name__}: {error}",
                                        None)
        finally:
            with self._lock:
                self._running_server = None
                self._running_load = None
            server.stop(grace_seconds=SERVER_STOP_GRACE_S)

    def _benchmark(self, planned: PlannedConfiguration, server: ServerProcess,
                   deadline: float | None) -> ConfigurationOutcome | None:
        placement = planned.placement
        try:
            setup_seconds = server.wait_until_ready(timeout=SERVER_READY_TIMEOUT_S)
        except ServerFailed as failure:
            if self.stopped:
                self.end_reason = "stopped"
                return None
            return ConfigurationOutcome(planned, None, failure.reason, None)
        job_duration_s = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.end_reason = self._duration_reason()
                return None
            job_duration_s = remaining / self.time_scale  # the load generator scales it back
        self._report(planned, f"{planned.label}: model server ready after {setup_seconds:.1f} s, starting the load")
        clock = _LoadClock()

        def on_load_progress(progress: LoadProgress) -> None:
            clock.observe(progress.elapsed_s)
            self._report(planned, self._load_text(planned, progress), progress)

        test = LoadTest(LoadTarget(server.url(self._server_command.invoke_path), self._payload, self._content_type),
                        self._traffic, self._stopping, cpus=placement.load_generator_cpus,
                        time_scale=self.time_scale, job_duration_s=job_duration_s, settings=self._run_settings,
                        on_progress=on_load_progress)
        with self._lock:
            if self.stopped:
                self.end_reason = "stopped"
                return None
            invocation_start = _utc_now()
            test.start()
            self._running_load = test
        try:
            result = test.wait()
        finally:
            test.stop()
        ended = time.monotonic()
        invocation_end = _utc_now()
        if self.stopped and result.stop_reason is StopReason.CANCELLED:
            self.end_reason = "stopped"
            return None
        if result.stop_reason is StopReason.JOB_DURATION:
            # Cut short, its maximum is only what the first users reached: not a measurement of the configuration.
            self.end_reason = self._duration_reason()
            return None
        # Read before stopping: a stopped server has no failure to report.
        server_failure = server.failure_reason()
        server.stop(grace_seconds=SERVER_STOP_GRACE_S)
        start = clock.offset if clock.offset is not None else ended - result.duration_s
        usage = None
        window = max_invocations_window(result, self._run_settings.window_s)
        if window is not None:
            usage = server.sampler.usage(start + window[0], start + window[1])
        if usage is None:
            usage = server.sampler.usage(start, start + result.duration_s)
        return measured_outcome(planned, result, setup_seconds=setup_seconds, usage=usage,
                                stopping=self.spec.stopping_conditions, server_failure=server_failure,
                                invocation_start=invocation_start, invocation_end=invocation_end)

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        seconds = self.spec.job_duration_seconds
        if not seconds:
            return None
        already = 0.0
        if self.job_started_at is not None:
            already = max(0.0, (_utc_now() - self.job_started_at).total_seconds())
        return time.monotonic() + seconds * self.time_scale - already

    def _duration_reason(self) -> str:
        left = len(self.plan) - self._finished_count
        return (f"spec.jobDurationInSeconds ({self.spec.job_duration_seconds} s) was reached; {left} "
                f"configuration{'' if left == 1 else 's'} not measured")

    def _record(self, outcomes: dict[str, ConfigurationOutcome], outcome: ConfigurationOutcome) -> None:
        outcomes[outcome.planned.recommendation_id] = outcome
        self._finished_count = len(outcomes)
        if outcome.failure_reason:
            log.info("%s: %s failed: %s", self.job_name, outcome.planned.label, outcome.failure_reason)
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the benchmarks
                log.exception("%s: the outcome callback failed", self.job_name)
        self._report(None, None)

    @staticmethod
    def _load_text(planned: PlannedConfiguration, progress: LoadProgress) -> str:
        users = f"{progress.users} user{'' if progress.users == 1 else 's'}"
        text = f"{planned.label}: {progress.stage}, {users}, {progress.rps:.0f} req/s"
        if progress.p95_ms is not None:
            text += f", p95 {progress.p95_ms:.0f} ms"
        return text

    def _report(self, planned: PlannedConfiguration | None, current: str | None,
                load: LoadProgress | None = None) -> None:
        if self._on_progress is None:
            return
        if current and planned is not None and self.repetitions > 1:
            current = f"run {self._run_number}/{self.repetitions}: {current}"
        progress = ExperimentProgress(completed=self._finished_count, total=len(self.plan),
                                      current=current[:PROGRESS_TEXT_MAX] if current else None,
                                      configuration=planned, load=load)
        try:
            self._on_progress(progress)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the benchmarks
            log.exception("%s: the progress callback failed", self.job_name)


__all__ = [
    "DEFAULT_TRAFFIC_PATTERN", "ConfigurationOutcome", "Experiment", "ExperimentError", "ExperimentProgress",
    "PlannedConfiguration", "max_invocations_window", "measured_outcome", "median_outcome", "plan_experiment",
    "step_summary", "stopping_conditions_dict", "traffic_pattern_dict",
]
