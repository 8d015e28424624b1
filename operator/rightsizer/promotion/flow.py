"""The promotion state machine, pure: what the gate allows, what the target needs next, what to record.

status.promotion is the memory. A new attempt writes what it is about to do (`pending`, the objects it will
create, the configuration it replaces) before it touches anything, so a restart at any line finds the attempt
and carries it on instead of starting another; ACK object names carry the attempt number, so a name that ACK or
SageMaker refused is never tried again. An attempt under way is carried to its end whatever the gate says by then
(approval, SLA): the gate decides between attempts, and the rollback annotation is the way to stop one.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import replace
from enum import StrEnum
from typing import Any, Mapping, Sequence

from rightsizer import status as st
from rightsizer.model import Savings
from rightsizer.promotion import paths, targets
from rightsizer.promotion.memory import PromotionMemory, RecordedConfiguration, State
from rightsizer.promotion.objects import (ApplyObjects, ApplyResult, DeleteObjects, DeleteResult, KindRef, ObjectRef,
                                          ReadWorld, World, condition, condition_is)
from rightsizer.promotion.paths import Path
from rightsizer.promotion.reasons import Reason
from rightsizer.promotion.targets import Configuration, TargetProblem
from rightsizer.spec import FieldPaths, Promotion, PromotionMode
from rightsizer.state import BaselineState

APPROVE_ANNOTATION = "rightsizer.io/approve"
ROLLBACK_ANNOTATION = "rightsizer.io/rollback"
MAX_CREATED_OBJECTS = 10

# The states of an attempt under way (pending recorded, outcome not known yet).
ATTEMPT_STATES = (State.CREATING_RESOURCES, State.DEREGISTERING_SCALING, State.UPDATING_TARGET,
                  State.WAITING_FOR_TARGET, State.REGISTERING_SCALING)

# Promoted=False reasons that wait for a person (a spec edit, a new approval) rather than for time.
FINAL_REASONS = (Reason.ENDPOINT_UPDATE_FAILED, Reason.RESOURCE_REJECTED, Reason.UNSUPPORTED_TARGET,
                 Reason.UNSUPPORTED_CONFIGURATION, Reason.NOTHING_TO_ROLL_BACK, Reason.SAVINGS_UNKNOWN)

Condition = tuple[str, Reason, str]  # (status, reason, message)


class PollAfter(StrEnum):
    POLL = "poll"  # a look soon
    RETRY = "retry"  # after a refusal worth retrying


@dataclasses.dataclass(frozen=True)
class Context:
    promotion: Promotion
    namespace: str
    job_name: str
    owner_uid: str
    generation: int
    best: Mapping[str, Any] | None
    sla_satisfied: str | None  # the SLASatisfied condition's status
    annotations: Mapping[str, str]
    memory: PromotionMemory
    now: datetime.datetime
    world: World | None = None
    applied: ApplyResult | None = None
    deleted: DeleteResult | None = None
    # spec.baseline's measurement (status.baseline), which spec.promotion.minSavingsPercent judges `best` against,
    # and the objective, whose cost (per hour or per inference) the saving is counted in.
    baseline: BaselineState | None = None
    objective: str = "CostPerInference"


@dataclasses.dataclass
class Step:
    memory: PromotionMemory
    promoted: Condition | None = None  # the Promoted condition
    awaiting: Condition | None = None  # ... AwaitingApproval
    ready: Condition | None = None  # overrides the job's Ready when the promotion decides it
    effect: ReadWorld | ApplyObjects | DeleteObjects | None = None
    poll_after: PollAfter | None = None
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    phase: str | None = None


def target_ref(ctx: Context) -> ObjectRef:
    target = ctx.promotion.target
    return ObjectRef(target.api_version, target.kind, ctx.namespace, target.name)


def advance(ctx: Context) -> Step:
    step = Step(replace(ctx.memory, target=ctx.promotion.target, mode=ctx.promotion.mode))
    if ctx.deleted is not None:
        _collected(step, ctx.deleted)
        if ctx.deleted.error:
            return step
        # A deletion may have made room for an attempt: carry on in the same visit rather than at the next poll.
        ctx = replace(ctx, deleted=None)

    if ctx.annotations.get(ROLLBACK_ANNOTATION) == "true":
        return _rollback(ctx, step)
    under_way = _under_way(step.memory)
    if under_way is not None:
        return _carry_on(ctx, step, under_way)
    desired = _gate(ctx, step)
    if desired is None:
        return step
    dry_run = ctx.promotion.mode == PromotionMode.DRY_RUN
    if not dry_run and _converged(step.memory, desired):
        return _stay_promoted(ctx, step)
    return _attempt(ctx, step, desired, rollback=False, dry_run=dry_run)


# -- gate -------------------------------------------------------------------------------------------------------

def _gate(ctx: Context, step: Step) -> Configuration | None:
    mode, best = ctx.promotion.mode, ctx.best
    target, what = targets.kind_of(ctx.promotion.target), _what(ctx)
    if best is None:
        if mode == PromotionMode.AUTOMATIC and ctx.sla_satisfied == st.FALSE:
            step.promoted = (st.FALSE, Reason.SLA_NOT_MET,
                             f"nothing is promoted to {what}: no configuration meets the SLA")
        elif step.memory.current is None:
            step.promoted = (st.UNKNOWN, Reason.NO_BEST_CONFIGURATION,
                             f"waiting for the job to select a configuration to promote to {what}")
        step.awaiting = (st.FALSE, Reason.NO_BEST_CONFIGURATION, "there is no configuration to approve yet")
        return None
    configuration = Configuration.from_row(best)
    if target == "ack" and not (configuration.instance_type or "").startswith("ml."):
        step.promoted = (st.FALSE, Reason.UNSUPPORTED_CONFIGURATION,
                         f"{configuration.describe()} is a local profile; an ACK SageMaker Endpoint needs an ml.* type")
        step.ready = (st.FALSE, Reason.UNSUPPORTED_CONFIGURATION, step.promoted[2])
        return None
    compiled = targets.compiled_artifact_problem(target, ctx.promotion.field_paths, configuration)
    if compiled is not None:
        # Never the uncompiled model in the measured one's place, and before approval: no approval could help.
        step.promoted = (st.FALSE, Reason.UNSUPPORTED_CONFIGURATION, compiled)
        step.ready = (st.FALSE, Reason.UNSUPPORTED_CONFIGURATION, compiled)
        return None
    if not _worth_promoting(ctx, step, configuration):
        return None
    # A winner among what a cut-short job measured may not be the winner of the grid: a person decides, unless the
    # spec lets Automatic act on it.
    partial = best.get("partial") if mode == PromotionMode.AUTOMATIC and not ctx.promotion.allow_partial_results \
        else None
    if mode == PromotionMode.MANUAL or partial:
        approval = ctx.annotations.get(APPROVE_ANNOTATION)
        if approval not in ("best", best.get("recommendationId")):
            hint = (f"annotate the RightsizeJob with {APPROVE_ANNOTATION}={best.get('recommendationId')} "
                    f"(or {APPROVE_ANNOTATION}=best) to promote {configuration.describe()} to {what}")
            if partial:
                hint = (f"the selection is from partial results ({partial}); {hint}, or set "
                        f"spec.promotion.allowPartialResults to true")
            if _converged(step.memory, configuration):
                return configuration  # what is approved is already there: nothing to wait for
            if approval:
                step.awaiting = (st.TRUE, Reason.APPROVAL_STALE,
                                 f"the approval names {approval}, which is not the best configuration "
                                 f"{best.get('recommendationId')}; {hint}")
            else:
                step.awaiting = (st.TRUE, Reason.PARTIAL_RESULTS if partial else Reason.APPROVAL_REQUIRED, hint)
            step.memory = _between_attempts(step.memory, State.AWAITING_APPROVAL)
            if step.memory.current is None:
                step.promoted = (st.FALSE, Reason.AWAITING_APPROVAL, f"waiting for approval to promote to {what}")
            return None
        step.awaiting = (st.FALSE, Reason.APPROVED, f"{approval} approved")
    else:
        step.awaiting = (st.FALSE, Reason.NOT_REQUIRED, f"spec.promotion.mode is {mode}")
    if mode == PromotionMode.AUTOMATIC and ctx.sla_satisfied != st.TRUE:
        step.promoted = (st.FALSE, Reason.SLA_NOT_MET, f"nothing is promoted to {what}: SLASatisfied is not True")
        return None
    return configuration


def _worth_promoting(ctx: Context, step: Step, configuration: Configuration) -> bool:
    """spec.promotion.minSavingsPercent: whether `configuration` saves enough against what the target serves now
    (status.baseline) to be promoted; when not, the conditions say so with the figures. Judged before approval (no
    approval can make a saving larger), and not for what is promoted already."""
    minimum, baseline = ctx.promotion.min_savings_percent, ctx.baseline
    if minimum is None or _converged(step.memory, configuration):
        return True
    what, limit = _what(ctx), f"spec.promotion.minSavingsPercent {minimum}"
    dry_run = "dry run: " if ctx.promotion.mode == PromotionMode.DRY_RUN else ""
    measured = baseline.measured if baseline else None
    if measured is not None and measured.meets_sla is False:
        return True  # what the target serves breaks the SLA: a fix is worth any price, and the gate is for savings
    per_hour = ctx.objective == "CostPerHour"
    savings = Savings.from_storage((ctx.best or {}).get("savings") or {})
    percent, _ = savings.saved(per_hour)
    now = f"what {what} serves now ({baseline.current.describe()})" if baseline else f"what {what} serves now"
    if measured is None or percent is None:
        why = (f"the job did not measure it: {baseline.failure_reason}" if baseline and baseline.failure_reason
               else "it was not measured" if measured is None
               else f"no cost {'per hour' if per_hour else 'per inference'} is known for both (a price is missing)")
        message = (f"{dry_run}nothing is promoted to {what}: {limit} cannot be judged, since the saving of "
                   f"{configuration.describe()} against {now} is unknown: {why}")
        step.promoted = step.ready = (st.FALSE, Reason.SAVINGS_UNKNOWN, message)
        step.awaiting = (st.FALSE, Reason.SAVINGS_UNKNOWN, message)
        return False
    if percent >= minimum:
        return True
    message = (f"{dry_run}nothing is promoted to {what}: {configuration.describe()} "
               f"{savings.describe(per_hour)} against {now}, below {limit}")
    step.promoted = (st.FALSE, Reason.INSUFFICIENT_SAVINGS, message)
    step.ready = (st.TRUE, Reason.INSUFFICIENT_SAVINGS, message)  # a decision, not a fault: the job did its work
    step.awaiting = (st.FALSE, Reason.INSUFFICIENT_SAVINGS, message)
    return False


def _between_attempts(memory: PromotionMemory, state: State) -> PromotionMemory:
    """Record a state that belongs to no attempt (AwaitingApproval, Planned). A failed attempt keeps its Failed:
    that is what stops it from being resumed, or retried before the spec changes."""
    return memory if memory.pending is not None else replace(memory, state=state)


def _under_way(memory: PromotionMemory) -> RecordedConfiguration | None:
    """The configuration of the attempt under way, if there is one."""
    if memory.state in (State.FAILED, State.SUCCEEDED, State.ROLLED_BACK):
        return None
    return memory.pending


def _carry_on(ctx: Context, step: Step, pending: RecordedConfiguration) -> Step:
    """An attempt under way is finished whatever the gate says now: its approval (or SLA) held when it started, and
    half-made changes left behind are worse than a completed promotion. The gate applies between attempts; the
    rollback annotation is the way to stop one."""
    memory = step.memory
    if memory.state not in ATTEMPT_STATES:
        # Written by a version that let the gate overwrite the state of an attempt under way: the checks that
        # state would skip (sync, Terminal, the endpoint's verdict) are run again from the first one.
        step.memory = replace(memory, state=State.CREATING_RESOURCES if memory.pending_objects
                              else State.UPDATING_TARGET)
    return _attempt(ctx, step, pending.configuration(), rollback=memory.rollback, dry_run=False, restoring=pending)


def _converged(memory: PromotionMemory, desired: Configuration) -> bool:
    current = memory.current or RecordedConfiguration()
    return (memory.state == State.SUCCEEDED and memory.pending is None
            and current.recommendation_id == desired.recommendation_id)


def _stay_promoted(ctx: Context, step: Step) -> Step:
    current = (step.memory.current or RecordedConfiguration()).configuration()
    message = f"{current.describe()} is promoted to {_what(ctx)}"
    step.promoted = (st.TRUE, Reason.PROMOTED, message)
    step.ready = (st.TRUE, Reason.PROMOTED, message)
    step.phase = st.PROMOTED_PHASE
    return _collect_garbage(ctx, step)


def _rollback(ctx: Context, step: Step) -> Step:
    memory = step.memory
    if memory.state == State.ROLLED_BACK and memory.pending is None:
        current = (memory.current or RecordedConfiguration()).configuration()
        message = (f"rolled back to {current.describe()} on {_what(ctx)}; remove the annotation "
                   f"{ROLLBACK_ANNOTATION} to promote again")
        step.promoted = (st.TRUE, Reason.ROLLED_BACK, message)
        step.ready = (st.TRUE, Reason.ROLLED_BACK, message)
        step.awaiting = (st.FALSE, Reason.ROLLED_BACK, message)
        return _collect_garbage(ctx, step)
    if memory.pending is not None and memory.rollback:
        return _attempt(ctx, step, memory.pending.configuration(), rollback=True, dry_run=False,
                        restoring=memory.pending)
    if memory.previous is None:
        message = f"{ROLLBACK_ANNOTATION} is set but nothing was promoted to {_what(ctx)}: there is nothing to restore"
        step.promoted = (st.FALSE, Reason.NOTHING_TO_ROLL_BACK, message)
        step.ready = (st.FALSE, Reason.NOTHING_TO_ROLL_BACK, message)
        return step
    return _attempt(ctx, step, memory.previous.configuration(), rollback=True, dry_run=False,
                    restoring=memory.previous)


# -- attempts ---------------------------------------------------------------------------------------------------

def _what(ctx: Context) -> str:
    target = ctx.promotion.target
    return f"{target.kind}/{target.name}"


def _same_attempt(memory: PromotionMemory, desired: Configuration, rollback: bool, generation: int) -> bool:
    pending = memory.pending
    if pending is None or memory.rollback != rollback:
        return False
    if pending.recommendation_id != desired.recommendation_id:
        return False
    # A failed attempt is not retried for the same generation; an edit of the spec asks for a new one.
    return memory.state != State.FAILED or memory.pending_generation == generation


def _pending(memory: PromotionMemory) -> RecordedConfiguration:
    """The attempt under way, where the flow has recorded one (an apply or a wait follows `_start`)."""
    if memory.pending is None:
        raise LookupError("status.promotion.pending is not recorded")
    return memory.pending


def _attempt(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
             restoring: RecordedConfiguration | None = None) -> Step:
    """`restoring` is the recorded configuration (status.promotion.previous or pending) a rollback puts back."""
    memory = step.memory
    if memory.state == State.FAILED and _same_attempt(memory, desired, rollback, ctx.generation):
        return step  # stays failed (its condition is already written) until the spec changes
    if ctx.world is None and ctx.applied is None:
        continuing = _same_attempt(memory, desired, rollback, ctx.generation) and memory.state != State.FAILED
        step.effect = _reads(ctx, probe=not continuing)
        return step
    try:
        if targets.kind_of(ctx.promotion.target) == "ack":
            return _ack(ctx, step, desired, rollback, dry_run, restoring or RecordedConfiguration())
        return _patch_in_place(ctx, step, desired, rollback, dry_run, restoring or RecordedConfiguration())
    except TargetProblem as problem:
        return _problem(step, problem)


def _reads(ctx: Context, probe: bool) -> ReadWorld:
    """`probe`: the read may start a new attempt (none recorded, or a failed or superseded one)."""
    ref = target_ref(ctx)
    if targets.kind_of(ctx.promotion.target) != "ack":
        return ReadWorld((ref,))
    objects, listings = targets.ack_reads(ref)
    # Promotion also reads the variant's Application Auto Scaling registrations (ACK ScalableTargets, ScalingPolicies).
    listings = (*listings, *targets.scaling_kinds(ref.namespace))
    if not probe:
        return ReadWorld(objects, listings)
    # The endpoint is patched only after new ACK objects exist; a conflict on its endpointConfigName should stop
    # the attempt before they are created, so a dry run of that patch goes with the first read.
    upcoming = targets.object_name(ref.name, ctx.owner_uid, (ctx.memory.attempt or 0) + 1)
    return ReadWorld(objects, listings, probes=(targets.endpoint_patch(ref, upcoming),),
                     force_conflicts=ctx.promotion.force_conflicts)


def _problem(step: Step, problem: TargetProblem) -> Step:
    step.promoted = (st.FALSE, problem.reason, problem.message)
    step.ready = (st.FALSE, problem.reason, problem.message)
    if problem.retry:
        step.poll_after = PollAfter.RETRY
    return step


def _read_problems(ctx: Context) -> tuple[World, Mapping[str, Any]]:
    """The world read and the target in it, or the TargetProblem that stops the attempt."""
    if ctx.world is None:
        raise LookupError("the target was not read")  # _attempt reads it first
    # An ACK read may also dry-run the Endpoint's patch (the conflict probe).
    return ctx.world, targets.read_target(target_ref(ctx), ctx.world, probed=True)


def _apply_problems(applied: ApplyResult, what: str, grant: str = "") -> None:
    """`grant`: the verbs and kind a refusal asks the user to grant."""
    if applied.conflict:
        raise TargetProblem(Reason.FIELD_CONFLICT, f"{what}: another field manager owns a field this promotion "
                            f"sets, and it was not overwritten: {applied.conflict}. Remove the field from that "
                            f"manager's configuration, or set spec.promotion.forceConflicts to take it over")
    if applied.forbidden:
        raise TargetProblem(Reason.FORBIDDEN, f"{what} was refused: {applied.error}; grant the operator's "
                            f"ServiceAccount {grant}")
    if applied.error:
        raise TargetProblem(Reason.TARGET_ERROR, f"{what} failed: {applied.error}")


def _last_known_good(memory: PromotionMemory, live: RecordedConfiguration | None) -> RecordedConfiguration | None:
    """What a new attempt records as `previous`: the live configuration, unless the memory holds an attempt that
    never succeeded (a success clears `pending`). Then the target may name a copy SageMaker refused, or one half
    made, and the configuration to roll back to stays the one recorded before it."""
    if memory.pending is not None and memory.previous is not None:
        return memory.previous
    return live


def _start(memory: PromotionMemory, ctx: Context, rollback: bool, previous: RecordedConfiguration | None,
           pending: RecordedConfiguration, state: State, new_names: bool = False) -> PromotionMemory:
    """Record a new attempt before the first change it makes. `previous` is the live configuration it replaces;
    `new_names`: it creates objects, named after the attempt number (a promotion always counts as a new attempt,
    a rollback that only points the target back does not)."""
    return replace(memory, attempt=(memory.attempt or 0) + (1 if new_names or not rollback else 0),
                   pending=pending, pending_generation=ctx.generation, previous=_last_known_good(memory, previous),
                   rollback=rollback, state=state, started_at=ctx.now, planned_objects=None)


def _succeed(ctx: Context, step: Step) -> Step:
    memory = step.memory
    pending, rollback = _pending(memory), memory.rollback
    step.memory = replace(memory, pending=None, rollback=False, pending_objects=None, pending_generation=None,
                          started_at=None, current=pending, state=State.ROLLED_BACK if rollback else State.SUCCEEDED,
                          applied_at=ctx.now, applied_recommendation_id=pending.recommendation_id or None)
    configuration = pending.configuration().describe()
    if rollback:
        reason, message = Reason.ROLLED_BACK, f"rolled back to {configuration} on {_what(ctx)}"
    else:
        reason, message = Reason.PROMOTED, f"{configuration} is promoted to {_what(ctx)}"
    step.events.append(("Normal", reason, message))
    step.promoted = step.ready = (st.TRUE, reason, message)
    step.phase = st.PROMOTED_PHASE
    return _collect_garbage(ctx, step)


def _fail(step: Step, reason: Reason, message: str) -> Step:
    step.memory = replace(step.memory, state=State.FAILED)
    step.promoted = (st.FALSE, reason, message)
    step.ready = (st.FALSE, reason, message)
    return step


def _waiting(step: Step, message: str) -> Step:
    step.promoted = (st.UNKNOWN, Reason.PROMOTING, message)
    step.ready = (st.UNKNOWN, Reason.PROMOTING, message)
    step.poll_after = PollAfter.POLL
    return step


def _waiting_for_controller(ctx: Context, step: Step, message: str) -> Step:
    """A wait on the target's controller, which may never end (a stuck ACK sync, a pod that cannot schedule). Past
    the deadline it is reported as a failure, but watched on: the controller may still get there."""
    _waiting(step, message)
    started = step.memory.started_at
    deadline = ctx.promotion.progress_deadline_seconds
    if started is None or (ctx.now - started).total_seconds() <= deadline:
        return step
    overdue = (f"no outcome {_duration(ctx.now - started)} after the attempt started (spec.promotion."
               f"progressDeadlineSeconds is {deadline}); still watching: {message}")
    step.promoted = step.ready = (st.FALSE, Reason.PROGRESS_DEADLINE_EXCEEDED, overdue)
    step.poll_after = PollAfter.RETRY
    return step


def _duration(elapsed: datetime.timedelta) -> str:
    minutes = int(elapsed.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


# -- patch in place (KServe, generic) ----------------------------------------------------------------------------

def _assignments(ctx: Context, live: Mapping[str, Any], configuration: Configuration) -> list[tuple[Path, Any]]:
    if targets.kind_of(ctx.promotion.target) == "kserve":
        return targets.kserve_assignments(live, configuration)
    return targets.generic_assignments(ctx.promotion.field_paths or FieldPaths(), configuration)


def _patch_in_place(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
                    restoring: RecordedConfiguration) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    if ctx.applied is not None:
        _apply_problems(ctx.applied, f"server-side apply to {_what(ctx)}", f"patch on {ref.kind} in {ref.api_version}")
        if targets.kind_of(ctx.promotion.target) == "kserve":
            step.memory = replace(memory, state=State.WAITING_FOR_TARGET)
            return _waiting(step, f"applied {_pending(memory).configuration().describe()} to {_what(ctx)}; "
                                  f"waiting for it to be Ready")
        return _succeed(ctx, step)

    _, live = _read_problems(ctx)
    if memory.state == State.WAITING_FOR_TARGET and _same_attempt(memory, desired, rollback, ctx.generation):
        return _kserve_settled(ctx, step, live)

    same = _same_attempt(memory, desired, rollback, ctx.generation) and memory.state != State.FAILED
    previous: RecordedConfiguration | None
    if rollback:
        # Back to what `previous` recorded, by applying its patch; what is rolled back from becomes `previous`.
        target_entry = restoring
        body = restoring.patch or {}
        previous = memory.current
    else:
        assignments = _assignments(ctx, live, desired)
        # An attempt carried on applies the body it recorded: its record keeps no placement or scaling to rebuild
        # it from, and an apply that left a field out would take that field away.
        recorded = memory.pending.patch if same and memory.pending is not None else None
        body = dict(recorded) if recorded is not None else paths.apply_body(live, assignments)
        target_entry = RecordedConfiguration.of(desired, patch=body)
        previous = replace(memory.current or RecordedConfiguration(),
                           patch=paths.apply_body(live, targets.restoring(live, assignments)))
    document = targets.apply_document(ref, body)
    if dry_run:
        changes = targets.differences(live, assignments)
        step.memory = replace(_between_attempts(memory, State.PLANNED), planned_objects=(document,))
        message = (f"dry run: would apply {desired.describe()} to {_what(ctx)} "
                   f"({'; '.join(changes) if changes else 'no change'}); nothing was changed")
        step.promoted = (st.FALSE, Reason.DRY_RUN, message)
        return step
    if not same:
        step.memory = _start(memory, ctx, rollback, previous, target_entry, State.UPDATING_TARGET)
    step.effect = ApplyObjects((document,), force_conflicts=ctx.promotion.force_conflicts)
    return _waiting(step, f"applying {desired.describe()} to {_what(ctx)}")


def _kserve_settled(ctx: Context, step: Step, live: Mapping[str, Any]) -> Step:
    status = live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") == generation and condition_is(live, "Ready", "True"):
        return _succeed(ctx, step)
    ready = condition(live, "Ready") or {}
    detail = ready.get("message") or ready.get("reason") or "not reported yet"
    return _waiting_for_controller(ctx, step, f"waiting for {_what(ctx)} to be Ready (generation {generation}, "
                                              f"observed {status.get('observedGeneration')}): {detail}")


# -- ACK SageMaker Endpoint -------------------------------------------------------------------------------------

def _config_name(entry: RecordedConfiguration) -> str:
    """The EndpointConfig an ACK attempt records before it starts."""
    if not entry.endpoint_config_name:
        raise LookupError("status.promotion.pending names no endpointConfigName")
    return entry.endpoint_config_name


def _ack(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
         restoring: RecordedConfiguration) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    same = _same_attempt(memory, desired, rollback, ctx.generation) and memory.state != State.FAILED
    if ctx.applied is not None:
        # ApplyObjects stops at the first failure and `applied` holds what went through before it: the object
        # that failed is the first one asked for (the recorded copies, else the Endpoint's patch) not in it.
        creating = memory.state == State.CREATING_RESOURCES
        registering = memory.state == State.REGISTERING_SCALING
        asked = (list(memory.pending_objects or ()) if creating else [
            f"{b['kind']}/{b['metadata']['name']}" for b in _scaling_bodies(ctx, _pending(memory), ctx.world)]
            if registering else [ref.describe()])
        done = [r.describe() for r in ctx.applied.applied]
        failed = next((entry for entry in asked if entry not in done), asked[-1] if asked else _what(ctx))
        what = f"server-side apply of {failed}" + (f" (after {', '.join(done)})" if done else "")
        _apply_problems(ctx.applied, what, f"{'create and patch' if creating or registering else 'patch'} on "
                                           f"{failed.split('/', 1)[0]} in "
                                           f"{targets.AAS_API_VERSION if registering else ref.api_version}")
        pending = _pending(memory)
        if memory.state == State.REGISTERING_SCALING:
            return _waiting(step, f"registered {', '.join(done)} for {_what(ctx)}'s variant; waiting for ACK to "
                                  f"register it with Application Auto Scaling")
        if creating:
            return _waiting(step, f"created {', '.join(memory.pending_objects or ())}; waiting for ACK to "
                                  f"create them in SageMaker")
        step.memory = replace(memory, state=State.WAITING_FOR_TARGET)
        return _waiting(step, f"{_what(ctx)} now names EndpointConfig {pending.endpoint_config_name}; waiting for "
                              f"SageMaker to update it")

    world, endpoint = _read_problems(ctx)
    configs = world.listings.get(KindRef(ref.api_version, "EndpointConfig", ref.namespace), ())
    models = world.listings.get(KindRef(ref.api_version, "Model", ref.namespace), ())
    # The spec's variant first: the user may name another one than the last promotion changed.
    hint = [ctx.promotion.variant_name, (memory.current or RecordedConfiguration()).variant_name]
    live = targets.ack_live(endpoint, configs, models, hint)

    if not same:
        if world.conflict and not dry_run:
            _apply_problems(ApplyResult(conflict=world.conflict), f"pointing {_what(ctx)} at a new EndpointConfig")
        return _ack_begin(ctx, step, desired, rollback, dry_run, world, live, restoring)
    pending = _pending(memory)
    if memory.state == State.REGISTERING_SCALING:
        return _ack_register(ctx, step, world, endpoint, pending)
    if memory.state == State.CREATING_RESOURCES:
        recorded = memory.pending_objects or ()
        created = [o for name in recorded for o in (_listed(world, ref, name),) if o is not None]
        for obj in created:
            terminal = condition(obj, targets.ACK_TERMINAL)
            if terminal and terminal.get("status") == "True":
                return _fail(step, Reason.RESOURCE_REJECTED,
                             f"ACK could not create {obj['kind']} {obj['metadata']['name']} in SageMaker: "
                             f"{terminal.get('message') or 'terminal condition without a message'}")
        if len(created) < len(recorded):
            # Recorded but not created (the operator stopped in between): create them now.
            return _ack_create(ctx, step, desired, live, pending, resume=True)
        unsynced = [o["kind"] + "/" + o["metadata"]["name"] for o in created
                    if not condition_is(o, targets.ACK_SYNCED, "True")]
        if unsynced:
            return _waiting_for_controller(ctx, step, f"waiting for ACK to create {', '.join(unsynced)} in SageMaker")
        step.memory = memory = replace(memory, state=State.UPDATING_TARGET)
    config_name = _config_name(pending)
    if live.config_name != config_name:
        if memory.state == State.WAITING_FOR_TARGET:
            return _fail(step, Reason.ENDPOINT_UPDATE_FAILED,
                         f"{_what(ctx)} was pointed at EndpointConfig {config_name} but now names "
                         f"{live.config_name}: another writer changed it during the promotion")
        deregistering = _deregister(ctx, step, world, endpoint, live, pending)
        if deregistering is not None:
            return deregistering
        step.memory = replace(memory, state=State.UPDATING_TARGET)
        step.effect = ApplyObjects((targets.endpoint_patch(ref, config_name),),
                                   force_conflicts=ctx.promotion.force_conflicts)
        return _waiting(step, f"pointing {_what(ctx)} at EndpointConfig {config_name}")
    step.memory = replace(memory, state=State.WAITING_FOR_TARGET)
    verdict, detail = targets.ack_endpoint_verdict(endpoint, config_name)
    if verdict == "failed":
        return _fail(step, Reason.ENDPOINT_UPDATE_FAILED,
                     f"SageMaker could not update {_what(ctx)} to EndpointConfig {config_name}: "
                     f"{detail}; the endpoint keeps serving its previous configuration. Roll back with the annotation "
                     f"{ROLLBACK_ANNOTATION}=true, or edit the spec to try again")
    if verdict == "waiting":
        return _waiting_for_controller(ctx, step, f"waiting for {_what(ctx)} to serve EndpointConfig "
                                                  f"{config_name}: {detail}")
    return _ack_register(ctx, step, world, endpoint, pending)


def _listed(world: World, ref: ObjectRef, entry: str) -> Mapping[str, Any] | None:
    kind, name = entry.split("/", 1)
    listing = world.listings.get(KindRef(ref.api_version, kind, ref.namespace), ())
    return next((o for o in listing if o["metadata"]["name"] == name), None)


def _ack_begin(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool, world: World,
               live: targets.AckLive, restoring: RecordedConfiguration) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    configs = world.listings.get(KindRef(ref.api_version, "EndpointConfig", ref.namespace), ())
    current = memory.current or RecordedConfiguration()
    known = current.recommendation_id if current.endpoint_config_name == live.config_name else None
    snapshot = RecordedConfiguration.from_storage(live.configuration(known))
    # A rollback restores the configuration it names; a promotion of the configuration `previous` recorded (after
    # a rollback) reuses the objects kept for it.
    source = restoring if rollback else (memory.previous or RecordedConfiguration())
    reusable = rollback or (desired.recommendation_id and source.recommendation_id == desired.recommendation_id
                            and targets.by_sagemaker_name(configs, "endpointConfigName", source.endpoint_config_name))
    if reusable:
        # Back to a configuration whose objects still exist (kept for rollback): point the endpoint at them.
        name = source.endpoint_config_name
        if not name or not targets.by_sagemaker_name(configs, "endpointConfigName", name):
            raise TargetProblem(Reason.NOTHING_TO_ROLL_BACK, f"EndpointConfig {name}, which {_what(ctx)} used "
                                f"before, no longer exists in namespace {ref.namespace}", retry=False)
        reused = replace(source, patch=None)
        if live.config_name != name:
            if dry_run:
                return _ack_planned(ctx, step, desired, [targets.endpoint_patch(ref, name)])
            step.memory = replace(_start(memory, ctx, rollback, snapshot, reused, State.UPDATING_TARGET),
                                  pending_objects=None)
            deregistering = _deregister(ctx, step, world, live.endpoint, live, reused)
            if deregistering is not None:
                return deregistering
            step.effect = ApplyObjects((targets.endpoint_patch(ref, name),),
                                       force_conflicts=ctx.promotion.force_conflicts)
            return _waiting(step, f"pointing {_what(ctx)} at EndpointConfig {name} again")
        if targets.ack_serves(live.endpoint, name):
            if dry_run:
                return _ack_planned(ctx, step, desired, [])
            step.memory = replace(_start(memory, ctx, rollback, snapshot, reused, State.UPDATING_TARGET),
                                  pending_objects=None)
            return _succeed(ctx, step)  # already there: SageMaker has nothing to update
        # The endpoint names it but SageMaker does not serve it (an update to it failed): ACK never sends a name
        # whose update failed again, so only a copy under a new name retries it. The live objects are its own.
    if live.config is None:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"EndpointConfig {live.config_name or '(none)'}, which "
                            f"{_what(ctx)} uses, is not an ACK resource in namespace {ref.namespace}; promotion "
                            f"copies it to make the new one")
    if live.variant is None:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"EndpointConfig {live.config_name} has no production variants")
    if live.realises(desired) and targets.ack_serves(live.endpoint, live.config_name):
        if dry_run:
            return _ack_planned(ctx, step, desired, [])
        pending = snapshot.updated(desired).autoscaled(desired)
        step.memory = replace(memory, pending=pending, rollback=rollback, previous=_last_known_good(memory, snapshot))
        if pending.scaling:
            # Already served: only the registration is left to do.
            step.memory = replace(step.memory, pending_generation=ctx.generation, started_at=ctx.now)
            return _ack_register(ctx, step, world, live.endpoint, pending)
        return _succeed(ctx, step)
    needs_model = any(live.environment().get(k) != v for k, v in desired.environment.items())
    if needs_model and live.model is None:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"Model {live.variant.get('modelName')}, which EndpointConfig "
                            f"{live.config_name} serves, is not an ACK resource in namespace {ref.namespace}; "
                            f"promotion copies it to set the environment")
    name = targets.object_name(ref.name, ctx.owner_uid, (memory.attempt or 0) + 1)
    variant_name = live.variant["variantName"]
    # ACK updates with RetainAllVariantProperties, which keeps a same-named variant's count: a new count needs a new
    # variant name, unless the variant is autoscaled. Then the count is Application Auto Scaling's (the registered
    # min/max capacity), and a new name would leave the ScalableTarget registering a variant that is gone; AWS's
    # procedure keeps the variant name too ("For production variants that you want to keep existing instance count
    # or weight, use the same variant name", https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html).
    autoscaled = desired.scaling is not None or _registered(ctx, world, live.endpoint, variant_name)
    if int(live.variant.get("initialInstanceCount") or 1) != desired.instance_count and not autoscaled:
        variant_name = targets.variant_name_for(variant_name, desired.instance_count)
    pending = RecordedConfiguration.of(desired, endpoint_config_name=name,
                                       model_name=name if needs_model else live.variant.get("modelName"),
                                       variant_name=variant_name).autoscaled(desired)
    _scaling_problems(ctx, world, live, pending)
    if dry_run:
        bodies = _ack_bodies(ctx, live, desired, pending)
        return _ack_planned(ctx, step, desired, [*bodies, targets.endpoint_patch(ref, name),
                                                 *_scaling_bodies(ctx, pending, world)])
    making_room = _make_room(ctx, step, world, live, [*(["Model/" + name] if needs_model else []),
                                                      "EndpointConfig/" + name])
    if making_room is not None:
        return making_room
    step.memory = _start(step.memory, ctx, rollback, snapshot, pending, State.CREATING_RESOURCES, new_names=True)
    return _ack_create(ctx, step, desired, live, pending, resume=False)


def _ack_bodies(ctx: Context, live: targets.AckLive, desired: Configuration,
                pending: RecordedConfiguration) -> list[dict[str, Any]]:
    bodies = []
    name = _config_name(pending)
    if pending.model_name == name:
        bodies.append(targets.model_copy(live, name, desired.environment, ctx.job_name))
    bodies.append(targets.config_copy(live, name, desired, pending.model_name, pending.variant_name, ctx.job_name))
    return bodies


def _ack_create(ctx: Context, step: Step, desired: Configuration, live: targets.AckLive,
                pending: RecordedConfiguration, resume: bool) -> Step:
    memory = step.memory
    if live.config is None or live.variant is None:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"EndpointConfig {live.config_name} to copy is gone")
    bodies = _ack_bodies(ctx, live, desired, pending)
    names = [f"{b['kind']}/{b['metadata']['name']}" for b in bodies]
    inventory = list(memory.created_objects or ())
    # Room was made before the attempt started (_make_room): nothing is dropped from the list.
    step.memory = replace(memory, pending_objects=tuple(names),
                          created_objects=tuple(inventory + [n for n in names if n not in inventory]))
    step.effect = ApplyObjects(tuple(bodies))
    verb = "creating" if not resume else "creating (again, after a restart)"
    return _waiting(step, f"{verb} {', '.join(names)} for {desired.describe()}")


def _ack_planned(ctx: Context, step: Step, desired: Configuration, documents: list[dict[str, Any]]) -> Step:
    step.memory = replace(_between_attempts(step.memory, State.PLANNED), planned_objects=tuple(documents))
    changes = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in documents) or "nothing (already serving it)"
    conflict = f"; it would conflict with another field manager: {ctx.world.conflict}" \
        if ctx.world and ctx.world.conflict else ""
    step.promoted = (st.FALSE, Reason.DRY_RUN, f"dry run: promoting {desired.describe()} to {_what(ctx)} would "
                                               f"apply {changes}{conflict}; nothing was changed")
    return step


# -- garbage collection ----------------------------------------------------------------------------------------

def _kept(memory: PromotionMemory) -> set[str]:
    """What current, previous and pending configurations still use (rollback needs previous)."""
    keep = set(memory.pending_objects or ())
    for entry in (memory.current, memory.previous, memory.pending):
        if entry is not None:
            keep |= entry.objects()
    return keep


def _delete(ref: ObjectRef, entries: Sequence[str]) -> DeleteObjects:
    return DeleteObjects(tuple(ObjectRef(ref.api_version, entry.split("/", 1)[0], ref.namespace,
                                         entry.split("/", 1)[1]) for entry in entries))


def _collect_garbage(ctx: Context, step: Step) -> Step:
    memory = step.memory
    stale = [entry for entry in memory.created_objects or () if entry not in _kept(memory)]
    if stale and step.effect is None:
        step.effect = _delete(target_ref(ctx), stale)
    return step


def _make_room(ctx: Context, step: Step, world: World, live: targets.AckLive, needed: list[str]) -> Step | None:
    """createdObjects is bounded (the CRD caps it at MAX_CREATED_OBJECTS), and dropping a name from it would leak
    the object behind it. Before an attempt adds `needed` to a full list, what no configuration uses is deleted;
    None when there is room."""
    memory, ref = step.memory, target_ref(ctx)
    inventory = list(memory.created_objects or ())
    if len(inventory) + len(needed) <= MAX_CREATED_OBJECTS:
        return None
    # Objects someone deleted by hand are gone from the listings: forget them (only kinds that were listed).
    listed = {kind for kind in ("Model", "EndpointConfig") if KindRef(ref.api_version, kind, ref.namespace) in
              world.listings and (ref.api_version, kind) not in world.unserved}
    inventory = [e for e in inventory if e.split("/", 1)[0] not in listed or _listed(world, ref, e) is not None]
    step.memory = memory = replace(memory, created_objects=tuple(inventory))
    if len(inventory) + len(needed) <= MAX_CREATED_OBJECTS:
        return None
    # What the endpoint names is the source of the copies, whichever configuration it belongs to.
    in_use = _kept(memory) | {f"EndpointConfig/{live.config_name}", f"Model/{(live.variant or {}).get('modelName')}"}
    spare = [entry for entry in inventory if entry not in in_use]
    if spare:
        step.effect = _delete(ref, spare)
        return _waiting(step, f"deleting {', '.join(spare)}, which no configuration uses, to make room in "
                              f"status.promotion.createdObjects before the next attempt on {_what(ctx)}")
    raise TargetProblem(Reason.TOO_MANY_OBJECTS, f"the next attempt on {_what(ctx)} would create "
                        f"{', '.join(needed)}, but status.promotion.createdObjects holds at most {MAX_CREATED_OBJECTS} "
                        f"objects and every one is still used by the current, previous or pending configuration or "
                        f"by the endpoint: {', '.join(inventory)}. Nothing was started or forgotten. Delete by hand "
                        f"the ones you can spare in namespace {ref.namespace} (objects that no longer exist are "
                        f"forgotten); the operator tries again")


def _collected(step: Step, deleted: DeleteResult) -> Step:
    deregistered = sorted(f"{r.kind}/{r.name}" for r in deleted.deleted if r.api_version == targets.AAS_API_VERSION)
    gone = {f"{r.kind}/{r.name}" for r in deleted.deleted if r.api_version != targets.AAS_API_VERSION}
    step.memory = replace(step.memory, created_objects=tuple(e for e in step.memory.created_objects or ()
                                                             if e not in gone))
    if deregistered:
        step.events.append(("Normal", "PromotionDeregisteredScaling", f"deleted {', '.join(deregistered)}: ACK "
                                                                      f"deregisters the variant from autoscaling"))
    if gone:
        step.events.append(("Normal", "PromotionCleanedUp", f"deleted {', '.join(sorted(gone))}, which no promoted "
                                                            f"or previous configuration uses any more"))
    if deleted.error:
        step.events.append(("Warning", "PromotionCleanupFailed", f"could not delete what an earlier promotion "
                                                                 f"created: {deleted.error}; retrying later"))
        step.poll_after = PollAfter.RETRY
    return step


# -- ACK Application Auto Scaling -------------------------------------------------------------------------------
# AWS: "If the update would change the instance type for any model that is a target for auto scaling, the update
# fails. [...] Before you update the endpoint, delete any scaling policies configured for it and deregister the
# variant as a scalable target [...]. After you update the endpoint, you can register the updated variant as a
# scalable target and attach a scaling policy." Those steps are needed only when the update changes an autoscaled
# variant's instance type or removes the variant
# (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html). In ACK terms, deregistering is
# deleting the ScalableTarget and ScalingPolicy objects (ACK's finalizer calls DeleteScalingPolicy and
# DeregisterScalableTarget), and registering is applying them. Only what rightsizer created (its name and label) is
# ever deleted: a ScalableTarget of the team's own that registers the variant stops the attempt before anything is
# created, with a message saying what to do.

def _scaling_listings(ctx: Context, world: World) -> tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]:
    scalable, policies = targets.scaling_kinds(ctx.namespace)
    return world.listings.get(scalable, ()), world.listings.get(policies, ())


def _registered(ctx: Context, world: World, endpoint: Mapping[str, Any], variant_name: str | None) -> bool:
    """Whether any ScalableTarget (ours or not) registers this variant."""
    resource_id = targets.variant_resource_id(endpoint, variant_name)
    return any(targets.registers(o, resource_id) for o in _scaling_listings(ctx, world)[0])


def _scaling_problems(ctx: Context, world: World, live: targets.AckLive, pending: RecordedConfiguration) -> None:
    """What stops an attempt on an autoscaled variant before it creates anything."""
    if pending.scaling:
        unserved = [kind.kind for kind in targets.scaling_kinds(ctx.namespace)
                    if (kind.api_version, kind.kind) in world.unserved]
        if unserved:
            raise TargetProblem(Reason.SCALING_KIND_NOT_SERVED, f"status.best.scaling is to be registered for "
                                f"{_what(ctx)}'s variant, but the API server does not serve {', '.join(unserved)} in "
                                f"{targets.AAS_API_VERSION}: install the ACK Application Auto Scaling controller")
    _to_deregister(ctx, world, live.endpoint, live, pending)


def _to_deregister(ctx: Context, world: World, endpoint: Mapping[str, Any], live: targets.AckLive,
                   pending: RecordedConfiguration) -> list[Mapping[str, Any]]:
    """Our ScalableTarget and ScalingPolicies that must go before the endpoint is pointed at `pending`'s config:
    when the update changes the autoscaled variant's instance type or removes the variant, when they register
    another variant than the one `pending` names, or when `pending` has no scaling (a promotion of a configuration
    without one, a rollback to what the endpoint served before). Raises when a ScalableTarget that is not ours
    registers the variant and the update needs it deregistered, or ours would have to be registered beside it."""
    variant = live.variant or {}
    live_id = targets.variant_resource_id(endpoint, variant.get("variantName"))
    new_id = targets.variant_resource_id(endpoint, pending.variant_name)
    changes = (variant.get("instanceType") != pending.instance_type
               or variant.get("variantName") != pending.variant_name)
    name = targets.scaling_name(ctx.promotion.target.name, ctx.owner_uid)
    scalable, policies = _scaling_listings(ctx, world)
    foreign = [o["metadata"]["name"] for o in scalable if targets.registers(o, live_id) and not targets.ours(o, name)]
    if foreign and (changes or pending.scaling):
        why = (f"SageMaker fails UpdateEndpoint when it changes an autoscaled variant's instance type (from "
               f"{variant.get('instanceType')} to {pending.instance_type}), and rightsizer deletes only what it "
               f"created" if changes else "Application Auto Scaling holds one scalable target per variant, and "
               "rightsizer would register status.best.scaling for it")
        raise TargetProblem(Reason.FOREIGN_SCALABLE_TARGET, f"ScalableTarget {', '.join(foreign)} in namespace "
                            f"{ctx.namespace}, which rightsizer did not create, registers {live_id}: {why}. Delete "
                            f"it and its ScalingPolicies (ACK deregisters the variant), or promote by hand; the "
                            f"operator tries again")
    mine = [o for o in (*policies, *scalable) if targets.ours(o, name)]
    target = next((o for o in scalable if o["metadata"]["name"] == name and targets.ours(o, name)), None)
    keep = pending.scaling and not changes and target is not None and targets.registers(target, new_id)
    if not keep:
        return mine
    # Registered in place: only policies the new scaling no longer has go (the rest are applied over).
    wanted = {(b["kind"], b["metadata"]["name"]) for b in _scaling_bodies(ctx, pending, world)}
    return [o for o in mine if (o["kind"], o["metadata"]["name"]) not in wanted]


def _deregister(ctx: Context, step: Step, world: World, endpoint: Mapping[str, Any], live: targets.AckLive,
                pending: RecordedConfiguration) -> Step | None:
    """Deregistering before the endpoint's update: a delete, then a wait until ACK has deregistered (its finalizer
    keeps the objects until then). None when nothing is (or is any longer) registered that must go."""
    going = _to_deregister(ctx, world, endpoint, live, pending)
    if not going:
        return None
    step.memory = replace(step.memory, state=State.DEREGISTERING_SCALING)
    names = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in going)
    waiting = [o for o in going if not (o.get("metadata") or {}).get("deletionTimestamp")]
    if not waiting:
        return _waiting_for_controller(ctx, step, f"waiting for ACK to deregister {names} before {_what(ctx)} is "
                                                  f"updated")
    step.effect = DeleteObjects(tuple(ObjectRef(targets.AAS_API_VERSION, o["kind"], ctx.namespace,
                                                o["metadata"]["name"]) for o in waiting))
    return _waiting(step, f"deleting {names} (deregistering the variant from autoscaling) before {_what(ctx)} is "
                          f"updated to {pending.configuration().describe()}")


def _scaling_bodies(ctx: Context, pending: RecordedConfiguration, world: World | None) -> list[dict[str, Any]]:
    scaling = pending.configuration().scaling
    endpoint = (world.objects.get(target_ref(ctx)) if world else None) or {}
    if scaling is None or not pending.variant_name:
        return []
    name = targets.scaling_name(ctx.promotion.target.name, ctx.owner_uid)
    return targets.scaling_bodies(ctx.namespace, name, targets.variant_resource_id(endpoint, pending.variant_name),
                                  str((endpoint.get("spec") or {}).get("endpointName")), pending.variant_name,
                                  scaling, ctx.job_name)


def _ack_register(ctx: Context, step: Step, world: World, endpoint: Mapping[str, Any],
                  pending: RecordedConfiguration) -> Step:
    """After the endpoint serves `pending`: apply the ScalableTarget and ScalingPolicies, wait for ACK to sync
    them, then the attempt has succeeded. Without a scaling, it has succeeded already."""
    bodies = _scaling_bodies(ctx, pending, world)
    if not bodies:
        return _succeed(ctx, step)
    step.memory = replace(step.memory, state=State.REGISTERING_SCALING)
    scalable, policies = _scaling_listings(ctx, world)
    listed = {(o["kind"], o["metadata"]["name"]): o for o in (*scalable, *policies)}
    found = [listed.get((b["kind"], b["metadata"]["name"])) for b in bodies]
    if any(o is not None and (o.get("metadata") or {}).get("deletionTimestamp") for o in found):
        return _waiting_for_controller(ctx, step, f"waiting for ACK to finish deregistering before registering "
                                                  f"{_what(ctx)}'s variant again")
    if any(o is None or any((o.get("spec") or {}).get(k) != v for k, v in b["spec"].items())
           for o, b in zip(found, bodies)):
        step.effect = ApplyObjects(tuple(bodies), force_conflicts=ctx.promotion.force_conflicts)
        return _waiting(step, f"registering {_what(ctx)}'s variant {pending.variant_name} for autoscaling: applying "
                              f"{', '.join(b['kind'] + '/' + b['metadata']['name'] for b in bodies)}")
    present = [o for o in found if o is not None]  # all of them, after the apply above
    for obj in present:
        terminal = condition(obj, targets.ACK_TERMINAL)
        if terminal and terminal.get("status") == "True":
            return _fail(step, Reason.RESOURCE_REJECTED,
                         f"ACK could not register {obj['kind']} {obj['metadata']['name']} with Application Auto "
                         f"Scaling: {terminal.get('message') or 'terminal condition without a message'}; "
                         f"{_what(ctx)} serves {pending.configuration().describe()} without autoscaling")
    unsynced = [f"{o['kind']}/{o['metadata']['name']}" for o in present
                if not condition_is(o, targets.ACK_SYNCED, "True")]
    if unsynced:
        return _waiting_for_controller(ctx, step, f"waiting for ACK to register {', '.join(unsynced)} with "
                                                  f"Application Auto Scaling")
    return _succeed(ctx, step)
