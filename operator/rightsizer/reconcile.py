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
from rightsizer import state as state_module
from rightsizer import status as st
from rightsizer.backends import base, registry
from rightsizer.backends.base import Timing
from rightsizer.model import JobStatus
from rightsizer.status import Reason
from rightsizer.promotion import flow as promotion_flow
from rightsizer.promotion import objects as promotion_objects
from rightsizer.promotion import targets as promotion_targets
from rightsizer.promotion.memory import PromotionMemory
from rightsizer.promotion.reasons import Reason as PromotionReason
from rightsizer.state import BaselineState, Best, JobState, RecommendationRow

NORMAL, WARNING = "Normal", "Warning"
MAX_RECOMMENDATION_ROWS = 20
MAX_FAILED_STEPS = 10
MAX_PROGRESS_RUNS = 200  # status.progress.runs' maxItems: runs beyond it are not kept across a restart
# status.failureReason's schema limit: a local job's reason lists every configuration's, which can run longer.
MAX_FAILURE_REASON_CHARS = 4096
MAX_SCALING_MESSAGE_CHARS = 1024  # status.best.scaling.refused.message's schema limit

# Conditions that get an Event whenever their (status, reason) changes.
EVENTFUL = (st.JOB_SUBMITTED, st.SUCCEEDED, st.SLA_SATISFIED, st.SCALING_RECOMMENDED, st.AWAITING_APPROVAL,
            st.PROMOTED, st.READY)
# False conditions that are a state, not a problem: their Events are Normal.
UNREMARKABLE_FALSE = (Reason.NOT_SUBMITTED, PromotionReason.NOT_REQUIRED, PromotionReason.DRY_RUN,
                      PromotionReason.AWAITING_APPROVAL, PromotionReason.NO_BEST_CONFIGURATION,
                      PromotionReason.APPROVED, PromotionReason.ROLLED_BACK, Reason.NO_BEST_CONFIGURATION,
                      PromotionReason.INSUFFICIENT_SAVINGS)
PROMOTION_EFFECTS = (promotion_objects.ReadWorld, promotion_objects.ApplyObjects, promotion_objects.DeleteObjects)


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


@dataclasses.dataclass(frozen=True)
class ScalingAnswer:
    """The backend's service answered RecommendScaling."""

    scaling: model.Scaling


@dataclasses.dataclass(frozen=True)
class ScalingRefused:
    """The backend's service refused RecommendScaling (kept apart from CallRefused, which the job's calls answer)."""

    rejected: base.Rejected


@dataclasses.dataclass(frozen=True)
class BaselineRead:
    """What ReadBaseline found (apart from promotion's own reads, which a World answers)."""

    world: promotion_objects.World


# What the one action just carried out came back with: each action has its own answers.
ActionResult = (JobSeen | JobMissing | CallRefused | base.Submitted | base.Adopted | base.Rejected | base.NameTaken
                | base.StopDone | ScalingAnswer | ScalingRefused | promotion_objects.World
                | promotion_objects.ApplyResult | promotion_objects.DeleteResult | BaselineRead)
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
    # What the backend would refuse before sending anything (no credentials): the shell asks it when a submit is
    # next, and the job is then refused at once, with nothing written ahead.
    unsendable: base.Rejected | None = None

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
    def scaling_answer(self) -> ScalingAnswer | ScalingRefused | None:
        return self.result if isinstance(self.result, (ScalingAnswer, ScalingRefused)) else None

    @property
    def world(self) -> promotion_objects.World | None:
        return self.result if isinstance(self.result, promotion_objects.World) else None

    @property
    def applied(self) -> promotion_objects.ApplyResult | None:
        return self.result if isinstance(self.result, promotion_objects.ApplyResult) else None

    @property
    def deleted(self) -> promotion_objects.DeleteResult | None:
        return self.result if isinstance(self.result, promotion_objects.DeleteResult) else None

    @property
    def baseline_read(self) -> promotion_objects.World | None:
        return self.result.world if isinstance(self.result, BaselineRead) else None


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
class RecommendScaling:
    """Ask the backend's service how the best configuration should scale (SageMaker's
    GetScalingConfigurationRecommendation); the policy planned the call."""

    call: base.ScalingCall


@dataclasses.dataclass(frozen=True)
class ReadBaseline:
    """Read what the promotion target serves now (spec.baseline), before the job that measures it is submitted."""

    read: promotion_objects.ReadWorld


@dataclasses.dataclass(frozen=True)
class RetryLater:
    """Stop here and have the handler run again after `seconds` (the shell raises kopf's TemporaryError)."""

    seconds: float
    message: str


# The actions of the job's part of a visit (the backend's calls, and reading the baseline the job measures): at
# most one per outcome, and promotion waits for them.
BACKEND_EFFECTS = (SubmitJob, DescribeJob, StopJob, RecommendScaling, ReadBaseline)


@dataclasses.dataclass(frozen=True)
class Outcome:
    actions: tuple[Any, ...]
    status_patch: dict[str, Any]

    @property
    def effect(self) -> Any:
        """The one action that touches the backend or the cluster, if any."""
        return next((a for a in self.actions if isinstance(a, (*BACKEND_EFFECTS, *PROMOTION_EFFECTS))), None)


def job_may_be_running(status: JobState) -> bool:
    """Whether a backend job may exist and not have finished: what deletion must stop and polling must watch."""
    if not status.job_name or status.backend_status in model.TERMINAL_STATUSES:
        return False
    # Written ahead but refused by the backend: nothing was created.
    if status.condition_is(st.JOB_SUBMITTED, st.FALSE):
        return False
    succeeded = status.condition(st.SUCCEEDED)
    # The backend no longer knows the job: nothing to poll or stop.
    return not (succeeded and succeeded.reason == Reason.JOB_NOT_FOUND)


def results_final(status: JobState) -> bool:
    """Whether the job has ended with results to select from: completed, or stopped after measuring some."""
    succeeded = status.condition(st.SUCCEEDED)
    if succeeded is None:
        return False
    return succeeded.status == st.TRUE or (succeeded.reason == Reason.JOB_STOPPED and bool(status.recommendations))


class _Builder:
    """Accumulates one outcome: conditions, status fields, events and actions."""

    def __init__(self, status: Mapping[str, Any], observation: Observation):
        self.policy: base.BackendPolicy | None = None  # the job's backend, once the spec is valid
        self.before = JobState.from_storage(status)
        self.status = self.before
        self.observation = observation
        self.actions: list[Any] = []

    def set(self, **fields: Any) -> None:
        self.status = dataclasses.replace(self.status, **fields)

    def condition(self, kind: str, value: st.ConditionStatus, reason: str, message: str) -> None:
        self.set(conditions=st.set_condition(self.status.conditions, kind, value, reason, message,
                                             self.observation.generation, self.observation.now))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, message))

    def outcome(self) -> Outcome:
        before, after = self.before.conditions, self.status.conditions
        events = []
        validated_old, validated_new = st.find(before, st.VALIDATED), st.find(after, st.VALIDATED)
        if validated_new and (validated_old is None or (validated_old.status, validated_old.reason, validated_old.message)
                              != (validated_new.status, validated_new.reason, validated_new.message)):
            kind = NORMAL if validated_new.reason == Reason.VALID else WARNING
            events.append(EmitEvent(kind, validated_new.reason, validated_new.message))
        for kind in EVENTFUL:
            if st.changed(before, after, kind):
                new = st.find(after, kind)
                assert new is not None  # changed() says it is there
                if new.status == st.UNKNOWN and kind != st.READY:
                    continue
                bad = new.status == st.FALSE and new.reason not in UNREMARKABLE_FALSE
                events.append(EmitEvent(WARNING if bad else NORMAL, new.reason, new.message))
        self.set(observed_generation=self.observation.generation)
        unique: list[EmitEvent] = []
        for event in events + [a for a in self.actions if isinstance(a, EmitEvent)]:
            if all((event.reason, event.message) != (seen.reason, seen.message) for seen in unique):
                unique.append(event)
        return Outcome(tuple(unique + [a for a in self.actions if not isinstance(a, EmitEvent)]),
                       state_module.changes(self.before, self.status))


def reconcile(spec: Mapping[str, Any], status: Mapping[str, Any], observation: Observation) -> Outcome:
    out = _Builder(status, observation)
    if observation.deleting:
        return _on_delete(spec, out)
    if not out.status.phase:
        out.set(phase=st.PENDING)

    try:
        validated = registry.validate(spec)
    except spec_module.InvalidSpec as invalid:
        _refuse(out, invalid.errors)
        return out.outcome()

    parsed, out.policy, warnings = validated.spec, validated.policy, list(validated.warnings)
    out.set(warnings=tuple(w[: st.MAX_WARNING_CHARS] for w in warnings[: st.MAX_WARNINGS]) or None)
    if observation.owner is None:
        _validated(out, warnings)
        _not_started(out, parsed, "")
        return out.outcome()

    try:
        plan = out.policy.plan(parsed, observation.owner, observation.generation, out.status.job_name,
                               baseline=_recorded_baseline(parsed, out.status))
    except base.PlanInvalid as invalid:
        _refuse(out, invalid.errors)
        return out.outcome()
    _validated(out, warnings)
    _drive_job(out, parsed, plan)
    _recommend_scaling(out, parsed)
    # Promotion waits for the job's calls and for the scaling it would carry.
    if parsed.promotion and not any(isinstance(a, (*BACKEND_EFFECTS, RetryLater)) for a in out.actions):
        _promote(out, parsed, parsed.promotion)
    elif not parsed.promotion:
        if out.status.condition_is(st.AWAITING_APPROVAL, st.TRUE):
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
    if out.status.phase == st.PENDING:
        out.set(phase=st.FAILED)  # nothing will run until an edit: Pending would say it is about to


def _not_started(out: _Builder, parsed: spec_module.RightsizeJobSpec, why: str) -> None:
    suffix = f" ({why})" if why else ""
    if out.status.phase == st.FAILED and not out.status.job_name:
        out.set(phase=st.PENDING)  # refused as invalid before, valid now: it waits to be submitted
    out.condition(st.READY, st.UNKNOWN, Reason.JOB_PENDING,
                  f"the spec is valid; {_policy(out).describe_job(parsed)} is not submitted yet{suffix}")
    out.condition(st.JOB_SUBMITTED, st.FALSE, Reason.NOT_SUBMITTED,
                  f"no job has been submitted for generation {out.observation.generation}")
    out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_PENDING, "no job has run yet")
    out.condition(st.SLA_SATISFIED, st.UNKNOWN, Reason.NO_RESULTS, "no configuration has been benchmarked yet")


# -- promotion --------------------------------------------------------------------------------------------------

def _promote(out: _Builder, parsed: spec_module.RightsizeJobSpec, promotion: spec_module.Promotion) -> None:
    observation, status = out.observation, out.status
    owner = observation.owner
    assert owner is not None, "a job is driven only with its owner known"
    job_done = results_final(status)
    if not job_done and not status.promotion:
        return  # nothing was promoted and nothing can be yet
    sla = status.condition(st.SLA_SATISFIED)
    step = promotion_flow.advance(promotion_flow.Context(
        promotion=promotion, namespace=owner.namespace, job_name=owner.name, owner_uid=owner.uid,
        generation=observation.generation, best=status.best.for_storage() if job_done and status.best else None,
        sla_satisfied=sla.status if sla else None, annotations=observation.annotations,
        memory=PromotionMemory.from_storage(status.promotion), now=observation.now, world=observation.world,
        applied=observation.applied, deleted=observation.deleted, baseline=status.baseline if job_done else None,
        objective=parsed.selection.objective))
    out.set(promotion=step.memory.for_storage())
    for kind, value in ((st.AWAITING_APPROVAL, step.awaiting), (st.PROMOTED, step.promoted), (st.READY, step.ready)):
        if value is not None:
            condition_status, reason, message = value
            out.condition(kind, st.ConditionStatus(condition_status), reason, message)
    if step.phase:
        out.set(phase=st.Phase(step.phase))
    for event in step.events:
        out.event(*event)
    timing = observation.timing
    if step.poll_after == "poll" or step.effect is not None:
        # With an action under way a look is always due soon, so a restart mid-visit resumes it, and the poll
        # schedule (which reads nextPollTime) never drops the object and takes it up again within one visit.
        out.set(next_poll_time=timing.after(observation.now, timing.promotion_poll))
    elif step.poll_after == "retry":
        out.set(next_poll_time=timing.after(observation.now, timing.promotion_retry))
    elif job_done:
        out.set(next_poll_time=None)
    if step.effect is not None:
        out.actions.append(step.effect)


# -- scaling ------------------------------------------------------------------------------------------------------

def _recommend_scaling(out: _Builder, parsed: spec_module.RightsizeJobSpec) -> None:
    """spec.autoscaling -> status.best.scaling, asked of the backend's policy once per best configuration and
    objective: status is the memory, so a restart finds the answer (or the refusal) and asks nothing again."""
    objective, best = parsed.autoscaling, out.status.best
    if objective is None:
        if best is not None and best.scaling is not None:
            out.set(best=dataclasses.replace(best, scaling=None))  # promotion must not apply what nobody asks for
        if out.status.condition(st.SCALING_RECOMMENDED) is not None:
            out.set(conditions=tuple(c for c in out.status.conditions if c.type != st.SCALING_RECOMMENDED))
        return
    if not results_final(out.status):
        out.condition(st.SCALING_RECOMMENDED, st.UNKNOWN, Reason.SCALING_PENDING,
                      f"the scaling for {objective.describe()} follows the job's selected configuration")
        return
    if best is None:
        out.condition(st.SCALING_RECOMMENDED, st.FALSE, Reason.NO_BEST_CONFIGURATION,
                      "no configuration was selected: there is nothing to scale")
        return
    result = out.observation.scaling_answer
    scaling: model.Scaling
    if isinstance(result, ScalingAnswer):
        scaling = result.scaling
    elif isinstance(result, ScalingRefused):
        scaling = model.Scaling(objective, _policy(out).display_name, refused=model.ScalingRefusal(
            result.rejected.reason, result.rejected.message[:MAX_SCALING_MESSAGE_CHARS]))
    elif best.scaling is not None and best.scaling.objective == objective:
        scaling = best.scaling  # asked already for this configuration and objective
    else:
        if out.status.job_name is None or any(isinstance(a, (*BACKEND_EFFECTS, RetryLater)) for a in out.actions):
            return  # one call at a time; a final job always has a name
        planned = _policy(out).scaling(parsed, objective, out.status.job_name, out.status.backend_status,
                                       best.recommendation)
        if isinstance(planned, base.ScalingCall):
            # A look soon: a restart before the answer asks again, and the poll schedule (which reads nextPollTime)
            # does not drop the object at this write and take it up again at the promotion that follows the answer.
            timing = out.observation.timing
            out.set(next_poll_time=timing.after(out.observation.now, _policy(out).first_poll(timing)))
            out.actions.append(RecommendScaling(planned))
            return
        scaling = planned
    if result is not None:
        out.set(next_poll_time=None)  # the call is answered; a promotion that follows sets its own
    out.set(best=dataclasses.replace(best, scaling=scaling))
    _scaling_condition(out, best.recommendation, scaling)


def _scaling_condition(out: _Builder, best: model.Recommendation, scaling: model.Scaling) -> None:
    if scaling.refused is not None:
        out.condition(st.SCALING_RECOMMENDED, st.FALSE, scaling.refused.reason,
                      f"{scaling.source}: {scaling.refused.message} (asked again when spec.autoscaling or the best "
                      f"configuration changes)")
        return
    capacities = scaling.capacities
    what = f"{capacities[0]}-{capacities[1]} instances" if capacities else "no capacities"
    policies = "; ".join(f"{p.metric} at {p.target_value:g}" for p in scaling.policies) or "no target tracking"
    out.condition(st.SCALING_RECOMMENDED, st.TRUE, Reason.SCALING_RECOMMENDED,
                  f"{best.instance_type or best.recommendation_id} for {scaling.objective.describe()}: {what}, "
                  f"{policies} ({scaling.source})")


# -- the job ------------------------------------------------------------------------------------------------------

def _policy(out: _Builder) -> base.BackendPolicy:
    assert out.policy is not None, "the spec names a backend before anything asks for it"
    return out.policy


def _drive_job(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    observation = out.observation
    desired, current = plan.job_name, out.status.job_name

    if current and current != desired:
        # A job-defining edit: the running job answers a question nobody asks any more.
        # With spec.baseline the new job's name waits for the target's read (it hashes what the target serves).
        successor = "a new job" if parsed.baseline is not None else desired
        if observation.rejected is not None:
            _retry_later(out, f"cannot stop job {current}, which the spec no longer describes", observation.rejected)
            return
        if job_may_be_running(out.status) and observation.stop_result is None and not observation.job_missing:
            out.condition(st.READY, st.UNKNOWN, Reason.JOB_REPLACING,
                          f"the spec changed: stopping job {current} before submitting {successor}")
            out.actions.append(StopJob(current))
            return
        out.event(NORMAL, Reason.JOB_REPLACED, f"the spec changed: job {current} is replaced by {successor}")
        out.status = out.status.cleared(*state_module.JOB_FIELDS, "job_name")
        current = None

    submitted = out.status.condition(st.JOB_SUBMITTED)
    if current is None or not submitted or submitted.status != st.TRUE:
        if parsed.baseline is not None and _recorded_baseline(parsed, out.status) is None:
            # Never read, or cleared with the job it was read for: the new job measures what is served now.
            with_baseline = _read_baseline(out, parsed)
            if with_baseline is None:
                return
            plan = with_baseline
        _submit(out, parsed, plan, submitted)
        return
    _follow(out, parsed, plan)


# -- spec.baseline -----------------------------------------------------------------------------------------------

def _recorded_baseline(parsed: spec_module.RightsizeJobSpec, status: JobState) -> model.CurrentConfiguration | None:
    """What status.baseline read from the promotion target, when the spec still asks for it from that target: the
    job's name hashes it, so the same read gives the same job after a restart, and another target a new one."""
    recorded, promotion = status.baseline, parsed.promotion
    if parsed.baseline is None or promotion is None or recorded is None or not recorded.for_target(promotion.target):
        return None
    return recorded.current


def _read_baseline(out: _Builder, parsed: spec_module.RightsizeJobSpec) -> base.JobPlan | None:
    """Before a job with spec.baseline is submitted: read what the target serves now (one action), record it in
    status.baseline, and plan the job with it; None while the read is under way or when it cannot be measured."""
    observation, promotion, owner = out.observation, parsed.promotion, out.observation.owner
    assert promotion is not None and owner is not None, "spec.baseline needs spec.promotion; a job needs its owner"
    target = promotion.target
    ref = promotion_objects.ObjectRef(target.api_version, target.kind, owner.namespace, target.name)
    what = ref.describe()
    world = observation.baseline_read
    if world is None:
        out.condition(st.READY, st.UNKNOWN, Reason.JOB_SUBMITTING,
                      f"reading what {what} serves now (spec.baseline) before submitting "
                      f"{_policy(out).describe_job(parsed)}")
        out.actions.append(ReadBaseline(promotion_targets.baseline_reads(ref)))
        return None
    try:
        current = promotion_targets.current_configuration(ref, world, promotion.field_paths, promotion.variant_name,
                                                          spec_module.baseline_variables(parsed))
    except promotion_targets.TargetProblem as unreadable:
        _baseline_refused(out, parsed, Reason.BASELINE_UNREADABLE,
                          f"cannot read what {what} serves now for spec.baseline: {unreadable.message}")
        return None
    unsupported = _policy(out).baseline_problem(parsed, current)
    if unsupported is not None:
        _baseline_refused(out, parsed, Reason.BASELINE_UNSUPPORTED,
                          f"{_policy(out).display_name} cannot measure what {what} serves now ({current.describe()}) "
                          f"as spec.baseline: {unsupported}")
        return None
    # Written with the job's name (the next write): a restart plans the same job from it.
    out.set(baseline=BaselineState(target, st.whole_seconds(observation.now), current))
    try:
        return _policy(out).plan(parsed, owner, observation.generation, None, baseline=current)
    except base.PlanInvalid as invalid:
        _refuse(out, invalid.errors)
        return None


def _baseline_refused(out: _Builder, parsed: spec_module.RightsizeJobSpec, reason: Reason, message: str) -> None:
    """No job without its baseline; the target may change (it is created, its update finishes): read it again."""
    timing, now = out.observation.timing, out.observation.now
    retry_at = timing.after(now, timing.promotion_retry)
    _not_started(out, parsed, message)
    out.condition(st.READY, st.FALSE, reason, f"{message}; no job is submitted until it can be measured; "
                                             f"reading it again at {st.timestamp(retry_at)}")
    out.set(next_poll_time=retry_at)


def _split_baseline(out: _Builder, parsed: spec_module.RightsizeJobSpec,
                    snapshot: model.JobSnapshot) -> tuple[model.Recommendation, ...]:
    """The snapshot's candidates; the baseline's measurement, or why the job ended without it, into
    status.baseline (its verdict comes with the selection)."""
    recorded = out.status.baseline
    if recorded is None:
        return snapshot.recommendations
    outcome = _policy(out).baseline_outcome(parsed, snapshot.job_name, recorded.current, snapshot)
    measured = RecommendationRow(dataclasses.replace(outcome.measured, metrics=_metrics_row(outcome.measured))) \
        if outcome.measured is not None else recorded.measured
    failure = outcome.failure_reason if measured is None else None
    if measured is None and failure is None and snapshot.status not in model.ACTIVE_STATUSES:
        failure = f"job {snapshot.job_name} ended ({snapshot.status}) without measuring it"
    out.set(baseline=dataclasses.replace(recorded, measured=measured,
                                         failure_reason=failure[:model.STEP_FAILURE_REASON_CHARS] if failure else None))
    return outcome.candidates


def _submit(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan,
            submitted: st.ConditionRecord | None) -> None:
    observation, now = out.observation, out.observation.now
    name = plan.job_name
    result = observation.submit_result
    if result is None:
        if observation.job is not None:  # a written-ahead job found by describe: it was created after all
            out.condition(st.JOB_SUBMITTED, st.TRUE, Reason.JOB_ADOPTED,
                          f"job {name} was created by an earlier attempt")
            out.set(job_arn=observation.job.job_arn, start_time=st.whole_seconds(now))
            _apply_snapshot(out, parsed, observation.job)
            return
        if observation.rejected is not None:  # a refused call (a look before creating, or no region): no spin
            _retry_later(out, f"cannot reach {_policy(out).display_name} for job {name}", observation.rejected)
            return
        waiting_until = out.status.next_poll_time
        refused = submitted and submitted.status == st.FALSE and submitted.reason != Reason.NOT_SUBMITTED
        if refused and out.status.job_name == name:
            if waiting_until is None or now < waiting_until:
                return  # refused for good (until the spec changes), or waiting to retry
        elif out.status.job_name == name and submitted and submitted.status == st.UNKNOWN \
                and not observation.job_missing:
            # Written ahead by an earlier attempt that may have reached the backend: look before creating.
            if waiting_until is None or now >= waiting_until:
                out.actions.append(DescribeJob(name))
            return
        out.set(job_name=name, phase=st.PENDING)
        out.condition(st.JOB_SUBMITTED, st.UNKNOWN, Reason.SUBMITTING, f"submitting job {name}")
        out.condition(st.READY, st.UNKNOWN, Reason.JOB_SUBMITTING,
                      f"submitting {_policy(out).describe_job(parsed)} as {name}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_PENDING, "the job has not run yet")
        out.condition(st.SLA_SATISFIED, st.UNKNOWN, Reason.NO_RESULTS, "no configuration has been benchmarked yet")
        if observation.unsendable is not None:
            _submit_refused(out, name, observation.unsendable)
        else:
            out.actions.append(SubmitJob(plan))
        return

    if isinstance(result, (base.Submitted, base.Adopted)):
        adopted = isinstance(result, base.Adopted)
        arn = result.snapshot.job_arn if isinstance(result, base.Adopted) else result.job_arn
        out.condition(st.JOB_SUBMITTED, st.TRUE, Reason.JOB_ADOPTED if adopted else Reason.JOB_SUBMITTED,
                      f"job {name} {'was created by an earlier attempt' if adopted else 'was submitted'}")
        out.set(job_arn=arn, start_time=st.whole_seconds(now), submit_attempts=None)
        if isinstance(result, base.Adopted):
            _apply_snapshot(out, parsed, result.snapshot)
        else:
            first_look = _policy(out).first_poll(observation.timing)
            out.set(phase=st.SUBMITTED, backend_status=JobStatus.PENDING,
                    next_poll_time=observation.timing.after(now, first_look))
            out.condition(st.READY, st.UNKNOWN, Reason.JOB_IN_PROGRESS, f"job {name} is {JobStatus.PENDING}")
        return

    if isinstance(result, base.NameTaken):
        out.condition(st.JOB_SUBMITTED, st.FALSE, Reason.NAME_TAKEN, result.message)
        out.condition(st.READY, st.FALSE, Reason.NAME_TAKEN, result.message)
        out.set(next_poll_time=None, phase=st.FAILED)
        return
    _submit_refused(out, name, result)


def _submit_refused(out: _Builder, name: str, result: base.Rejected) -> None:
    observation, now = out.observation, out.observation.now
    attempts = (out.status.submit_attempts or 0) + 1
    backend = _policy(out).display_name
    if result.unsent:
        message = f"job {name} was not submitted to {backend}: {result.message}"
    else:
        message = f"{backend} refused job {name}: {result.message}"
    if result.retryable_later:
        timing = observation.timing
        delay = min(timing.retry_max, timing.retry_first * 2 ** (attempts - 1))
        retry_at = timing.after(now, delay)
        message += f" (attempt {attempts}; next attempt at {st.timestamp(retry_at)})"
        out.set(next_poll_time=retry_at, submit_attempts=attempts)
    else:
        message += " (not retried until a job-defining field of the spec changes)"
        # Refused for good: Failed, not Pending (a refusal retried later stays Pending: it will be submitted).
        out.set(next_poll_time=None, submit_attempts=attempts, phase=st.FAILED)
    out.condition(st.JOB_SUBMITTED, st.FALSE, result.reason, message)
    out.condition(st.READY, st.FALSE, result.reason, message)


def _follow(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    """A submitted job: poll it while it runs, fold its results in, re-select when only the policy changed."""
    observation, now, name = out.observation, out.observation.now, out.status.job_name
    assert name is not None, "a job is followed only once status names it"
    if observation.job is not None:
        _apply_snapshot(out, parsed, observation.job)
        return
    if not _policy(out).capabilities.jobs_outlive_operator and (
            observation.job_missing or observation.submit_result is not None):
        _resume(out, parsed, plan)
        return
    if observation.job_missing:
        started = out.status.start_time or now
        if (now - started).total_seconds() < observation.timing.not_found_grace:
            out.set(next_poll_time=observation.timing.after(now, _policy(out).first_poll(observation.timing)))
            return
        message = f"job {name} was submitted but {_policy(out).display_name} no longer knows it"
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_NOT_FOUND, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_NOT_FOUND, message)
        out.set(next_poll_time=None, phase=st.FAILED)
        return
    if observation.rejected is not None:
        _retry_later(out, f"cannot read job {name}", observation.rejected)
        return
    due = out.status.next_poll_time
    policy_edited = out.before.observed_generation != observation.generation
    if job_may_be_running(out.status) and (due is None or now >= due or policy_edited):
        out.actions.append(DescribeJob(name))
        return
    if results_final(out.status) and policy_edited:
        # Only the policy can have changed: judge the stored results again (the job itself is not touched).
        performances = out.status.endpoint_performances
        if performances and not out.status.recommendations and parsed.baseline is None:
            _judge_endpoint(out, parsed, performances)
            return
        total = out.status.recommendations_total
        partial = out.status.best.partial if out.status.best else _partial(out.status.backend_status,
                                                                           out.status.steps)
        _select(out, parsed, [row.recommendation for row in out.status.recommendations or ()], partial=partial)
        if total is not None and total > (out.status.recommendations_total or 0):
            out.set(recommendations_total=total)  # status keeps 20 rows; the job had more


def _resume(out: _Builder, parsed: spec_module.RightsizeJobSpec, plan: base.JobPlan) -> None:
    """A job of a backend whose jobs live in the operator's process is gone after a restart. Run it again,
    without the configurations status already holds."""
    observation, name = out.observation, out.status.job_name
    result = observation.submit_result
    if result is None:
        finished = out.status.recommendations or ()
        # A configuration that failed (its server crashed, the threshold broke at once) would fail again; one
        # skipped for want of room is judged afresh (the pod may have been given more).
        failed = [f for f in (out.status.steps.failures if out.status.steps else ()) if not f.skipped]
        progress = out.status.progress
        runs = progress.runs if progress else ()
        kept = f", {len(runs)} run(s) of repeated ones kept" if runs else ""
        out.event(NORMAL, Reason.JOB_RESUMED, f"job {name} was interrupted (the operator restarted); running the "
                                        f"configurations it had not finished ({len(finished)} measured and "
                                        f"{len(failed)} failed before{kept})")
        # The duration counts from when the job got the host, not from its submission (a wait in the queue is not
        # spent). A status written before startedAt existed: a job seen running had the host since its start.
        started = progress.started if progress and progress.started else \
            out.status.start_time if out.status.backend_status == JobStatus.IN_PROGRESS else None
        baseline = out.status.baseline.measured if out.status.baseline else None
        resume = base.ResumeState(
            completed=tuple(row.recommendation for row in (*finished, *([baseline] if baseline else ()))
                            if row.recommendation.recommendation_id),
            failed=tuple(failed), started_at=started, runs=runs, submitted_at=out.status.start_time)
        out.actions.append(SubmitJob(dataclasses.replace(plan, resume=resume)))
        return
    if isinstance(result, base.Adopted):
        _apply_snapshot(out, parsed, result.snapshot)
        return
    if isinstance(result, base.Submitted):
        timing = observation.timing
        out.set(next_poll_time=timing.after(observation.now, _policy(out).first_poll(timing)))
        return
    message = f"cannot resume job {name}: {getattr(result, 'message', result)}"
    out.condition(st.READY, st.FALSE, Reason.JOB_FAILED, message)
    out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_FAILED, message)
    out.set(next_poll_time=None, phase=st.FAILED)


def _retry_later(out: _Builder, what: str, rejected: base.Rejected) -> None:
    timing, now = out.observation.timing, out.observation.now
    retry_at = timing.after(now, timing.retry_first)
    out.condition(st.READY, st.FALSE, rejected.reason,
                  f"{what}: {rejected.message}; retrying at {st.timestamp(retry_at)}")
    out.set(next_poll_time=retry_at)


def _apply_snapshot(out: _Builder, parsed: spec_module.RightsizeJobSpec, snapshot: model.JobSnapshot) -> None:
    now, name = out.observation.now, snapshot.job_name
    started = out.status.start_time or now
    out.set(backend_status=snapshot.status, last_polled_time=st.whole_seconds(now),
            failure_reason=(snapshot.failure_reason or "")[:MAX_FAILURE_REASON_CHARS] or None)
    if snapshot.job_arn:
        out.set(job_arn=snapshot.job_arn)
    if snapshot.completion_time:
        out.set(completion_time=st.whole_seconds(snapshot.completion_time))
    if snapshot.steps is not None:
        out.set(steps=_bounded(snapshot.steps))
    if snapshot.endpoint_performances:
        out.set(endpoint_performances=tuple(snapshot.endpoint_performances))
    candidates = _split_baseline(out, parsed, snapshot)
    # Something to judge: a candidate, or the baseline alone (a SageMaker job whose benchmarks all failed).
    measured = bool(candidates) or bool(out.status.baseline and out.status.baseline.measured)
    progress = _progress(snapshot.steps)

    if snapshot.progress is not None:
        out.set(progress=dataclasses.replace(snapshot.progress, runs=snapshot.progress.runs[:MAX_PROGRESS_RUNS]))
    if snapshot.status in model.ACTIVE_STATUSES:
        timing = out.observation.timing
        interval = _policy(out).poll_interval(timing, (now - started).total_seconds())
        out.set(phase=st.SUBMITTED if snapshot.status == JobStatus.PENDING else st.IN_PROGRESS,
                next_poll_time=timing.after(now, interval))
        # A queued job says what it waits for (the backend's words: the host, behind which job).
        waiting = f": {snapshot.progress.current}" if snapshot.status == JobStatus.PENDING and snapshot.progress \
            and snapshot.progress.current else ""
        out.condition(st.READY, st.UNKNOWN, Reason.JOB_IN_PROGRESS,
                      f"job {name} is {snapshot.status}{progress}{waiting}")
        out.condition(st.SUCCEEDED, st.UNKNOWN, Reason.JOB_IN_PROGRESS, f"job {name} is {snapshot.status}{progress}")
        if measured:
            _select(out, parsed, candidates, final=False)
        return

    out.set(next_poll_time=None)
    partial = _partial(snapshot.status, snapshot.steps, snapshot.ended_early)
    if snapshot.status == JobStatus.COMPLETED:
        out.set(phase=st.COMPLETED)
        out.condition(st.SUCCEEDED, st.TRUE, Reason.JOB_COMPLETED,
                      f"job {name} completed{progress}{'; ' + partial if partial else ''}")
        if snapshot.endpoint_performances and not snapshot.recommendations and parsed.baseline is None:
            _judge_endpoint(out, parsed, snapshot.endpoint_performances)
        else:
            _select(out, parsed, candidates, partial=partial)
        return

    failed_steps = _failed_steps_text(snapshot.steps)
    if snapshot.status == JobStatus.STOPPED and snapshot.recommendations:
        # What a stopped job measured is kept and judged, as the SDK uses a STOPPED job's results; the selection
        # says it is partial, and Automatic promotion waits for an approval (spec.promotion.allowPartialResults).
        message = f"job {name} was stopped before it completed{progress}{failed_steps}"
        out.set(phase=st.STOPPED)
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_STOPPED, message)
        _select(out, parsed, candidates, partial=partial)
        return
    if snapshot.status == JobStatus.FAILED:
        reason = snapshot.failure_reason or f"{_policy(out).display_name} gave no reason"
        # The local backend's reason already lists each configuration's: say each once.
        message = f"job {name} failed: {reason}{_failed_steps_text(snapshot.steps, already_said=reason)}"
        out.set(phase=st.FAILED)
        out.condition(st.SUCCEEDED, st.FALSE, Reason.JOB_FAILED, message)
        out.condition(st.READY, st.FALSE, Reason.JOB_FAILED, message)
    elif snapshot.status == JobStatus.STOPPED:
        message = f"job {name} was stopped before it measured any configuration{progress}{failed_steps}"
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
    if measured:
        _select(out, parsed, candidates, final=False)


def _partial(status: JobStatus | None, steps: model.StepSummary | None, ended_early: str | None = None) -> str | None:
    """Why an ended job's results are partial (it did not measure every configuration), or None."""
    unfinished = steps.unfinished if steps else 0
    if status == JobStatus.STOPPED:
        return f"the job was stopped{f' with {unfinished} benchmark(s) unfinished' if unfinished else ''}"
    if ended_early:
        return ended_early
    if unfinished:
        return f"the job ended with {unfinished} benchmark(s) unfinished"
    return None


def _select(out: _Builder, parsed: spec_module.RightsizeJobSpec, recommendations: Sequence[model.Recommendation],
            final: bool = True, partial: str | None = None) -> None:
    """Judge the candidates, and spec.baseline's measurement beside them (status.baseline keeps it and its
    verdict, apart from the candidates' rows): it wins only if it is best, or as good (nothing to gain)."""
    constraints = selection_module.constraints_for(parsed)
    recorded = out.status.baseline
    baseline = recorded.measured.recommendation if recorded and recorded.measured else None
    incumbent = baseline.recommendation_id if baseline else None
    chosen = selection_module.select([*recommendations, *([baseline] if baseline else [])],
                                     parsed.selection.objective, constraints, incumbent=incumbent)
    rows = tuple(_row(v) for v in chosen.verdicts if v.recommendation.recommendation_id != incumbent)
    out.set(recommendations=rows[:MAX_RECOMMENDATION_ROWS], recommendations_total=len(rows))
    if recorded is not None and baseline is not None:
        verdict = next(v for v in chosen.verdicts if v.recommendation.recommendation_id == incumbent)
        out.set(baseline=dataclasses.replace(recorded, measured=_row(verdict)))
    if not final:
        return
    suffix = f" (partial results: {partial})" if partial else ""
    if chosen.best is None and selection_module.meets_sla(chosen):
        # The SLA is met but the objective cannot rank the configurations meeting it (no price known).
        out.set(best=None)
        out.condition(st.SLA_SATISFIED, st.TRUE, Reason.CANDIDATE_MEETS_SLA, chosen.reason + suffix)
        out.condition(st.READY, st.FALSE, Reason.OBJECTIVE_UNMEASURED, chosen.reason + suffix)
        return
    if chosen.best is None:
        out.set(best=None)
        out.condition(st.SLA_SATISFIED, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, chosen.reason + suffix)
        out.condition(st.READY, st.FALSE, Reason.NO_CANDIDATE_MEETS_SLA, chosen.reason + suffix)
        return
    best = chosen.best
    previous = out.before.best.recommendation.recommendation_id if out.before.best else None
    if previous and previous != best.recommendation_id:
        out.event(NORMAL, Reason.BEST_CHANGED, f"the selection now prefers {chosen.reason}")
    best = dataclasses.replace(best, metrics=_metrics_row(best))
    reason = chosen.reason
    if recorded is not None and best.recommendation_id == incumbent:
        reason = f"{reason}; it is what {recorded.target.kind}/{recorded.target.name} serves now (spec.baseline)"
    savings = selection_module.savings(best, baseline) if baseline is not None else None
    # The scaling asked of this configuration stays while it stays the best (a re-selection after a policy edit).
    kept = out.status.best.scaling if out.status.best and \
        out.status.best.recommendation.recommendation_id == best.recommendation_id else None
    out.set(best=Best(best, reason[:1024], partial[:1024] if partial else None, kept, savings))
    out.condition(st.SLA_SATISFIED, st.TRUE, Reason.CANDIDATE_MEETS_SLA, reason + suffix)
    out.condition(st.READY, st.TRUE, Reason.BEST_SELECTED_FROM_PARTIAL_RESULTS if partial else Reason.BEST_SELECTED,
                  reason + suffix)


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


def _metrics_row(recommendation: model.Recommendation) -> dict[str, Any]:
    row = dict(recommendation.metrics)
    computed = selection_module.cost_per_inference(row)
    if computed is not None:
        row["costPerInference"] = computed
    count, throughput = recommendation.initial_instance_count, row.get("maxInvocations")
    if "maxInvocationsPerInstance" not in row and count and throughput is not None:
        row["maxInvocationsPerInstance"] = round(throughput / count)  # the endpoint's share of one instance
    return row


def _row(verdict: selection_module.Verdict) -> RecommendationRow:
    r = verdict.recommendation
    return RecommendationRow(dataclasses.replace(r, metrics=_metrics_row(r)), verdict.meets_sla,
                             verdict.message[:1024])


def _bounded(steps: model.StepSummary) -> model.StepSummary:
    """Steps as status keeps them: the first failures, each reason cut at the schema's length."""
    return dataclasses.replace(steps, failures=tuple(
        dataclasses.replace(f, failure_reason=f.failure_reason[:model.STEP_FAILURE_REASON_CHARS])
        for f in steps.failures[:MAX_FAILED_STEPS]))


def _progress(steps: model.StepSummary | None) -> str:
    if not steps or not steps.total:
        return ""
    return f" ({steps.by_status.get(JobStatus.COMPLETED, 0)} of {steps.total} benchmarks completed)"


def _failed_steps_text(steps: model.StepSummary | None, already_said: str = "") -> str:
    failures = [f for f in (steps.failures if steps else ())[:MAX_FAILED_STEPS]
                if not (already_said and f.failure_reason in already_said)]
    if not failures:
        return ""
    parts = [f"{f.instance_type or 'serverless'}"
             f"{' (' + model.describe_environment(f.environment) + ')' if f.environment else ''}"
             f": {f.failure_reason}" for f in failures]
    return "; failed benchmarks: " + "; ".join(parts)


DELETION_FIELDS = ("jobName", "backendStatus", "conditions")  # what _stops_on_delete reads of status


def stops_on_delete(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether deleting the RightsizeJob must first stop its job (and so hold the finalizer)."""
    # kopf asks on every watch event: only the fields the answer reads are parsed, not the results.
    return _stops_on_delete(spec, JobState.from_storage({key: status[key] for key in DELETION_FIELDS if key in status}))


def _stops_on_delete(spec: Mapping[str, Any], status: JobState) -> bool:
    return ((spec or {}).get("deletionPolicy", "Stop") == "Stop" and job_may_be_running(status)
            and status.backend_status != JobStatus.STOPPING)


def _on_delete(spec: Mapping[str, Any], out: _Builder) -> Outcome:
    name = out.status.job_name
    if not name or not _stops_on_delete(spec, out.status):
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
    policy = registry.policy(spec_module.parse(spec, check=False).backend)
    # A job that lives in the operator's process is not unknown after a restart: it ended with the process.
    gone = (f"{policy.display_name} did not know it" if policy.capabilities.jobs_outlive_operator
            else f"it was not running on {policy.display_name} (it ended when the operator restarted)")
    detail = "it had already finished" if result.already_finished else \
        gone if result.not_found else "stop requested"
    # Recorded so that the delete handler's filter stops matching and the finalizer is released.
    out.set(backend_status=JobStatus.STOPPED if result.already_finished or result.not_found else JobStatus.STOPPING)
    return Outcome((EmitEvent(NORMAL, Reason.JOB_STOPPED, f"the RightsizeJob is being deleted: job {name}: {detail}"),),
                   state_module.changes(out.before, out.status))
