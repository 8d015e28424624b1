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
import types
from enum import StrEnum
from typing import Any, Mapping

from rightsizer import schema

# Spec fields that do not define the experiment: editing them re-selects or re-promotes without a new job.
NOT_JOB_DEFINING = ("selection", "promotion", "deletionPolicy")


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
    # The job-defining fields as written, defaults applied: what a job's name hashes (rightsizer.naming), so the
    # name stays the same for the same spec whatever this module's values look like.
    job_definition: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


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
        job_definition=types.MappingProxyType({key: value for key, value in raw.items()
                                               if key not in NOT_JOB_DEFINING}),
    )
    errors = semantic_errors(spec) if check else []
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
    return errors


def configuration_count(spec: RightsizeJobSpec) -> int:
    return sum(candidate.grid_size for candidate in spec.candidates)


def parameter_grid(candidate: Candidate) -> list[dict[str, str]]:
    """Every environment of a candidate's grid, in a stable order."""
    if not candidate.parameter_ranges:
        return [{}]
    names = [name for name, _ in candidate.parameter_ranges]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in candidate.parameter_ranges))]
