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
from enum import StrEnum
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


@dataclasses.dataclass(frozen=True)
class TrafficPattern:
    traffic_type: str
    phases: tuple[Phase, ...] = ()
    stairs: Stairs | None = None

    @property
    def duration_seconds(self) -> int:
        if self.stairs:
            return self.stairs.duration_seconds
        return sum(phase.duration_seconds for phase in self.phases)


@dataclasses.dataclass(frozen=True)
class LatencyThreshold:
    percentile: str
    milliseconds: int


@dataclasses.dataclass(frozen=True)
class StoppingConditions:
    max_invocations: int | None = None
    latency_threshold: LatencyThreshold | None = None
    flat_invocations: str | None = None


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


@dataclasses.dataclass(frozen=True)
class Promotion:
    target: TargetRef
    mode: PromotionMode
    force_conflicts: bool
    progress_deadline_seconds: int
    field_paths: FieldPaths | None = None
    variant_name: str | None = None  # spec.promotion.target.variantName: ACK only, the production variant to change

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> "Promotion":
        """From spec.promotion with the CRD's defaults applied (schema.with_defaults)."""
        target, field_paths = raw["target"], raw.get("fieldPaths")
        return cls(target=TargetRef(target["apiVersion"], target["kind"], target["name"]),
                   mode=PromotionMode(raw["mode"]), force_conflicts=raw["forceConflicts"],
                   progress_deadline_seconds=raw["progressDeadlineSeconds"],
                   field_paths=FieldPaths(field_paths.get("instanceType"), field_paths.get("instanceCount"),
                                          field_paths.get("environment")) if field_paths else None,
                   variant_name=target.get("variantName"))


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
    return TrafficPattern(
        traffic_type=raw["trafficType"],
        phases=tuple(Phase(p["initialNumberOfUsers"], p["spawnRate"], p["durationInSeconds"])
                     for p in raw.get("phases") or ()),
        stairs=Stairs(stairs["durationInSeconds"], stairs["numberOfSteps"], stairs["usersPerStep"]) if stairs else None,
    )


def _stopping_conditions(raw: Mapping[str, Any] | None) -> StoppingConditions | None:
    if not raw:
        return None
    thresholds = raw.get("modelLatencyThresholds") or []
    return StoppingConditions(
        max_invocations=raw.get("maxInvocations"),
        latency_threshold=LatencyThreshold(thresholds[0]["percentile"], thresholds[0]["valueInMilliseconds"])
        if thresholds else None,
        flat_invocations=raw.get("flatInvocations"),
    )


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
        promotion=Promotion.from_spec(raw["promotion"]) if raw.get("promotion") else None,
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
