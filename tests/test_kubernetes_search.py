"""spec.search Adaptive in the kubernetes backend's run loop: probes in parallel up to maxParallelOfTests, the cut,
full runs of the survivors, probes kept across a restart. Measurements are recorded (no Pods); the cleanup calls
of the run go to the real API server."""

from __future__ import annotations

import threading

from rightsizer.backends.kubernetes.experiment import KubernetesExperiment
from rightsizer.backends.local.plan import ConfigurationOutcome
from rightsizer.model import JobStatus, Owner, Recommendation, StepFailure, Uncertainty
from rightsizer.spec import parse

# What a probe and a full run measured per candidate and OMP_NUM_THREADS (invocations/min), at 0.0288 USD/h each.
FIGURES = {("half-cpu", "1"): (48_000, 50_000), ("half-cpu", "2"): (46_500, 49_000),
           ("half-cpu", "3"): (30_000, 31_000), ("one-cpu", "1"): (70_000, 72_000),
           ("one-cpu", "2"): (68_000, 69_000), ("one-cpu", "3"): (50_000, 52_000)}


def adaptive_spec(parallel):
    return parse({
        "backend": "kubernetes",
        "model": {"kubernetes": {"framework": "xgboost", "modelUri": "file:///opt/rightsizer/models/fraud/model.ubj",
                                 "payload": {"path": "/opt/rightsizer/models/fraud/payload.csv"}}},
        "kubernetes": {"image": "rightsizer:dev", "pricePerHour": {"m5.large": 0.115}, "candidates": [
            {"name": "half-cpu", "instanceType": "m5.large", "resources": {"requests": {"cpu": "500m"}}},
            {"name": "one-cpu", "instanceType": "m5.large", "resources": {"requests": {"cpu": "1"}}}]},
        "environmentParameterRanges": {"OMP_NUM_THREADS": ["1", "2", "3"]},
        "stoppingConditions": {"modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]},
        "resourceLimit": {"maxParallelOfTests": parallel},
        "selection": {"objective": "CostPerInference"},
        "search": {"strategy": "Adaptive", "reductionFactor": 3}})


class Recorded(KubernetesExperiment):
    """Answers each trial from FIGURES; notes (configuration, probe) and the most trials in flight at once."""

    def _run_configuration(self, planned, deadline, probe=False):
        with self.guard:
            self.asked.append((planned.recommendation_id, probe))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if probe:  # a recorded answer is instant: meet the other probe in flight, as real ones overlap
                try:
                    self.pair.wait()
                except threading.BrokenBarrierError:
                    self.pair.reset()
            price = 0.115 * (0.25 if planned.instance_type == "half-cpu" else 0.5)
            per_minute = FIGURES[(planned.instance_type, planned.environment["OMP_NUM_THREADS"])][0 if probe else 1]
            metrics = {"maxInvocations": per_minute, "maxInvocationsPerInstance": per_minute, "modelLatency": 20,
                       "costPerHour": price, "costPerInference": price / per_minute / 60}
            return ConfigurationOutcome(planned, Recommendation(
                planned.recommendation_id, planned.instance_type, 1, dict(planned.environment), metrics,
                uncertainty=Uncertainty(1.0, 1.0, 1, 3)), None, None)
        finally:
            with self.guard:
                self.in_flight -= 1


def recorded(api, namespace, parallel=2, **resume):
    experiment = Recorded(adaptive_spec(parallel), "fraud-k8s-g1", Owner(namespace, "fraud", "0000"), api,
                          image="rightsizer:dev",
                          completed={}, **resume)
    experiment.asked, experiment.guard, experiment.in_flight, experiment.most_in_flight = [], threading.Lock(), 0, 0
    experiment.pair = threading.Barrier(parallel, timeout=5)
    return experiment


def test_probes_run_side_by_side_then_only_the_survivors_in_full(api, namespace):
    runs = []
    experiment = recorded(api, namespace, on_run=runs.append)

    outcomes = experiment.run()

    probes = [rid for rid, probe in experiment.asked if probe]
    assert sorted(probes) == [f"fraud-k8s-g1/{n:08d}" for n in range(6)] and experiment.most_in_flight == 2
    # Per inference, half a CPU at 48,000/min beats one CPU at 70,000: ceil(6/3) = 2 go on (half-cpu OMP 1 and 2).
    assert [rid for rid, probe in experiment.asked if not probe] == ["fraud-k8s-g1/00000000",
                                                                      "fraud-k8s-g1/00000001"]
    assert [o.status for o in outcomes] == [JobStatus.COMPLETED] * 2 + [JobStatus.FAILED] * 4
    assert all(o.planned.skipped and "spec.search Adaptive" in o.failure_reason for o in outcomes[2:])
    assert len(runs) == 6 and all(r.recommendation.probe for r in runs)  # each probe went to status


def test_a_restart_after_the_probes_runs_none_of_them_again(api, namespace):
    first_runs, first_outcomes = [], []
    recorded(api, namespace, on_run=first_runs.append, on_outcome=first_outcomes.append).run()
    cut = [o for o in first_outcomes if o.planned.skipped]
    failures = [StepFailure(o.planned.instance_type, dict(o.planned.environment), o.failure_reason, skipped=True)
                for o in cut]

    resumed = recorded(api, namespace, runs=[r.recommendation for r in first_runs], failed=failures)
    outcomes = resumed.run()

    assert [probe for _, probe in resumed.asked] == [False, False]
    assert [o.status for o in outcomes] == [JobStatus.COMPLETED] * 2 + [JobStatus.FAILED] * 4
