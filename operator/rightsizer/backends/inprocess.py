"""Backends whose experiment runs in a thread of the operator process (the local backend, the kubernetes
backend): one in-memory registry of runs behind the submit/describe/stop interface, so that the reconcile core,
status, selection and promotion do not know the difference from SageMaker.

The process holds no other memory: after a restart a run is unknown here, and the reconcile core submits it again
with what status records (configurations measured or failed, finished runs of repeated ones, when it started),
which is not run again. Status is the memory, so nothing finished may exist only here when the next load test
starts: before each one, the experiment waits until the operator has written status holding every result so far
(`persisted`), at most DURABLE_WAIT_S (then it goes on, and says so in the log: a crash then would run the unsaved
result again).

A backend may queue its runs for a shared resource (the local backend's host): a `HostQueue` hands it to one run at
a time in the order of first submission (a resumed run keeps its place).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import threading
import time
from typing import Callable, Protocol, Sequence

from rightsizer import model
from rightsizer.backends import base
from rightsizer.backends.local.plan import ConfigurationOutcome, PlannedConfiguration, step_summary

FINISHED_RUNS_KEPT_SECONDS = 3600
# Real seconds. The operator looks at a local job every 2 s (x its time scale), so it is seconds in practice; the
# bound is for a job nobody looks at any more (its RightsizeJob deleted with deletionPolicy: Retain).
DURABLE_WAIT_S = 60.0

log = logging.getLogger(__name__)


# status.progress.current is declared with this maxLength in the CRD.
PROGRESS_TEXT_MAX = 256


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def job_deadline(duration_seconds: int | None, started_at: datetime.datetime | None,
                 time_scale: float = 1.0) -> float | None:
    """time.monotonic() at which spec.jobDurationInSeconds (x time_scale) ends, counted from `started_at` (when the
    job first started, before a restart) or from now; None without a duration."""
    if not duration_seconds:
        return None
    already = max(0.0, (_now() - started_at).total_seconds()) if started_at is not None else 0.0
    return time.monotonic() + duration_seconds * time_scale - already


def duration_reason(duration_seconds: int | None, left: int) -> str:
    return (f"spec.jobDurationInSeconds ({duration_seconds} s) was reached; {left} "
            f"configuration{'' if left == 1 else 's'} not measured")


class ExperimentRefused(ValueError):
    """The job cannot run at all (not a problem of one configuration); the message says why."""


class Progress(Protocol):
    @property
    def current(self) -> str | None:
        """What runs now, at most PROGRESS_TEXT_MAX characters; None between configurations."""


class Experiment(Protocol):
    """One job's configurations, run by `run()` on the run's own thread; `stop()` from any thread."""

    plan: Sequence[PlannedConfiguration]
    end_reason: str | None  # why run() returned before every configuration had an outcome

    @property
    def restored(self) -> tuple[ConfigurationOutcome, ...]: ...

    def run(self) -> list[ConfigurationOutcome]: ...

    def stop(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What an experiment reports to its run, and asks of it."""

    started_at: Callable[[], datetime.datetime | None]  # when the job first started (its duration counts from it)
    on_progress: Callable[[Progress], None]
    on_outcome: Callable[[ConfigurationOutcome], None]
    on_run: Callable[[ConfigurationOutcome], None]  # a finished repetition of a configuration not complete yet
    before_run: Callable[[], None]  # before each load test: until status holds every result so far


# Builds a job's experiment (may raise ExperimentRefused): at submit, to refuse at once what cannot run, and again
# when the job's turn comes (a job queued behind another would otherwise size itself by the other's use).
ExperimentFactory = Callable[[base.JobPlan, model.Owner, base.ResumeState, Hooks], Experiment]


@dataclasses.dataclass
class _Run:
    job_name: str
    arn: str  # what status.jobArn says: the same from submit and from every describe
    owner: model.Owner
    created: datetime.datetime
    submitted: datetime.datetime  # its place in the queue for the host
    started_at: datetime.datetime | None = None  # when it got the host (kept from before a restart)
    experiment: Experiment | None = None
    make_experiment: Callable[[], Experiment] | None = None  # set by submit
    started: bool = False
    finished: datetime.datetime | None = None
    outcomes: list[ConfigurationOutcome] = dataclasses.field(default_factory=list)
    runs: list[model.Recommendation] = dataclasses.field(default_factory=list)  # repetitions of unfinished ones
    progress: Progress | None = None
    error: str | None = None
    stop_requested: bool = False
    # Results recorded here, and how many of them status is known to hold (Backend.persisted).
    version: int = 0
    persisted_version: int = 0
    durable: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    queue: HostQueue | None = None


class HostQueue:
    """The host, to one job at a time, in order of submission: a plain lock wakes waiters in no set order."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: _Run | None = None
        self._waiting: list[tuple[datetime.datetime, int, _Run]] = []
        self._tickets = itertools.count()
        self._outside = 0  # held by someone other than a job (tests hold the host as `with _host:`)

    def acquire(self, run: _Run) -> bool:
        """Wait for the host; False when the job was stopped while it waited (it leaves the queue)."""
        with self._changed:
            ticket = (run.submitted, next(self._tickets), run)
            self._waiting.append(ticket)
            self._waiting.sort(key=lambda t: t[:2])
            self._changed.wait_for(lambda: run.stop_requested or (
                self._holder is None and not self._outside and self._waiting[0] is ticket))
            self._waiting.remove(ticket)
            if run.stop_requested:
                self._changed.notify_all()
                return False
            self._holder = run
            return True

    def release(self) -> None:
        with self._changed:
            self._holder = None
            self._changed.notify_all()

    def wake(self) -> None:
        """A waiting job may have been stopped."""
        with self._changed:
            self._changed.notify_all()

    def place_of(self, run: _Run) -> tuple[_Run | None, int]:
        """Who holds the host, and how many are ahead of `run` in the queue."""
        with self._changed:
            ahead = next((i for i, t in enumerate(self._waiting) if t[2] is run), len(self._waiting))
            return self._holder, ahead

    def __enter__(self) -> HostQueue:
        with self._changed:
            self._changed.wait_for(lambda: self._holder is None and not self._outside)
            self._outside += 1
        return self

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._outside -= 1
            self._changed.notify_all()


_runs: dict[str, _Run] = {}
_runs_guard = threading.Lock()


class InProcessBackend:
    """The registry's submit/describe/stop/persisted for experiments `make_experiment` builds; `queue` (or None)
    decides when a run may start."""

    def __init__(self, make_experiment: ExperimentFactory, *, scheme: str, queue: HostQueue | None = None):
        self._make_experiment = make_experiment
        self._queue = queue
        self._scheme = scheme  # status.jobArn is <scheme>:<namespace>/<job name>

    def submit(self, plan: base.JobPlan, owner: model.Owner) -> base.SubmitResult:
        with _runs_guard:
            _forget_old_runs()
            existing = _runs.get(plan.job_name)
            if existing is not None and not existing.stop_requested:
                return base.Adopted(_snapshot(existing))
        resume = plan.resume or base.ResumeState(completed=(), failed=(), started_at=None)
        now = _now()
        # A resumed job's duration counts from when it first got the host; a new one's from when its turn on the
        # host comes, not from a wait behind another job.
        run = _Run(plan.job_name, f"{self._scheme}:{owner.namespace}/{plan.job_name}", owner,
                   created=resume.submitted_at or resume.started_at or now,
                   submitted=resume.submitted_at or now, started_at=resume.started_at, runs=list(resume.runs),
                   queue=self._queue)
        hooks = Hooks(started_at=lambda: run.started_at,
                      on_progress=lambda progress: setattr(run, "progress", progress),
                      on_outcome=lambda outcome: _record_outcome(run, outcome),
                      on_run=lambda outcome: _record_run(run, outcome),
                      before_run=lambda: _wait_until_persisted(run))
        try:
            # May read files and the host: outside the lock, which every describe takes.
            run.make_experiment = lambda: self._make_experiment(plan, owner, resume, hooks)
            run.experiment = run.make_experiment()
        except ExperimentRefused as error:
            # Unreadable payload, unusable settings: nothing can run until the spec changes.
            return base.Rejected("ValidationFailed", str(error), retryable_later=False)
        with _runs_guard:
            existing = _runs.get(plan.job_name)
            if existing is not None and not existing.stop_requested:
                return base.Adopted(_snapshot(existing))  # submitted meanwhile by another caller
            _runs[plan.job_name] = run
        threading.Thread(target=_execute, args=(run, self._queue), name=f"job {plan.job_name}",
                         daemon=True).start()
        return base.Submitted(job_arn=run.arn)

    def unsendable(self) -> base.Rejected | None:
        return None  # the experiment runs here: nothing to send, no credentials to lack

    def describe(self, job_name: str) -> model.JobSnapshot | None:
        with _runs_guard:
            run = _runs.get(job_name)
            return _snapshot(run) if run is not None else None

    def stop(self, job_name: str) -> base.StopDone:
        with _runs_guard:
            run = _runs.get(job_name)
            if run is None:
                return base.StopDone(not_found=True)
            if run.finished is not None:
                return base.StopDone(already_finished=True)
            run.stop_requested = True
            experiment = run.experiment  # _execute swaps it only under this lock, and not once this is set
        if self._queue is not None:
            self._queue.wake()
        with run.durable:
            run.durable.notify_all()
        assert experiment is not None  # set by submit before the run is known
        experiment.stop()
        return base.StopDone()

    def recommend_scaling(self, call: base.ScalingCall) -> model.Scaling:
        # The policies of in-process backends derive scaling from what they measured (backends/scaling.py).
        raise TypeError(f"{self._scheme} jobs derive their scaling from their measurements; there is nobody to ask")

    def persisted(self, snapshot: model.JobSnapshot) -> None:
        with _runs_guard:
            run = _runs.get(snapshot.job_name)
        if run is None or snapshot.results_version is None:
            return
        with run.durable:
            run.persisted_version = max(run.persisted_version, snapshot.results_version)
            run.durable.notify_all()


def _record_outcome(run: _Run, outcome: ConfigurationOutcome) -> None:
    with _runs_guard:
        run.outcomes.append(outcome)
        rid = outcome.planned.recommendation_id
        # Now in the outcome (their median). Probes stay: spec.search decides again from all of them on a restart.
        run.runs = [r for r in run.runs if r.recommendation_id != rid or r.probe]
        if not outcome.planned.skipped:  # a skipped one costs nothing to judge again
            run.version += 1


def _record_run(run: _Run, outcome: ConfigurationOutcome) -> None:
    assert outcome.recommendation is not None, "only measured runs are repeated"
    with _runs_guard:
        run.runs.append(outcome.recommendation)
        run.version += 1


def _wait_until_persisted(run: _Run) -> None:
    """Until status holds every result so far (or the job is stopped, or DURABLE_WAIT_S passed)."""
    with _runs_guard:
        version = run.version
    deadline = time.monotonic() + DURABLE_WAIT_S
    with run.durable:
        while run.persisted_version < version and not run.stop_requested:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("%s: status has not taken the last result within %.0f s; going on (an operator "
                            "restart now would run it again)", run.job_name, DURABLE_WAIT_S)
                return
            run.durable.wait(left)


def _execute(run: _Run, queue: HostQueue | None) -> None:
    if queue is not None and not queue.acquire(run):
        run.finished = _now()  # stopped while it waited
        return
    try:
        if run.started_at is None:
            run.started_at = _now()
        try:
            assert run.make_experiment is not None  # set by submit before the thread starts
            fresh = run.make_experiment()
        except ExperimentRefused as error:  # the host or the payload changed while it waited
            run.error, run.finished = str(error), _now()
            return
        with _runs_guard:
            if run.stop_requested:
                run.finished = _now()
                return
            run.experiment, run.started = fresh, True
        try:
            fresh.run()
        except Exception as error:  # the job fails with the reason; the operator must live on
            log.exception("job %s failed", run.job_name)
            run.error = f"{type(error).__name__}: {error}"
        finally:
            run.finished = _now()
    finally:
        if queue is not None:
            queue.release()


def _forget_old_runs() -> None:
    cutoff = _now() - datetime.timedelta(seconds=FINISHED_RUNS_KEPT_SECONDS)
    for name in [name for name, run in _runs.items() if run.finished and run.finished < cutoff]:
        del _runs[name]


def _waiting_text(run: _Run, queue: HostQueue) -> str:
    holder, ahead = queue.place_of(run)
    if holder is None:
        text = "waiting for this host"
    else:
        text = (f"waiting for this host, where job {holder.job_name} of RightsizeJob "
                f"{holder.owner.namespace}/{holder.owner.name} runs")
    return text + (f"; {ahead} more job{'' if ahead == 1 else 's'} ahead in the queue" if ahead else "")


def _snapshot(run: _Run) -> model.JobSnapshot:
    experiment = run.experiment
    assert experiment is not None  # set by submit before the run is known
    outcomes = [*experiment.restored, *run.outcomes]
    recommendations = tuple(o.recommendation for o in outcomes if o.recommendation is not None)
    total = len(experiment.plan)
    unfinished = model.JobStatus.STOPPED if run.finished is not None else model.JobStatus.PENDING
    steps = step_summary(outcomes, total, unfinished_status=unfinished)
    current = run.progress.current if run.progress and run.finished is None else None
    if not run.started and run.finished is None and not run.stop_requested:
        current = _waiting_text(run, run.queue) if run.queue is not None else "starting"
    progress = model.Progress(len(outcomes), total, current[:PROGRESS_TEXT_MAX] if current else None,
                              started=run.started_at, runs=tuple(run.runs))
    status, failure = _status(run, recommendations, outcomes)
    ended_early = experiment.end_reason if run.finished is not None and experiment.end_reason != "stopped" else None
    return model.JobSnapshot(job_name=run.job_name, status=status, job_arn=run.arn,
                            failure_reason=failure, creation_time=run.created, completion_time=run.finished,
                            recommendations=recommendations, steps=steps, progress=progress, ended_early=ended_early,
                            results_version=run.version)


def _status(run: _Run, recommendations, outcomes) -> tuple[model.JobStatus, str | None]:
    status = model.JobStatus
    if run.finished is None:
        if run.stop_requested:
            return status.STOPPING, None
        return (status.IN_PROGRESS if run.started else status.PENDING), None
    if run.stop_requested:
        return status.STOPPED, None
    if run.error:
        return status.FAILED, run.error
    if not recommendations:
        # Each reason cut as SageMaker cuts a step's: a crashed server's output can be long.
        reasons = "; ".join(f"{o.planned.label}: {o.failure_reason[:model.STEP_FAILURE_REASON_CHARS]}"
                            for o in outcomes if o.failure_reason)
        ended = f" ({run.experiment.end_reason})" if run.experiment.end_reason else ""
        return status.FAILED, f"no configuration could be measured{ended}: {reasons or 'nothing ran'}"
    # Like SageMaker, a job that reached its duration completes with the configurations it measured.
    return status.COMPLETED, None
