"""SLA constraints + an objective -> the winning configuration and a reason a person can check.

Constraints come from `spec.selection.constraints`; where one is not given, the job's own stopping conditions
stand in (the latency threshold as the maximum latency, maxInvocations as the minimum throughput), because a
configuration that breaks the SLA the job was run for is no candidate. A job with a latency threshold reports
modelLatency at the threshold's percentile, so the latency constraint is that percentile's and says so.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from rightsizer.model import Recommendation, Savings, describe_environment
from rightsizer.spec import Percentile, RightsizeJobSpec

# The scope of a recommendation's metrics: maxInvocations, costPerHour and costPerInference describe the endpoint
# IR recommends, initialInstanceCount instances together. botocore's shape docs say "for the instance", but AWS's
# own figures read only one way. "Improved ML model deployment using Amazon SageMaker Inference Recommender"
# (aws.amazon.com/blogs/machine-learning/improved-ml-model-deployment-using-amazon-sagemaker-inference-recommender/)
# lists CostPerHour 0.922 for two ml.m5.2xlarge (2 x 0.461 USD/h) with MaxInvocations 39,688 against a 30,000/min
# stopping condition: a count of 2 that a per-instance 39,688 would not need. Its ListJobSteps sample has
# CostPerInference = CostPerHour / (MaxInvocations x 60), and the developer guide defines InitialInstanceCount
# as the instances to provision "in the endpoint to meet ModelLatencyThresholds and MaxInvocations mentioned in
# StoppingConditions" (docs.aws.amazon.com/sagemaker/latest/dg/inference-recommender-load-test.html), whose
# MaxInvocations botocore documents as "the maximum number of requests per minute expected for the endpoint".
ENDPOINT_SCOPE = ("maxInvocations", "costPerHour", "costPerInference")

# objective -> (metric, whether smaller is better, how the reason phrases it)
OBJECTIVES = {
    "CostPerInference": ("costPerInference", True, "lowest cost per inference"),
    "CostPerHour": ("costPerHour", True, "lowest cost per hour"),
    "ModelLatency": ("modelLatency", True, "lowest model latency"),
    "MaxInvocations": ("maxInvocations", False, "highest throughput"),
}


@dataclasses.dataclass(frozen=True)
class Constraints:
    max_model_latency_ms: int | None = None
    min_invocations_per_minute: int | None = None
    max_cost_per_hour: float | None = None
    # The percentile modelLatency is measured at; None when the job does not say (a Default SageMaker job).
    latency_percentile: Percentile | None = None

    @property
    def latency_name(self) -> str:
        return f"{self.latency_percentile.name} latency" if self.latency_percentile else "latency"

    def describe(self) -> str:
        parts = []
        if self.max_model_latency_ms is not None:
            parts.append(f"{self.latency_name} <= {self.max_model_latency_ms} ms")
        if self.min_invocations_per_minute is not None:
            parts.append(f">= {self.min_invocations_per_minute} invocations/min")
        if self.max_cost_per_hour is not None:
            parts.append(f"<= {self.max_cost_per_hour:g} USD/h")
        return " and ".join(parts) or "no constraints"


@dataclasses.dataclass(frozen=True)
class Verdict:
    recommendation: Recommendation
    meets_sla: bool
    message: str


@dataclasses.dataclass(frozen=True)
class Selection:
    best: Recommendation | None
    reason: str
    verdicts: tuple[Verdict, ...]  # every recommendation, best first, then by the objective


def constraints_for(spec: RightsizeJobSpec) -> Constraints:
    selection, stopping = spec.selection, spec.stopping_conditions
    threshold = stopping.latency_threshold if stopping else None
    latency = selection.max_model_latency_ms
    if latency is None and threshold:
        latency = threshold.milliseconds
    throughput = selection.min_invocations_per_minute
    if throughput is None and stopping:
        throughput = stopping.max_invocations
    return Constraints(latency, throughput, selection.max_cost_per_hour,
                       threshold.percentile if threshold and latency is not None else None)


def cost_per_inference(metrics: Mapping[str, float | int]) -> float | None:
    """SageMaker's own figure, or cost per hour over an hour of invocations at the measured maximum (both the
    endpoint's, so the ratio is the same as one instance's)."""
    if metrics.get("costPerInference") is not None:
        return float(metrics["costPerInference"])
    if metrics.get("costPerHour") is not None and metrics.get("maxInvocations"):
        return float(metrics["costPerHour"]) / (float(metrics["maxInvocations"]) * 60)
    return None


def _judge(recommendation: Recommendation, constraints: Constraints) -> Verdict:
    metrics = recommendation.metrics
    failures = []
    latency, throughput, cost = metrics.get("modelLatency"), metrics.get("maxInvocations"), metrics.get("costPerHour")
    if constraints.max_model_latency_ms is not None and (latency is None or latency > constraints.max_model_latency_ms):
        failures.append("no latency measured" if latency is None
                        else f"{constraints.latency_name} {latency} ms > {constraints.max_model_latency_ms} ms")
    # maxInvocations and costPerHour are the recommended endpoint's, all initialInstanceCount instances together
    # (see ENDPOINT_SCOPE): compared as they are, never multiplied by the count again.
    count = recommendation.initial_instance_count or 1
    if constraints.min_invocations_per_minute is not None and (
            throughput is None or throughput < constraints.min_invocations_per_minute):
        if throughput is None:
            failures.append("no throughput measured")
        else:
            on = f" on {count} instances" if count > 1 else ""
            failures.append(f"{throughput} invocations/min{on} < {constraints.min_invocations_per_minute}")
    if constraints.max_cost_per_hour is not None and (cost is None or cost > constraints.max_cost_per_hour):
        failures.append("no price known" if cost is None else f"{cost} USD/h > {constraints.max_cost_per_hour:g}")
    return Verdict(recommendation, not failures, "; ".join(failures) or "meets the SLA")


def describe_configuration(recommendation: Recommendation) -> str:
    if recommendation.instance_type:
        what = f"{recommendation.instance_type} x{recommendation.initial_instance_count or 1}"
    elif recommendation.serverless:
        what = f"serverless {recommendation.serverless.get('memorySizeInMB')} MB"
    else:
        what = recommendation.recommendation_id
    environment = describe_environment(recommendation.environment)
    return f"{what} ({environment})" if environment else what


def select(recommendations: Sequence[Recommendation], objective: str, constraints: Constraints,
           incumbent: str | None = None) -> Selection:
    """`incumbent`: the recommendation id of what the target serves now (spec.baseline), which wins a tie: a change
    that gains nothing is not worth making."""
    metric, smaller_is_better, phrase = OBJECTIVES[objective]

    def value(recommendation: Recommendation) -> float | None:
        if metric == "costPerInference":
            return cost_per_inference(recommendation.metrics)
        raw = recommendation.metrics.get(metric)
        return None if raw is None else float(raw)

    def rank(verdict: Verdict) -> tuple[bool, bool, float, float, bool, str]:
        measured = value(verdict.recommendation)
        missing = measured is None
        key = 0.0 if measured is None else measured if smaller_is_better else -measured
        cost = verdict.recommendation.metrics.get("costPerHour")
        # Ties go to the cheaper configuration, then to the incumbent, then to a stable order.
        recommendation_id = verdict.recommendation.recommendation_id
        return (not verdict.meets_sla, missing, key, float("inf") if cost is None else cost,
                recommendation_id != incumbent, recommendation_id)

    verdicts = tuple(sorted((_judge(r, constraints) for r in recommendations), key=rank))
    qualifying = [v for v in verdicts if v.meets_sla and value(v.recommendation) is not None]
    # Meeting the SLA without the objective's metric (a local profile without a price under a cost objective):
    # such a configuration cannot be ranked, which is not an SLA failure and must not read as one.
    unranked = [v.recommendation for v in verdicts if v.meets_sla and value(v.recommendation) is None]
    if not recommendations:
        return Selection(None, "the job produced no recommendations", verdicts)
    if not qualifying and unranked:
        return Selection(None, f"{len(unranked)} of {len(recommendations)} configurations meet "
                               f"{constraints.describe()}, but {phrase} cannot rank them: "
                               f"{_missing(metric, unranked)}", verdicts)
    if not qualifying:
        return Selection(None, f"none of the {len(recommendations)} configurations meets {constraints.describe()}",
                         verdicts)
    best = qualifying[0].recommendation
    measured = value(best)
    shown = f"{measured:.3g}" if metric in ("costPerInference", "costPerHour") else f"{measured:g}"
    reason = (f"{describe_configuration(best)}: {phrase} ({metric} {shown}) among {len(qualifying)} of "
              f"{len(recommendations)} configurations meeting {constraints.describe()}")
    if unranked:
        reason += f"; not ranked, though meeting it: {_missing(metric, unranked)}"
    return Selection(best, reason, verdicts)


def savings(chosen: Recommendation, baseline: Recommendation) -> Savings:
    """What `chosen` saves against `baseline` per hour and per inference (positive: it costs less; percent of the
    baseline's figure), and how its latency differs (positive: slower)."""

    def saved(before: float | None, after: float | None) -> tuple[float | None, float | None]:
        if before is None or after is None:
            return None, None
        return before - after, round(100.0 * (before - after) / before, 2) if before else None

    hour, hour_percent = saved(_number(baseline.metrics.get("costPerHour")), _number(chosen.metrics.get("costPerHour")))
    inference, inference_percent = saved(cost_per_inference(baseline.metrics), cost_per_inference(chosen.metrics))
    before, after = baseline.metrics.get("modelLatency"), chosen.metrics.get("modelLatency")
    latency = None if before is None or after is None else int(after) - int(before)
    return Savings(cost_per_hour=None if hour is None else round(hour, 10), cost_per_hour_percent=hour_percent,
                   cost_per_inference=inference, cost_per_inference_percent=inference_percent,
                   model_latency_change=latency,
                   model_latency_change_percent=round(100.0 * latency / before, 2)
                   if latency is not None and before else None)


def _number(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def meets_sla(selection: Selection) -> bool:
    """Whether some configuration meets the SLA, whether or not the objective could pick one of them."""
    return any(verdict.meets_sla for verdict in selection.verdicts)


def _missing(metric: str, recommendations: Sequence[Recommendation]) -> str:
    """What the objective lacks and what gives it, e.g. `no price known for local-1cpu; set ...`."""
    if metric in ("costPerInference", "costPerHour"):
        # Only the local backend measures without a price (SageMaker reports every cost): its setting is named.
        types = sorted({r.instance_type or r.recommendation_id for r in recommendations})
        return (f"no price known for {', '.join(types)}; set spec.local.pricePerHour or choose "
                f"spec.selection.objective ModelLatency or MaxInvocations")
    return f"no {metric} measured for {', '.join(describe_configuration(r) for r in recommendations)}"
