"""Which load test a backend that runs the load itself (local, kubernetes) starts next: spec.search, pure.

Grid measures every runnable configuration, its repetitions interleaved (all once, then all again), as Inference
Recommender measures an Advanced job's grid.

Adaptive is successive halving (Jamieson & Talwalkar 2016; Katib and Ray Tune ship it as Hyperband/ASHA) over
what the problem gives:
0. Dominance: a configuration with the same environment as a probed one, no more CPUs, no more memory (or more
   memory than the probed one left unused: its probe stayed under DOMINANCE_MEMORY_PERCENT of its own) and no
   lower price cannot serve more per dollar or faster: it is not run.
1. A probe of every other configuration: the job's traffic pattern compressed to 1/reductionFactor of its length (never
   under MIN_PROBE_S), with the job's stopping conditions. A server saturates at the same load whatever the ramp's
   speed, so a short ramp ranks configurations well enough to drop the clear losers.
2. The probes are judged by the job's own selection (objective, SLA constraints, ties within noise): the first
   ceil(n / reductionFactor) in the order it would pick them go on, the others end, with the reason. Probes closer
   than their noise (at least PROBE_NOISE_FLOOR_PERCENT each) tie, and the tie rule orders them (the cheaper, then
   the simpler), as it would order the same configurations measured in full.
3. The survivors are measured in full, repetitions interleaved. Before each further repetition, a survivor that
   can no longer win ends with the runs it has: every one but the current winner and those ahead of it within
   noise by more than one standard deviation of the difference (the tie rule put them behind it; another run may
   carry them past the tie). The winner alone needs no more runs.
spec.baseline's configuration is never cut: every other one is compared with it.

Everything is decided from what status holds (outcomes, finished runs and probes), so a restarted operator makes
the same decisions and runs nothing twice. The number kept after the probes is counted over every runnable
configuration, so applying the rule again to the survivors keeps them all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Collection, Mapping, Sequence

from rightsizer import selection
from rightsizer.backends.local.plan import ConfigurationOutcome, PlannedConfiguration
from rightsizer.model import Recommendation, Uncertainty
from rightsizer.spec import RightsizeJobSpec, Search, SearchStrategy

# A probe shorter than this holds too few of the load generator's 5 s windows to find a plateau.
MIN_PROBE_S = 12.0
# A probe ranks configurations, it does not report them: it stops after this many flat user levels, not 4.
PROBE_FLAT_LEVELS = 3
# A probe is one short run: its own spread (a standard error over its few windows at saturation) misses how far a
# run moves from one start to the next, 2-16 % between two full runs on a shared host (benchmarks/README.md). A
# probe's figures count as at least this noisy, so that probes closer than that tie and the tie rule orders them.
PROBE_NOISE_FLOOR_PERCENT = 5.0
# A challenger ahead of the winner by less than this many standard deviations of the difference stays in the tie
# after another run (which moves each median by about half a deviation): not worth running again.
CHALLENGER_DEVIATIONS = 1.0
# Below this share of its memory, a probed configuration was not limited by memory: more of it buys nothing.
DOMINANCE_MEMORY_PERCENT = 50.0
PROBE = 0  # a Trial's run number for the probe; full runs count from 1


@dataclasses.dataclass(frozen=True)
class Trial:
    planned: PlannedConfiguration
    run_number: int  # PROBE, or 1..repetitions

    @property
    def probe(self) -> bool:
        return self.run_number == PROBE


@dataclasses.dataclass(frozen=True)
class Step:
    """What to do now: end the configurations in `cut` (not measured in full) and `finish` (recommendation id ->
    reason: measured with the runs they have), then start `trial`; no trial: wait for those in flight, or done."""

    trial: Trial | None = None
    cut: tuple[ConfigurationOutcome, ...] = ()
    finish: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What a configuration gets and costs, for dominance: its CPUs, its memory and its price per hour."""

    cpus: float
    memory_bytes: float
    price_per_hour: float | None


@dataclasses.dataclass(frozen=True)
class State:
    """What is known of the job's configurations, by recommendation id."""

    decided: Collection[str]  # have an outcome (measured, failed, skipped or cut)
    # Every finished probe, decided configurations' too: the cut after the probes is made again from the same
    # probes after a restart, so it keeps the same configurations.
    probes: Mapping[str, Recommendation]
    runs: Mapping[str, int]  # finished full runs of undecided configurations
    # Each undecided configuration's full runs so far as one (their median), for the cut between repetitions.
    measured: Mapping[str, Recommendation]
    in_flight: Collection[str] = ()
    # By recommendation id, where the backend knows them before measuring (the local backend's placements).
    resources: Mapping[str, Resources] = dataclasses.field(default_factory=dict)


def probe_time_scale(search: Search, pattern_seconds: float) -> float:
    """How much a probe compresses the traffic pattern: 1/reductionFactor, but never below MIN_PROBE_S."""
    if pattern_seconds <= 0:
        return 1.0
    return min(1.0, max(1.0 / search.reduction_factor, MIN_PROBE_S / pattern_seconds))


def next_step(plan: Sequence[PlannedConfiguration], spec: RightsizeJobSpec, state: State,
              repetitions: int = 1) -> Step:
    runnable = [p for p in plan if not p.skipped]
    if spec.search.strategy is SearchStrategy.GRID:
        return _full_runs(runnable, state, repetitions)
    return _adaptive(runnable, spec, state, repetitions)


def _full_runs(configurations: Sequence[PlannedConfiguration], state: State, repetitions: int) -> Step:
    """The next full run, repetitions interleaved; Step() when every configuration is done or in flight."""
    for run_number in range(1, repetitions + 1):
        for planned in configurations:
            rid = planned.recommendation_id
            if rid not in state.decided and rid not in state.in_flight and state.runs.get(rid, 0) < run_number:
                return Step(Trial(planned, run_number))
    return Step()


def _adaptive(runnable: Sequence[PlannedConfiguration], spec: RightsizeJobSpec, state: State,
              repetitions: int) -> Step:
    candidates = [p for p in runnable if not p.baseline]
    baseline = [p for p in runnable if p.baseline]
    undecided = [p for p in candidates if p.recommendation_id not in state.decided]
    unprobed = [p for p in undecided if p.recommendation_id not in state.probes
                and state.runs.get(p.recommendation_id, 0) == 0]
    dominated = _dominated(candidates, state)
    cut = tuple(_not_run(p, reason) for p in unprobed if (reason := dominated.get(p.recommendation_id)))
    if cut:
        return Step(cut=cut)
    if unprobed:
        # The baseline's full runs go first (a job cut short still has it), then every probe.
        first = _full_runs(baseline, state, repetitions)
        if first.trial is not None:
            return first
        ready = [p for p in unprobed if p.recommendation_id not in state.in_flight]
        return Step(Trial(ready[0], PROBE)) if ready else Step()
    cut = _probe_cut([p for p in candidates if p.recommendation_id not in dominated], undecided, spec, state)
    if cut:
        return Step(cut=cut)
    survivors = [*baseline, *undecided]
    # Judged only once every survivor has finished the same round: before, one measured alone would look unbeatable.
    done = min((state.runs.get(p.recommendation_id, 0) for p in survivors
                if p.recommendation_id not in state.decided), default=0)
    if 1 <= done < repetitions:
        finish = _repetition_cut(survivors, spec, state, done, repetitions)
        if finish:
            return Step(finish=finish)
    return _full_runs(survivors, state, repetitions)


def _probe_cut(candidates: Sequence[PlannedConfiguration], undecided: Sequence[PlannedConfiguration],
               spec: RightsizeJobSpec, state: State) -> tuple[ConfigurationOutcome, ...]:
    """Outcomes for the undecided configurations whose probe does not go on (none once the cut was made)."""
    keep_count = math.ceil(len(candidates) / spec.search.reduction_factor)
    probes = [_at_least_noisy(state.probes[p.recommendation_id]) for p in candidates
              if p.recommendation_id in state.probes]
    if len(probes) <= keep_count:
        return ()
    objective, constraints = spec.selection.objective, selection.constraints_for(spec)
    order = selection.preference_order(probes, objective, constraints)
    keep = {verdict.recommendation.recommendation_id for verdict in order[:keep_count]}
    best = order[0].recommendation
    metric = selection.OBJECTIVES[objective][0]
    verdicts = {v.recommendation.recommendation_id: v for v in order}
    cut = []
    for planned in undecided:
        rid = planned.recommendation_id
        if rid in keep or rid not in verdicts:
            continue
        verdict = verdicts[rid]
        figure = selection.objective_figure(verdict.recommendation, metric)
        apart = selection.separation(verdict.recommendation, best, metric)
        if not verdict.meets_sla:
            why = f"its probe did not meet the SLA ({verdict.message})"
        elif apart is not None and apart <= selection.TIE_DEVIATIONS:
            why = (f"its probe's {metric} {figure} is within noise of the best probe's, "
                   f"{selection.describe_configuration(best)} ({selection.objective_figure(best, metric)}), and the "
                   f"tie rule (the cheaper, then the simpler) puts {keep_count} before it")
        else:
            why = (f"its probe's {metric} {figure} is beyond noise of the best probe's, "
                   f"{selection.describe_configuration(best)} ({selection.objective_figure(best, metric)})")
        cut.append(_not_run(planned, f"not measured in full: spec.search Adaptive measures the best {keep_count} "
                                     f"of {len(candidates)} probes in full; {why}"))
    return tuple(cut)


def _at_least_noisy(probe: Recommendation) -> Recommendation:
    noise = probe.uncertainty or Uncertainty()
    floor = PROBE_NOISE_FLOOR_PERCENT
    return dataclasses.replace(probe, uncertainty=dataclasses.replace(
        noise, max_invocations_percent=max(noise.max_invocations_percent or 0.0, floor),
        model_latency_percent=max(noise.model_latency_percent or 0.0, floor)))


def _not_run(planned: PlannedConfiguration, reason: str) -> ConfigurationOutcome:
    """A configuration the search ends without a full measurement: a failed step marked skipped, with the reason."""
    return ConfigurationOutcome(dataclasses.replace(planned, skipped_reason=reason), None, reason, None)


def _dominated(candidates: Sequence[PlannedConfiguration], state: State) -> dict[str, str]:
    """Recommendation id -> why, for every candidate a probed one with the same environment dominates (step 0)."""
    dominated = {}
    for planned in candidates:
        mine = state.resources.get(planned.recommendation_id)
        if mine is None or mine.price_per_hour is None or planned.recommendation_id in state.probes:
            continue
        for other in candidates:
            theirs = state.resources.get(other.recommendation_id)
            probe = state.probes.get(other.recommendation_id)
            if (other is planned or probe is None or theirs is None or theirs.price_per_hour is None
                    or dict(other.environment) != dict(planned.environment)):
                continue
            used = probe.metrics.get("memoryUtilization")
            memory_idle = used is not None and used < DOMINANCE_MEMORY_PERCENT
            if (mine.cpus <= theirs.cpus and (mine.memory_bytes <= theirs.memory_bytes or memory_idle)
                    and mine.price_per_hour >= theirs.price_per_hour
                    and (mine.cpus, mine.memory_bytes, mine.price_per_hour)
                    != (theirs.cpus, theirs.memory_bytes, theirs.price_per_hour)):
                memory = (f"memory its probe did not need ({used:.3g} % used)" if mine.memory_bytes >
                          theirs.memory_bytes else "no more memory")
                dominated[planned.recommendation_id] = (
                    f"not run: spec.search Adaptive found it dominated by {other.instance_type} with the same "
                    f"environment: no more CPUs ({mine.cpus:g} against {theirs.cpus:g}), {memory}, and a price of "
                    f"{mine.price_per_hour:g} USD/h against {theirs.price_per_hour:g}")
                break
    return dominated


def _repetition_cut(survivors: Sequence[PlannedConfiguration], spec: RightsizeJobSpec, state: State,
                    done: int, repetitions: int) -> dict[str, str]:
    """Survivors that can no longer win, ended with their `done` full runs. The current winner (after the tie rule)
    keeps its place unless something overtakes it beyond noise: a configuration behind it would need its figures
    to move by more than their noise, so only the ones ahead of it within noise (which the tie rule put behind
    it) are worth another run, and the winner with them. With none left, the winner is ended too: more runs of it
    alone change no answer."""
    measured = [state.measured[p.recommendation_id] for p in survivors
                if p.recommendation_id not in state.decided and p.recommendation_id in state.measured]
    if not measured:
        return {}
    objective = spec.selection.objective
    incumbent = next((p.recommendation_id for p in survivors if p.baseline), None)
    judged = selection.select(measured, objective, selection.constraints_for(spec), incumbent)
    if judged.best is None:
        return {}
    metric, smaller_is_better, _ = selection.OBJECTIVES[objective]
    winner = judged.best

    def ahead(recommendation: Recommendation) -> bool:
        mine, theirs = selection.objective_value(recommendation, metric), selection.objective_value(winner, metric)
        return mine is not None and theirs is not None and (mine < theirs if smaller_is_better else mine > theirs)

    challengers = {r.recommendation_id for r in judged.tied_with
                   if ahead(r) and (selection.separation(r, winner, metric) or 0.0) > CHALLENGER_DEVIATIONS}
    finish = {}
    for planned in survivors:
        rid = planned.recommendation_id
        if planned.baseline or rid in challengers or rid not in state.measured or rid in state.decided:
            continue
        if rid == winner.recommendation_id:
            if not challengers:
                finish[rid] = (f"spec.search Adaptive measured it in {done} of {repetitions} runs: no other "
                               f"configuration can still beat it")
            continue
        finish[rid] = (f"spec.search Adaptive ended it after {done} of {repetitions} runs: its {metric} "
                       f"{selection.objective_figure(state.measured[rid], metric)} cannot beat "
                       f"{selection.describe_configuration(winner)} ({selection.objective_figure(winner, metric)}) "
                       f"beyond noise")
    return finish


__all__ = ["CHALLENGER_DEVIATIONS", "MIN_PROBE_S", "PROBE", "PROBE_FLAT_LEVELS", "PROBE_NOISE_FLOOR_PERCENT", "Resources",
           "State", "Step", "Trial", "next_step", "probe_time_scale"]
