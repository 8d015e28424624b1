"""A RightsizeJob's trafficPattern as a target number of concurrent users over time, in SageMaker Inference
Recommender's semantics. Pure: no clock and no I/O, so the load generator and its tests share one definition.

PHASES run one after another. A phase starts at `initialNumberOfUsers` and adds `spawnRate` users per *minute*
(SageMaker's unit; Locust's spawn rate is per second), rounded down to whole users.
STAIRS run `numberOfSteps` steps of `durationInSeconds` each (botocore: "how long each traffic step should be"),
so the pattern lasts their product; step k (0-based) holds (k + 1) * `usersPerStep` users.

`time_scale` compresses a pattern for tests and demos: every duration is multiplied by it and every spawn rate
divided by it, so a scaled run passes through the same user counts, only faster. All times this module returns
are scaled seconds since the start of the load test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rightsizer.spec import PHASES, TrafficPattern

# Scaled times are products and quotients of floats: 0.3 s / 0.1 may come out as 2.9999999999999996 user-steps,
# which floor() would turn into one user too few.
_FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class Stage:
    """One phase or one stair step, placed on the load test's (scaled) clock."""

    label: str
    start_s: float
    duration_s: float
    initial_users: int
    users_per_second: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def users_after(self, seconds_into_stage: float) -> int:
        return self.initial_users + math.floor(self.users_per_second * seconds_into_stage + _FLOAT_SLACK)


class LoadShape:
    """Target users over time for one spec.TrafficPattern (valid by construction).

    `job_duration_s` (the spec's jobDurationInSeconds, unscaled like the pattern) cuts the pattern short.
    """

    def __init__(self, pattern: TrafficPattern, *, time_scale: float = 1.0, job_duration_s: float | None = None):
        if not isinstance(pattern, TrafficPattern):
            raise TypeError(f"trafficPattern must be a spec.TrafficPattern, got {type(pattern).__name__}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if job_duration_s is not None and not job_duration_s > 0:
            raise ValueError(f"job duration must be > 0 s, got {job_duration_s!r}")
        self.traffic_type = pattern.traffic_type
        self.time_scale = float(time_scale)
        stages = _phases(pattern, self.time_scale) if self.traffic_type == PHASES else _stairs(pattern, self.time_scale)
        self.capped_by_job_duration = False
        if job_duration_s is not None:
            cap = job_duration_s * self.time_scale
            if cap < stages[-1].end_s:
                self.capped_by_job_duration = True
                stages = [
                    Stage(s.label, s.start_s, min(s.duration_s, cap - s.start_s), s.initial_users, s.users_per_second)
                    for s in stages
                    if s.start_s < cap
                ]
        self.stages: tuple[Stage, ...] = tuple(stages)

    def total_duration(self) -> float:
        return self.stages[-1].end_s

    def stage_at(self, t: float) -> Stage | None:
        """The stage running at `t`, or None before the start or once the pattern is over."""
        for stage in self.stages:
            if stage.start_s <= t < stage.end_s:
                return stage
        return None

    def users_at(self, t: float) -> int:
        """Target concurrent users at `t`; 0 outside the pattern."""
        stage = self.stage_at(t)
        return 0 if stage is None else stage.users_after(t - stage.start_s)

    def stage_label(self, t: float) -> str:
        """The running stage's label ("phase 2/3", "step 4/5"), or "done" once the pattern is over."""
        stage = self.stage_at(t)
        if stage is not None:
            return stage.label
        return "not started" if t < 0 else "done"


def _phases(pattern: TrafficPattern, time_scale: float) -> list[Stage]:
    stages: list[Stage] = []
    start = 0.0
    count = len(pattern.phases)
    for index, phase in enumerate(pattern.phases):
        duration = phase.duration_seconds * time_scale
        stages.append(Stage(f"phase {index + 1}/{count}", start, duration, phase.initial_users,
                            phase.spawn_rate_per_minute / 60.0 / time_scale))
        start += duration
    return stages


def _stairs(pattern: TrafficPattern, time_scale: float) -> list[Stage]:
    stairs = pattern.stairs
    step_duration = stairs.duration_seconds * time_scale
    return [Stage(f"step {k + 1}/{stairs.steps}", k * step_duration, step_duration, (k + 1) * stairs.users_per_step,
                  0.0)
            for k in range(stairs.steps)]
