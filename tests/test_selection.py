"""Selection over the seed's published results: SLA constraints, objectives, tie-breaks and the reasons given."""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path

import pytest
import yaml

from rightsizer import spec as spec_module
from rightsizer.backends.base import Recommendation
from rightsizer.selection import Constraints, constraints_for, cost_per_inference, meets_sla, select
from rightsizer.spec import Percentile

SAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "samples"


def row(rid, instance_type, count, omp, cost, invocations, latency, cpu, memory, workers=None, **extra):
    environment = {"OMP_NUM_THREADS": str(omp)}
    if workers is not None:
        environment["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    metrics = {"costPerHour": cost, "maxInvocations": invocations, "modelLatency": latency,
               "cpuUtilization": cpu, "memoryUtilization": memory, **extra}
    return Recommendation(rid, instance_type, count, environment, metrics)


# The seed's Default job results (one instance each), in the published order.
DEFAULT = [
    row("fraud-default/Xk2m9QaL", "ml.m5.xlarge", 1, 2, 0.23, 15189, 18, 108.864, 1.62012, workers=1),
    row("fraud-default/B7tR4wPz", "ml.m5.4xlarge", 1, 3, 0.922, 32628, 9, 220.57001, 0.69791, workers=3),
    row("fraud-default/Lq8vN3cY", "ml.m5.large", 1, 2, 0.115, 13793, 19, 106.34, 3.24398, workers=1),
    row("fraud-default/A1sD5fGh", "ml.m5.12xlarge", 1, 4, 2.765, 32016, 4, 215.32401, 0.44658, workers=7),
    row("fraud-default/Zp0oI9uY", "ml.m5.2xlarge", 1, 2, 0.461, 32427, 13, 248.673, 1.43109, workers=3),
]
BY_TYPE = {r.instance_type: r for r in DEFAULT}

# The seed's Advanced job results (InitialInstanceCount 2, cost/h for that count).
ADVANCED = [
    row("fraud-advanced/m5-2x-omp3", "ml.m5.2xlarge", 2, 3, 0.922, 39688, 6, 86.732803, 3.04769),
    row("fraud-advanced/a5-2x-omp4", "ml.m5.2xlarge", 2, 4, 0.922, 42604, 6, 177.164993, 3.05089),
    row("fraud-advanced/k5-2x-omp5", "ml.m5.2xlarge", 2, 5, 0.922, 39268, 6, 125.402, 3.08665),
    row("fraud-advanced/c5-4x-omp3", "ml.m5.4xlarge", 2, 3, 1.844, 38174, 4, 102.546997, 2.68003),
    row("fraud-advanced/b5-4x-omp4", "ml.m5.4xlarge", 2, 4, 1.844, 39452, 4, 141.826004, 2.68136),
    row("fraud-advanced/d5-4x-omp5", "ml.m5.4xlarge", 2, 5, 1.844, 40472, 4, 107.825996, 2.70936),
]
SLA = Constraints(max_model_latency_ms=100, min_invocations_per_minute=30000)
SLA_TEXT = "latency <= 100 ms and >= 30000 invocations/min"
P95, P99 = Percentile.parse("P95"), Percentile.parse("P99")


def ids(verdicts):
    return [v.recommendation.recommendation_id for v in verdicts]


# -- cost per inference -----------------------------------------------------------------------------------------------

def test_cost_per_inference_is_computed_from_cost_per_hour_when_missing():
    # The seed's step: 1.836 / (18199 x 60) = 1.681e-06, which SageMaker also reported.
    assert cost_per_inference({"costPerHour": 1.8359999656677246, "maxInvocations": 18199}) == \
        pytest.approx(1.6814110495033674e-06, rel=1e-9)
    assert cost_per_inference(BY_TYPE["ml.m5.2xlarge"].metrics) == pytest.approx(0.461 / (32427 * 60), rel=1e-12)


def test_cost_per_inference_prefers_sagemakers_figure():
    assert cost_per_inference({"costPerInference": 2e-6, "costPerHour": 0.23, "maxInvocations": 15189}) == 2e-6


@pytest.mark.parametrize("metrics", [{}, {"costPerHour": 0.23}, {"costPerHour": 0.23, "maxInvocations": 0},
                                     {"maxInvocations": 15189}])
def test_cost_per_inference_unknown_without_cost_and_throughput(metrics):
    assert cost_per_inference(metrics) is None


# -- the Default table ----------------------------------------------------------------------------------------------

def test_cost_per_inference_under_the_sla_picks_m5_2xlarge():
    selection = select(DEFAULT, "CostPerInference", SLA)
    assert selection.best is BY_TYPE["ml.m5.2xlarge"]
    assert selection.reason == (
        "ml.m5.2xlarge x1 (OMP_NUM_THREADS=2, SAGEMAKER_MODEL_SERVER_WORKERS=3): lowest cost per inference "
        f"(costPerInference 2.37e-07) among 3 of 5 configurations meeting {SLA_TEXT}")
    # Best first, the other qualifying rows by cost per inference, then the rows that break the SLA.
    assert [v.recommendation.instance_type for v in selection.verdicts] == [
        "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge", "ml.m5.large", "ml.m5.xlarge"]
    assert [v.meets_sla for v in selection.verdicts] == [True, True, True, False, False]


def test_cheaper_rows_that_break_the_sla_do_not_win():
    # ml.m5.large has the lowest cost per inference of all five, but 13793/min is below 30000/min.
    unconstrained = select(DEFAULT, "CostPerInference", Constraints())
    assert unconstrained.best is BY_TYPE["ml.m5.large"]
    assert unconstrained.reason.endswith("among 5 of 5 configurations meeting no constraints")
    assert select(DEFAULT, "CostPerInference", SLA).best is not BY_TYPE["ml.m5.large"]


def test_model_latency_picks_m5_12xlarge():
    selection = select(DEFAULT, "ModelLatency", SLA)
    assert selection.best is BY_TYPE["ml.m5.12xlarge"]
    assert selection.reason == (
        "ml.m5.12xlarge x1 (OMP_NUM_THREADS=4, SAGEMAKER_MODEL_SERVER_WORKERS=7): lowest model latency "
        f"(modelLatency 4) among 3 of 5 configurations meeting {SLA_TEXT}")


def test_model_latency_within_a_cost_cap_picks_m5_4xlarge():
    capped = Constraints(100, 30000, max_cost_per_hour=2.0)
    selection = select(DEFAULT, "ModelLatency", capped)
    assert selection.best is BY_TYPE["ml.m5.4xlarge"]
    assert selection.reason == (
        "ml.m5.4xlarge x1 (OMP_NUM_THREADS=3, SAGEMAKER_MODEL_SERVER_WORKERS=3): lowest model latency "
        f"(modelLatency 9) among 2 of 5 configurations meeting {SLA_TEXT} and <= 2 USD/h")
    messages = {v.recommendation.instance_type: v.message for v in selection.verdicts}
    assert messages["ml.m5.12xlarge"] == "2.765 USD/h > 2"


def test_max_invocations_picks_m5_4xlarge():
    selection = select(DEFAULT, "MaxInvocations", SLA)
    assert selection.best is BY_TYPE["ml.m5.4xlarge"]
    assert "highest throughput (maxInvocations 32628) among 3 of 5" in selection.reason
    assert [v.recommendation.instance_type for v in selection.verdicts[:3]] == [
        "ml.m5.4xlarge", "ml.m5.2xlarge", "ml.m5.12xlarge"]


def test_verdict_messages_name_the_failed_constraint():
    verdicts = {v.recommendation.instance_type: v
                for v in select(DEFAULT, "CostPerInference", Constraints(10, 30000, 0.5)).verdicts}
    assert verdicts["ml.m5.xlarge"].message == "latency 18 ms > 10 ms; 15189 invocations/min < 30000"
    assert verdicts["ml.m5.large"].message == "latency 19 ms > 10 ms; 13793 invocations/min < 30000"
    assert verdicts["ml.m5.2xlarge"].message == "latency 13 ms > 10 ms"
    assert verdicts["ml.m5.4xlarge"].message == "0.922 USD/h > 0.5"
    assert verdicts["ml.m5.12xlarge"].message == "2.765 USD/h > 0.5"
    assert not any(v.meets_sla for v in verdicts.values())
    met = select(DEFAULT, "CostPerInference", SLA).verdicts[0]
    assert (met.meets_sla, met.message) == (True, "meets the SLA")


def test_throughput_is_the_endpoints_and_never_counted_twice():
    # The advanced rows are endpoints of two instances: 42604/min is what both serve together (ENDPOINT_SCOPE).
    verdicts = {v.recommendation.recommendation_id: v
                for v in select(ADVANCED, "CostPerInference", Constraints(min_invocations_per_minute=42000)).verdicts}
    assert verdicts["fraud-advanced/a5-2x-omp4"].meets_sla
    assert verdicts["fraud-advanced/m5-2x-omp3"].message == "39688 invocations/min on 2 instances < 42000"
    # Read per instance, 2 x 39688 would pass 60000/min: it does not, nor does any other row.
    short = select(ADVANCED, "CostPerInference", Constraints(min_invocations_per_minute=60000))
    assert short.best is None and not any(v.meets_sla for v in short.verdicts)
    # Cost per inference is the endpoint's cost over the endpoint's invocations: 0.922 / (42604 x 60).
    assert cost_per_inference(ADVANCED[1].metrics) == pytest.approx(0.922 / (42604 * 60))


def test_a_missing_constrained_metric_fails_the_constraint():
    blind = Recommendation("x", "ml.m5.xlarge", 1, {}, {"costPerHour": 0.23})
    verdict = select([blind], "CostPerHour", SLA).verdicts[0]
    assert (verdict.meets_sla, verdict.message) == (False, "no latency measured; no throughput measured")


# -- the Advanced table ---------------------------------------------------------------------------------------------

def test_cost_per_hour_ties_are_broken_deterministically():
    # Three rows cost 0.922 USD/h: a tie, which goes to the simplest (the fewest threads), whatever the order.
    expected_order = ["fraud-advanced/m5-2x-omp3", "fraud-advanced/a5-2x-omp4", "fraud-advanced/k5-2x-omp5",
                      "fraud-advanced/b5-4x-omp4", "fraud-advanced/c5-4x-omp3", "fraud-advanced/d5-4x-omp5"]
    for permutation in itertools.permutations(ADVANCED):
        selection = select(list(permutation), "CostPerHour", SLA)
        assert ids(selection.verdicts) == expected_order
        assert selection.best.recommendation_id == "fraud-advanced/m5-2x-omp3"
    assert selection.reason == (
        "ml.m5.2xlarge x2 (OMP_NUM_THREADS=3): a tie for lowest cost per hour (costPerHour 0.922) with "
        "ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) (0.922), ml.m5.2xlarge x2 (OMP_NUM_THREADS=5) (0.922); the tie goes "
        f"to the cheaper, then the simpler configuration; among 6 of 6 configurations meeting {SLA_TEXT}")
    assert [r.recommendation_id for r in selection.tied_with] == ["fraud-advanced/a5-2x-omp4",
                                                                 "fraud-advanced/k5-2x-omp5"]


def test_cost_per_inference_on_the_advanced_table():
    # 0.922 / (42604 x 60) is the lowest: the m5.2xlarge pair with OMP_NUM_THREADS=4.
    selection = select(ADVANCED, "CostPerInference", SLA)
    assert selection.best.recommendation_id == "fraud-advanced/a5-2x-omp4"
    assert "(costPerInference 3.61e-07) among 6 of 6" in selection.reason


def test_equal_objective_values_go_to_the_cheaper_configuration():
    # Same latency (4 ms and 4 ms): the cheaper of two otherwise tied rows wins, whatever the ids say.
    cheap = Recommendation("zzz", "ml.m5.2xlarge", 1, {}, {"modelLatency": 4, "costPerHour": 0.461})
    dear = Recommendation("aaa", "ml.m5.12xlarge", 1, {}, {"modelLatency": 4, "costPerHour": 2.765})
    assert select([dear, cheap], "ModelLatency", Constraints()).best is cheap
    assert select([cheap, dear], "ModelLatency", Constraints()).best is cheap


def test_no_row_meets_the_sla():
    strict = Constraints(max_model_latency_ms=3, min_invocations_per_minute=30000)
    selection = select(ADVANCED, "CostPerInference", strict)
    assert selection.best is None
    assert selection.reason == "none of the 6 configurations meets latency <= 3 ms and >= 30000 invocations/min"
    assert len(selection.verdicts) == 6
    assert {v.message for v in selection.verdicts} == {"latency 6 ms > 3 ms", "latency 4 ms > 3 ms"}


def test_no_recommendations():
    selection = select([], "CostPerInference", SLA)
    assert (selection.best, selection.reason, selection.verdicts) == (
        None, "the job produced no recommendations", ())


@pytest.mark.parametrize("objective", ["CostPerInference", "CostPerHour", "ModelLatency", "MaxInvocations"])
def test_missing_values_rank_last(objective):
    # No NaN reaches selection (the backend drops it); a metric is either there or absent.
    complete = list(DEFAULT)
    metric = {"CostPerInference": "maxInvocations", "CostPerHour": "costPerHour", "ModelLatency": "modelLatency",
              "MaxInvocations": "maxInvocations"}[objective]
    blank = Recommendation("fraud-default/00000000", "ml.m5.24xlarge", 1, {},
                           {k: v for k, v in BY_TYPE["ml.m5.4xlarge"].metrics.items() if k != metric})
    for order in (complete + [blank], [blank] + complete):
        selection = select(order, objective, Constraints())
        assert selection.verdicts[-1].recommendation is blank
        assert selection.best is not blank
        assert selection.best is not None
        assert "among 5 of 6 configurations" in selection.reason


def test_a_lone_row_without_the_objective_metric_is_not_chosen():
    blank = Recommendation("r", "ml.m5.large", 1, {}, {"costPerHour": 0.115})
    selection = select([blank], "MaxInvocations", Constraints())
    assert selection.best is None
    assert selection.verdicts[0].meets_sla  # it breaks no constraint, but has nothing to rank by
    # Said as it is: not an SLA failure ("none of the 1 configurations meets" was the old, false, claim).
    assert selection.reason == ("1 of 1 configurations meet no constraints, but highest throughput cannot rank "
                                "them: no maxInvocations measured for ml.m5.large x1")


def local_row(rid, omp, metrics):
    return Recommendation(rid, "local-1cpu", 1, {"OMP_NUM_THREADS": omp}, metrics)


def test_no_price_is_not_an_sla_failure():
    unpriced = local_row("a", "1", {"maxInvocations": 9000, "modelLatency": 8})
    selection = select([unpriced], "CostPerInference", Constraints(max_model_latency_ms=100,
                                                                    latency_percentile=Percentile("P95")))
    assert selection.best is None and meets_sla(selection)
    assert selection.reason == (
        "1 of 1 configurations meet P95 latency <= 100 ms, but lowest cost per inference cannot rank them: no "
        "price known for local-1cpu; set spec.local.pricePerHour or choose spec.selection.objective ModelLatency "
        "or MaxInvocations")
    assert "none of" not in selection.reason


def test_priced_rows_win_and_the_unpriced_are_named():
    priced = local_row("a", "1", {"maxInvocations": 9000, "modelLatency": 8, "costPerHour": 0.05})
    unpriced = Recommendation("b", "local-2cpu", 1, {}, {"maxInvocations": 19000, "modelLatency": 5})
    selection = select([unpriced, priced], "CostPerHour", Constraints(max_model_latency_ms=100))
    assert selection.best is priced
    assert selection.reason.endswith("; not ranked, though meeting it: no price known for local-2cpu; set "
                                     "spec.local.pricePerHour or choose spec.selection.objective ModelLatency or "
                                     "MaxInvocations")


def test_an_sla_failure_is_still_one():
    slow = local_row("a", "1", {"maxInvocations": 9000, "modelLatency": 800})
    selection = select([slow], "CostPerInference", Constraints(max_model_latency_ms=100))
    assert selection.best is None and not meets_sla(selection)
    assert selection.reason == "none of the 1 configurations meets latency <= 100 ms"


def test_a_row_order_shuffle_never_changes_the_choice():
    rng = random.Random(20240531)
    rows = DEFAULT + ADVANCED
    reference = {objective: select(rows, objective, SLA) for objective in
                 ("CostPerInference", "CostPerHour", "ModelLatency", "MaxInvocations")}
    for _ in range(50):
        shuffled = rows[:]
        rng.shuffle(shuffled)
        for objective, expected in reference.items():
            got = select(shuffled, objective, SLA)
            assert ids(got.verdicts) == ids(expected.verdicts)
            assert got.reason == expected.reason


# -- constraints from the spec --------------------------------------------------------------------------------------

def advanced_spec(**changes):
    document = next(d for d in yaml.safe_load_all((SAMPLES / "fraud-advanced.yaml").read_text()) if d)
    raw = copy.deepcopy(document["spec"])
    raw.update(changes)
    return spec_module.parse(raw)


def test_constraints_from_selection():
    # The sample's latency threshold is P95: modelLatency is its P95, and so is the constraint.
    assert constraints_for(advanced_spec()) == Constraints(100, 30000, None, P95)
    spec = advanced_spec(selection={"constraints": {"maxModelLatencyMs": 50, "minInvocationsPerMinute": 20000,
                                                    "maxCostPerHour": 1.5}})
    assert constraints_for(spec) == Constraints(50, 20000, 1.5, P95)


def test_constraints_fall_back_to_stopping_conditions_only_where_selection_is_silent():
    assert constraints_for(advanced_spec(selection={"objective": "ModelLatency"})) == \
        Constraints(100, 30000, None, P95)
    assert constraints_for(advanced_spec(selection={"constraints": {"maxModelLatencyMs": 40}})) == \
        Constraints(40, 30000, None, P95)
    assert constraints_for(advanced_spec(selection={"constraints": {"minInvocationsPerMinute": 12000}})) == \
        Constraints(100, 12000, None, P95)
    assert constraints_for(advanced_spec(selection={"constraints": {"maxCostPerHour": 2.0}})) == \
        Constraints(100, 30000, 2.0, P95)


def test_the_latency_constraint_keeps_the_thresholds_percentile_and_says_it():
    p99 = {"maxInvocations": 30000, "modelLatencyThresholds": [{"percentile": "P99", "valueInMilliseconds": 50}]}
    constraints = constraints_for(advanced_spec(selection={}, stoppingConditions=p99))
    assert constraints == Constraints(50, 30000, None, P99)
    assert constraints.describe() == "P99 latency <= 50 ms and >= 30000 invocations/min"
    verdict = select(ADVANCED[:1], "CostPerInference", Constraints(3, None, None, P99)).verdicts[0]
    assert verdict.message == "P99 latency 6 ms > 3 ms"
    # Without a threshold the job does not say which percentile modelLatency is: neither does the constraint.
    assert Constraints(100).describe() == "latency <= 100 ms"


def test_constraints_without_a_latency_threshold_or_stopping_conditions():
    spec = advanced_spec(selection={}, stoppingConditions={"maxInvocations": 25000})
    assert constraints_for(spec) == Constraints(None, 25000, None, None)
    document = next(d for d in yaml.safe_load_all((SAMPLES / "fraud-default.yaml").read_text()) if d)
    raw = {key: value for key, value in document["spec"].items() if key != "selection"}
    assert constraints_for(spec_module.parse(raw)) == Constraints(None, None, None)
    assert Constraints().describe() == "no constraints"


def test_constraints_from_the_spec_select_as_the_seed_says():
    # The Advanced sample's own SLA over the seed's Default results: ml.m5.2xlarge.
    assert select(DEFAULT, "CostPerInference", constraints_for(advanced_spec())).best is BY_TYPE["ml.m5.2xlarge"]
