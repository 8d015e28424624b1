"""The local backend: a RightsizeJob's experiment run on this host, behind the same submit/describe/stop
interface as SageMaker, so the reconcile core, status, selection and promotion do not know the difference.

A submitted job runs in a background thread of the operator process (its model servers and load generator are
child processes pinned to their own cores). Only one experiment runs at a time on a host, since two would
measure each other. The process holds no other memory: after a restart the job is unknown here, and the
reconcile core submits it again with the configurations status already records (measured, or failed), which are
not run twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Callable

from rightsizer import model
from rightsizer.backends import base
from rightsizer.backends.local import experiment as experiment_module
from rightsizer.backends.local.plan import ConfigurationOutcome, step_summary

FINISHED_RUNS_KEPT_SECONDS = 3600

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class _Run:
    job_name: str
    arn: str  # what status.jobArn says: the same from submit and from every describe
    created: datetime.datetime
    experiment: experiment_module.Experiment | None = None
    # Builds the experiment again when the job's turn comes: planned at submit, a job queued behind another would
    # size its memory caps while the other's server held memory. Set by submit.
    make_experiment: Callable[[], experiment_module.Experiment] | None = None
    started: bool = False
    finished: datetime.datetime | None = None
    outcomes: list[ConfigurationOutcome] = dataclasses.field(default_factory=list)
    progress: experiment_module.ExperimentProgress | None = None
    error: str | None = None
    stop_requested: bool = False


_runs: dict[str, _Run] = {}
_runs_guard = threading.Lock()
# One experiment at a time per host: a second one would share the cores and skew both.
_host = threading.Lock()


class LocalBackend:
    def __init__(self, time_scale: float = 1.0):
        self.time_scale = time_scale

    def submit(self, plan: base.JobPlan, owner: model.Owner) -> base.SubmitResult:
        with _runs_guard:
            _forget_old_runs()
            existing = _runs.get(plan.job_name)
            if existing is not None and not existing.stop_requested:
                return base.Adopted(_snapshot(existing))
        resume = plan.resume or base.ResumeState(completed=(), failed=(), started_at=None)
        # A resumed job's duration counts from its first start; a new one's from when its turn on the host comes,
        # not from a wait behind another job.
        run = _Run(plan.job_name, f"local:{owner.namespace}/{plan.job_name}", created=resume.started_at or _now())
        try:
            # Reads the payload and the host's CPUs and memory: outside the lock, which every describe takes.
            run.make_experiment = lambda: experiment_module.Experiment(
                plan.spec, plan.job_name, time_scale=self.time_scale,
                completed={r.recommendation_id: r for r in resume.completed}, job_started_at=resume.started_at,
                failed=resume.failed, on_progress=lambda progress: setattr(run, "progress", progress),
                on_outcome=run.outcomes.append)
            run.experiment = run.make_experiment()
        except experiment_module.ExperimentError as error:
            # Unreadable payload, unusable loadGeneratorCpus: nothing can run until the spec changes.
            return base.Rejected("ValidationFailed", str(error), retryable_later=False)
        with _runs_guard:
            existing = _runs.get(plan.job_name)
            if existing is not None and not existing.stop_requested:
                return base.Adopted(_snapshot(existing))  # submitted meanwhile by another caller
            _runs[plan.job_name] = run
        threading.Thread(target=_execute, args=(run,), name=f"local-job {plan.job_name}", daemon=True).start()
        return base.Submitted(job_arn=run.arn)

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
        experiment.stop()
        return base.StopDone()


def _execute(run: _Run) -> None:
    with _host:
        try:
            fresh = run.make_experiment()
        except experiment_module.ExperimentError as error:  # the host or the payload changed while it waited
            run.error, run.finished = str(error), _now()
            return
        with _runs_guard:
            if run.stop_requested:
                run.finished = _now()
                return
            run.experiment, run.started = fresh, True
        try:
            run.experiment.run()
        except Exception as error:  # the job fails with the reason; the operator must live on
            log.exception("local job %s failed", run.job_name)
            run.error = f"{type(error).__name__}: {error}"
        finally:
            run.finished = _now()


def _forget_old_runs() -> None:
    cutoff = _now() - datetime.timedelta(seconds=FINISHED_RUNS_KEPT_SECONDS)
    for name in [name for name, run in _runs.items() if run.finished and run.finished < cutoff]:
        del _runs[name]


def _snapshot(run: _Run) -> model.JobSnapshot:
    experiment = run.experiment
    outcomes = [*experiment.restored, *run.outcomes]
    recommendations = tuple(o.recommendation for o in outcomes if o.recommendation is not None)
    total = len(experiment.plan)
    unfinished = model.JobStatus.STOPPED if run.finished is not None else model.JobStatus.PENDING
    steps = step_summary(outcomes, total, unfinished_status=unfinished)
    current = run.progress.current if run.progress and run.finished is None else None
    progress = model.Progress(len(outcomes), total, current[:experiment_module.PROGRESS_TEXT_MAX] if current else None)
    status, failure = _status(run, recommendations, outcomes)
    ended_early = experiment.end_reason if run.finished is not None and experiment.end_reason != "stopped" else None
    return model.JobSnapshot(job_name=run.job_name, status=status, job_arn=run.arn,
                            failure_reason=failure, creation_time=run.created, completion_time=run.finished,
                            recommendations=recommendations, steps=steps, progress=progress, ended_early=ended_early)


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
