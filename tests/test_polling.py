"""The operator-wide poll scheduler: which objects it visits, when, and what it holds back (rightsizer.polling)."""

from __future__ import annotations

import asyncio
import datetime

from rightsizer import polling

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def due(uid: str, seconds: float) -> polling.Due:
    return polling.Due("ns", f"job-{uid}", uid, T0 + datetime.timedelta(seconds=seconds))


def waiting(*dues: polling.Due, grace: float = 5.0) -> polling.Schedule:
    schedule = polling.Schedule(served_grace=grace)
    for item in dues:
        schedule.note(item.uid, item)
    return schedule


def test_only_what_is_due_and_not_being_visited_is_picked_the_longest_overdue_first():
    schedule = waiting(due("a", -1), due("b", -30), due("c", +5), due("d", 0))
    assert [d.uid for d in schedule.pick(T0, clock=100.0)] == ["b", "a", "d"]
    schedule.started(due("b", -30))
    assert [d.uid for d in schedule.pick(T0, clock=100.0)] == ["a", "d"]  # b is being visited


def test_a_visited_object_waits_for_its_new_time_and_not_longer_than_the_grace():
    first = due("a", 0)
    schedule = waiting(first, grace=5.0)
    schedule.started(first)
    schedule.finished(first, None, clock=100.0)
    # The visit left the time as it was (it changed nothing): not looked at again at the next tick.
    assert schedule.pick(T0, clock=101.0) == []
    # A new time the visit noted (still due, say a retry at once) is looked at straight away.
    moved = due("a", -0.5)
    schedule.note("a", moved)
    assert schedule.pick(T0, clock=101.0) == [moved]
    # A visit that changed nothing is not repeated at every tick, but is after the grace.
    schedule.started(moved)
    schedule.finished(moved, None, clock=102.0)
    assert schedule.pick(T0, clock=106.9) == []
    assert schedule.pick(T0, clock=107.1) == [moved]


def test_a_failed_visit_holds_the_object_for_the_delay_it_asked_whatever_its_status_says():
    first = due("a", 0)
    schedule = waiting(first)
    schedule.started(first)
    schedule.finished(first, 15.0, clock=100.0)
    assert schedule.pick(T0, clock=114.0) == []
    schedule.note("a", due("a", -1))
    assert schedule.pick(T0, clock=114.0) == []  # a new time does not cut a failure's delay short
    schedule.note("a", first)
    assert schedule.pick(T0, clock=115.5) == [first]


def test_visits_note_when_an_object_asks_for_a_look_and_when_it_asks_for_none():
    schedule = polling.Schedule()
    schedule.note("a", due("a", 30))
    schedule.note("b", due("b", 60))
    schedule.note("a", due("a", 90))  # a visit wrote a later time
    schedule.note("b", None)  # finished, or gone
    schedule.note("c", None)  # never waited: nothing to forget
    assert list(schedule.waiting.values()) == [due("a", 90)]


def test_what_it_holds_of_an_object_no_longer_waiting_is_forgotten():
    schedule = waiting(due("a", 0), due("b", 0))
    for uid, retry in (("a", 15.0), ("b", None)):
        schedule.started(due(uid, 0))
        schedule.finished(due(uid, 0), retry, clock=100.0)
    assert set(schedule.held_until) == {"a"} and set(schedule.served) == {"b"}
    schedule.note("a", None)  # both done: deleted, or nothing left to poll
    schedule.note("b", None)
    schedule.pick(T0, clock=100.5)
    assert schedule.held_until == {} and schedule.served == {}


def test_the_loop_visits_each_due_object_once_at_a_time_and_holds_a_failed_one():
    now = datetime.datetime.now(datetime.timezone.utc)  # the loop reads the clock
    waiting = [polling.Due("ns", "job-a", "a", now - datetime.timedelta(seconds=1)),
               polling.Due("ns", "job-b", "b", now - datetime.timedelta(seconds=2)),
               polling.Due("ns", "job-later", "later", now + datetime.timedelta(hours=1))]
    visits: list[str] = []
    release = asyncio.Event()

    async def visit(item: polling.Due) -> float | None:
        visits.append(item.uid)
        if item.uid == "a":
            await release.wait()  # a slow visit: ticks go by while it runs
            return None
        return 3600.0  # b failed: held for an hour

    async def scenario() -> polling.Schedule:
        schedule = polling.Schedule(served_grace=3600.0)
        for item in waiting:
            schedule.note(item.uid, item)
        loop = asyncio.create_task(polling.run(schedule, visit, tick=0.01))
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.sleep(0.2)
        loop.cancel()
        try:
            await loop
        except asyncio.CancelledError:
            pass
        return schedule

    schedule = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sorted(visits) == ["a", "b"]  # each once: a while it ran, b while it was held, neither again after
    assert set(schedule.held_until) == {"b"} and set(schedule.served) == {"a"} and not schedule.running


def test_cancelling_the_loop_cancels_the_visits_under_way():
    cancelled = asyncio.Event()

    async def visit(item: polling.Due) -> float | None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    async def scenario() -> bool:
        schedule = polling.Schedule()
        schedule.note("a", due("a", 0))
        loop = asyncio.create_task(polling.run(schedule, visit, tick=0.01))
        await asyncio.sleep(0.1)
        loop.cancel()
        await asyncio.wait_for(cancelled.wait(), 10)
        return cancelled.is_set()

    assert asyncio.run(asyncio.wait_for(scenario(), 30))
