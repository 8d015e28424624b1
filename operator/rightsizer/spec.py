"""The parsed RightsizeJob spec, and the semantic rules the API server cannot judge.

`parse` is the one place the raw spec becomes values: defaults applied once (from the CRD schema), immutable
values out, which every consumer takes. The CRD schema and its CEL rules (crds/rightsizejobs.yaml) reject
malformed input at admission; what remains here needs arithmetic over lists. `parse` raises InvalidSpec with every
violation at once. What one backend refuses or advises against is that backend's policy (backends/*/policy.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
from enum import StrEnum
from typing import Any, Mapping

from rightsizer import schema

# Spec fields that do not define the experiment: editing them re-selects or re-promotes without a new job.
NOT_JOB_DEFINING = ("selection", "promotion", "deletionPolicy",
                    "autoscaling")  # asked of the finished job's best configuration, after it


class InvalidSpec(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclasses.dataclass(frozen=True)
class Phase:
    initial_users: int
    spawn_rate_per_minute: int
    duration_seconds: int

    @property
    def final_users(self) -> int:
        return self.initial_users + math.floor(self.spawn_rate_per_minute * self.duration_seconds / 60)


@dataclasses.dataclass(frozen=True)
class Stairs:
    # Per step, not the whole pattern: botocore's Stairs.DurationInSeconds "defines how long each traffic step
    # should be".
    duration_seconds: int
    steps: int
    users_per_step: int

    @property
    def total_seconds(self) -> int:
        return self.steps * self.duration_seconds


PHASES = "PHASES"
STAIRS = "STAIRS"


@dataclasses.dataclass(frozen=True)
class TrafficPattern:
    """spec.trafficPattern. It refuses what the CRD refuses, so that a pattern built without the API server (the
    default pattern, `rightsizer run`, tests) is one the load test can run."""

    traffic_type: str
    phases: tuple[Phase, ...] = ()
    stairs: Stairs | None = None

    def __post_init__(self) -> None:
        if self.traffic_type not in (PHASES, STAIRS):
            raise ValueError(f"trafficPattern.trafficType must be {PHASES} or {STAIRS}, got {self.traffic_type!r}")
        if self.traffic_type == PHASES:
            if self.stairs is not None:
                raise ValueError(f"trafficPattern.stairs is not allowed when trafficType is {PHASES}")
            if not self.phases:
                raise ValueError(f"trafficPattern.phases must be a non-empty list when trafficType is {PHASES}")
            for index, phase in enumerate(self.phases):
                where = f"trafficPattern.phases[{index}]"
                _require_integer(phase.initial_users, f"{where}.initialNumberOfUsers", minimum=1)
                _require_integer(phase.spawn_rate_per_minute, f"{where}.spawnRate", minimum=0)
                _require_integer(phase.duration_seconds, f"{where}.durationInSeconds", minimum=1)
            return
        if self.phases:
            raise ValueError(f"trafficPattern.phases is not allowed when trafficType is {STAIRS}")
        if not isinstance(self.stairs, Stairs):
            raise ValueError(f"trafficPattern.stairs must be an object when trafficType is {STAIRS}")
        _require_integer(self.stairs.duration_seconds, "trafficPattern.stairs.durationInSeconds", minimum=1)
        _require_integer(self.stairs.steps, "trafficPattern.stairs.numberOfSteps", minimum=1)
        _require_integer(self.stairs.users_per_step, "trafficPattern.stairs.usersPerStep", minimum=1)

    @property
    def duration_seconds(self) -> int:
        if self.stairs:
            return self.stairs.total_seconds
        return sum(phase.duration_seconds for phase in self.phases)


def _require_integer(value: Any, field: str, *, minimum: int) -> None:
    # bool is an int subclass, and True users is surely a mistake.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")


class Percentile(str):
    """A latency percentile as the API writes it ("P95"), with its value (95.0).

    A str, so that it goes into SageMaker's request and into JSON exactly as written. Construction is the one
    place the text is read: only the canonical P<value> with 0 < value < 100 is accepted."""

    __slots__ = ()

    def __new__(cls, text: str) -> Percentile:
        match = re.fullmatch(r"P(\d+(?:\.\d+)?)", text) if isinstance(text, str) else None
        value = float(match.group(1)) if match else math.nan
        if not 0 < value < 100 or text != f"P{value:g}":
            raise ValueError(f"a latency percentile must look like P95 (above 0, below 100), got {text!r}")
        return super().__new__(cls, text)

    @classmethod
    def parse(cls, text: str) -> Percentile:
        return cls(text)

    @property
    def name(self) -> str:
        return str(self)

    @property
    def value(self) -> float:
        return float(self[1:])  # well-formed by construction

    def __repr__(self) -> str:
        return f"Percentile({str(self)!r})"


@dataclasses.dataclass(frozen=True)
class LatencyThreshold:
    percentile: Percentile
    milliseconds: int

    def __post_init__(self) -> None:
        if not isinstance(self.percentile, Percentile):
            raise TypeError(f"LatencyThreshold.percentile must be a Percentile, got {self.percentile!r}")
        _require_integer(self.milliseconds, "stoppingConditions.modelLatencyThresholds[0].valueInMilliseconds",
                         minimum=1)


FLAT_INVOCATIONS = ("Stop", "Continue")


@dataclasses.dataclass(frozen=True)
class StoppingConditions:
    """spec.stoppingConditions; an absent condition never stops a load test."""

    max_invocations: int | None = None
    latency_threshold: LatencyThreshold | None = None
    flat_invocations: str | None = None

    def __post_init__(self) -> None:
        if self.max_invocations is not None:
            _require_integer(self.max_invocations, "stoppingConditions.maxInvocations", minimum=1)
        if self.flat_invocations is not None and self.flat_invocations not in FLAT_INVOCATIONS:
            raise ValueError(f"stoppingConditions.flatInvocations must be Stop or Continue, "
                             f"got {self.flat_invocations!r}")

    @property
    def stops_when_flat(self) -> bool:
        return self.flat_invocations != "Continue"  # Stop is SageMaker's default


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One endpoint configuration to benchmark: an instance type (or serverless config) and its env grid."""

    instance_type: str | None
    parameter_ranges: tuple[tuple[str, tuple[str, ...]], ...] = ()
    serverless: Mapping[str, int] | None = None
    inference_specification_name: str | None = None

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for _, values in self.parameter_ranges) if self.parameter_ranges else 1


@dataclasses.dataclass(frozen=True)
class ModelSource:
    model_package_version_arn: str | None = None
    model_name: str | None = None
    endpoint_name: str | None = None
    local: Mapping[str, Any] | None = None
    kubernetes: Mapping[str, Any] | None = None  # spec.model.kubernetes, defaults applied


@dataclasses.dataclass(frozen=True)
class Selection:
    objective: str = "CostPerInference"
    max_model_latency_ms: int | None = None
    min_invocations_per_minute: int | None = None
    max_cost_per_hour: float | None = None


class SearchStrategy(StrEnum):
    GRID = "Grid"
    ADAPTIVE = "Adaptive"


@dataclasses.dataclass(frozen=True)
class Search:
    """spec.search: how a backend that runs the load itself covers the configurations."""

    strategy: SearchStrategy = SearchStrategy.GRID
    reduction_factor: int = 3


class PromotionMode(StrEnum):
    MANUAL = "Manual"  # waits for the annotation rightsizer.io/approve
    AUTOMATIC = "Automatic"  # promotes when SLASatisfied is True
    DRY_RUN = "DryRun"  # only plans


@dataclasses.dataclass(frozen=True)
class TargetRef:
    api_version: str
    kind: str
    name: str


@dataclasses.dataclass(frozen=True)
class FieldPaths:
    """Where a generic target keeps each part of the configuration (dotted paths)."""

    instance_type: str | None = None
    instance_count: str | None = None
    environment: str | None = None
    compilation_job_name: str | None = None
    # status.best.scaling's capacities, when spec.autoscaling gave them.
    min_replicas: str | None = None
    max_replicas: str | None = None


@dataclasses.dataclass(frozen=True)
class Promotion:
    target: TargetRef
    mode: PromotionMode
    force_conflicts: bool
    progress_deadline_seconds: int
    field_paths: FieldPaths | None = None
    variant_name: str | None = None  # spec.promotion.target.variantName: ACK only, the production variant to change
    allow_partial_results: bool = False  # Automatic may act on a selection from a job that did not finish
    # The least a winner must save against spec.baseline, in percent of its cost; None: no such gate.
    min_savings_percent: int | None = None

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> "Promotion":
        """From spec.promotion with the CRD's defaults applied (schema.with_defaults)."""
        target, field_paths = raw["target"], raw.get("fieldPaths")
        return cls(target=TargetRef(target["apiVersion"], target["kind"], target["name"]),
                   mode=PromotionMode(raw["mode"]), force_conflicts=raw["forceConflicts"],
                   progress_deadline_seconds=raw["progressDeadlineSeconds"],
                   allow_partial_results=raw["allowPartialResults"],
                   field_paths=FieldPaths(field_paths.get("instanceType"), field_paths.get("instanceCount"),
                                          field_paths.get("environment"), field_paths.get("compilationJobName"),
                                          field_paths.get("minReplicas"), field_paths.get("maxReplicas"))
                   if field_paths else None,
                   variant_name=target.get("variantName"), min_savings_percent=raw.get("minSavingsPercent"))


class BaselineSource(StrEnum):
    PROMOTION_TARGET = "PromotionTarget"  # what spec.promotion.target serves now


@dataclasses.dataclass(frozen=True)
class Baseline:
    """spec.baseline: measure what the promotion target serves now in the same experiment."""

    source: BaselineSource = BaselineSource.PROMOTION_TARGET


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """spec.autoscaling: the traffic the best configuration must scale for (SageMaker's
    GetScalingConfigurationRecommendation takes the same three values)."""

    target_cpu_utilization_per_core: int  # percent; SageMaker's default, 50, comes from the CRD
    min_invocations_per_minute: int
    max_invocations_per_minute: int

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> "Autoscaling":
        """From spec.autoscaling with the CRD's defaults applied (schema.with_defaults)."""
        return cls(raw["targetCpuUtilizationPerCore"], raw["minInvocationsPerMinute"], raw["maxInvocationsPerMinute"])

    def describe(self) -> str:
        return (f"{self.min_invocations_per_minute}-{self.max_invocations_per_minute} invocations/min at "
                f"{self.target_cpu_utilization_per_core} % CPU per core")


@dataclasses.dataclass(frozen=True)
class KubernetesCandidate:
    """One entry of spec.kubernetes.candidates: where the server Pods run and how big they are."""

    name: str
    node_selector: Mapping[str, str]
    requests: Mapping[str, str]  # Kubernetes quantities as written ("500m", "1Gi")
    limits: Mapping[str, str]
    replicas: int
    instance_type: str | None  # the node type whose price is shared; see `priced_instance_type`

    @property
    def priced_instance_type(self) -> str | None:
        """The instance type named by the spec: its own, else the node selector's well-known label."""
        return self.instance_type or self.node_selector.get(INSTANCE_TYPE_LABEL)


# The well-known node label of a node's instance type (kubernetes.io/docs/reference/labels-annotations-taints).
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


@dataclasses.dataclass(frozen=True)
class LoadGeneratorSettings:
    workers: int | None  # None: sized to the traffic pattern's peak users
    users_per_worker: int
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    node_selector: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class KubernetesSettings:
    """spec.kubernetes, defaults applied."""

    candidates: tuple[KubernetesCandidate, ...]
    image: str | None  # None: the operator's own image
    image_pull_policy: str
    price_per_hour: Mapping[str, float]
    ready_timeout_seconds: int
    load_generator: LoadGeneratorSettings

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> "KubernetesSettings":
        def quantities(resources: Mapping[str, Any] | None, side: str) -> Mapping[str, str]:
            return types.MappingProxyType({k: str(v) for k, v in ((resources or {}).get(side) or {}).items()})

        load = raw.get("loadGenerator") or {}
        return cls(
            candidates=tuple(KubernetesCandidate(
                name=entry["name"], node_selector=types.MappingProxyType(dict(entry.get("nodeSelector") or {})),
                requests=quantities(entry.get("resources"), "requests"),
                limits=quantities(entry.get("resources"), "limits"),
                replicas=entry.get("replicas", 1), instance_type=entry.get("instanceType"))
                for entry in raw.get("candidates") or ()),
            image=raw.get("image"), image_pull_policy=raw.get("imagePullPolicy", "IfNotPresent"),
            price_per_hour=types.MappingProxyType(dict(raw.get("pricePerHour") or {})),
            ready_timeout_seconds=raw.get("readyTimeoutSeconds", 300),
            load_generator=LoadGeneratorSettings(
                workers=load.get("workers"), users_per_worker=load.get("usersPerWorker", 50),
                requests=quantities(load.get("resources"), "requests"),
                limits=quantities(load.get("resources"), "limits"),
                node_selector=types.MappingProxyType(dict(load.get("nodeSelector") or {}))))


@dataclasses.dataclass(frozen=True)
class RightsizeJobSpec:
    backend: str
    job_type: str
    job_type_inferred: bool
    model: ModelSource
    candidates: tuple[Candidate, ...]
    traffic_pattern: TrafficPattern | None
    stopping_conditions: StoppingConditions | None
    job_duration_seconds: int | None
    resource_limit: Mapping[str, int] | None
    container_config: Mapping[str, Any] | None
    sagemaker: Mapping[str, Any]
    selection: Selection
    promotion: Promotion | None
    deletion_policy: str
    local: Mapping[str, Any]
    job_description: str | None = None
    kubernetes: KubernetesSettings | None = None
    baseline: Baseline | None = None
    # Which field the candidates came from, so errors name the field the user wrote.
    candidates_field: str = "spec.instanceTypes"
    # The job-defining fields as written, defaults applied: what a job's name hashes (rightsizer.naming), so the
    # name stays the same for the same spec whatever this module's values look like.
    job_definition: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    autoscaling: Autoscaling | None = None
    search: Search = Search()


def infer_job_type(spec: Mapping[str, Any]) -> tuple[str, bool]:
    """Default vs Advanced as the SageMaker SDK's right_size decides it, unless spec.jobType says. (A backend
    that always load-tests, as the local one, does not read it.)"""
    if spec.get("jobType"):
        return spec["jobType"], False
    advanced = any(spec.get(field) for field in (
        "trafficPattern", "stoppingConditions", "resourceLimit", "environmentParameterRanges",
        "endpointConfigurations"))
    return ("Advanced" if advanced else "Default"), True


def _ranges(ranges: Mapping[str, list[str]] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, tuple(str(value) for value in values)) for name, values in (ranges or {}).items())


def _candidates(spec: Mapping[str, Any]) -> tuple[Candidate, ...]:
    if spec.get("backend") == "kubernetes":  # the CRD forbids the SageMaker forms with it
        kubernetes_ranges = _ranges(spec.get("environmentParameterRanges"))
        return tuple(Candidate(instance_type=entry["name"], parameter_ranges=kubernetes_ranges)
                     for entry in (spec.get("kubernetes") or {}).get("candidates") or ())
    if spec.get("endpointConfigurations"):
        return tuple(
            Candidate(instance_type=entry.get("instanceType"),
                      parameter_ranges=_ranges(entry.get("environmentParameterRanges")),
                      serverless=entry.get("serverlessConfig"),
                      inference_specification_name=entry.get("inferenceSpecificationName"))
            for entry in spec["endpointConfigurations"])
    shared_ranges = _ranges(spec.get("environmentParameterRanges"))
    return tuple(Candidate(instance_type=name, parameter_ranges=shared_ranges) for name in spec.get("instanceTypes") or ())


def _traffic_pattern(raw: Mapping[str, Any] | None) -> TrafficPattern | None:
    if not raw:
        return None
    stairs = raw.get("stairs")
    try:
        return TrafficPattern(
            traffic_type=raw["trafficType"],
            phases=tuple(Phase(p["initialNumberOfUsers"], p["spawnRate"], p["durationInSeconds"])
                         for p in raw.get("phases") or ()),
            stairs=Stairs(stairs["durationInSeconds"], stairs["numberOfSteps"], stairs["usersPerStep"])
            if stairs else None,
        )
    except ValueError as error:  # the CRD's rules, met without the API server (`rightsizer run`)
        raise InvalidSpec([f"spec.{error}"]) from error


def _stopping_conditions(raw: Mapping[str, Any] | None) -> StoppingConditions | None:
    if not raw:
        return None
    thresholds = raw.get("modelLatencyThresholds") or []
    try:
        if len(thresholds) > 1:
            raise ValueError("stoppingConditions.modelLatencyThresholds takes exactly one threshold")
        return StoppingConditions(
            max_invocations=raw.get("maxInvocations"),
            latency_threshold=LatencyThreshold(_percentile(thresholds[0]["percentile"]),
                                               thresholds[0]["valueInMilliseconds"]) if thresholds else None,
            flat_invocations=raw.get("flatInvocations"),
        )
    except ValueError as error:  # the CRD's rules, met without the API server (`rightsizer run`)
        raise InvalidSpec([f"spec.{error}"]) from error


def _percentile(text: str) -> Percentile:
    try:
        return Percentile.parse(text)
    except ValueError as error:
        raise ValueError(f"stoppingConditions.modelLatencyThresholds[0].percentile: {error}") from None


def parse(raw_spec: Mapping[str, Any], check: bool = True) -> RightsizeJobSpec:
    """Parse a spec (defaults applied from the CRD schema) and, with `check`, the backend-neutral rules CEL cannot
    express. A backend's own rules are its policy's (`rightsizer.backends.registry.validate` applies both)."""
    raw = schema.with_defaults(raw_spec)
    model = raw.get("model") or {}
    job_type, inferred = infer_job_type(raw)
    constraints = (raw.get("selection") or {}).get("constraints") or {}
    spec = RightsizeJobSpec(
        backend=raw["backend"],
        job_type=job_type,
        job_type_inferred=inferred,
        model=ModelSource(model.get("modelPackageVersionArn"), model.get("modelName"), model.get("endpointName"),
                          model.get("local"), model.get("kubernetes")),
        candidates=_candidates(raw),
        traffic_pattern=_traffic_pattern(raw.get("trafficPattern")),
        stopping_conditions=_stopping_conditions(raw.get("stoppingConditions")),
        job_duration_seconds=raw.get("jobDurationInSeconds"),
        resource_limit=raw.get("resourceLimit"),
        container_config=raw.get("containerConfig"),
        sagemaker=raw.get("sagemaker") or {},
        selection=Selection(
            objective=(raw.get("selection") or {}).get("objective", "CostPerInference"),
            max_model_latency_ms=constraints.get("maxModelLatencyMs"),
            min_invocations_per_minute=constraints.get("minInvocationsPerMinute"),
            max_cost_per_hour=constraints.get("maxCostPerHour"),
        ),
        promotion=Promotion.from_spec(raw["promotion"]) if raw.get("promotion") else None,
        deletion_policy=raw.get("deletionPolicy", "Stop"),
        local=raw.get("local") or {},
        job_description=raw.get("jobDescription"),
        kubernetes=KubernetesSettings.from_spec(raw["kubernetes"]) if raw.get("kubernetes") else None,
        baseline=Baseline(BaselineSource(raw["baseline"]["source"])) if raw.get("baseline") else None,
        candidates_field=("spec.endpointConfigurations" if raw.get("endpointConfigurations") else
                          "spec.kubernetes.candidates" if raw.get("kubernetes") else "spec.instanceTypes"),
        job_definition=types.MappingProxyType({key: value for key, value in raw.items()
                                               if key not in NOT_JOB_DEFINING}),
        autoscaling=Autoscaling.from_spec(raw["autoscaling"]) if raw.get("autoscaling") else None,
        search=Search(SearchStrategy(raw["search"]["strategy"]), int(raw["search"]["reductionFactor"]))
        if raw.get("search") else Search(),
    )
    errors = semantic_errors(spec) if check else []
    if errors:
        raise InvalidSpec(errors)
    return spec


def semantic_errors(spec: RightsizeJobSpec) -> list[str]:
    errors: list[str] = []
    traffic = spec.traffic_pattern
    if traffic and spec.job_duration_seconds and traffic.duration_seconds > spec.job_duration_seconds:
        stairs = traffic.stairs
        what = (f"spec.trafficPattern.stairs last {stairs.steps} steps x {stairs.duration_seconds} s = "
                if stairs else "spec.trafficPattern.phases last ")
        errors.append(f"{what}{traffic.duration_seconds} s in total, longer than "
                      f"spec.jobDurationInSeconds ({spec.job_duration_seconds} s)")
    scaling = spec.autoscaling
    if scaling and scaling.min_invocations_per_minute > scaling.max_invocations_per_minute:
        # The CRD's rule too; repeated for files read without the API server (`rightsizer run`, `validate`).
        errors.append(f"spec.autoscaling.minInvocationsPerMinute ({scaling.min_invocations_per_minute}) must not "
                      f"exceed spec.autoscaling.maxInvocationsPerMinute ({scaling.max_invocations_per_minute})")
    # The CRD's rules too, for files no API server has checked (`rightsizer run`, `validate`).
    if spec.baseline is not None and spec.promotion is None:
        errors.append("spec.baseline measures what spec.promotion.target serves now: spec.promotion is required "
                      "with it")
    if spec.promotion is not None and spec.promotion.min_savings_percent is not None and spec.baseline is None:
        errors.append("spec.promotion.minSavingsPercent compares the winner with what the target serves now: "
                      "spec.baseline is required with it")
    return errors


def baseline_variables(spec: RightsizeJobSpec) -> tuple[str, ...]:
    """The environment variables the experiment varies: what a baseline's environment is compared on (promotion
    merges only these into the target, so the target's other variables are the same before and after)."""
    return tuple(dict.fromkeys(name for candidate in spec.candidates for name, _ in candidate.parameter_ranges))


def configuration_count(spec: RightsizeJobSpec) -> int:
    return sum(candidate.grid_size for candidate in spec.candidates)


def parameter_grid(candidate: Candidate) -> list[dict[str, str]]:
    """Every environment of a candidate's grid, in a stable order."""
    if not candidate.parameter_ranges:
        return [{}]
    names = [name for name, _ in candidate.parameter_ranges]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in candidate.parameter_ranges))]
