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
from typing import Any, Mapping

from rightsizer import selection as selection_module
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import base
from rightsizer.backends.local import request as local_request
from rightsizer.backends.sagemaker import translate
from rightsizer.promotion import flow as promotion_flow
from rightsizer.promotion import objects as promotion_objects
from rightsizer.promotion.memory import PromotionMemory

NORMAL, WARNING = "Normal", "Warning"
BACKEND_NAMES = {"sagemaker": "SageMaker", "local": "the local backend"}
MAX_RECOMMENDATION_ROWS = 20
MAX_FAILED_STEPS = 10
# status.failureReason's schema limit: a local job's reason lists every configuration's, which can run longer.
MAX_FAILURE_REASON_CHARS = 4096

# Conditions that get an Event whenever their (status, reason) changes.
EVENTFUL = (st.JOB_SUBMITTED, st.SUCCEEDED, st.SLA_SATISFIED, st.AWAITING_APPROVAL, st.PROMOTED, st.READY)
# False conditions that are a state, not a problem: their Events are Normal.
UNREMARKABLE_FALSE = ("NotSubmitted", "DryRun", "AwaitingApproval", "NoBestConfiguration", "NotRequired", "Approved",
                      "RolledBack")
# Refusals raised before any request left the operator: nobody refused anything yet.
UNSENT_REASONS = ("NoCredentials", "RegionUnknown")
PROMOTION_EFFECTS = (promotion_objects.ReadWorld, promotion_objects.ApplyObjects, promotion_objects.DeleteObjects)
# Status fields that describe one job; a job-defining edit clears them along with the job.
JOB_FIELDS = ("jobArn", "backendStatus", "failureReason", "startTime", "completionTime", "lastPolledTime",
              "recommendations", "recommendationsTotal", "endpointPerformances", "steps", "best", "nextPollTime",
              "submitAttempts", "progress")


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long to wait between looks at a job. SageMaker jobs take 45 minutes to hours: polling starts at
    30 s and slows to 120 s over the first hour (AWS's own SDK polls every 60-120 s)."""

    first_poll: float = 30
    max_poll: float = 120
    poll_ramp: float = 3600
    retry_first: float = 300  # after a refusal worth retrying (permissions, quotas), doubling up to retry_max
    retry_max: float = 3600
    not_found_grace: float = 300  # a just-created job may not be visible yet (eventual consistency)
    promotion_poll: float = 30  # ACK polls SageMaker every 30 s while an endpoint updates
    promotion_retry: float = 120  # after a promotion problem that may clear by itself (missing target, conflict)
    local_poll: float = 2  # a local job's describe is a look at memory: status follows each configuration

    def scaled(self, factor: float) -> "Timing":
        return Timing(*(value * factor for value in dataclasses.astuple(self)))

    def poll_interval(self, elapsed_seconds: float) -> float:
        ramp = min(1.0, max(0.0, elapsed_seconds) / self.poll_ramp)
        return self.first_poll + (self.max_poll - self.first_poll) * ramp

    def after(self, now: datetime.datetime, seconds: float) -> str:
        return st.timestamp(now + datetime.timedelta(seconds=seconds))


@dataclasses.dataclass(frozen=True)
class Observation:
    generation: int
    now: datetime.datetime
    owner: base.Owner | None = None
    timing: Timing = Timing()
    deleting: bool = False
    # The result of the one action just carried out, if any.
    job: base.JobSnapshot | None = None
    job_missing: bool = False
    submit_result: base.SubmitResult | None = None
    stop_result: base.StopDone | None = None
    rejected: base.Rejected | None = None
    # The RightsizeJob's annotations (approval, rollback) and the result of the promotion action just carried out.
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    world: promotion_objects.World | None = None
    applied: promotion_objects.ApplyResult | None = None
    deleted: promotion_objects.DeleteResult | None = None


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
    def effect(self):
        """The one action that touches the backend or the cluster, if any."""
        return next((a for a in self.actions if isinstance(a, (SubmitJob, DescribeJob, StopJob, *PROMOTION_EFFECTS))),
                    None)


def job_may_be_running(status: Mapping[str, Any]) -> bool:
    """Whether a backend job may exist and not have finished: what deletion must stop and polling must watch."""
    if not status.get("jobName") or status.get("backendStatus") in base.TERMINAL_STATUSES:
        return False
    submitted = st.find(status.get("conditions"), st.JOB_SUBMITTED)
    # Written ahead but refused by the backend: nothing was created.
    if submitted and submitted.get("status") == st.FALSE:
        return False
    succeeded = st.find(status.get("conditions"), st.SUCCEEDED)
    # SageMaker no longer knows the job: nothing to poll or stop.
    return not (succeeded and succeeded.get("reason") == "JobNotFound")


class _Builder:
    """Accumulates one outcome: conditions, status fields, events and actions."""

    def __init__(self, status: Mapping[str, Any], observation: Observation):
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
            kind = NORMAL if validated_new["reason"] == "Valid" else WARNING
            events.append(EmitEvent(kind, validated_new["reason"], validated_new["message"]))
        for kind in EVENTFUL:
            if st.changed(before, after, kind):
                new = st.find(after, kind)
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
        parsed = spec_module.parse(spec)
    except spec_module.InvalidSpec as invalid:
        _refuse(out, invalid.errors)
        return out.outcome()

    warnings = spec_module.soft_warnings(parsed)
    out.set(warnings=[w[: st.MAX_WARNING_CHARS] for w in warnings[: st.MAX_WARNINGS]] or None)
    if observation.owner is None:
        _validated(out, warnings)
        _not_started(out, parsed, "")
        return out.outcome()

    if parsed.backend == "local":
        request = local_request.build_request(spec, observation.owner, observation.generation,
                                              current_name=out.status.get("jobName"))
    else:
        try:
            request = translate.build_request(parsed, observation.owner, observation.generation,
                                              current_name=out.status.get("jobName"))
        except translate.RequestInvalid as invalid:
            _refuse(out, [f"the SageMaker request would be refused: {error}" for error in invalid.errors])
            return out.outcome()
    _validated(out, warnings)
    _drive_job(out, parsed, request)
    if parsed.promotion and not any(isinstance(a, (SubmitJob, DescribeJob, StopJob, RetryLater)) for a in out.actions):
        _promote(out, parsed)
    elif not parsed.promotion:
        awaiting = st.find(out.status.get("conditions"), st.AWAITING_APPROVAL)
        if awaiting and awaiting["status"] == st.TRUE:
            # Nobody is asked any more: a stale True would keep Argo CD showing the job Suspended.
            out.condition(st.AWAITING_APPROVAL, st.FALSE, "NotRequired", "spec.promotion was removed")
    return out.outcome()


def _validated(out: _Builder, warnings: list[str]) -> None:
    if warnings:
        out.condition(st.VALIDATED, st.TRUE, "ValidWithWarnings", f"{len(warnings)} warning(s): " + "; ".join(warnings))
    else:
        out.condition(st.VALIDATED, st.TRUE, "Valid", "the spec is valid")


def _refuse(out: _Builder, errors: list[str]) -> None:
    """A spec the operator will not run: say why, make no backend call. A job already running is left alone."""
    message = "invalid spec: " + "; ".join(errors)
    out.condition(st.VALIDATED, st.FALSE, "InvalidSpec", message)
    out.condition(st.READY, st.FALSE, "InvalidSpec", message)
    out.set(warnings=None)


def _not_started(out: _Builder, parsed: spec_module.RightsizeJobSpec, why: str) -> None:
    suffix = f" ({why})" if why else ""
    out.condition(st.READY, st.UNKNOWN, "JobPending",
                  f"the spec is valid; {spec_module.describe_job(parsed)} is not submitted yet{suffix}")
    out.condition(st.JOB_SUBMITTED, st.FALSE, "NotSubmitted",
                  f"no job has been submitted for generation {out.observation.generation}")
    out.condition(st.SUCCEEDED, st.UNKNOWN, "JobPending", "no job has run yet")
    out.condition(st.SLA_SATISFIED, st.UNKNOWN, "NoResults", "no configuration has been benchmarked yet")


# -- promotion --------------------------------------------------------------------------------------------------

def _promote(out: _Builder, parsed: spec_module.RightsizeJobSpec) -> None:
    observation, status = out.observation, out.status
    succeeded = st.find(status.get("conditions"), st.SUCCEEDED)
    job_done = bool(succeeded and succeeded["status"] == st.TRUE)
    if not job_done and not status.get("promotion"):
        return  # nothing was promoted and nothing can be yet
    sla = st.find(status.get("conditions"), st.SLA_SATISFIED)
    owner = observation.owner
    step = promotion_flow.advance(promotion_flow.Context(
        promotion=parsed.promotion, namespace=owner.namespace, job_name=owner.name, owner_uid=owner.uid,
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

def _drive_job(out: _Builder, parsed: spec_module.RightsizeJobSpec, request: dict[str, Any]) -> None:
    observation = out.observation
    desired, current = request["JobName"], out.status.get("jobName")

    if current and current != desired:
        # A job-defining edit: the running job answers a question nobody asks any more.
        if observation.rejected is not None:
            _retry_later(out, f"cannot stop job {current}, which the spec no longer describes", observation.rejected)
            return
        if job_may_be_running(out.status) and observation.stop_result is None and not observation.job_missing:
            out.condition(st.READY, st.UNKNOWN, "JobReplacing",
                          f"the spec changed: stopping job {current} before submitting {desired}")
            out.actions.append(StopJob(current))
            return
        out.event(NORMAL, "JobReplaced", f"the spec changed: job {current} is replaced by {desired}")
        out.set(**{field: None for field in JOB_FIELDS})
        out.set(jobName=None)
        current = None

    submitted = st.find(out.status.get("conditions"), st.JOB_SUBMITTED)
    if current is None or not submitted or submitted["status"] != st.TRUE:
        _submit(out, parsed, request, submitted)
        return
    _follow(out, parsed, request)


def _submit(out: _Builder, parsed, request: dict[str, Any], submitted: Mapping[str, Any] | None) -> None:
    observation, now = out.observation, out.observation.now
    name = request["JobName"]
    result = observation.submit_result
    if result is None:
        if observation.job is not None:  # a written-ahead job found by describe: it was created after all
            out.condition(st.JOB_SUBMITTED, st.TRUE, "JobAdopted", f"job {name} was created by an earlier attempt")
            out.set(jobArn=observation.job.job_arn, startTime=st.timestamp(now))
            _apply_snapshot(out, parsed, observation.job)
            return
        if observation.rejected is not None:  # a refused call (a look before creating, or no region): no spin
            _retry_later(out, f"cannot reach SageMaker for job {name}", observation.rejected)
            return
        waiting_until = st.parse_timestamp(out.status.get("nextPollTime"))
        refused = submitted and submitted["status"] == st.FALSE and submitted["reason"] != "NotSubmitted"
        if refused and out.status.get("jobName") == name:
            if waiting_until is None or now < waiting_until:
                return  # refused for good (until the spec changes), or waiting to retry
        elif out.status.get("jobName") == name and submitted and submitted["status"] == st.UNKNOWN \
                and not observation.job_missing:
            # Written ahead by an earlier attempt that may have reached SageMaker: look before creating.
            if waiting_until is None or now >= waiting_until:
                out.actions.append(DescribeJob(name))
            return
        out.set(jobName=name, phase=st.PENDING)
        out.condition(st.JOB_SUBMITTED, st.UNKNOWN, "Submitting", f"submitting job {name}")
        out.condition(st.READY, st.UNKNOWN, "JobSubmitting", f"submitting {spec_module.describe_job(parsed)} as {name}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, "JobPending", "the job has not run yet")
        out.condition(st.SLA_SATISFIED, st.UNKNOWN, "NoResults", "no configuration has been benchmarked yet")
        out.actions.append(SubmitJob(base.JobPlan(name, request)))
        return

    if isinstance(result, (base.Submitted, base.Adopted)):
        adopted = isinstance(result, base.Adopted)
        arn = result.snapshot.job_arn if adopted else result.job_arn
        out.condition(st.JOB_SUBMITTED, st.TRUE, "JobAdopted" if adopted else "JobSubmitted",
                      f"job {name} {'was created by an earlier attempt' if adopted else 'was submitted'}")
        out.set(jobArn=arn, startTime=st.timestamp(now), submitAttempts=None)
        if adopted:
            _apply_snapshot(out, parsed, result.snapshot)
        else:
            first_look = observation.timing.local_poll if parsed.backend == "local" else observation.timing.first_poll
            out.set(phase=st.SUBMITTED, backendStatus=base.PENDING,
                    nextPollTime=observation.timing.after(now, first_look))
            out.condition(st.READY, st.UNKNOWN, "JobInProgress", f"job {name} is {base.PENDING}")
        return

    if isinstance(result, base.NameTaken):
        out.condition(st.JOB_SUBMITTED, st.FALSE, "NameTaken", result.message)
        out.condition(st.READY, st.FALSE, "NameTaken", result.message)
        out.set(nextPollTime=None)
        return

    attempts = int(out.status.get("submitAttempts") or 0) + 1
    if result.reason in UNSENT_REASONS:
        message = f"job {name} was not submitted to {BACKEND_NAMES[parsed.backend]}: {result.message}"
    else:
        message = f"{BACKEND_NAMES[parsed.backend]} refused job {name}: {result.message}"
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


def _follow(out: _Builder, parsed, request: dict[str, Any]) -> None:
    """A submitted job: poll it while it runs, fold its results in, re-select when only the policy changed."""
    observation, now, name = out.observation, out.observation.now, out.status["jobName"]
    if observation.job is not None:
        _apply_snapshot(out, parsed, observation.job)
        return
    if parsed.backend == "local" and (observation.job_missing or observation.submit_result is not None):
        _resume_local(out, parsed, request)
        return
    if observation.job_missing:
        started = st.parse_timestamp(out.status.get("startTime")) or now
        if (now - started).total_seconds() < observation.timing.not_found_grace:
            out.set(nextPollTime=observation.timing.after(now, observation.timing.first_poll))
            return
        message = f"job {name} was submitted but SageMaker no longer knows it"
        out.condition(st.SUCCEEDED, st.FALSE, "JobNotFound", message)
        out.condition(st.READY, st.FALSE, "JobNotFound", message)
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
            _judge_endpoint(out, parsed, [base.EndpointPerformance(p["endpointName"], p["maxInvocations"],
                                                                   p["modelLatency"]) for p in performances])
            return
        total = out.status.get("recommendationsTotal")
        _select(out, parsed, [base.Recommendation.from_status_row(row) for row in out.status.get("recommendations") or []])
        if total is not None and total > out.status["recommendationsTotal"]:
            out.set(recommendationsTotal=total)  # status keeps 20 rows; the job had more


def _resume_local(out: _Builder, parsed, request: dict[str, Any]) -> None:
    """A local job lives in the operator's process: after a restart it is gone. Run it again, without the
    configurations status already holds."""
    observation, name = out.observation, out.status["jobName"]
    result = observation.submit_result
    if result is None:
        finished = out.status.get("recommendations") or []
        # A configuration that failed (its server crashed, the threshold broke at once) would fail again; one
        # skipped for want of room is judged afresh (the pod may have been given more).
        failed = [f for f in (out.status.get("steps") or {}).get("failures") or [] if not f.get("skipped")]
        out.event(NORMAL, "JobResumed", f"job {name} was interrupted (the operator restarted); running the "
                                        f"configurations it had not finished ({len(finished)} measured and "
                                        f"{len(failed)} failed before)")
        out.actions.append(SubmitJob(base.JobPlan(name, {**request, "Completed": finished, "Failed": failed,
                                                         "StartedAt": out.status.get("startTime")})))
        return
    if isinstance(result, base.Adopted):
        _apply_snapshot(out, parsed, result.snapshot)
        return
    if isinstance(result, base.Submitted):
        timing = observation.timing
        out.set(nextPollTime=timing.after(observation.now, timing.local_poll))
        return
    message = f"cannot resume job {name}: {getattr(result, 'message', result)}"
    out.condition(st.READY, st.FALSE, "JobFailed", message)
    out.condition(st.SUCCEEDED, st.FALSE, "JobFailed", message)
    out.set(nextPollTime=None, phase=st.FAILED)


def _retry_later(out: _Builder, what: str, rejected: base.Rejected) -> None:
    timing, now = out.observation.timing, out.observation.now
    retry_at = timing.after(now, timing.retry_first)
    out.condition(st.READY, st.FALSE, rejected.reason, f"{what}: {rejected.message}; retrying at {retry_at}")
    out.set(nextPollTime=retry_at)


def _apply_snapshot(out: _Builder, parsed, snapshot: base.JobSnapshot) -> None:
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
    if snapshot.status in base.ACTIVE_STATUSES:
        timing = out.observation.timing
        interval = timing.local_poll if parsed.backend == "local" else \
            timing.poll_interval((now - started).total_seconds())
        out.set(phase=st.SUBMITTED if snapshot.status == base.PENDING else st.IN_PROGRESS,
                nextPollTime=timing.after(now, interval))
        out.condition(st.READY, st.UNKNOWN, "JobInProgress", f"job {name} is {snapshot.status}{progress}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, "JobInProgress", f"job {name} is {snapshot.status}{progress}")
        if snapshot.recommendations:
            _select(out, parsed, snapshot.recommendations, final=False)
        return

    out.set(nextPollTime=None)
    if snapshot.status == base.COMPLETED:
        out.set(phase=st.COMPLETED)
        out.condition(st.SUCCEEDED, st.TRUE, "JobCompleted", f"job {name} completed{progress}")
        if snapshot.endpoint_performances and not snapshot.recommendations:
            _judge_endpoint(out, parsed, snapshot.endpoint_performances)
        else:
            _select(out, parsed, snapshot.recommendations)
        return

    failed_steps = _failed_steps_text(snapshot.steps)
    if snapshot.status == base.FAILED:
        message = f"job {name} failed: {snapshot.failure_reason or 'SageMaker gave no reason'}{failed_steps}"
        out.set(phase=st.FAILED)
        out.condition(st.SUCCEEDED, st.FALSE, "JobFailed", message)
        out.condition(st.READY, st.FALSE, "JobFailed", message)
    elif snapshot.status == base.STOPPED:
        message = (f"job {name} was stopped before it completed{progress}; its partial results are listed but "
                   f"not selected from{failed_steps}")
        out.set(phase=st.STOPPED)
        out.condition(st.SUCCEEDED, st.FALSE, "JobStopped", message)
        out.condition(st.READY, st.FALSE, "JobStopped", message)
    else:
        message = f"job {name} is {snapshot.status}, which no operation of this operator causes"
        out.set(phase=st.FAILED)
        out.condition(st.SUCCEEDED, st.FALSE, "JobDeleted", message)
        out.condition(st.READY, st.FALSE, "JobDeleted", message)
    out.condition(st.SLA_SATISFIED, st.UNKNOWN, "NoResults", "the job did not complete")
    out.set(best=None)
    if snapshot.recommendations:
        _select(out, parsed, snapshot.recommendations, final=False)


def _select(out: _Builder, parsed, recommendations, final: bool = True) -> None:
    constraints = selection_module.constraints_for(parsed)
    chosen = selection_module.select(recommendations, parsed.selection.objective, constraints)
    rows = [_row(v) for v in chosen.verdicts]
    out.set(recommendations=rows[:MAX_RECOMMENDATION_ROWS], recommendationsTotal=len(rows))
    if not final:
        return
    if chosen.best is None:
        out.set(best=None)
        out.condition(st.SLA_SATISFIED, st.FALSE, "NoCandidateMeetsSLA", chosen.reason)
        out.condition(st.READY, st.FALSE, "NoCandidateMeetsSLA", chosen.reason)
        return
    best = chosen.best
    previous = (out.before.get("best") or {}).get("recommendationId")
    if previous and previous != best.recommendation_id:
        out.event(NORMAL, "BestChanged", f"the selection now prefers {chosen.reason}")
    out.set(best={"recommendationId": best.recommendation_id, "instanceType": best.instance_type,
                  "initialInstanceCount": best.initial_instance_count, "environment": dict(best.environment),
                  "metrics": _metrics_row(best.metrics), "reason": chosen.reason[:1024]})
    out.condition(st.SLA_SATISFIED, st.TRUE, "CandidateMeetsSLA", chosen.reason)
    out.condition(st.READY, st.TRUE, "BestSelected", chosen.reason)


def _judge_endpoint(out: _Builder, parsed, performances) -> None:
    """An existing-endpoint job measures the endpoint as deployed: there is nothing to choose, only a verdict."""
    constraints = selection_module.constraints_for(parsed)
    performance = performances[0]
    as_row = base.Recommendation(performance.endpoint_name, None, None, {},
                                 {"maxInvocations": performance.max_invocations,
                                  "modelLatency": performance.model_latency})
    verdict = selection_module.select([as_row], "MaxInvocations", dataclasses.replace(constraints, max_cost_per_hour=None))
    message = (f"endpoint {performance.endpoint_name} sustains {performance.max_invocations} invocations/min at "
               f"{performance.model_latency} ms")
    if verdict.best is None:
        out.condition(st.SLA_SATISFIED, st.FALSE, "NoCandidateMeetsSLA", f"{message}: {verdict.reason}")
        out.condition(st.READY, st.FALSE, "NoCandidateMeetsSLA", f"{message}: {verdict.reason}")
    else:
        out.condition(st.SLA_SATISFIED, st.TRUE, "EndpointMeetsSLA", f"{message}, meeting {constraints.describe()}")
        out.condition(st.READY, st.TRUE, "EndpointBenchmarked", f"{message}, meeting {constraints.describe()}")


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
    return row


def _steps_status(steps: base.StepSummary) -> dict[str, Any]:
    return {"total": steps.total, "byStatus": dict(steps.by_status),
            "failures": [{"instanceType": f.instance_type, "environment": dict(f.environment),
                          "failureReason": f.failure_reason[:base.STEP_FAILURE_REASON_CHARS],
                          **({"skipped": True} if f.skipped else {})}
                         for f in steps.failures[:MAX_FAILED_STEPS]]}


def _progress(steps: base.StepSummary | None) -> str:
    if not steps or not steps.total:
        return ""
    return f" ({steps.by_status.get(base.COMPLETED, 0)} of {steps.total} benchmarks completed)"


def _failed_steps_text(steps: base.StepSummary | None) -> str:
    if not steps or not steps.failures:
        return ""
    parts = [f"{f.instance_type or 'serverless'}"
             f"{' (' + selection_module.describe_environment(f.environment) + ')' if f.environment else ''}"
             f": {f.failure_reason}" for f in steps.failures[:MAX_FAILED_STEPS]]
    return "; failed benchmarks: " + "; ".join(parts)


def stops_on_delete(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether deleting the RightsizeJob must first stop its job (and so hold the finalizer)."""
    return ((spec or {}).get("deletionPolicy", "Stop") == "Stop" and job_may_be_running(status)
            and status.get("backendStatus") != base.STOPPING)


def _on_delete(spec: Mapping[str, Any], out: _Builder) -> Outcome:
    name = out.status.get("jobName")
    if not stops_on_delete(spec, out.status):
        return Outcome((), {})
    result = out.observation.stop_result
    if out.observation.rejected is not None:
        # Keep the finalizer: releasing it would leave a job running and billing that nobody can see any more.
        message = (f"cannot stop job {name} before deletion: {out.observation.rejected.message}; set "
                   f"spec.deletionPolicy to Retain to delete without stopping it")
        return Outcome((EmitEvent(WARNING, "JobStopFailed", message),
                        RetryLater(out.observation.timing.retry_first, message)), {})
    if result is None:
        return Outcome((StopJob(name),), {})
    detail = "it had already finished" if result.already_finished else \
        "SageMaker did not know it" if result.not_found else "stop requested"
    # Recorded so that the delete handler's filter stops matching and the finalizer is released.
    return Outcome((EmitEvent(NORMAL, "JobStopped", f"the RightsizeJob is being deleted: job {name}: {detail}"),),
                   {"backendStatus": base.STOPPING if not (result.already_finished or result.not_found)
                    else base.STOPPED})
