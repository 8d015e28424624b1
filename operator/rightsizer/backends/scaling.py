"""A scaling configuration derived from a backend's own measurements, pure: the shape of SageMaker's
GetScalingConfigurationRecommendation (min and max capacity, cooldowns, a target-tracking policy on invocations per
instance) for a backend that measured the configuration itself (local, kubernetes).

From the best configuration's row: P = maxInvocationsPerInstance (invocations per minute one instance sustains
within the latency threshold), C = cpuUtilization at that load (percent summed over cores, as SageMaker reports it)
and N = the instance's cores. With spec.autoscaling's u (targetCpuUtilizationPerCore) and min/max invocations:

- target T (SageMakerVariantInvocationsPerInstance, per minute per instance) = P x share, where
  share = u / (C / N): the load at which the CPU per core reaches u, CPU growing in proportion to load; at most
  MAX_TARGET_SHARE. Without a CPU measurement or a core count, share = SAFETY_FACTOR.
- maxCapacity = ceil(maxInvocationsPerMinute / P): enough instances for the expected peak within the SLA, each at
  most at its measured maximum (above T: the policy wants more, the cap keeps the cost where the SLA still holds).
- minCapacity = ceil(minInvocationsPerMinute / T), at least 1 and at most maxCapacity: the quiet hours at the target.
- cooldowns: DEFAULT_COOLDOWN_SECONDS both ways.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from rightsizer import pricing
from rightsizer.model import INVOCATIONS_PER_INSTANCE, JobStatus, Recommendation, Scaling, ScalingRefusal
from rightsizer.model import TargetTrackingPolicy
from rightsizer.spec import Autoscaling, RightsizeJobSpec

# AWS's starting safety factor for the SageMakerVariantInvocationsPerInstance target, MAX_RPS x SAFETY_FACTOR
# (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-loadtest.html): used when no CPU was measured.
SAFETY_FACTOR = 0.5
# P is where the latency already reached the threshold: target tracking lets the load pass its target while new
# instances start, so a fifth of an instance's measured capacity is kept for that (this project's choice).
MAX_TARGET_SHARE = 0.8
# Application Auto Scaling's default cooldowns for SageMaker endpoint variants
# (https://docs.aws.amazon.com/autoscaling/application/APIReference/API_TargetTrackingScalingPolicyConfiguration.html).
DEFAULT_COOLDOWN_SECONDS = 300
NOT_MEASURED = "NotMeasured"

_LOCAL_PROFILE = re.compile(r"^local-([1-9][0-9]*)cpu(?:-[1-9][0-9]*gi)?$")


def cores(recommendation: Recommendation) -> float | None:
    """The cores one instance had: the server Pod's CPU limit (else request) for the kubernetes backend, a
    local-<N>cpu profile's N, or the vCPUs of a catalogued instance type; None when unknown."""
    placement = recommendation.placement
    if placement is not None:
        quantity = placement.limits.get("cpu") or placement.requests.get("cpu")
        return _cpu_quantity(quantity) if quantity else None
    instance_type = recommendation.instance_type or ""
    profile = _LOCAL_PROFILE.match(instance_type)
    if profile:
        return float(profile.group(1))
    size = pricing.instance_size(instance_type) if instance_type else None
    return float(size.vcpus) if size else None


def _cpu_quantity(text: str) -> float | None:
    """A Kubernetes CPU quantity ("500m", "2", "1.5") in cores."""
    try:
        value = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
    except InvalidOperation:
        return None
    return float(value) if value > 0 else None


def derive(objective: Autoscaling, best: Recommendation, source: str) -> Scaling:
    """The scaling of `best` for `objective` from its measurements (the module's docstring has the rules)."""
    metrics = best.metrics
    per_instance = metrics.get("maxInvocationsPerInstance")
    count = best.initial_instance_count or 1
    if per_instance is None and metrics.get("maxInvocations") is not None:
        per_instance = metrics["maxInvocations"] / count
    if not per_instance or per_instance <= 0:
        return Scaling(objective, source, refused=ScalingRefusal(
            NOT_MEASURED, f"{best.instance_type or best.recommendation_id} sustained no load within the latency "
                          f"threshold: there is no per-instance throughput to scale by"))
    u = objective.target_cpu_utilization_per_core
    cpu, core_count = metrics.get("cpuUtilization"), cores(best)
    if cpu and core_count:
        per_core = cpu / core_count
        share = min(u / per_core, MAX_TARGET_SHARE)
        why = (f"the CPU was {per_core:.0f} % per core ({cpu:g} % over {core_count:g} cores) at {per_instance:.0f} "
               f"invocations/min per instance, so {u} % per core is reached at {u / per_core:.0%} of it"
               f"{f', kept at {MAX_TARGET_SHARE:.0%}' if share < u / per_core else ''}")
    else:
        share = SAFETY_FACTOR
        missing = "no CPU utilisation was measured" if not cpu else \
            f"the cores of {best.instance_type} are unknown"
        why = f"{missing}, so the target is AWS's starting safety factor, {SAFETY_FACTOR:.0%} of it"
    target = max(1, math.floor(per_instance * share))
    max_capacity = max(1, math.ceil(objective.max_invocations_per_minute / per_instance))
    min_capacity = min(max_capacity, max(1, math.ceil(objective.min_invocations_per_minute / target)))
    derivation = (f"target {target} invocations/min per instance: {why}; maxCapacity {max_capacity} serves "
                  f"{objective.max_invocations_per_minute}/min at the measured {per_instance:.0f}/min per instance; "
                  f"minCapacity {min_capacity} serves {objective.min_invocations_per_minute}/min at the target; "
                  f"cooldowns are Application Auto Scaling's defaults for SageMaker variants")
    latency = metrics.get("modelLatency")
    return Scaling(objective, source, derivation[:1024], min_capacity=min_capacity, max_capacity=max_capacity,
                   scale_in_cooldown=DEFAULT_COOLDOWN_SECONDS, scale_out_cooldown=DEFAULT_COOLDOWN_SECONDS,
                   policies=(TargetTrackingPolicy(float(target), INVOCATIONS_PER_INSTANCE),),
                   invocations_per_instance=round(per_instance),
                   model_latency=round(latency) if latency is not None else None)


class DerivesScaling:
    """The `scaling` hook of a backend that measured the configuration itself: derived, no call."""

    display_name: str

    def scaling(self, spec: RightsizeJobSpec, objective: Autoscaling, job_name: str, job_status: JobStatus | None,
                best: Recommendation) -> Scaling:
        return derive(objective, best, self.display_name)
