"""Noise in the numbers and selection that knows a tie (#17 items 1-2): pure, over recorded measurements."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from rightsizer.backends.local.plan import across_runs_uncertainty, within_run_uncertainty
from rightsizer.loadtest.load_generator import LoadResult, StopReason, TimelinePoint, throughput_spread
from rightsizer.model import PodPlacement, Recommendation, Uncertainty
from rightsizer.selection import Constraints, select, simplicity
from rightsizer.spec import Percentile

P95 = Percentile("P95")


def point(second, users, rps, p95=10.0):
    return TimelinePoint(float(second), 1.0, users, "phase 1/1", int(rps), 0, float(rps), p95 / 2, p95, p95 * 2)


def ramp_then_plateau(plateau):
    """One user more a second up to 5 users, then the server saturated at the plateau's rates."""
    rising = [point(s + 1, s + 1, 100 * (s + 1)) for s in range(5)]
    return tuple(rising + [point(6 + i, 6, rate) for i, rate in enumerate(plateau)])


# -- within one load test -------------------------------------------------------------------------------------------

def test_the_spread_is_over_consecutive_windows_once_the_server_saturated():
    # 4 windows of 5 s at saturation, at 1000, 1100, 900 and 1000 req/s: the rising part before it does not count.
    plateau = [1000] * 5 + [1100] * 5 + [900] * 5 + [1000] * 5
    spread, windows = throughput_spread(ramp_then_plateau(plateau), 5, users_at_max=6)
    assert windows == 4
    assert spread == pytest.approx(100 * statistics.stdev([1000, 1100, 900, 1000]) / 1000, abs=0.01)


def test_a_run_that_ended_within_one_window_of_saturating_falls_back_to_the_standard_error_of_its_intervals():
    rates = [950, 1050, 1000, 980, 1020]
    spread, windows = throughput_spread(ramp_then_plateau(rates), 5, users_at_max=6)
    assert windows == 1
    assert spread == pytest.approx(100 * statistics.stdev(rates) / 1000 / math.sqrt(5), abs=0.01)


def test_no_spread_without_a_maximum_or_with_one_interval():
    assert throughput_spread(ramp_then_plateau([1000] * 10), 5, users_at_max=None) == (None, 0)
    assert throughput_spread((point(1, 1, 100),), 5, users_at_max=1) == (None, 0)


def result(spread=3.0, windows=4, latencies=(10.0, 11.0, 9.0, 10.0, 10.0)):
    timeline = tuple(point(i + 1, 6, 1000, p95) for i, p95 in enumerate(latencies))
    return LoadResult(StopReason.THROUGHPUT_FLAT, "flat", 60000.0, 5.0, 10.0, 20.0, 6, 5000, 0, 5.0, 10.0, 20.0,
                      10.0, False, float(len(latencies)), timeline, (0.0, float(len(latencies))),
                      throughput_spread_percent=spread, spread_windows=windows)


def test_one_runs_latency_noise_is_the_standard_error_of_its_intervals_in_the_window_of_the_maximum():
    uncertainty = within_run_uncertainty(result(), P95)
    expected = 100 * statistics.stdev([10, 11, 9, 10, 10]) / 10 / math.sqrt(5)
    assert uncertainty == Uncertainty(3.0, pytest.approx(expected, abs=0.01), runs=1, windows=4)


def row(rid, per_minute, latency, *, spread=None, latency_spread=None, windows=4, cost=0.05, instance="local-1cpu",
        environment=None, runs=1):
    metrics = {"maxInvocations": per_minute, "maxInvocationsPerInstance": per_minute, "modelLatency": latency,
               "costPerHour": cost, "costPerInference": cost / (per_minute * 60)}
    uncertainty = None if spread is None else Uncertainty(spread, latency_spread, runs, windows)
    return Recommendation(rid, instance, 1, environment or {}, metrics, uncertainty=uncertainty)


def test_across_repetitions_the_larger_of_their_spread_and_the_noisiest_run_counts():
    runs = [row("a", 100_000, 10, spread=1.0, latency_spread=2.0), row("a", 110_000, 12, spread=1.5,
                                                                         latency_spread=9.0)]
    combined = across_runs_uncertainty(runs)
    throughput_across = 100 * statistics.stdev([100_000, 110_000]) / 105_000
    assert combined.max_invocations_percent == pytest.approx(throughput_across, abs=0.01)  # 6.7 > 1.5
    assert combined.model_latency_percent == pytest.approx(100 * statistics.stdev([10, 12]) / 11, abs=0.01)  # > 9
    assert combined.runs == 2 and combined.windows == 8


def test_status_rows_carry_the_uncertainty_and_read_it_back():
    measured = row("job/00000001", 112_435, 14, spread=4.0, latency_spread=6.5, runs=2, windows=9)
    stored = measured.to_status_row()
    assert stored["uncertainty"] == {"maxInvocations": 4.0, "costPerInference": 4.0, "modelLatency": 6.5,
                                     "runs": 2, "windows": 9}
    assert Recommendation.from_status_row(stored) == measured
    assert measured.uncertainty.describe() == "± 4 % throughput, ± 6.5 % latency over 2 runs (9 windows)"


# -- selection that knows a tie --------------------------------------------------------------------------------------

# The two winners `make demo` named on two runs of a fresh clone (issue #17): the raw best flipped with the noise.
DEMO_FIRST = [row("fraud-local/00000001", 136_240, 31, spread=5.0, latency_spread=8.0,
                  environment={"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}),
              row("fraud-local/00000000", 125_470, 27, spread=6.0, latency_spread=8.0,
                  environment={"OMP_NUM_THREADS": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}),
              row("fraud-local/00000004", 150_000, 20, spread=4.0, latency_spread=5.0, cost=0.10,
                  instance="local-2cpu", environment={"OMP_NUM_THREADS": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"})]
SLA = Constraints(max_model_latency_ms=100, min_invocations_per_minute=30_000, latency_percentile=P95)


def test_configurations_within_noise_are_a_tie_that_goes_to_the_simpler_one_whatever_the_raw_order():
    for permutation in itertools.permutations(DEMO_FIRST):
        selection = select(list(permutation), "CostPerInference", SLA)
        assert selection.best.recommendation_id == "fraud-local/00000000"  # OMP_NUM_THREADS=1, though 8 % dearer
        assert [r.recommendation_id for r in selection.tied_with] == ["fraud-local/00000001"]
    assert selection.reason.startswith(
        "local-1cpu x1 (OMP_NUM_THREADS=1, SAGEMAKER_MODEL_SERVER_WORKERS=1): a tie within noise for lowest cost per "
        "inference (costPerInference 6.64e-09 ± 6 %) with local-1cpu x1 (OMP_NUM_THREADS=2, "
        "SAGEMAKER_MODEL_SERVER_WORKERS=1) (6.12e-09 ± 5 %); the tie goes to the cheaper, then the simpler")
    assert [v.recommendation.recommendation_id for v in selection.verdicts][0] == "fraud-local/00000000"


def test_a_difference_beyond_the_noise_is_no_tie():
    precise = [dataclass_with(r, spread=1.0) for r in DEMO_FIRST]
    selection = select(precise, "CostPerInference", SLA)
    assert selection.best.recommendation_id == "fraud-local/00000001" and selection.tied_with == ()
    assert "tie" not in selection.reason


def test_without_uncertainty_only_equal_figures_tie():
    bare = [Recommendation(r.recommendation_id, r.instance_type, 1, r.environment, r.metrics) for r in DEMO_FIRST]
    assert select(bare, "CostPerInference", SLA).best.recommendation_id == "fraud-local/00000001"


def test_a_tie_goes_to_the_cheaper_configuration_before_the_simpler_one():
    cheap_but_bigger = row("b", 100_000, 20, spread=5.0, cost=0.04, instance="local-2cpu")
    dear_but_small = row("a", 104_000, 20, spread=5.0, cost=0.05, instance="local-1cpu")
    selection = select([dear_but_small, cheap_but_bigger], "MaxInvocations", Constraints())
    assert selection.best.recommendation_id == "b"


def test_the_incumbent_wins_a_tie_at_equal_cost():
    current = row("job/baseline", 100_000, 20, spread=5.0, environment={"OMP_NUM_THREADS": "4"})
    challenger = row("job/00000000", 103_000, 20, spread=5.0, environment={"OMP_NUM_THREADS": "1"})
    assert select([challenger, current], "MaxInvocations", Constraints(),
                  incumbent="job/baseline").best.recommendation_id == "job/baseline"


def test_simpler_means_fewer_cpus_then_fewer_workers_then_fewer_threads():
    pod = Recommendation("k", "m5-large", 1, {"OMP_NUM_THREADS": "4"}, {},
                         placement=PodPlacement({}, {"cpu": "500m"}, {}))
    assert simplicity(pod)[:4] == (0.5, 0.0, 4.0, 0.0)
    assert simplicity(row("l", 1, 1, instance="local-2cpu", environment={"WORKERS": "2", "MODE": "fast",
                                                                         "BATCH": "8"}))[:4] == (2.0, 2.0, 0.0, 8.0)
    one_worker_two_threads = row("a", 1, 1, environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "OMP_NUM_THREADS": "2"})
    two_workers_one_thread = row("b", 1, 1, environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "OMP_NUM_THREADS": "1"})
    assert simplicity(one_worker_two_threads) < simplicity(two_workers_one_thread)
    assert simplicity(row("s", 1, 1, instance="ml.m5.2xlarge"))[0] == 8.0
    assert simplicity(row("u", 1, 1, instance="unknown-type"))[0] == math.inf


def test_a_verdict_near_its_limit_says_it_is_within_noise_both_ways():
    passing = row("p", 60_000, 97, spread=2.0, latency_spread=3.0)
    failing = row("f", 60_000, 103, spread=2.0, latency_spread=3.0)
    clear = row("c", 60_000, 50, spread=2.0, latency_spread=3.0)
    verdicts = {v.recommendation.recommendation_id: v for v in select([passing, failing, clear], "ModelLatency",
                                                                        SLA).verdicts}
    assert verdicts["p"].meets_sla and verdicts["p"].message == (
        "meets the SLA; P95 latency 97 ms against 100 ms (within noise: ± 3 %)")
    assert not verdicts["f"].meets_sla and verdicts["f"].message == (
        "P95 latency 103 ms > 100 ms (within noise: ± 3 %)")
    assert verdicts["c"].message == "meets the SLA"


def dataclass_with(recommendation, *, spread):
    import dataclasses

    return dataclasses.replace(recommendation, uncertainty=Uncertainty(spread, spread, 1, 4))
