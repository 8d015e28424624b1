"""The pure core: (spec, status, observation) -> (actions, status patch). No I/O, no kopf, no boto3.

The handlers feed it what they observed and carry out what it returns, one effect at a time: an outcome holds
at most one action that touches the backend (submit, describe, stop), and its result comes back as the next
observation. The status patch of an outcome is written before its action runs, so the status — the only memory
there is — always names a job before that job can exist (write-ahead), and a restart at any line converges
with no duplicate and no orphan.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Mapping, Sequence

from rightsizer import model
from rightsizer import selection as selection_module
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import base, registry
from rightsizer.backends.base import Timing
from rightsizer.model import JobStatus
from rightsizer.status import Reason
from rightsizer.promotion import flow as promotion_flow
from rightsizer.promotion import objects as promotion_objects
from rightsizer.promotion.memory import PromotionMemory
from rightsizer.promotion.reasons import Reason as PromotionReason

NORMAL, WARNING = "Normal", "Warning"
MAX_RECOMMENDATION_ROWS = 20
MAX_FAILED_STEPS = 10
# status.failureReason's schema limit: a local job's reason lists every configuration's, which can run longer.
MAX_FAILURE_REASON_CHARS = 4096

# Conditions that get an Event whenever their (status, reason) changes.
EVENTFUL = (st.JOB_SUBMITTED, st.SUCCEEDED, st.SLA_SATISFIED, st.AWAITING_APPROVAL, st.PROMOTED, st.READY)
# False conditions that are a state, not a problem: their Events are Normal.
UNREMARKABLE_FALSE = (Reason.NOT_SUBMITTED, PromotionReason.NOT_REQUIRED, PromotionReason.DRY_RUN,
                      PromotionReason.AWAITING_APPROVAL, PromotionReason.NO_BEST_CONFIGURATION,
                      PromotionReason.APPROVED, PromotionReason.ROLLED_BACK)
PROMOTION_EFFECTS = (promotion_objects.ReadWorld, promotion_objects.ApplyObjects, promotion_objects.DeleteObjects)
# Status fields that describe one job; a job-defining edit clears them along with the job.
JOB_FIELDS = ("jobArn", "backendStatus", "failureReason", "startTime", "completionTime", "lastPolledTime",
              "recommendations", "recommendationsTotal", "endpointPerformances", "steps", "best", "nextPollTime",
              "submitAttempts", "progress")


@dataclasses.dataclass(frozen=True)
class JobSeen:
    """Describe found the job."""

    snapshot: model.JobSnapshot


@dataclasses.dataclass(frozen=True)
class JobMissing:
    """Describe found no such job: never created, or forgotten (a restarted operator's in-process job)."""


@dataclasses.dataclass(frozen=True)
class CallRefused:
    """A call to the backend was refused for a lasting reason (describe, stop, or a look before creating)."""

    rejected: base.Rejected


# What the one action just carried out came back with: each action has its own answers.
ActionResult = (JobSeen | JobMissing | CallRefused | base.Submitted | base.Adopted | base.Rejected | base.NameTaken
                | base.StopDone | promotion_objects.World | promotion_objects.ApplyResult
                | promotion_objects.DeleteResult)
SUBMIT_RESULTS = (base.Submitted, base.Adopted, base.Rejected, base.NameTaken)


@dataclasses.dataclass(frozen=True)
class Observation:
    generation: int
    now: datetime.datetime
    owner: model.Owner | None = None
    timing: Timing = Timing()
    deleting: bool = False
    # The RightsizeJob's annotations (approval, rollback).
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The result of the one action just carried out, if any.
    result: ActionResult | None = None

    # Views of `result`, one per kind of answer.
    @property
    def job(self) -> model.JobSnapshot | None:
        return self.result.snapshot if isinstance(self.result, JobSeen) else None

    @property
    def job_missing(self) -> bool:
        return isinstance(self.result, JobMissing)

    @property
    def submit_result(self) -> base.SubmitResult | None:
        return self.result if isinstance(self.result, SUBMIT_RESULTS) else None

    @property
    def stop_result(self) -> base.StopDone | None:
        return self.result if isinstance(self.result, base.StopDone) else None

    @property
    def rejected(self) -> base.Rejected | None:
        return self.result.rejected if isinstance(self.result, CallRefused) else None

    @property
    def world(self) -> promotion_objects.World | None:
        return self.result if isinstance(self.result, promotion_objects.World) else None

    @property
    def applied(self) -> promotion_objects.ApplyResult | None:
        return self.result if isinstance(self.result, promotion_objects.ApplyResult) else None

    @property
    def deleted(self) -> promotion_objects.DeleteResult | None:
        return self.result if isinstance(self.result, promotion_objects.DeleteResult) else None


@dataclasses.dataclass(frozen=True)
class EmitEvent:
    type: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class SubmitJob:
    plan: base.JobPlan


@dataclasses.dataclass(frozen=True)
class DescribeJob:
    job_name: str


@dataclasses.dataclass(frozen=True)
class StopJob:
    job_name: str


@dataclasses.dataclass(frozen=True)
class RetryLater:
    """Stop here and have the handler run again after `seconds` (the shell raises kopf's TemporaryError)."""

    seconds: float
    message: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    actions: tuple[Any, ...]
    status_patch: dict[str, Any]

    @property
    def effect(self) -> Any:
        """The one action that touches the backend or the cluster, if any."""
        return next((a for a in self.actions if isinstance(a, (SubmitJob, DescribeJob, StopJob, *PROMOTION_EFFECTS))),
                    None)


def job_may_be_running(status: Mapping[str, Any]) -> bool:
    """Whether a backend job may exist and not have finished: what deletion must stop and polling must watch."""
    if not status.get("jobName") or status.get("backendStatus") in model.TERMINAL_STATUSES:
        return False
    submitted = st.find(status.get("conditions"), st.JOB_SUBMITTED)
    # Written ahead but refused by the backend: nothing was created.
    if submitted and submitted.get("status") == st.FALSE:
        return False
    succeeded = st.find(status.get("conditions"), st.SUCCEEDED)
    # The backend no longer knows the job: nothing to poll or stop.
    return not (succeeded and succeeded.get("reason") == Reason.JOB_NOT_FOUND)


class _Builder:
    """Accumulates one outcome: conditions, status fields, events and actions."""

    def __init__(self, status: Mapping[str, Any], observation: Observation):
        self.policy: base.BackendPolicy | None = None  # the job's backend, once the spec is valid
        self.before = dict(status)
        self.status = dict(status)
        self.observation = observation
        self.patch: dict[str, Any] = {}
        self.actions: list[Any] = []

    def set(self, **fields: Any) -> None:
        for key, value in fields.items():
            if self.status.get(key) == value:
                continue  # an unchanged field is not patched: a converged object costs no write
            self.patch[key] = value
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = value

    def condition(self, kind: str, value: str, reason: str, message: str) -> None:
        self.set(conditions=st.set_condition(self.status.get("conditions"), kind, value, reason, message,
                                             self.observation.generation, self.observation.now))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, message))

    def outcome(self) -> Outcome:
        before, after = self.before.get("conditions"), self.status.get("conditions") or []
        events = []
        validated_old, validated_new = st.find(before, st.VALIDATED), st.find(after, st.VALIDATED)
        keys = ("status", "reason", "message")
        if validated_new and (validated_old is None or any(validated_old.get(k) != validated_new.get(k) for k in keys)):
            kind = NORMAL if validated_new["reason"] == Reason.VALID else WARNING
            events.append(EmitEvent(kind, validated_new["reason"], validated_new["message"]))
        for kind in EVENTFUL:
            if st.changed(before, after, kind):
                new = st.find(after, kind)
                assert new is not None  # changed() says it is there
                if new["status"] == st.UNKNOWN and kind != st.READY:
                    continue
                bad = new["status"] == st.FALSE and new["reason"] not in UNREMARKABLE_FALSE
                events.append(EmitEvent(WARNING if bad else NORMAL, new["reason"], new["message"]))
        self.set(observedGeneration=self.observation.generation)
        unique: list[EmitEvent] = []
        for event in events + [a for a in self.actions if isinstance(a, EmitEvent)]:
            if all((event.reason, event.message) != (seen.reason, seen.message) for seen in unique):
                unique.append(event)
        return Outcome(tuple(unique + [a for a in self.actions if not isinstance(a, EmitEvent)]), self.patch)


def reconcile(spec: Mapping[str, Any], status: Mapping[str, Any], observation: Observation) -> Outcome:
    out = _Builder(status, observation)
    if observation.deleting:
        return _on_delete(spec, out)
    if not out.status.get("phase"):
        out.set(phase=st.PENDING)

    try:
        validated = registry.validate(spec)
    except spec_module.InvalidSpec as invalid:
        _refuse(out, invalid.errors)
        return out.outcome()

    parsed, out.policy, warnings = validated.spec, validated.policy, list(validated.warnings)
    out.set(warnings=[w[: st.MAX_WARNING_CHARS] for w in warnings[: st.MAX_WARNINGS]] or None)
    if observation.owner is None:
        _validated(out, warnings)
        _not_started(out, parsed, "")
        return out.outcome()

    try:
        plan = out.policy.plan(parsed, observation.owner, observation.generation, out.status.get("jobName"))
    except base.PlanInvalid as invalid:
        _refuse(out, invalid.errors)
        return out.outcome()
    _validated(out, warnings)
    _drive_job(out, parsed, plan)
    if parsed.promotion and not any(isinstance(a, (SubmitJob, DescribeJob, StopJob, RetryLater)) for a in out.actions):
        _promote(out, parsed.promotion)
    elif not parsed.promotion:
        awaiting = st.find(out.status.get("conditions"), st.AWAITING_APPROVAL)
        if awaiting and awaiting["status"] == st.TRUE:
            # Nobody is asked any more: a stale True would keep Argo CD showing the job Suspended.
            out.condition(st.AWAITING_APPROVAL, st.FALSE, PromotionReason.NOT_REQUIRED, "spec.promotion was removed")
    return out.outcome()


def _validated(out: _Builder, warnings: list[str]) -> None:
    if warnings:
        out.condition(st.VALIDATED, st.TRUE, Reason.VALID_WITH_WARNINGS,
                      f"{len(warnings)} warning(s): " + "; ".join(warnings))
    else:
        out.condition(st.VALIDATED, st.TRUE, Reason.VALID, "the spec is valid")


def _refuse(out: _Builder, errors: list[str]) -> None:
    """A spec the operator will not run: say why, make no backend call. A job already running is left alone."""
    message = "invalid spec: " + "; ".join(errors)
    out.condition(st.VALIDATED, st.FALSE, Reason.INVALID_SPEC, message)
    out.condition(st.READY, st.FALSE, Reason.INVALID_SPEC, message)
    out.set(warnings=None)


def _not_started(out: _Builder, parsed: spec_module.RightsizeJobSpec, why: str) -> None:
    suffix = f" ({why})" if why else ""
    out.condition(st.READY, st.UNKNOWN, Reason.JOB_PENDING,
                  f"the spec is valid; {_policy(out).describe_job(parsed)} is not submitted yet{suffix}")
    out.condition(st.JOB_SUBMITTED, st.FALSE, Reason.NOT_SUBMITTED,
                  f"no job has been submitted for generation {out.observation.generation}")
    out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_PENDING, "no job has run yet")
    out.condition(st.SLA_SATISFIED, st.UNKNOWN, Reason.NO_RESULTS, "no configuration has been benchmarked yet")


# -- promotion --------------------------------------------------------------------------------------------------

def _promote(out: _Builder, promotion: spec_module.Promotion) -> None:
    observation, status = out.observation, out.status
    owner = observation.owner
    assert owner is not None, "a job is driven only with its owner known"
    succeeded = st.find(status.get("conditions"), st.SUCCEEDED)
    job_done = bool(succeeded and succeeded["status"] == st.TRUE)
    if not job_done and not status.get("promotion"):
        return  # nothing was promoted and nothing can be yet
    sla = st.find(status.get("conditions"), st.SLA_SATISFIED)
    step = promotion_flow.advance(promotion_flow.Context(
        promotion=promotion, namespace=owner.namespace, job_name=owner.name, owner_uid=owner.uid,
        generation=observation.generation, best=status.get("best") if job_done else None,
        sla_satisfied=sla.get("status") if sla else None, annotations=observation.annotations,
        memory=PromotionMemory.from_storage(status.get("promotion")), now=observation.now, world=observation.world,
        applied=observation.applied, deleted=observation.deleted))
    out.set(promotion=step.memory.for_storage())
    for kind, value in ((st.AWAITING_APPROVAL, step.awaiting), (st.PROMOTED, step.promoted), (st.READY, step.ready)):
        if value is not None:
            out.condition(kind, *value)
    if step.phase:
        out.set(phase=step.phase)
    for event in step.events:
        out.event(*event)
    timing = observation.timing
    if step.poll_after == "poll" or step.effect is not None:
        # With an action under way a look is always due soon, so a restart mid-visit resumes it, and the poll
        # timer (filtered on nextPollTime) is never switched off and on again within one visit.
        out.set(nextPollTime=timing.after(observation.now, timing.promotion_poll))
    elif step.poll_after == "retry":
        out.set(nextPollTime=timing.after(observation.now, timing.promotion_retry))
    elif job_done:
        out.set(nextPollTime=None)
    if step.effect is not None:
        out.actions.append(step.effect)


# -- the job (either backend) -------------------------------------------------------------------------------------------------

def _policy(out: _Builder) -> base.BackendPolicy:
    assert out.policy is not None, "the spec names a backend before anything asks for it"
    return out.policy


def _drive_job(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    observation = out.observation
    desired, current = plan.job_name, out.status.get("jobName")

    if current and current != desired:
        # A job-defining edit: the running job answers a question nobody asks any more.
        if observation.rejected is not None:
            _retry_later(out, f"cannot stop job {current}, which the spec no longer describes", observation.rejected)
            return
        if job_may_be_running(out.status) and observation.stop_result is None and not observation.job_missing:
            out.condition(st.READY, st.UNKNOWN, Reason.JOB_REPLACING,
                          f"the spec changed: stopping job {current} before submitting {desired}")
            out.actions.append(StopJob(current))
            return
        out.event(NORMAL, Reason.JOB_REPLACED, f"the spec changed: job {current} is replaced by {desired}")
        out.set(**{field: None for field in JOB_FIELDS})
        out.set(jobName=None)
        current = None

    submitted = st.find(out.status.get("conditions"), st.JOB_SUBMITTED)
    if current is None or not submitted or submitted["status"] != st.TRUE:
        _submit(out, parsed, plan, submitted)
        return
    _follow(out, parsed, plan)


def _submit(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan,
            submitted: Mapping[str, Any] | None) -> None:
    observation, now = out.observation, out.observation.now
    name = plan.job_name
    result = observation.submit_result
    if result is None:
        if observation.job is not None:  # a written-ahead job found by describe: it was created after all
            out.condition(st.JOB_SUBMITTED, st.TRUE, Reason.JOB_ADOPTED,
                          f"job {name} was created by an earlier attempt")
            out.set(jobArn=observation.job.job_arn, startTime=st.timestamp(now))
            _apply_snapshot(out, parsed, observation.job)
            return
        if observation.rejected is not None:  # a refused call (a look before creating, or no region): no spin
            _retry_later(out, f"cannot reach {_policy(out).display_name} for job {name}", observation.rejected)
            return
        waiting_until = st.parse_timestamp(out.status.get("nextPollTime"))
        refused = submitted and submitted["status"] == st.FALSE and submitted["reason"] != Reason.NOT_SUBMITTED
        if refused and out.status.get("jobName") == name:
            if waiting_until is None or now < waiting_until:
                return  # refused for good (until the spec changes), or waiting to retry
        elif out.status.get("jobName") == name and submitted and submitted["status"] == st.UNKNOWN \
                and not observation.job_missing:
            # Written ahead by an earlier attempt that may have reached the backend: look before creating.
            if waiting_until is None or now >= waiting_until:
                out.actions.append(DescribeJob(name))
            return
        out.set(jobName=name, phase=st.PENDING)
        out.condition(st.JOB_SUBMITTED, st.UNKNOWN, Reason.SUBMITTING, f"submitting job {name}")
        out.condition(st.READY, st.UNKNOWN, Reason.JOB_SUBMITTING,
                      f"submitting {_policy(out).describe_job(parsed)} as {name}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_PENDING, "the job has not run yet")
        out.condition(st.SLA_SATISFIED, st.UNKNOWN, Reason.NO_RESULTS, "no configuration has been benchmarked yet")
        out.actions.append(SubmitJob(plan))
        return

    if isinstance(result, (base.Submitted, base.Adopted)):
        adopted = isinstance(result, base.Adopted)
        arn = result.snapshot.job_arn if isinstance(result, base.Adopted) else result.job_arn
        out.condition(st.JOB_SUBMITTED, st.TRUE, Reason.JOB_ADOPTED if adopted else Reason.JOB_SUBMITTED,
                      f"job {name} {'was created by an earlier attempt' if adopted else 'was submitted'}")
        out.set(jobArn=arn, startTime=st.timestamp(now), submitAttempts=None)
        if isinstance(result, base.Adopted):
            _apply_snapshot(out, parsed, result.snapshot)
        else:
            first_look = _policy(out).first_poll(observation.timing)
            out.set(phase=st.SUBMITTED, backendStatus=JobStatus.PENDING,
                    nextPollTime=observation.timing.after(now, first_look))
            out.condition(st.READY, st.UNKNOWN, Reason.JOB_IN_PROGRESS, f"job {name} is {JobStatus.PENDING}")
        return

    if isinstance(result, base.NameTaken):
        out.condition(st.JOB_SUBMITTED, st.FALSE, Reason.NAME_TAKEN, result.message)
        out.condition(st.READY, st.FALSE, Reason.NAME_TAKEN, result.message)
        out.set(nextPollTime=None)
        return

    attempts = int(out.status.get("submitAttempts") or 0) + 1
    backend = _policy(out).display_name
    if result.unsent:
        message = f"job {name} was not submitted to {backend}: {result.message}"
    else:
        message = f"{backend} refused job {name}: {result.message}"
    if result.retryable_later:
        timing = observation.timing
        delay = min(timing.retry_max, timing.retry_first * 2 ** (attempts - 1))
        retry_at = now + datetime.timedelta(seconds=delay)
        message += f" (attempt {attempts}; next attempt at {st.timestamp(retry_at)})"
        out.set(nextPollTime=st.timestamp(retry_at), submitAttempts=attempts)
    else:
        message += " (not retried until a job-defining field of the spec changes)"
        out.set(nextPollTime=None, submitAttempts=attempts)
    out.condition(st.JOB_SUBMITTED, st.FALSE, result.reason, message)
    out.condition(st.READY, st.FALSE, result.reason, message)


def _follow(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    """A submitted job: poll it while it runs, fold its results in, re-select when only the policy changed."""
    observation, now, name = out.observation, out.observation.now, out.status["jobName"]
    if observation.job is not None:
        _apply_snapshot(out, parsed, observation.job)
        return
    if not _policy(out).capabilities.jobs_outlive_operator and (
            observation.job_missing or observation.submit_result is not None):
        _resume(out, parsed, plan)
        return
    if observation.job_missing:
        started = st.parse_timestamp(out.status.get("startTime")) or now
        if (now - started).total_seconds() < observation.timing.not_found_grace:
            out.set(nextPollTime=observation.timing.after(now, _policy(out).first_poll(observation.timing)))
            return
        message = f"job {name} was submitted but {_policy(out).display_name} no longer knows it"
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_NOT_FOUND, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_NOT_FOUND, message)
        out.set(nextPollTime=None, phase=st.FAILED)
        return
    if observation.rejected is not None:
        _retry_later(out, f"cannot read job {name}", observation.rejected)
        return
    due = st.parse_timestamp(out.status.get("nextPollTime"))
    policy_edited = out.before.get("observedGeneration") != observation.generation
    if job_may_be_running(out.status) and (due is None or now >= due or policy_edited):
        out.actions.append(DescribeJob(name))
        return
    succeeded = st.find(out.status.get("conditions"), st.SUCCEEDED)
    if succeeded and succeeded["status"] == st.TRUE and policy_edited:
        # Only the policy can have changed: judge the stored results again (the job itself is not touched).
        performances = out.status.get("endpointPerformances")
        if performances and not out.status.get("recommendations"):
            _judge_endpoint(out, parsed, [model.EndpointPerformance(p["endpointName"], p["maxInvocations"],
                                                                    p["modelLatency"]) for p in performances])
            return
        total = out.status.get("recommendationsTotal")
        _select(out, parsed, [model.Recommendation.from_status_row(row)
                              for row in out.status.get("recommendations") or []])
        if total is not None and total > out.status["recommendationsTotal"]:
            out.set(recommendationsTotal=total)  # status keeps 20 rows; the job had more


def _resume(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    """A job of a backend whose jobs live in the operator's process is gone after a restart. Run it again,
    without the configurations status already holds."""
    observation, name = out.observation, out.status["jobName"]
    result = observation.submit_result
    if result is None:
        finished = out.status.get("recommendations") or []
        # A configuration that failed (its server crashed, the threshold broke at once) would fail again; one
        # skipped for want of room is judged afresh (the pod may have been given more).
        failed = [f for f in (out.status.get("steps") or {}).get("failures") or [] if not f.get("skipped")]
        out.event(NORMAL, Reason.JOB_RESUMED, f"job {name} was interrupted (the operator restarted); running the "
                                        f"configurations it had not finished ({len(finished)} measured and "
                                        f"{len(failed)} failed before)")
        resume = base.ResumeState(
            completed=tuple(model.Recommendation.from_status_row(row) for row in finished
                            if row.get("recommendationId")),
            failed=tuple(model.StepFailure.from_status_row(row) for row in failed),
            started_at=st.parse_timestamp(out.status.get("startTime")))
        out.actions.append(SubmitJob(dataclasses.replace(plan, resume=resume)))
        return
    if isinstance(result, base.Adopted):
        _apply_snapshot(out, parsed, result.snapshot)
        return
    if isinstance(result, base.Submitted):
        timing = observation.timing
        out.set(nextPollTime=timing.after(observation.now, _policy(out).first_poll(timing)))
        return
    message = f"cannot resume job {name}: {getattr(result, 'message', result)}"
    out.condition(st.READY, st.FALSE, Reason.JOB_FAILED, message)
    out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_FAILED, message)
    out.set(nextPollTime=None, phase=st.FAILED)


def _retry_later(out: _Builder, what: str, rejected: base.Rejected) -> None:
    timing, now = out.observation.timing, out.observation.now
    retry_at = timing.after(now, timing.retry_first)
    out.condition(st.READY, st.FALSE, rejected.reason, f"{what}: {rejected.message}; retrying at {retry_at}")
    out.set(nextPollTime=retry_at)


def _apply_snapshot(out: _Builder, parsed: spec_module.RightsizeJobSpec, snapshot: model.JobSnapshot) -> None:
    now, name = out.observation.now, snapshot.job_name
    started = st.parse_timestamp(out.status.get("startTime")) or now
    out.set(backendStatus=snapshot.status, lastPolledTime=st.timestamp(now),
            failureReason=(snapshot.failure_reason or "")[:MAX_FAILURE_REASON_CHARS] or None)
    if snapshot.job_arn:
        out.set(jobArn=snapshot.job_arn)
    if snapshot.completion_time:
        out.set(completionTime=st.timestamp(snapshot.completion_time))
    if snapshot.steps is not None:
        out.set(steps=_steps_status(snapshot.steps))
    if snapshot.endpoint_performances:
        out.set(endpointPerformances=[{"endpointName": p.endpoint_name, "maxInvocations": p.max_invocations,
                                       "modelLatency": p.model_latency} for p in snapshot.endpoint_performances])
    progress = _progress(snapshot.steps)

    if snapshot.progress is not None:
        out.set(progress=dict(snapshot.progress))
    if snapshot.status in model.ACTIVE_STATUSES:
        timing = out.observation.timing
        interval = _policy(out).poll_interval(timing, (now - started).total_seconds())
        out.set(phase=st.SUBMITTED if snapshot.status == JobStatus.PENDING else st.IN_PROGRESS,
                nextPollTime=timing.after(now, interval))
        out.condition(st.READY, st.UNKNOWN, Reason.JOB_IN_PROGRESS, f"job {name} is {snapshot.status}{progress}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_IN_PROGRESS, f"job {name} is {snapshot.status}{progress}")
        if snapshot.recommendations:
            _select(out, parsed, snapshot.recommendations, final=False)
        return

    out.set(nextPollTime=None)
    if snapshot.status == JobStatus.COMPLETED:
        out.set(phase=st.COMPLETED)
        out.condition(st.SUCCEEDED, st.TRUE, Reason.JOB_COMPLETED, f"job {name} completed{progress}")
        if snapshot.endpoint_performances and not snapshot.recommendations:
            _judge_endpoint(out, parsed, snapshot.endpoint_performances)
        else:
            _select(out, parsed, snapshot.recommendations)
        return

    failed_steps = _failed_steps_text(snapshot.steps)
    if snapshot.status == JobStatus.FAILED:
        reason = snapshot.failure_reason or f"{_policy(out).display_name} gave no reason"
        message = f"job {name} failed: {reason}{failed_steps}"
        out.set(phase=st.FAILED)
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_FAILED, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_FAILED, message)
    elif snapshot.status == JobStatus.STOPPED:
        message = (f"job {name} was stopped before it completed{progress}; its partial results are listed but "
                   f"not selected from{failed_steps}")
        out.set(phase=st.STOPPED)
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_STOPPED, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_STOPPED, message)
    else:
        message = f"job {name} is {snapshot.status}, which no operation of this operator causes"
        out.set(phase=st.FAILED)
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_DELETED, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_DELETED, message)
    out.condition(st.SLA_SATISFIED, st.UNKNOWN, Reason.NO_RESULTS, "the job did not complete")
    out.set(best=None)
    if snapshot.recommendations:
        _select(out, parsed, snapshot.recommendations, final=False)


def _select(out: _Builder, parsed: spec_module.RightsizeJobSpec, recommendations: Sequence[model.Recommendation],
            final: bool = True) -> None:
    constraints = selection_module.constraints_for(parsed)
    chosen = selection_module.select(recommendations, parsed.selection.objective, constraints)
    rows = [_row(v) for v in chosen.verdicts]
    out.set(recommendations=rows[:MAX_RECOMMENDATION_ROWS], recommendationsTotal=len(rows))
    if not final:
        return
    if chosen.best is None:
        out.set(best=None)
        out.condition(st.SLA_SATISFIED, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, chosen.reason)
        out.condition(st.READY, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, chosen.reason)
        return
    best = chosen.best
    previous = (out.before.get("best") or {}).get("recommendationId")
    if previous and previous != best.recommendation_id:
        out.event(NORMAL, Reason.BEST_CHANGED, f"the selection now prefers {chosen.reason}")
    out.set(best={"recommendationId": best.recommendation_id, "instanceType": best.instance_type,
                  "initialInstanceCount": best.initial_instance_count, "environment": dict(best.environment),
                  "metrics": _metrics_row(best.metrics), "reason": chosen.reason[:1024], **best.provenance()})
    out.condition(st.SLA_SATISFIED, st.TRUE, Reason.CANDIDATE_MEETS_SLA, chosen.reason)
    out.condition(st.READY, st.TRUE, Reason.BEST_SELECTED, chosen.reason)


def _judge_endpoint(out: _Builder, parsed: spec_module.RightsizeJobSpec,
                    performances: Sequence[model.EndpointPerformance]) -> None:
    """An existing-endpoint job measures the endpoint as deployed: there is nothing to choose, only a verdict."""
    constraints = selection_module.constraints_for(parsed)
    performance = performances[0]
    as_row = model.Recommendation(performance.endpoint_name, None, None, {},
                                 {"maxInvocations": performance.max_invocations,
                                  "modelLatency": performance.model_latency})
    verdict = selection_module.select([as_row], "MaxInvocations", dataclasses.replace(constraints, max_cost_per_hour=None))
    message = (f"endpoint {performance.endpoint_name} sustains {performance.max_invocations} invocations/min at "
               f"{performance.model_latency} ms")
    if verdict.best is None:
        out.condition(st.SLA_SATISFIED, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, f"{message}: {verdict.reason}")
        out.condition(st.READY, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, f"{message}: {verdict.reason}")
    else:
        out.condition(st.SLA_SATISFIED, st.TRUE, Reason.ENDPOINT_MEETS_SLA,
                      f"{message}, meeting {constraints.describe()}")
        out.condition(st.READY, st.TRUE, Reason.ENDPOINT_BENCHMARKED, f"{message}, meeting {constraints.describe()}")


def _metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(metrics)
    computed = selection_module.cost_per_inference(metrics)
    if computed is not None:
        row["costPerInference"] = computed
    return row


def _row(verdict: selection_module.Verdict) -> dict[str, Any]:
    r = verdict.recommendation
    row: dict[str, Any] = {"recommendationId": r.recommendation_id, "environment": dict(r.environment),
                           "metrics": _metrics_row(r.metrics), "meetsSLA": verdict.meets_sla,
                           "slaMessage": verdict.message[:1024]}
    if r.instance_type:
        row["instanceType"] = r.instance_type
    if r.initial_instance_count is not None:
        row["initialInstanceCount"] = r.initial_instance_count
    if r.serverless:
        row["serverless"] = dict(r.serverless)
    if r.invocation_start:
        row["invocationStartTime"] = st.timestamp(r.invocation_start)
    if r.invocation_end:
        row["invocationEndTime"] = st.timestamp(r.invocation_end)
    row.update(r.provenance())
    return row


def _steps_status(steps: model.StepSummary) -> dict[str, Any]:
    return {"total": steps.total, "byStatus": dict(steps.by_status),
            "failures": [{"instanceType": f.instance_type, "environment": dict(f.environment),
                          "failureReason": f.failure_reason[:model.STEP_FAILURE_REASON_CHARS],
                          **({"skipped": True} if f.skipped else {})}
                         for f in steps.failures[:MAX_FAILED_STEPS]]}


def _progress(steps: model.StepSummary | None) -> str:
    if not steps or not steps.total:
        return ""
    return f" ({steps.by_status.get(JobStatus.COMPLETED, 0)} of {steps.total} benchmarks completed)"


def _failed_steps_text(steps: model.StepSummary | None) -> str:
    if not steps or not steps.failures:
        return ""
    parts = [f"{f.instance_type or 'serverless'}"
             f"{' (' + model.describe_environment(f.environment) + ')' if f.environment else ''}"
             f": {f.failure_reason}" for f in steps.failures[:MAX_FAILED_STEPS]]
    return "; failed benchmarks: " + "; ".join(parts)


def stops_on_delete(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether deleting the RightsizeJob must first stop its job (and so hold the finalizer)."""
    return ((spec or {}).get("deletionPolicy", "Stop") == "Stop" and job_may_be_running(status)
            and status.get("backendStatus") != JobStatus.STOPPING)


def _on_delete(spec: Mapping[str, Any], out: _Builder) -> Outcome:
    name = out.status.get("jobName")
    if not name or not stops_on_delete(spec, out.status):
        return Outcome((), {})
    result = out.observation.stop_result
    if out.observation.rejected is not None:
        # Keep the finalizer: releasing it would leave a job running and billing that nobody can see any more.
        message = (f"cannot stop job {name} before deletion: {out.observation.rejected.message}; set "
                   f"spec.deletionPolicy to Retain to delete without stopping it")
        return Outcome((EmitEvent(WARNING, Reason.JOB_STOP_FAILED, message),
                        RetryLater(out.observation.timing.retry_first, message)), {})
    if result is None:
        return Outcome((StopJob(name),), {})
    backend = registry.policy(spec_module.parse(spec, check=False).backend).display_name
    detail = "it had already finished" if result.already_finished else \
        f"{backend} did not know it" if result.not_found else "stop requested"
    # Recorded so that the delete handler's filter stops matching and the finalizer is released.
    return Outcome((EmitEvent(NORMAL, Reason.JOB_STOPPED, f"the RightsizeJob is being deleted: job {name}: {detail}"),),
                   {"backendStatus": JobStatus.STOPPING if not (result.already_finished or result.not_found)
                    else JobStatus.STOPPED})
