"""The parsed RightsizeJob spec, and the semantic rules the API server cannot judge.

The CRD schema and its CEL rules (crds/rightsizejobs.yaml) reject malformed input at admission. What remains
here needs arithmetic over lists, botocore's service model or documented-but-unmodelled SageMaker behaviour.
`parse` raises InvalidSpec with every violation at once; `soft_warnings` lists documented guidance the spec
breaks without making the job fail (the seed's own example breaks some of it).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from typing import Any, Mapping

from rightsizer import schema

# SageMaker's documented guidance for custom load tests, which its own published example breaks: warnings.
PHASE_USERS_RANGE = (1, 3)
PHASE_SPAWN_RATE_MAX = 3
TRAFFIC_DURATION_RANGE_SECONDS = (120, 3600)
MAX_INVOCATIONS_DOCUMENTED = 30000
RESOURCE_LIMIT_DOCUMENTED_MAX = 10
# Consecutive phases may differ by at most this many users (a documented failure cause of Advanced jobs).
PHASE_CONTINUITY_MAX_USER_JUMP = 3

DOCUMENTED_CONTAINER_VALUES = {
    "domain": ("COMPUTER_VISION", "NATURAL_LANGUAGE_PROCESSING", "MACHINE_LEARNING"),
    "task": ("IMAGE_CLASSIFICATION", "OBJECT_DETECTION", "TEXT_GENERATION", "IMAGE_SEGMENTATION", "FILL_MASK",
             "CLASSIFICATION", "REGRESSION", "OTHER"),
    "framework": ("TENSORFLOW", "PYTORCH", "XGBOOST", "SAGEMAKER-SCIKIT-LEARN"),
    "nearestModelName": ("efficientnetb7", "unet", "xgboost", "faster-rcnn-resnet101", "nasnetlarge", "vgg16",
                         "inception-v3", "mask-rcnn", "sagemaker-scikit-learn", "densenet201-gluon",
                         "resnet18v2-gluon", "xception", "densenet201", "yolov4", "resnet152", "bert-base-cased",
                         "xceptionV1-keras", "resnet50", "retinanet"),
}
# Inference Recommender rejects burstable ml.t2 types although the API enum lists them (troubleshooting guide).
REJECTED_INSTANCE_FAMILIES = ("ml.t2.",)


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
    duration_seconds: int
    steps: int
    users_per_step: int


PHASES = "PHASES"
STAIRS = "STAIRS"


@dataclasses.dataclass(frozen=True)
class TrafficPattern:
    """spec.trafficPattern. It refuses what the CRD refuses, so that a pattern built without the API server (the
    default pattern, `rightsizer run`, tests) is one the load test can run."""

    traffic_type: str
    phases: tuple[Phase, ...] = ()
    stairs: Stairs | None = None

    def __post_init__(self):
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
            return self.stairs.duration_seconds
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

    def __post_init__(self):
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

    def __post_init__(self):
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


@dataclasses.dataclass(frozen=True)
class Selection:
    objective: str = "CostPerInference"
    max_model_latency_ms: int | None = None
    min_invocations_per_minute: int | None = None
    max_cost_per_hour: float | None = None


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
    promotion: Mapping[str, Any] | None
    deletion_policy: str
    local: Mapping[str, Any]
    job_description: str | None = None
    # Which field the candidates came from, so errors name the field the user wrote.
    candidates_field: str = "spec.instanceTypes"


@functools.cache
def sagemaker_instance_types() -> frozenset[str]:
    """Real-time hosting instance types, from botocore's service model (the same enum the service checks)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ProductionVariantInstanceType").enum)


def infer_job_type(spec: Mapping[str, Any]) -> tuple[str, bool]:
    """Default vs Advanced as the SageMaker SDK's right_size decides it, unless spec.jobType says."""
    if spec.get("jobType"):
        return spec["jobType"], False
    if spec.get("backend") == "local":
        return "Advanced", True  # the local backend always load-tests
    advanced = any(spec.get(field) for field in (
        "trafficPattern", "stoppingConditions", "resourceLimit", "environmentParameterRanges",
        "endpointConfigurations"))
    return ("Advanced" if advanced else "Default"), True


def _ranges(ranges: Mapping[str, list[str]] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, tuple(str(value) for value in values)) for name, values in (ranges or {}).items())


def _candidates(spec: Mapping[str, Any]) -> tuple[Candidate, ...]:
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


def parse(raw_spec: Mapping[str, Any]) -> RightsizeJobSpec:
    """Parse a spec (defaults applied from the CRD schema) and check the rules CEL cannot express."""
    raw = schema.with_defaults(raw_spec)
    model = raw.get("model") or {}
    job_type, inferred = infer_job_type(raw)
    constraints = (raw.get("selection") or {}).get("constraints") or {}
    spec = RightsizeJobSpec(
        backend=raw["backend"],
        job_type=job_type,
        job_type_inferred=inferred,
        model=ModelSource(model.get("modelPackageVersionArn"), model.get("modelName"), model.get("endpointName"),
                          model.get("local")),
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
        promotion=raw.get("promotion"),
        deletion_policy=raw.get("deletionPolicy", "Stop"),
        local=raw.get("local") or {},
        job_description=raw.get("jobDescription"),
        candidates_field="spec.endpointConfigurations" if raw.get("endpointConfigurations") else "spec.instanceTypes",
    )
    errors = semantic_errors(spec)
    if errors:
        raise InvalidSpec(errors)
    return spec


def semantic_errors(spec: RightsizeJobSpec) -> list[str]:
    errors: list[str] = []
    traffic = spec.traffic_pattern
    if traffic and spec.job_duration_seconds and traffic.duration_seconds > spec.job_duration_seconds:
        what = "spec.trafficPattern.stairs.durationInSeconds is" if traffic.stairs else \
            "spec.trafficPattern.phases last"
        errors.append(f"{what} {traffic.duration_seconds} s in total, longer than "
                      f"spec.jobDurationInSeconds ({spec.job_duration_seconds} s)")
    if traffic and traffic.stairs and traffic.stairs.steps > traffic.stairs.duration_seconds:
        errors.append(f"spec.trafficPattern.stairs: {traffic.stairs.steps} steps do not fit in "
                      f"{traffic.stairs.duration_seconds} s (each step needs at least 1 s)")
    if traffic and spec.backend == "sagemaker":
        for index, (previous, following) in enumerate(zip(traffic.phases, traffic.phases[1:]), start=1):
            jump = abs(following.initial_users - previous.final_users)
            if jump > PHASE_CONTINUITY_MAX_USER_JUMP:
                errors.append(
                    f"spec.trafficPattern.phases[{index}].initialNumberOfUsers is {following.initial_users} but "
                    f"phase {index - 1} ends with {previous.final_users} users "
                    f"({previous.initial_users} + {previous.spawn_rate_per_minute}/min x "
                    f"{previous.duration_seconds} s); SageMaker allows a jump of at most "
                    f"{PHASE_CONTINUITY_MAX_USER_JUMP}")
    if spec.backend == "sagemaker":
        known = sagemaker_instance_types()
        field = spec.candidates_field
        for index, candidate in enumerate(spec.candidates):
            name = candidate.instance_type
            if name is None:
                continue
            if name not in known:
                errors.append(f"{field}[{index}]: {name} is not a SageMaker real-time hosting instance type")
            elif name.startswith(REJECTED_INSTANCE_FAMILIES):
                errors.append(f"{field}[{index}]: Inference Recommender rejects burstable {name}")
        for index, name in enumerate((spec.container_config or {}).get("supportedInstanceTypes") or ()):
            if name not in known:
                errors.append(f"spec.containerConfig.supportedInstanceTypes[{index}]: {name} is not a SageMaker "
                              "real-time hosting instance type")
    return errors


def configuration_count(spec: RightsizeJobSpec) -> int:
    return sum(candidate.grid_size for candidate in spec.candidates)


def soft_warnings(spec: RightsizeJobSpec) -> list[str]:
    """Documented guidance the spec breaks; the job still runs (SageMaker's own examples break some)."""
    warnings: list[str] = []
    traffic = spec.traffic_pattern
    low, high = TRAFFIC_DURATION_RANGE_SECONDS
    # The traffic guidance is Inference Recommender's; the local backend has no such limits.
    if traffic and spec.backend == "sagemaker":
        for index, phase in enumerate(traffic.phases):
            if not PHASE_USERS_RANGE[0] <= phase.initial_users <= PHASE_USERS_RANGE[1]:
                warnings.append(f"spec.trafficPattern.phases[{index}].initialNumberOfUsers is {phase.initial_users}; "
                                f"SageMaker documents {PHASE_USERS_RANGE[0]}-{PHASE_USERS_RANGE[1]}")
            if phase.spawn_rate_per_minute > PHASE_SPAWN_RATE_MAX:
                warnings.append(f"spec.trafficPattern.phases[{index}].spawnRate is {phase.spawn_rate_per_minute}; "
                                f"SageMaker documents 0-{PHASE_SPAWN_RATE_MAX} users per minute")
            if not low <= phase.duration_seconds <= high:
                warnings.append(f"spec.trafficPattern.phases[{index}].durationInSeconds is {phase.duration_seconds}; "
                                f"SageMaker documents {low}-{high} s")
        if traffic.stairs and not low <= traffic.stairs.duration_seconds <= high:
            warnings.append(f"spec.trafficPattern.stairs.durationInSeconds is {traffic.stairs.duration_seconds}; "
                            f"SageMaker documents {low}-{high} s")
    stopping = spec.stopping_conditions
    if spec.backend != "sagemaker":
        return warnings
    if stopping and stopping.max_invocations and stopping.max_invocations > MAX_INVOCATIONS_DOCUMENTED:
        warnings.append(f"spec.stoppingConditions.maxInvocations is {stopping.max_invocations}; SageMaker "
                        f"documents 1-{MAX_INVOCATIONS_DOCUMENTED} per minute")
    for key, value in (spec.resource_limit or {}).items():
        if value > RESOURCE_LIMIT_DOCUMENTED_MAX:
            warnings.append(f"spec.resourceLimit.{key} is {value}; SageMaker documents 1-{RESOURCE_LIMIT_DOCUMENTED_MAX}")
    max_tests = (spec.resource_limit or {}).get("maxNumberOfTests")
    configurations = configuration_count(spec)
    if max_tests and configurations > max_tests:
        warnings.append(f"the candidates make {configurations} configurations but spec.resourceLimit.maxNumberOfTests "
                        f"is {max_tests}: not every configuration will be tested")
    for field, documented in DOCUMENTED_CONTAINER_VALUES.items():
        value = (spec.container_config or {}).get(field)
        if value is not None and value not in documented:
            warnings.append(f"spec.containerConfig.{field} {value!r} is not a documented value "
                            f"({', '.join(documented)})")
    if spec.job_type == "Advanced" and not spec.model.endpoint_name and (traffic is None or stopping is None):
        missing = " and ".join(name for name, value in (("trafficPattern", traffic), ("stoppingConditions", stopping))
                               if value is None)
        warnings.append(f"an Advanced job without spec.{missing} runs with SageMaker's defaults")
    return warnings


def describe_job(spec: RightsizeJobSpec) -> str:
    """One phrase naming what will run, for condition messages."""
    if spec.backend == "local":
        return f"the local load test of {configuration_count(spec)} configuration(s)"
    if spec.model.endpoint_name:
        return f"the SageMaker {spec.job_type} job on endpoint {spec.model.endpoint_name}"
    if spec.job_type == "Default" and not spec.candidates:
        return "the SageMaker Default job (Inference Recommender picks the instance types)"
    return f"the SageMaker {spec.job_type} job of {configuration_count(spec)} configuration(s)"


def parameter_grid(candidate: Candidate) -> list[dict[str, str]]:
    """Every environment of a candidate's grid, in a stable order."""
    if not candidate.parameter_ranges:
        return [{}]
    names = [name for name, _ in candidate.parameter_ranges]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in candidate.parameter_ranges))]
