"""The traffic pattern → target users over time, in SageMaker's units (spawnRate is users per minute)."""

import pytest

from rightsizer.loadtest.load_shape import LoadShape
from rightsizer.spec import Phase, Stairs, TrafficPattern


def phases(*specs):
    """(initial users, spawn rate per minute, duration in seconds) per phase."""
    return TrafficPattern("PHASES", tuple(Phase(u, r, d) for u, r, d in specs))


def stairs(duration, steps, users_per_step):
    return TrafficPattern("STAIRS", stairs=Stairs(duration, steps, users_per_step))


def test_a_phase_adds_spawn_rate_users_per_minute_rounded_down():
    shape = LoadShape(phases((2, 3, 120)))  # one more user every 20 s
    assert [shape.users_at(t) for t in (0, 19.9, 20, 39.9, 40, 60, 119.9)] == [2, 2, 3, 3, 4, 5, 7]
    assert shape.total_duration() == 120


def test_phases_run_one_after_another_each_from_its_own_initial_users():
    shape = LoadShape(phases((1, 60, 3), (3, 0, 2), (1, 120, 2)))
    assert [shape.users_at(t + 0.5) for t in range(7)] == [1, 2, 3, 3, 3, 2, 4]
    assert [shape.stage_label(t + 0.5) for t in (0, 3, 5)] == ["phase 1/3", "phase 2/3", "phase 3/3"]
    assert shape.total_duration() == 7


def test_stairs_hold_k_times_users_per_step_for_duration_seconds_each():
    # botocore's Stairs.DurationInSeconds: "how long each traffic step should be"; 5 steps of 120 s last 600 s.
    shape = LoadShape(stairs(120, 5, 2))
    assert [shape.users_at(t) for t in (0, 119.9, 120, 300, 480, 599.9)] == [2, 2, 4, 6, 10, 10]
    assert [shape.stage_label(t) for t in (0, 130, 599)] == ["step 1/5", "step 2/5", "step 5/5"]
    assert shape.total_duration() == 600
    assert [s.duration_s for s in shape.stages] == [120] * 5


def test_time_scale_shrinks_durations_and_speeds_spawning_through_the_same_user_counts():
    unscaled = LoadShape(phases((1, 3, 120), (2, 1, 120)))
    scaled = LoadShape(phases((1, 3, 120), (2, 1, 120)), time_scale=0.05)
    assert scaled.total_duration() == pytest.approx(12)
    for t in range(0, 240, 5):
        assert scaled.users_at(t * 0.05) == unscaled.users_at(t), t
    # 3 users per minute at 1/20 of the time: one more user every scaled second, with no float near-misses.
    assert [scaled.users_at(t * 0.1) for t in range(0, 60, 10)] == [1, 2, 3, 4, 5, 6]


def test_the_job_duration_cuts_the_pattern_and_says_so():
    shape = LoadShape(stairs(120, 5, 1), job_duration_s=300, time_scale=0.01)
    assert shape.capped_by_job_duration
    assert shape.total_duration() == pytest.approx(3)
    assert [s.label for s in shape.stages] == ["step 1/5", "step 2/5", "step 3/5"]
    assert shape.users_at(2.9) == 3 and shape.users_at(3.0) == 0
    assert not LoadShape(stairs(120, 5, 1), job_duration_s=600).capped_by_job_duration
    assert LoadShape(stairs(120, 5, 1), job_duration_s=599).capped_by_job_duration


def test_outside_the_pattern_there_are_no_users():
    shape = LoadShape(phases((2, 0, 10)))
    assert shape.users_at(-1) == 0 and shape.users_at(10) == 0
    assert shape.stage_label(10) == "done" and shape.stage_label(-1) == "not started"


def test_a_pattern_that_is_not_a_spec_traffic_pattern_is_refused():
    # The checks of the pattern's fields are TrafficPattern's own (tests/test_spec.py).
    with pytest.raises(TypeError, match="spec.TrafficPattern"):
        LoadShape({"trafficType": "PHASES", "phases": [{"initialNumberOfUsers": 1, "spawnRate": 1,
                                                        "durationInSeconds": 10}]})


def test_invalid_scale_and_job_duration_are_refused():
    with pytest.raises(ValueError, match="time_scale"):
        LoadShape(stairs(10, 1, 1), time_scale=0)
    with pytest.raises(ValueError, match="job duration"):
        LoadShape(stairs(10, 1, 1), job_duration_s=0)
