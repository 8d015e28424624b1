"""The shared vocabulary: what a job is, what it measured, and the words its status uses. Below both selection and
the backends, so that neither imports the other to speak of a recommendation.

Every backend reports in these shapes (SageMaker's own, normalised), so status, selection and promotion never
depend on which backend ran.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Mapping

from rightsizer.spec import Autoscaling
from rightsizer.status import parse_timestamp, timestamp


class JobStatus(enum.StrEnum):
    """A job's status word: SageMaker's RecommendationJobStatus; every other backend uses the same words."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    DELETING = "DELETING"
    DELETED = "DELETED"


ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.STOPPING})
# DELETING/DELETED exist in the enum but no Delete operation does: seen, they end the job like a failure.
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.DELETING,
                               JobStatus.DELETED})

# SageMaker's FailureReason of a benchmark step is at most this long; status.steps.failures keeps that bound.
STEP_FAILURE_REASON_CHARS = 1024


def describe_environment(environment: Mapping[str, str]) -> str:
    """`OMP_NUM_THREADS=2, SAGEMAKER_MODEL_SERVER_WORKERS=1`: an environment as messages and tables show it."""
    return ", ".join(f"{name}={value}" for name, value in sorted(environment.items()))


@dataclasses.dataclass(frozen=True)
class Owner:
    """The RightsizeJob a job belongs to: named in the job's tags, hashed into its name."""

    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class PodPlacement:
    """Where and how big a configuration's server Pods were (the kubernetes backend's candidates)."""

    node_selector: Mapping[str, str]
    requests: Mapping[str, str]
    limits: Mapping[str, str]

    @classmethod
    def from_row(cls, raw: Mapping[str, Any] | None) -> PodPlacement | None:
        if not raw:
            return None
        resources = raw.get("resources") or {}
        return cls(dict(raw.get("nodeSelector") or {}), dict(resources.get("requests") or {}),
                   dict(resources.get("limits") or {}))

    def to_row(self) -> dict[str, Any]:
        resources = {side: dict(values) for side, values in (("requests", self.requests), ("limits", self.limits))
                     if values}
        row: dict[str, Any] = {}
        if self.node_selector:
            row["nodeSelector"] = dict(self.node_selector)
        if resources:
            row["resources"] = resources
        return row


@dataclasses.dataclass(frozen=True)
class Uncertainty:
    """How much a measured configuration's figures move: relative standard deviations in percent, the larger of
    the spread within each load test (its windows at saturation) and across its repetitions. costPerInference
    moves with maxInvocations (the price is fixed). None where a backend reports single figures (SageMaker)."""

    max_invocations_percent: float | None = None
    model_latency_percent: float | None = None
    runs: int = 1  # load tests behind the figures
    windows: int = 0  # windows at saturation behind the within-run spread, over all runs

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any] | None) -> Uncertainty | None:
        if not raw:
            return None
        return cls(raw.get("maxInvocations"), raw.get("modelLatency"), int(raw.get("runs") or 1),
                   int(raw.get("windows") or 0))

    def for_storage(self) -> dict[str, Any]:
        row: dict[str, Any] = {"runs": self.runs, "windows": self.windows}
        if self.max_invocations_percent is not None:
            row["maxInvocations"] = self.max_invocations_percent
            row["costPerInference"] = self.max_invocations_percent
        if self.model_latency_percent is not None:
            row["modelLatency"] = self.model_latency_percent
        return row

    def percent(self, metric: str) -> float | None:
        """The relative standard deviation of `metric` (a key of a row's metrics), None when not known."""
        if metric in ("maxInvocations", "maxInvocationsPerInstance", "costPerInference"):
            return self.max_invocations_percent
        if metric == "modelLatency":
            return self.model_latency_percent
        return None

    def describe(self) -> str:
        """`± 4.1 % throughput, ± 6 % latency over 2 runs (9 windows)`."""
        parts = [f"± {value:.2g} % {name}" for name, value in (("throughput", self.max_invocations_percent),
                                                              ("latency", self.model_latency_percent))
                 if value is not None]
        runs = f"{self.runs} run{'' if self.runs == 1 else 's'}"
        return f"{', '.join(parts) or 'no spread known'} over {runs} ({self.windows} windows)"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    recommendation_id: str
    instance_type: str | None
    initial_instance_count: int | None
    environment: Mapping[str, str]
    metrics: Mapping[str, float | int]
    serverless: Mapping[str, int] | None = None
    invocation_start: datetime.datetime | None = None
    invocation_end: datetime.datetime | None = None
    # What Inference Recommender measured exactly (its ModelConfiguration and EndpointConfiguration): the package's
    # inference specification, the Neo compilation job whose artifacts ran, and the benchmark endpoint it made.
    inference_specification_name: str | None = None
    compilation_job_name: str | None = None
    endpoint_name: str | None = None
    variant_name: str | None = None
    # Whether the backend itself recommended this configuration (SageMaker: listed in InferenceRecommendations, or
    # only measured as a benchmark step); None for a backend that measures without recommending.
    recommended: bool | None = None
    placement: PodPlacement | None = None
    uncertainty: Uncertainty | None = None
    # A probe of spec.search Adaptive (a compressed load test that ranks configurations), not a full measurement.
    probe: bool = False

    @classmethod
    def from_status_row(cls, row: Mapping[str, Any]) -> Recommendation:
        """A row of status.recommendations read back (re-selection, a resumed local job, a report)."""
        return cls(recommendation_id=row.get("recommendationId", ""), instance_type=row.get("instanceType"),
                   initial_instance_count=row.get("initialInstanceCount"),
                   environment=dict(row.get("environment") or {}), metrics=dict(row.get("metrics") or {}),
                   serverless=row.get("serverless"), invocation_start=parse_timestamp(row.get("invocationStartTime")),
                   invocation_end=parse_timestamp(row.get("invocationEndTime")),
                   recommended=row.get("recommended"), placement=PodPlacement.from_row(row.get("placement")),
                   uncertainty=Uncertainty.from_storage(row.get("uncertainty")), probe=bool(row.get("probe")),
                   **{field: row.get(key) for field, key in _PROVENANCE_KEYS.items()})

    def to_status_row(self) -> dict[str, Any]:
        """The keys of a status.recommendations row that describe the configuration (from_status_row reads them)."""
        row: dict[str, Any] = {"recommendationId": self.recommendation_id, "environment": dict(self.environment),
                               "metrics": dict(self.metrics)}
        if self.instance_type:
            row["instanceType"] = self.instance_type
        if self.initial_instance_count is not None:
            row["initialInstanceCount"] = self.initial_instance_count
        if self.serverless:
            row["serverless"] = dict(self.serverless)
        if self.invocation_start:
            row["invocationStartTime"] = timestamp(self.invocation_start)
        if self.invocation_end:
            row["invocationEndTime"] = timestamp(self.invocation_end)
        if self.recommended is not None:
            row["recommended"] = self.recommended
        if self.placement is not None:
            row["placement"] = self.placement.to_row()
        if self.uncertainty is not None:
            row["uncertainty"] = self.uncertainty.for_storage()
        if self.probe:
            row["probe"] = True
        return {**row, **self.provenance()}

    def provenance(self) -> dict[str, str]:
        """The names above as status rows and status.best spell them, those that are set."""
        return {key: value for field, key in _PROVENANCE_KEYS.items()
                if (value := getattr(self, field)) is not None}


_PROVENANCE_KEYS = {"inference_specification_name": "inferenceSpecificationName",
                    "compilation_job_name": "compilationJobName", "endpoint_name": "endpointName",
                    "variant_name": "variantName"}


@dataclasses.dataclass(frozen=True)
class StepFailure:
    instance_type: str | None
    environment: Mapping[str, str]
    failure_reason: str
    # The local backend's "did not fit this host": a failed step for SageMaker's counts, but no measurement.
    skipped: bool = False
    # The local backend's: the configuration that failed is spec.baseline's, not a candidate.
    baseline: bool = False

    @classmethod
    def from_status_row(cls, row: Mapping[str, Any]) -> StepFailure:
        """An entry of status.steps.failures read back."""
        return cls(row.get("instanceType"), dict(row.get("environment") or {}),
                   row.get("failureReason") or "failed in an earlier run", bool(row.get("skipped")),
                   bool(row.get("baseline")))


# -- spec.baseline ------------------------------------------------------------------------------------------------

def baseline_recommendation_id(job_name: str) -> str:
    """The id of the baseline's measurement, in SageMaker's `<job>/<suffix>` shape: a backend reports it under it."""
    return f"{job_name}/baseline"


@dataclasses.dataclass(frozen=True)
class CurrentConfiguration:
    """What the promotion target serves now (spec.baseline), read from it before the job is submitted."""

    instance_type: str | None
    instance_count: int
    # The variables the experiment varies, as the target sets them (spec.baseline_variables).
    environment: Mapping[str, str]
    # An ACK Endpoint's SageMaker endpoint, which Inference Recommender benchmarks as it is, and its region.
    endpoint_name: str | None = None
    region: str | None = None

    def describe(self) -> str:
        """`ml.m5.large x1 (OMP_NUM_THREADS=2)`, as selection names configurations."""
        what = f"{self.instance_type or 'an unknown instance type'} x{self.instance_count}"
        return f"{what} ({describe_environment(self.environment)})" if self.environment else what

    def as_definition(self) -> dict[str, Any]:
        """The fields that define what the experiment measures: part of the job's name (rightsizer.naming)."""
        return {"instanceType": self.instance_type, "instanceCount": self.instance_count,
                "environment": dict(self.environment), "endpointName": self.endpoint_name}


@dataclasses.dataclass(frozen=True)
class Savings:
    """status.best.savings: what the winner saves against the baseline (positive: it costs less), and how its
    latency differs (positive: slower). A figure is None when either configuration lacks it."""

    cost_per_hour: float | None = None
    cost_per_hour_percent: float | None = None
    cost_per_inference: float | None = None
    cost_per_inference_percent: float | None = None
    model_latency_change: int | None = None
    model_latency_change_percent: float | None = None

    _KEYS = {"cost_per_hour": "costPerHour", "cost_per_hour_percent": "costPerHourPercent",
             "cost_per_inference": "costPerInference", "cost_per_inference_percent": "costPerInferencePercent",
             "model_latency_change": "modelLatencyChange",
             "model_latency_change_percent": "modelLatencyChangePercent"}

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> Savings:
        return cls(**{field: raw.get(key) for field, key in cls._KEYS.items()})

    def for_storage(self) -> dict[str, Any]:
        return {key: value for field, key in self._KEYS.items() if (value := getattr(self, field)) is not None}

    def saved(self, per_hour: bool) -> tuple[float | None, float | None]:
        """(percent, USD) saved per hour or per inference."""
        if per_hour:
            return self.cost_per_hour_percent, self.cost_per_hour
        return self.cost_per_inference_percent, self.cost_per_inference

    def describe(self, per_hour: bool, latency_name: str = "latency") -> str:
        """`saves 12.3 % per inference (3.1e-09 USD); P95 latency +2 ms (+10 %)`: the gate's figures."""
        percent, amount = self.saved(per_hour)
        unit, per = ("USD/h", "hour") if per_hour else ("USD", "inference")
        if percent is None or amount is None:
            parts = [f"its saving per {per} is unknown"]
        elif percent < 0:
            parts = [f"costs {-percent:.3g} % more per {per} ({-amount:.3g} {unit})"]
        else:
            parts = [f"saves {percent:.3g} % per {per} ({amount:.3g} {unit})"]
        if self.model_latency_change is not None:
            relative = (f" ({self.model_latency_change_percent:+.3g} %)"
                        if self.model_latency_change_percent is not None else "")
            parts.append(f"{latency_name} {self.model_latency_change:+d} ms{relative}")
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class StepSummary:
    total: int
    by_status: Mapping[str, int]
    failures: tuple[StepFailure, ...] = ()

    @property
    def unfinished(self) -> int:
        """Steps neither measured nor failed: at the job's end, configurations it never got to."""
        return self.total - self.by_status.get(JobStatus.COMPLETED, 0) - self.by_status.get(JobStatus.FAILED, 0)


@dataclasses.dataclass(frozen=True)
class EndpointPerformance:
    endpoint_name: str
    max_invocations: int
    model_latency: int


@dataclasses.dataclass(frozen=True)
class Progress:
    """Configurations finished out of planned, and the one running now (a backend that runs them in turn)."""

    completed: int
    total: int
    current: str | None = None
    # When the job got the host (a queued job has not yet): its jobDurationInSeconds counts from here, across
    # operator restarts, so a wait behind another job is never spent.
    started: datetime.datetime | None = None
    # Finished repetitions (spec.local.repetitions) of configurations not complete yet: kept in status so that a
    # restarted operator does not run a finished load test again.
    runs: tuple[Recommendation, ...] = ()


@dataclasses.dataclass(frozen=True)
class JobSnapshot:
    """What the backend says about a job right now."""

    job_name: str
    status: JobStatus
    job_arn: str | None = None
    failure_reason: str | None = None
    creation_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    recommendations: tuple[Recommendation, ...] = ()
    steps: StepSummary | None = None
    endpoint_performances: tuple[EndpointPerformance, ...] = ()
    # The local backend's; SageMaker reports steps.
    progress: Progress | None = None
    # Why a job that ended did not get to every configuration, when the backend knows (its duration ran out).
    ended_early: str | None = None
    # How many results the backend had when it took this snapshot (a backend whose results live only in the
    # operator's process); the shell hands the snapshot back (Backend.persisted) once status holds them.
    results_version: int | None = None


# -- scaling (spec.autoscaling -> status.best.scaling) ------------------------------------------------------------

# The per-instance invocations metric of a SageMaker endpoint variant (Application Auto Scaling's predefined metric
# type); its target value is invocations per minute per instance. Every backend's policies speak it.
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"


@dataclasses.dataclass(frozen=True)
class CustomizedMetric:
    """A target-tracking policy's CloudWatch metric when it is not a predefined one."""

    metric_name: str | None = None
    namespace: str | None = None
    statistic: str | None = None


@dataclasses.dataclass(frozen=True)
class TargetTrackingPolicy:
    """One target-tracking scaling policy: keep the metric near `target_value`."""

    target_value: float
    predefined_metric_type: str | None = None
    customized_metric: CustomizedMetric | None = None

    @classmethod
    def from_row(cls, raw: Mapping[str, Any]) -> TargetTrackingPolicy:
        custom = raw.get("customizedMetric")
        return cls(raw["targetValue"], raw.get("predefinedMetricType"),
                   CustomizedMetric(custom.get("metricName"), custom.get("namespace"), custom.get("statistic"))
                   if custom is not None else None)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"targetValue": self.target_value}
        if self.predefined_metric_type:
            row["predefinedMetricType"] = self.predefined_metric_type
        if self.customized_metric is not None:
            custom = self.customized_metric
            row["customizedMetric"] = {key: value for key, value in (
                ("metricName", custom.metric_name), ("namespace", custom.namespace),
                ("statistic", custom.statistic)) if value is not None}
        return row

    @property
    def metric(self) -> str:
        """How messages name the metric."""
        if self.predefined_metric_type:
            return self.predefined_metric_type
        custom = self.customized_metric
        return f"{custom.namespace}/{custom.metric_name}" if custom else "an unnamed metric"


@dataclasses.dataclass(frozen=True)
class ScalingRefusal:
    """Why a configuration has no scaling: the reason is CamelCase, as a condition's."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Scaling:
    """status.best.scaling: how the best configuration should scale for `objective` (spec.autoscaling), in the shape
    of SageMaker's GetScalingConfigurationRecommendation (DynamicScalingConfiguration and Metric), or why there is
    none (`refused`). `source` says who answered and `derivation` how."""

    objective: Autoscaling
    source: str
    derivation: str = ""
    min_capacity: int | None = None
    max_capacity: int | None = None
    scale_in_cooldown: int | None = None
    scale_out_cooldown: int | None = None
    policies: tuple[TargetTrackingPolicy, ...] = ()
    # What the scaling is based on: invocations per minute one instance serves, and the model latency in ms.
    invocations_per_instance: int | None = None
    model_latency: int | None = None
    refused: ScalingRefusal | None = None

    @property
    def capacities(self) -> tuple[int, int] | None:
        """(min, max) instances, when both are known."""
        if self.min_capacity is None or self.max_capacity is None:
            return None
        return self.min_capacity, self.max_capacity

    def target(self, predefined_metric_type: str) -> float | None:
        """The target value of the policy tracking this predefined metric, if there is one."""
        return next((p.target_value for p in self.policies if p.predefined_metric_type == predefined_metric_type),
                    None)

    @classmethod
    def from_row(cls, raw: Mapping[str, Any]) -> Scaling:
        objective = raw.get("objective") or {}
        metrics = raw.get("metrics") or {}
        refused = raw.get("refused")
        return cls(
            objective=Autoscaling(objective.get("targetCpuUtilizationPerCore", 0),
                                  objective.get("minInvocationsPerMinute", 0),
                                  objective.get("maxInvocationsPerMinute", 0)),
            source=raw.get("source", ""), derivation=raw.get("derivation", ""),
            min_capacity=raw.get("minCapacity"), max_capacity=raw.get("maxCapacity"),
            scale_in_cooldown=raw.get("scaleInCooldown"), scale_out_cooldown=raw.get("scaleOutCooldown"),
            policies=tuple(TargetTrackingPolicy.from_row(p) for p in raw.get("policies") or ()),
            invocations_per_instance=metrics.get("invocationsPerInstance"), model_latency=metrics.get("modelLatency"),
            refused=ScalingRefusal(refused["reason"], refused["message"]) if refused else None)

    def to_row(self) -> dict[str, Any]:
        objective = self.objective
        metrics = {key: value for key, value in (("invocationsPerInstance", self.invocations_per_instance),
                                                 ("modelLatency", self.model_latency)) if value is not None}
        row: dict[str, Any] = {
            "source": self.source, "derivation": self.derivation,
            "objective": {"targetCpuUtilizationPerCore": objective.target_cpu_utilization_per_core,
                          "minInvocationsPerMinute": objective.min_invocations_per_minute,
                          "maxInvocationsPerMinute": objective.max_invocations_per_minute},
            "minCapacity": self.min_capacity, "maxCapacity": self.max_capacity,
            "scaleInCooldown": self.scale_in_cooldown, "scaleOutCooldown": self.scale_out_cooldown,
            "policies": [p.to_row() for p in self.policies] or None, "metrics": metrics or None,
            "refused": {"reason": self.refused.reason, "message": self.refused.message} if self.refused else None}
        return {key: value for key, value in row.items() if value is not None and value != ""}
