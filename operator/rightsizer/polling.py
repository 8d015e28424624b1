"""One operator-wide poll scheduler: each RightsizeJob is visited when its status.nextPollTime falls due.

A kopf timer per object would do the same, but kopf puts its finalizer on every object a timer serves
(https://github.com/nolar/kopf/issues/548) and keeps a task per object; one loop over a table of due times costs
an object neither. The table is fed by the visits themselves (each notes the nextPollTime it read or wrote: the
operator is the only writer of status, and kopf's resume handler visits every object at start), which costs
nothing per watch event, unlike a kopf index. It does not follow kopf's peering pause: the operator runs as one
replica, --standalone (manifests/manager/manager.yaml). `run` is the loop that drives the schedule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
import time
from typing import Awaitable, Callable


@dataclasses.dataclass(frozen=True)
class Due:
    """One object waiting for a look, as its last status said."""

    namespace: str
    name: str
    uid: str
    at: datetime.datetime


@dataclasses.dataclass
class Schedule:
    """Which objects wait for a look and when, which a visit is looking at now, which wait out a delay after a
    failed visit, and which were just visited (a visit that changed nothing is not repeated at every tick)."""

    served_grace: float = 5.0  # seconds a visited object waits for its new time before it is looked at again
    waiting: dict[str, Due] = dataclasses.field(default_factory=dict)  # uid -> when it asks for a look
    running: set[str] = dataclasses.field(default_factory=set)
    held_until: dict[str, float] = dataclasses.field(default_factory=dict)  # uid -> monotonic seconds
    served: dict[str, tuple[datetime.datetime, float]] = dataclasses.field(default_factory=dict)  # uid -> (at, until)

    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def note(self, uid: str, due: Due | None) -> None:
        """What a visit read or wrote: the object asks for a look at `due.at`, or (None) for none. Any thread."""
        with self._lock:
            if due is None:
                self.waiting.pop(uid, None)
            else:
                self.waiting[uid] = due

    def pick(self, now: datetime.datetime, clock: float) -> list[Due]:
        """The objects to visit now, the longest overdue first; forgets what it holds of objects no longer waiting
        (a new time ends a served hold, not a failure's)."""
        with self._lock:
            current = dict(self.waiting)
        self.held_until = {uid: until for uid, until in self.held_until.items() if until > clock and uid in current}
        self.served = {uid: (at, until) for uid, (at, until) in self.served.items()
                       if until > clock and uid in current and current[uid].at == at}
        return sorted((due for uid, due in current.items() if due.at <= now and uid not in self.running
                       and uid not in self.held_until and uid not in self.served), key=lambda due: due.at)

    def started(self, due: Due) -> None:
        self.running.add(due.uid)

    def finished(self, due: Due, retry_after: float | None, clock: float) -> None:
        self.running.discard(due.uid)
        if retry_after is not None:
            self.held_until[due.uid] = clock + retry_after
        else:
            self.served[due.uid] = (due.at, clock + self.served_grace)


Visit = Callable[[Due], Awaitable[float | None]]  # returns seconds to hold the object after a failure, or None


async def run(schedule: Schedule, visit: Visit, tick: float) -> None:
    """Every `tick` seconds, start a visit of each object that is due and not being visited; until cancelled."""
    visits: set[asyncio.Task[None]] = set()

    async def one(due: Due) -> None:
        retry_after = None
        try:
            retry_after = await visit(due)
        finally:
            schedule.finished(due, retry_after, time.monotonic())

    try:
        while True:
            now = datetime.datetime.now(datetime.timezone.utc)
            for due in schedule.pick(now, time.monotonic()):
                schedule.started(due)
                task = asyncio.create_task(one(due), name=f"poll {due.namespace}/{due.name}")
                visits.add(task)
                task.add_done_callback(visits.discard)
            await asyncio.sleep(tick)
    finally:
        for task in visits:
            task.cancel()
