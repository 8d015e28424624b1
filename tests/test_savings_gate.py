"""spec.promotion.minSavingsPercent in the promotion flow, as pure functions: a winner that saves too little against
status.baseline is not promoted (InsufficientSavings), one whose saving is unknown is not either (SavingsUnknown),
and everything else goes on as without the gate."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from rightsizer import selection
from rightsizer import status as st
from rightsizer.model import CurrentConfiguration, Recommendation, Savings
from rightsizer.promotion import flow
from rightsizer.promotion.memory import PromotionMemory, RecordedConfiguration, State
from rightsizer.promotion.objects import ReadWorld
from rightsizer.spec import TargetRef
from rightsizer.state import BaselineState, RecommendationRow
from test_promotion import ACK, BEST, context

CURRENT = CurrentConfiguration("ml.m5.4xlarge", 2, {"OMP_NUM_THREADS": "3"}, endpoint_name="fraud-endpoint")
BASELINE_ROW = Recommendation("job/baseline", "ml.m5.4xlarge", 2, {"OMP_NUM_THREADS": "3"},
                              {"costPerHour": 1.844, "maxInvocations": 40000, "modelLatency": 5})
WINNER = Recommendation(BEST["recommendationId"], "ml.m5.2xlarge", 2, {"OMP_NUM_THREADS": "4"},
                        {"costPerHour": 0.922, "maxInvocations": 42604, "modelLatency": 6})
SAVINGS = selection.savings(WINNER, BASELINE_ROW)  # 53.1 % per inference, 50 % per hour, +1 ms
NOW = datetime.datetime(2026, 11, 29, 9, 0, tzinfo=datetime.timezone.utc)
SERVES_NOW = "what Endpoint/fraud-endpoint serves now (ml.m5.4xlarge x2 (OMP_NUM_THREADS=3))"


def measured(meets_sla: bool = True) -> BaselineState:
    return BaselineState(TargetRef(ACK, "Endpoint", "fraud-endpoint"), NOW, CURRENT,
                         RecommendationRow(BASELINE_ROW, meets_sla, "meets the SLA" if meets_sla else "too slow"))


def gated(minimum: int | None, *, baseline: BaselineState | None = None, savings: Savings | None = SAVINGS,
          objective: str = "CostPerInference", memory=None, **options) -> flow.Step:
    best = {**BEST, **({"savings": savings.for_storage()} if savings is not None else {})}
    promotion = {"minSavingsPercent": minimum} if minimum is not None else {}
    ctx = context(memory, best=best, **promotion, **options)
    return flow.advance(dataclasses.replace(ctx, baseline=baseline if baseline is not None else measured(),
                                            objective=objective))


def test_the_savings_are_the_baselines_figures_minus_the_winners():
    assert SAVINGS.cost_per_hour == pytest.approx(0.922) and SAVINGS.cost_per_hour_percent == 50.0
    assert SAVINGS.cost_per_inference_percent == pytest.approx(53.06, abs=0.01)
    assert (SAVINGS.model_latency_change, SAVINGS.model_latency_change_percent) == (1, 20.0)
    assert SAVINGS.describe(per_hour=False) == "saves 53.1 % per inference (4.08e-07 USD); latency +1 ms (+20 %)"
    dearer = selection.savings(BASELINE_ROW, WINNER)
    assert dearer.describe(per_hour=True, latency_name="P95 latency") == \
        "costs 100 % more per hour (0.922 USD/h); P95 latency -1 ms (-16.7 %)"
    no_cost = selection.savings(dataclasses.replace(WINNER, metrics={"modelLatency": 6}), BASELINE_ROW)
    assert no_cost == Savings(model_latency_change=1, model_latency_change_percent=20.0)
    assert no_cost.describe(per_hour=False) == "its saving per inference is unknown; latency +1 ms (+20 %)"


def test_a_saving_below_the_bar_is_not_promoted_and_says_why_with_the_figures():
    step = gated(60)
    message = (f"nothing is promoted to Endpoint/fraud-endpoint: ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) saves 53.1 % "
               f"per inference (4.08e-07 USD); latency +1 ms (+20 %) against {SERVES_NOW}, below "
               f"spec.promotion.minSavingsPercent 60")
    assert step.promoted == (st.FALSE, "InsufficientSavings", message)
    assert step.ready == (st.TRUE, "InsufficientSavings", message)  # the job did its work: not a fault
    assert step.awaiting == (st.FALSE, "InsufficientSavings", message)
    assert step.effect is None and step.memory.pending is None


@pytest.mark.parametrize("minimum", [0, 50, 53])
def test_a_saving_at_or_above_the_bar_is_promoted(minimum):
    step = gated(minimum)
    assert isinstance(step.effect, ReadWorld) and step.promoted is None
    assert step.awaiting == (st.FALSE, "NotRequired", "spec.promotion.mode is Automatic")


def test_without_a_bar_the_baseline_only_informs():
    assert isinstance(gated(None, savings=None, baseline=measured(meets_sla=True)).effect, ReadWorld)


def test_cost_per_hour_is_the_measure_of_a_cost_per_hour_objective():
    assert isinstance(gated(50, objective="CostPerHour").effect, ReadWorld)  # 50 % per hour
    step = gated(51, objective="CostPerHour")
    assert "saves 50 % per hour (0.922 USD/h)" in step.promoted[2] and step.promoted[1] == "InsufficientSavings"


def test_a_winner_dearer_than_what_is_served_is_held_back_even_by_a_zero_bar():
    dearer = selection.savings(BASELINE_ROW, WINNER)
    step = gated(0, savings=dearer)
    assert step.promoted[1] == "InsufficientSavings" and "costs 113 % more per inference" in step.promoted[2]


def test_a_baseline_that_breaks_the_sla_does_not_hold_a_fix_back():
    step = gated(90, baseline=measured(meets_sla=False))
    assert isinstance(step.effect, ReadWorld) and step.promoted is None


@pytest.mark.parametrize("baseline,why", [
    (dataclasses.replace(measured(), measured=None, failure_reason="job j ended (COMPLETED) without measuring it"),
     "the job did not measure it: job j ended (COMPLETED) without measuring it"),
    (dataclasses.replace(measured(), measured=None), "it was not measured"),
])
def test_a_baseline_that_was_not_measured_holds_the_promotion_back(baseline, why):
    step = gated(10, baseline=baseline, savings=None)
    message = (f"nothing is promoted to Endpoint/fraud-endpoint: spec.promotion.minSavingsPercent 10 cannot be "
               f"judged, since the saving of ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) against {SERVES_NOW} is unknown: "
               f"{why}")
    assert step.promoted == step.ready == (st.FALSE, "SavingsUnknown", message)
    assert step.effect is None


def test_a_saving_with_no_cost_on_either_side_holds_the_promotion_back():
    step = gated(10, savings=Savings(model_latency_change=1))
    assert step.promoted[:2] == (st.FALSE, "SavingsUnknown")
    assert step.promoted[2].endswith("no cost per inference is known for both (a price is missing)")


def test_a_dry_run_reports_the_held_back_promotion():
    step = gated(60, mode="DryRun")
    assert step.promoted[1] == "InsufficientSavings"
    assert step.promoted[2].startswith("dry run: nothing is promoted to Endpoint/fraud-endpoint: ml.m5.2xlarge x2")
    assert step.memory.planned_objects is None and step.effect is None
    assert gated(50, mode="DryRun").effect is not None  # above the bar a dry run reads the target to plan


def test_manual_mode_asks_for_no_approval_below_the_bar():
    step = gated(60, mode="Manual")
    assert step.awaiting[:2] == (st.FALSE, "InsufficientSavings") and step.effect is None
    asking = gated(50, mode="Manual")
    assert asking.awaiting[:2] == (st.TRUE, "ApprovalRequired")


def test_what_is_promoted_already_is_not_judged_again():
    # Promoted under a lower bar; raising it does not turn the promotion into a failure.
    promoted = PromotionMemory(state=State.SUCCEEDED, current=RecordedConfiguration(
        recommendation_id=BEST["recommendationId"], instance_type="ml.m5.2xlarge", instance_count=2,
        environment={"OMP_NUM_THREADS": "4"}, endpoint_config_name="fraud-endpoint-rs1-1"))
    step = gated(90, memory=promoted)
    assert step.promoted[:2] == (st.TRUE, "Promoted")
