"""SLA constraints + an objective -> the winning configuration and a reason a person can check.

Constraints come from `spec.selection.constraints`; where one is not given, the job's own stopping conditions
stand in (the latency threshold as the maximum latency, maxInvocations as the minimum throughput), because a
configuration that breaks the SLA the job was run for is no candidate. A job with a latency threshold reports
modelLatency at the threshold's percentile, so the latency constraint is that percentile's and says so.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Mapping, Sequence

from rightsizer import pricing
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
    # The configurations whose objective is within noise of the best's (TIE_DEVIATIONS), the best not among them.
    tied_with: tuple[Recommendation, ...] = ()


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


# Two measurements are told apart only when they differ by more than this many standard deviations of their
# difference (about 95 % confidence for normal noise): less is a tie, and a verdict that close to a limit says so.
TIE_DEVIATIONS = 2.0


def _deviation(recommendation: Recommendation, metric: str, value: float) -> float | None:
    """One standard deviation of `value`, the recommendation's `metric`, from its uncertainty; None if unknown."""
    percent = recommendation.uncertainty.percent(metric) if recommendation.uncertainty else None
    return None if percent is None else abs(value) * percent / 100.0


def _near(recommendation: Recommendation, metric: str, value: float, limit: float) -> str:
    """` (within noise: ± 6 %)` when `value` is within TIE_DEVIATIONS of its standard deviation of `limit`."""
    deviation = _deviation(recommendation, metric, value)
    if deviation is None or abs(value - limit) > TIE_DEVIATIONS * deviation:
        return ""
    return f" (within noise: ± {100.0 * deviation / abs(value):.2g} %)" if value else ""


def _weigh(recommendation: Recommendation, metric: str, value: float | int | None, limit: float, broken: bool,
           texts: tuple[str, str, str, str], failures: list[str], close: list[str]) -> None:
    """One SLA limit: a failure when `broken` (or nothing measured), a note when it holds within noise.
    `texts`: what to say when nothing was measured, the figure, the comparison that breaks it, the limit."""
    missing, shown, breaks, limit_shown = texts
    if value is None:
        failures.append(missing)
        return
    near = _near(recommendation, metric, float(value), limit)
    if broken:
        failures.append(f"{shown} {breaks} {limit_shown}{near}")
    elif near:
        close.append(f"{shown} against {limit_shown}{near}")


def _judge(recommendation: Recommendation, constraints: Constraints) -> Verdict:
    metrics = recommendation.metrics
    failures: list[str] = []
    close: list[str] = []
    latency, throughput, cost = metrics.get("modelLatency"), metrics.get("maxInvocations"), metrics.get("costPerHour")
    limit_ms = constraints.max_model_latency_ms
    if limit_ms is not None:
        _weigh(recommendation, "modelLatency", latency, limit_ms, latency is not None and latency > limit_ms,
               ("no latency measured", f"{constraints.latency_name} {latency} ms", ">", f"{limit_ms} ms"),
               failures, close)
    # maxInvocations and costPerHour are the recommended endpoint's, all initialInstanceCount instances together
    # (see ENDPOINT_SCOPE): compared as they are, never multiplied by the count again.
    count = recommendation.initial_instance_count or 1
    floor = constraints.min_invocations_per_minute
    if floor is not None:
        on = f" on {count} instances" if count > 1 else ""
        _weigh(recommendation, "maxInvocations", throughput, floor, throughput is not None and throughput < floor,
               ("no throughput measured", f"{throughput} invocations/min{on}", "<", str(floor)), failures, close)
    if constraints.max_cost_per_hour is not None and (cost is None or cost > constraints.max_cost_per_hour):
        failures.append("no price known" if cost is None else f"{cost} USD/h > {constraints.max_cost_per_hour:g}")
    if failures:
        return Verdict(recommendation, False, "; ".join(failures))
    return Verdict(recommendation, True, "; ".join(["meets the SLA", *close]))


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
        return objective_value(recommendation, metric)

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
    tie = _tie(qualifying[0].recommendation, [v.recommendation for v in qualifying], metric, value) \
        if qualifying else []
    if len(tie) > 1:
        # Within noise, the objective cannot order them: the cheaper, then the incumbent, then the simpler wins.
        tie.sort(key=lambda r: (_number(r.metrics.get("costPerHour")) or float("inf"),
                                r.recommendation_id != incumbent, simplicity(r), rank(_judge(r, constraints))))
        winner = tie[0]
        qualifying.sort(key=lambda v: v.recommendation.recommendation_id != winner.recommendation_id)
        verdicts = tuple(sorted(verdicts, key=lambda v: v.recommendation.recommendation_id != winner.recommendation_id))
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
    shown = objective_figure(best, metric)
    tied = tuple(r for r in tie if r.recommendation_id != best.recommendation_id)
    if tied:
        others = ", ".join(f"{describe_configuration(r)} ({objective_figure(r, metric)})" for r in tied[:3])
        more = f" and {len(tied) - 3} more" if len(tied) > 3 else ""
        kind = "a tie within noise" if any(r.uncertainty for r in tie) else "a tie"
        reason = (f"{describe_configuration(best)}: {kind} for {phrase} ({metric} {shown}) with "
                  f"{others}{more}; the tie goes to the cheaper, then the simpler configuration; among "
                  f"{len(qualifying)} of {len(recommendations)} configurations meeting {constraints.describe()}")
    else:
        reason = (f"{describe_configuration(best)}: {phrase} ({metric} {shown}) among {len(qualifying)} of "
                  f"{len(recommendations)} configurations meeting {constraints.describe()}")
    if unranked:
        reason += f"; not ranked, though meeting it: {_missing(metric, unranked)}"
    return Selection(best, reason, verdicts, tied)


def preference_order(recommendations: Sequence[Recommendation], objective: str, constraints: Constraints,
                     incumbent: str | None = None) -> list[Verdict]:
    """Every recommendation in the order select() would pick them: its best, then the best of the rest, and so on,
    each tie resolved by the tie rule; those it could not select last, in its order."""
    remaining, order = list(recommendations), list[Verdict]()
    while remaining:
        judged = select(remaining, objective, constraints, incumbent)
        if judged.best is None:
            order.extend(judged.verdicts)
            break
        chosen = judged.best.recommendation_id
        order.extend(v for v in judged.verdicts if v.recommendation.recommendation_id == chosen)
        remaining = [r for r in remaining if r.recommendation_id != chosen]
    return order


def objective_value(recommendation: Recommendation, metric: str) -> float | None:
    """A recommendation's figure for an objective's metric (costPerInference derived when not reported)."""
    if metric == "costPerInference":
        return cost_per_inference(recommendation.metrics)
    return _number(recommendation.metrics.get(metric))


def objective_figure(recommendation: Recommendation, metric: str) -> str:
    """`7.34e-09 ± 4.1 %`: a recommendation's figure for an objective's metric and, when known, its noise."""
    measured = objective_value(recommendation, metric)
    if measured is None:
        return "unknown"
    shown = f"{measured:.3g}" if metric in ("costPerInference", "costPerHour") else f"{measured:g}"
    percent = recommendation.uncertainty.percent(metric) if recommendation.uncertainty else None
    return f"{shown} ± {percent:.2g} %" if percent is not None else shown


def _tie(best: Recommendation, qualifying: Sequence[Recommendation], metric: str,
         value: Callable[[Recommendation], float | None]) -> list[Recommendation]:
    """`best` and every qualifying configuration whose objective differs from best's by less than TIE_DEVIATIONS
    standard deviations of the difference. Without an uncertainty on both sides, only an equal figure ties."""
    best_value = value(best)
    if best_value is None:
        return [best]
    tie = []
    for recommendation in qualifying:
        other = value(recommendation)
        if other is None:
            continue
        apart = separation(recommendation, best, metric)
        if other == best_value or (apart is not None and apart <= TIE_DEVIATIONS):
            tie.append(recommendation)
    return tie


def separation(first: Recommendation, second: Recommendation, metric: str) -> float | None:
    """How many standard deviations of their difference apart two configurations' figures for `metric` are; None
    unless both figures and both uncertainties are known."""
    one, other = objective_value(first, metric), objective_value(second, metric)
    if one is None or other is None:
        return None
    mine, theirs = _deviation(first, metric, one), _deviation(second, metric, other)
    if mine is None or theirs is None:
        return None
    spread = math.hypot(mine, theirs)
    return abs(one - other) / spread if spread else (0.0 if one == other else math.inf)


_LOCAL_PROFILE_CPUS = re.compile(r"local-([1-9][0-9]*)cpu")


def simplicity(recommendation: Recommendation) -> tuple[float, float, float, float, str]:
    """What "simpler" orders by in a tie: fewer CPUs (the Pod's CPU request, a local profile's CPUs, a SageMaker
    type's vCPUs), then fewer workers (a worker is a process with its own copy of the model), then fewer threads,
    then smaller other numeric environment values, then a stable order. Workers and threads are the numeric
    variables whose names say so (SAGEMAKER_MODEL_SERVER_WORKERS, OMP_NUM_THREADS)."""
    cpus: float | None = None
    if recommendation.placement is not None:
        cpus = _cpu_quantity(recommendation.placement.requests.get("cpu"))
    if cpus is None and recommendation.instance_type:
        profile = _LOCAL_PROFILE_CPUS.match(recommendation.instance_type)
        size = pricing.instance_size(recommendation.instance_type)
        cpus = float(profile.group(1)) if profile else float(size.vcpus) if size else None
    workers = threads = others = 0.0
    for name, text in recommendation.environment.items():
        try:
            number = float(text)
        except ValueError:
            continue
        if "WORKER" in name.upper():
            workers += number
        elif "THREAD" in name.upper():
            threads += number
        else:
            others += number
    return (float("inf") if cpus is None else cpus, workers, threads, others, recommendation.recommendation_id)


def _cpu_quantity(quantity: str | None) -> float | None:
    """A Kubernetes CPU quantity (`2`, `500m`, `1.5`) in cores."""
    if not quantity:
        return None
    try:
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    except ValueError:
        return None


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
