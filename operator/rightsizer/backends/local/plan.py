"""The local backend's experiment as pure functions: which configurations a RightsizeJob benchmarks on this host,
and the SageMaker-shaped metrics of each from its load test. No processes, no clock (experiment.py runs them).

Plan. `plan_experiment` lists the configurations in a fixed order (candidates in spec order, then each candidate's
parameter_grid order) under SageMaker-shaped ids `<job name>/<index:08d>`. The order and ids depend only on the
spec, the job name and the host, so a restarted operator finds the same ids and does not re-run what finished.
Each candidate is placed on the host (rightsizer.loadtest.placement). A configuration is skipped, with the reason,
when its candidate does not fit, or when spec.resourceLimit.maxNumberOfTests configurations that do fit come
before it (SageMaker's cap on the number of load tests). spec.baseline's configuration, when the job has one,
comes first as `<job name>/baseline`, with the target's own instance count, outside that cap. The load is the
spec's trafficPattern, or DEFAULT_TRAFFIC_PATTERN when it has none.

Metrics (SageMaker's RecommendationMetrics in the lowerCamelCase of status.recommendations[].metrics; the CRD
declares maxInvocations, modelLatency and modelSetupTime as integers, as SageMaker reports them):
- maxInvocationsPerInstance: the load result's best sustained invocations per minute within the latency threshold,
  on the one instance the host emulates.
- maxInvocations: the endpoint's, as SageMaker reports it (rightsizer.selection.ENDPOINT_SCOPE): one instance's
  times initialInstanceCount, the load spread evenly over the instances behind the endpoint.
- modelLatency: the latency at that load for the threshold's percentile, in whole ms rounded up, so that a
  latency a fraction above the threshold never reads as meeting it. The load result keeps P50, P95 and P99
  (load_generator.KEPT_PERCENTILES): another percentile (P90) is reported as P95, the stricter neighbour.
  Without a threshold: P95. The exact value stays in ConfigurationOutcome.load.
- cpuUtilization: percent summed over cores (200 = two busy cores), the mean over that window.
- memoryUtilization: the peak resident memory of the server's process tree in that window, in percent of the
  emulated instance's memory (not of the possibly lower cap).
- costPerHour: the placement's price x initialInstanceCount; costPerInference: costPerHour over an hour of
  invocations at maxInvocations (so one instance-hour over one instance's). Both left out without a price.
- initialInstanceCount: ceil(stoppingConditions.maxInvocations / maxInvocationsPerInstance) when maxInvocations
  is a stopping condition, else 1.

A configuration whose latency threshold was breached before any window held it (even the lightest load was too
slow) is COMPLETED, not failed: the server worked, and the measurement is the answer. It reports maxInvocations
0, modelLatency from every successful request of the run (above the threshold), no costPerInference and one
instance. Selection then never picks it for a throughput or cost-per-inference objective, nor under a latency
constraint at or below the threshold. A run without a single successful request is a failure.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import statistics
from typing import Iterable, Mapping, Sequence

from rightsizer.model import (CurrentConfiguration, JobStatus, Recommendation, StepFailure, StepSummary, Uncertainty,
                              baseline_recommendation_id, describe_environment)
from rightsizer.loadtest.load_generator import LoadResult, StopReason, kept_percentile
from rightsizer.loadtest.placement import HostFacts, Placement, Skipped, plan as place_candidates
from rightsizer.loadtest.server_process import ResourceUsage
from rightsizer.spec import (PHASES, LatencyThreshold, Percentile, Phase, RightsizeJobSpec, StoppingConditions,
                             TrafficPattern, parameter_grid)

# Used when the spec has no trafficPattern. SageMaker's own defaults are not published for Advanced jobs, so this
# is chosen for a CPU model server: one user more every 10 s from 1 to 19 users over 3 minutes. Each user level
# then fills two of the load generator's 5 s windows, and its flat-throughput rule (4 levels) ends the test about
# 40 s after the server saturates.
DEFAULT_TRAFFIC_PATTERN = TrafficPattern(PHASES, (Phase(initial_users=1, spawn_rate_per_minute=6,
                                                        duration_seconds=180),))
# modelLatency's percentile when the spec sets no latency threshold.
DEFAULT_REPORTED_PERCENTILE = Percentile("P95")


@dataclasses.dataclass(frozen=True)
class PlannedConfiguration:
    index: int  # position in the deterministic plan
    recommendation_id: str  # f"{job_name}/{index:08d}", SageMaker's own id shape
    instance_type: str
    environment: Mapping[str, str]
    placement: Placement | None  # None when skipped
    skipped_reason: str | None
    # spec.baseline's configuration: measured with the target's own instance count, not the count maxInvocations needs.
    baseline: bool = False
    instance_count: int | None = None

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None

    @property
    def label(self) -> str:
        """`local-1cpu (OMP_NUM_THREADS=1, SAGEMAKER_MODEL_SERVER_WORKERS=1)`, for progress and logs."""
        environment = describe_environment(self.environment)
        return f"{self.instance_type} ({environment})" if environment else self.instance_type


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


def restored_outcomes(plan: Sequence[PlannedConfiguration],
                      completed: Mapping[str, ConfigurationOutcome | Recommendation],
                      failed: Iterable[StepFailure]) -> dict[str, ConfigurationOutcome]:
    """What status held before a restart, as outcomes of `plan` (by recommendation id): measured configurations,
    and failures, which are known by instance type and environment (SageMaker's step shape). Skipped
    configurations are judged afresh; ids not in the plan are left out. Pure."""
    by_id = {planned.recommendation_id: planned for planned in plan}
    restored: dict[str, ConfigurationOutcome] = {}
    for recommendation_id, finished in completed.items():
        planned = by_id.get(recommendation_id)
        if planned is not None:
            restored[recommendation_id] = (
                finished if isinstance(finished, ConfigurationOutcome)
                else ConfigurationOutcome(planned, finished, None, None, "restored from an earlier run"))
    for failure in failed:
        for planned in plan:
            if (not planned.skipped and planned.recommendation_id not in restored
                    and (planned.instance_type, dict(planned.environment), planned.baseline)
                    == (failure.instance_type, dict(failure.environment), failure.baseline)):
                # A configuration spec.search did not measure stays marked so (skipped) in status.steps.failures.
                kept = dataclasses.replace(planned, skipped_reason=failure.failure_reason) if failure.skipped \
                    else planned
                restored[planned.recommendation_id] = ConfigurationOutcome(
                    kept, None, failure.failure_reason, None, "failed in an earlier run")
    return restored


def traffic_pattern_of(spec: RightsizeJobSpec) -> TrafficPattern:
    """The load every configuration of the job sees."""
    return spec.traffic_pattern or DEFAULT_TRAFFIC_PATTERN


def plan_experiment(spec: RightsizeJobSpec, job_name: str, host: HostFacts,
                    baseline: CurrentConfiguration | None = None) -> list[PlannedConfiguration]:
    """Every configuration of the job, in order, placed on `host` or skipped with the reason. Pure. `baseline`
    (spec.baseline's configuration) comes first, under baseline_recommendation_id: every later measurement is
    compared with it, and a job cut short by its duration still has it.

    Raises PlacementError when the job's local settings cannot work on this host (spec.local.loadGeneratorCpus
    names CPUs this process cannot use)."""
    local = spec.local or {}
    baseline_types = [baseline.instance_type] if baseline is not None and baseline.instance_type else []
    instance_types = list(dict.fromkeys([*baseline_types, *(c.instance_type for c in spec.candidates if c.instance_type)]))
    placements = dict(zip(instance_types, place_candidates(
        instance_types, host, local.get("loadGeneratorCpus"), local.get("pricePerHour")).placements))
    max_tests = (spec.resource_limit or {}).get("maxNumberOfTests")
    planned: list[PlannedConfiguration] = []
    if baseline is not None:
        where = placements.get(baseline.instance_type) if baseline.instance_type else None
        placed = where if isinstance(where, Placement) else None
        planned.append(PlannedConfiguration(
            index=0, recommendation_id=baseline_recommendation_id(job_name),
            instance_type=baseline.instance_type or "unknown", environment=dict(baseline.environment),
            placement=placed, skipped_reason=None if placed else
            where.reason if isinstance(where, Skipped) else "the baseline names no instance type",
            baseline=True, instance_count=baseline.instance_count))
    runnable, candidates = 0, 0
    for candidate in spec.candidates:
        where = placements.get(candidate.instance_type) if candidate.instance_type else None
        for environment in parameter_grid(candidate):
            index, number = len(planned), candidates
            candidates += 1
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
                index=index, recommendation_id=f"{job_name}/{number:08d}",
                instance_type=candidate.instance_type or "serverless", environment=dict(environment),
                placement=where if reason is None else None, skipped_reason=reason))
    return planned


def reported_percentile(threshold: LatencyThreshold | None) -> Percentile:
    """The percentile modelLatency is reported at: the threshold's own when the load result keeps it, else the
    next stricter kept one; P95 without a threshold."""
    return DEFAULT_REPORTED_PERCENTILE if threshold is None else kept_percentile(threshold.percentile)


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


def within_run_uncertainty(result: LoadResult, percentile: Percentile) -> Uncertainty:
    """One load test's noise: its throughput's spread at saturation (the load generator's throughput_spread), and
    its latency's as the standard error of the per-interval latencies over the window of the maximum."""
    latencies: list[float] = []
    window = result.max_invocations_window_s
    if window is not None:
        for point in result.timeline:
            value = point.latency_ms(percentile)
            if value is not None and window[0] < point.elapsed_s <= window[1] + 1e-6:
                latencies.append(value)
    latency = None
    if len(latencies) >= 2 and statistics.fmean(latencies) > 0:
        latency = round(100.0 * statistics.stdev(latencies) / statistics.fmean(latencies) / math.sqrt(len(latencies)),
                        2)
    return Uncertainty(result.throughput_spread_percent, latency, runs=1, windows=result.spread_windows)


def across_runs_uncertainty(recommendations: Sequence[Recommendation]) -> Uncertainty:
    """Several runs of one configuration: each figure's relative standard deviation across the runs, or the
    largest within one run when that is larger (two runs that happen to agree do not make a figure exact)."""
    def spread(metric: str) -> float | None:
        values = [float(r.metrics[metric]) for r in recommendations if r.metrics.get(metric) is not None]
        within = [p for r in recommendations if r.uncertainty and (p := r.uncertainty.percent(metric)) is not None]
        across = None
        if len(values) >= 2 and statistics.fmean(values) > 0:
            across = 100.0 * statistics.stdev(values) / statistics.fmean(values)
        candidates = [v for v in (across, max(within, default=None)) if v is not None]
        return round(max(candidates), 2) if candidates else None

    return Uncertainty(spread("maxInvocationsPerInstance"), spread("modelLatency"), runs=len(recommendations),
                       windows=sum(r.uncertainty.windows for r in recommendations if r.uncertainty))


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
    percentile = reported_percentile(stopping.latency_threshold if stopping else None)
    if result.max_invocations_per_minute is not None:
        max_invocations = round(result.max_invocations_per_minute)
        latency_ms = result.window_latency_ms(percentile)
    else:
        # No window held the threshold: see the module docstring.
        max_invocations = 0
        latency_ms = result.run_latency_ms(percentile)
    if latency_ms is None:
        return ConfigurationOutcome(planned, None, f"no successful invocation ({result.stop_reason}: "
                                                   f"{result.detail})", result, detail)
    instances, scaled = endpoint_metrics(max_invocations, stopping.max_invocations if stopping else None,
                                         placement.price_per_hour, planned.instance_count)
    metrics: dict[str, float | int] = {**scaled, "modelLatency": math.ceil(latency_ms),
                                       "modelSetupTime": round(setup_seconds)}
    if usage is not None:
        metrics["cpuUtilization"] = round(usage.cpu_percent, 2)
        metrics["memoryUtilization"] = round(100.0 * usage.rss_bytes / placement.instance_memory_bytes, 2)
    recommendation = Recommendation(
        recommendation_id=planned.recommendation_id, instance_type=planned.instance_type,
        initial_instance_count=instances, environment=dict(planned.environment), metrics=metrics,
        invocation_start=invocation_start, invocation_end=invocation_end,
        uncertainty=within_run_uncertainty(result, percentile))
    return ConfigurationOutcome(planned, recommendation, None, result, detail)


def endpoint_metrics(per_instance: int, target: int | None, price_per_hour: float | None,
                     count: int | None = None) -> tuple[int, dict[str, float | int]]:
    """The instances an endpoint needs for `target` invocations/min (or `count`, a baseline's own), and its
    throughput and costs (see the module's docstring: maxInvocations and costPerHour at endpoint scope, as SageMaker
    reports them)."""
    instances = count if count else math.ceil(target / per_instance) if target and per_instance > 0 else 1
    metrics: dict[str, float | int] = {"maxInvocations": per_instance * instances,
                                       "maxInvocationsPerInstance": per_instance}
    if price_per_hour is not None:
        metrics["costPerHour"] = round(price_per_hour * instances, 10)
        if per_instance > 0:
            metrics["costPerInference"] = price_per_hour / (per_instance * 60)
    return instances, metrics


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
    # The count, the endpoint's throughput and the costs follow the median of one instance's throughput, as a
    # single run's do (the median of the counts could need more instances than the median throughput does).
    for key in ("maxInvocations", "costPerHour", "costPerInference"):
        metrics.pop(key, None)
    count, scaled = endpoint_metrics(int(metrics.get("maxInvocationsPerInstance") or 0), target_invocations,
                                     runs[0].planned.placement.price_per_hour, runs[0].planned.instance_count)
    metrics.update(scaled)
    by_throughput = sorted(runs, key=lambda run: run.recommendation.metrics.get("maxInvocationsPerInstance") or 0)
    typical = by_throughput[len(by_throughput) // 2]
    throughputs = [r.metrics.get("maxInvocationsPerInstance") or 0 for r in recommendations]
    latencies = [r.metrics.get("modelLatency") for r in recommendations if r.metrics.get("modelLatency") is not None]
    spread = (f"median of {len(runs)} runs: maxInvocationsPerInstance {min(throughputs)}-{max(throughputs)}/min"
              + (f", modelLatency {min(latencies)}-{max(latencies)} ms" if latencies else ""))
    recommendation = dataclasses.replace(
        recommendations[0], metrics=metrics, initial_instance_count=count,
        uncertainty=across_runs_uncertainty(recommendations),
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
                                        skipped=outcome.planned.skipped, baseline=outcome.planned.baseline))
    if total > finished:
        by_status[unfinished_status] = by_status.get(unfinished_status, 0) + total - finished
    return StepSummary(total=max(total, finished), by_status=by_status, failures=tuple(failures))


__all__ = [
    "DEFAULT_TRAFFIC_PATTERN", "ConfigurationOutcome", "PlannedConfiguration", "across_runs_uncertainty",
    "max_invocations_window", "within_run_uncertainty",
    "measured_outcome", "median_outcome", "plan_experiment", "reported_percentile", "restored_outcomes", "step_summary",
    "traffic_pattern_of",
]
