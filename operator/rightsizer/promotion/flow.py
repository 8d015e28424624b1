"""The promotion state machine, pure: what the gate allows, what the target needs next, what to record.

status.promotion is the memory. A new attempt writes what it is about to do (`pending`, the objects it will
create, the configuration it replaces) before it touches anything, so a restart at any line finds the attempt
and carries it on instead of starting another; ACK object names carry the attempt number, so a name that ACK or
SageMaker refused is never tried again. An attempt under way is carried to its end whatever the gate says by then
(approval, SLA): the gate decides between attempts, and the rollback annotation is the way to stop one.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from typing import Any, Mapping

from rightsizer import status as st
from rightsizer.promotion import paths, targets
from rightsizer.promotion.objects import (ApplyObjects, ApplyResult, DeleteObjects, DeleteResult, KindRef, ObjectRef,
                                          ReadWorld, World, condition, condition_is)
from rightsizer.promotion.targets import Configuration, TargetProblem

APPROVE_ANNOTATION = "rightsizer.io/approve"
ROLLBACK_ANNOTATION = "rightsizer.io/rollback"
MAX_CREATED_OBJECTS = 10

# status.promotion.state values
AWAITING_APPROVAL = "AwaitingApproval"
PLANNED = "Planned"
CREATING_RESOURCES = "CreatingResources"
UPDATING_TARGET = "UpdatingTarget"
WAITING_FOR_TARGET = "WaitingForTarget"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ROLLED_BACK = "RolledBack"
# The states of an attempt under way (pending recorded, outcome not known yet).
ATTEMPT_STATES = (CREATING_RESOURCES, UPDATING_TARGET, WAITING_FOR_TARGET)

# Promoted=False reasons that wait for a person (a spec edit, a new approval) rather than for time.
FINAL_REASONS = ("EndpointUpdateFailed", "ResourceRejected", "UnsupportedTarget", "UnsupportedConfiguration",
                 "NothingToRollBack")
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
DEFAULT_PROGRESS_DEADLINE_S = 3600


@dataclasses.dataclass(frozen=True)
class Context:
    promotion: Mapping[str, Any]  # spec.promotion, defaults applied
    namespace: str
    job_name: str
    owner_uid: str
    generation: int
    best: Mapping[str, Any] | None
    sla_satisfied: str | None  # the SLASatisfied condition's status
    annotations: Mapping[str, str]
    memory: Mapping[str, Any]  # status.promotion
    now: datetime.datetime
    world: World | None = None
    applied: ApplyResult | None = None
    deleted: DeleteResult | None = None


@dataclasses.dataclass
class Step:
    memory: dict[str, Any]
    promoted: tuple[str, str, str] | None = None  # (status, reason, message) of the Promoted condition
    awaiting: tuple[str, str, str] | None = None  # ... of AwaitingApproval
    ready: tuple[str, str, str] | None = None  # overrides the job's Ready when the promotion decides it
    effect: ReadWorld | ApplyObjects | DeleteObjects | None = None
    poll_after: str | None = None  # "poll" (a look soon) or "retry" (after a refusal worth retrying)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    phase: str | None = None


def target_ref(ctx: Context) -> ObjectRef:
    target = ctx.promotion["target"]
    return ObjectRef(target["apiVersion"], target["kind"], ctx.namespace, target["name"])


def advance(ctx: Context) -> Step:
    memory = copy.deepcopy(dict(ctx.memory))
    target = ctx.promotion["target"]
    memory["target"] = {k: target[k] for k in ("apiVersion", "kind", "name")}
    memory["mode"] = ctx.promotion.get("mode", "Manual")
    step = Step(memory)
    if ctx.deleted is not None:
        _collected(ctx, step)
        if ctx.deleted.error:
            return step
        # A deletion may have made room for an attempt: carry on in the same visit rather than at the next poll.
        ctx = dataclasses.replace(ctx, deleted=None)

    rollback = ctx.annotations.get(ROLLBACK_ANNOTATION) == "true"
    if rollback:
        return _rollback(ctx, step)
    if _in_flight(memory):
        return _carry_on(ctx, step)
    desired = _gate(ctx, step)
    if desired is None:
        return step
    dry_run = memory["mode"] == "DryRun"
    if not dry_run and _converged(memory, desired):
        return _stay_promoted(ctx, step)
    return _attempt(ctx, step, desired, rollback=False, dry_run=dry_run)


# -- gate -------------------------------------------------------------------------------------------------------

def _gate(ctx: Context, step: Step) -> Configuration | None:
    mode, best = step.memory["mode"], ctx.best
    target, what = targets.kind_of(ctx.promotion["target"]), _what(ctx)
    if best is None:
        if mode == "Automatic" and ctx.sla_satisfied == st.FALSE:
            step.promoted = (st.FALSE, "SLANotMet", f"nothing is promoted to {what}: no configuration meets the SLA")
        elif not step.memory.get("current"):
            step.promoted = (st.UNKNOWN, "NoBestConfiguration",
                             f"waiting for the job to select a configuration to promote to {what}")
        step.awaiting = (st.FALSE, "NoBestConfiguration", "there is no configuration to approve yet")
        return None
    configuration = Configuration.from_row(best)
    if target == "ack" and not (configuration.instance_type or "").startswith("ml."):
        step.promoted = (st.FALSE, "UnsupportedConfiguration",
                         f"{configuration.describe()} is a local profile; an ACK SageMaker Endpoint needs an ml.* type")
        step.ready = (st.FALSE, "UnsupportedConfiguration", step.promoted[2])
        return None
    if mode == "Manual":
        approval = ctx.annotations.get(APPROVE_ANNOTATION)
        if approval not in ("best", best.get("recommendationId")):
            hint = (f"annotate the RightsizeJob with {APPROVE_ANNOTATION}={best.get('recommendationId')} "
                    f"(or {APPROVE_ANNOTATION}=best) to promote {configuration.describe()} to {what}")
            if _converged(step.memory, configuration):
                return configuration  # what is approved is already there: nothing to wait for
            if approval:
                step.awaiting = (st.TRUE, "ApprovalStale",
                                 f"the approval names {approval}, which is not the best configuration "
                                 f"{best.get('recommendationId')}; {hint}")
            else:
                step.awaiting = (st.TRUE, "ApprovalRequired", hint)
            _between_attempts(step.memory, AWAITING_APPROVAL)
            if not step.memory.get("current"):
                step.promoted = (st.FALSE, "AwaitingApproval", f"waiting for approval to promote to {what}")
            return None
        step.awaiting = (st.FALSE, "Approved", f"{approval} approved")
    else:
        step.awaiting = (st.FALSE, "NotRequired", f"spec.promotion.mode is {mode}")
    if mode == "Automatic" and ctx.sla_satisfied != st.TRUE:
        step.promoted = (st.FALSE, "SLANotMet", f"nothing is promoted to {what}: SLASatisfied is not True")
        return None
    return configuration


def _between_attempts(memory: dict[str, Any], state: str) -> None:
    """Record a state that belongs to no attempt (AwaitingApproval, Planned). A failed attempt keeps its Failed:
    that is what stops it from being resumed, or retried before the spec changes."""
    if not memory.get("pending"):
        memory["state"] = state


def _in_flight(memory: Mapping[str, Any]) -> bool:
    return bool(memory.get("pending")) and memory.get("state") not in (FAILED, SUCCEEDED, ROLLED_BACK)


def _carry_on(ctx: Context, step: Step) -> Step:
    """An attempt under way is finished whatever the gate says now: its approval (or SLA) held when it started, and
    half-made changes left behind are worse than a completed promotion. The gate applies between attempts; the
    rollback annotation is the way to stop one."""
    memory = step.memory
    if memory.get("state") not in ATTEMPT_STATES:
        # Written by a version that let the gate overwrite the state of an attempt under way: the checks that
        # state would skip (sync, Terminal, the endpoint's verdict) are run again from the first one.
        memory["state"] = CREATING_RESOURCES if memory.get("pendingObjects") else UPDATING_TARGET
    pending = memory["pending"]
    return _attempt(ctx, step, Configuration.from_row(pending), rollback=bool(memory.get("rollback")),
                    dry_run=False, restoring=pending)


def _converged(memory: Mapping[str, Any], desired: Configuration) -> bool:
    current = memory.get("current") or {}
    return (memory.get("state") == SUCCEEDED and not memory.get("pending")
            and current.get("recommendationId") == desired.recommendation_id)


def _stay_promoted(ctx: Context, step: Step) -> Step:
    current = Configuration.from_row(step.memory["current"])
    message = f"{current.describe()} is promoted to {_what(ctx)}"
    step.promoted = (st.TRUE, "Promoted", message)
    step.ready = (st.TRUE, "Promoted", message)
    step.phase = st.PROMOTED_PHASE
    return _collect_garbage(ctx, step)


def _rollback(ctx: Context, step: Step) -> Step:
    memory = step.memory
    if memory.get("state") == ROLLED_BACK and not memory.get("pending"):
        current = Configuration.from_row(memory.get("current") or {})
        message = (f"rolled back to {current.describe()} on {_what(ctx)}; remove the annotation "
                   f"{ROLLBACK_ANNOTATION} to promote again")
        step.promoted = (st.TRUE, "RolledBack", message)
        step.ready = (st.TRUE, "RolledBack", message)
        step.awaiting = (st.FALSE, "RolledBack", message)
        return _collect_garbage(ctx, step)
    pending = memory.get("pending")
    if pending and memory.get("rollback"):
        return _attempt(ctx, step, Configuration.from_row(pending), rollback=True, dry_run=False, restoring=pending)
    if not memory.get("previous"):
        message = f"{ROLLBACK_ANNOTATION} is set but nothing was promoted to {_what(ctx)}: there is nothing to restore"
        step.promoted = (st.FALSE, "NothingToRollBack", message)
        step.ready = (st.FALSE, "NothingToRollBack", message)
        return step
    return _attempt(ctx, step, Configuration.from_row(memory["previous"]), rollback=True, dry_run=False,
                    restoring=memory["previous"])


# -- attempts ---------------------------------------------------------------------------------------------------

def _what(ctx: Context) -> str:
    target = ctx.promotion["target"]
    return f"{target['kind']}/{target['name']}"


def _same_attempt(memory: Mapping[str, Any], desired: Configuration, rollback: bool, generation: int) -> bool:
    pending = memory.get("pending")
    if not pending or bool(memory.get("rollback")) != rollback:
        return False
    if pending.get("recommendationId") != desired.recommendation_id:
        return False
    # A failed attempt is not retried for the same generation; an edit of the spec asks for a new one.
    return memory.get("state") != FAILED or memory.get("pendingGeneration") == generation


def _attempt(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
             restoring: Mapping[str, Any] | None = None) -> Step:
    """`restoring` is the recorded configuration (status.promotion.previous or pending) a rollback puts back."""
    memory = step.memory
    if memory.get("state") == FAILED and _same_attempt(memory, desired, rollback, ctx.generation):
        return step  # stays failed (its condition is already written) until the spec changes
    if ctx.world is None and ctx.applied is None:
        continuing = _same_attempt(memory, desired, rollback, ctx.generation) and memory.get("state") != FAILED
        step.effect = _reads(ctx, probe=not continuing)
        return step
    try:
        if targets.kind_of(ctx.promotion["target"]) == "ack":
            return _ack(ctx, step, desired, rollback, dry_run, restoring or {})
        return _patch_in_place(ctx, step, desired, rollback, dry_run, restoring or {})
    except TargetProblem as problem:
        return _problem(ctx, step, problem)


def _reads(ctx: Context, probe: bool) -> ReadWorld:
    """`probe`: the read may start a new attempt (none recorded, or a failed or superseded one)."""
    ref = target_ref(ctx)
    if targets.kind_of(ctx.promotion["target"]) != "ack":
        return ReadWorld((ref,))
    objects, listings = targets.ack_reads(ref)
    if not probe:
        return ReadWorld(objects, listings)
    # The endpoint is patched only after new ACK objects exist; a conflict on its endpointConfigName should stop
    # the attempt before they are created, so a dry run of that patch goes with the first read.
    upcoming = targets.object_name(ref.name, ctx.owner_uid, int(ctx.memory.get("attempt") or 0) + 1)
    return ReadWorld(objects, listings, probes=(targets.endpoint_patch(ref, upcoming),),
                     force_conflicts=bool(ctx.promotion.get("forceConflicts")))


def _problem(ctx: Context, step: Step, problem: TargetProblem) -> Step:
    step.promoted = (st.FALSE, problem.reason, problem.message)
    step.ready = (st.FALSE, problem.reason, problem.message)
    if problem.retry:
        step.poll_after = "retry"
    return step


def _read_problems(ctx: Context, world: World) -> None:
    ref = target_ref(ctx)
    # An ACK read also lists EndpointConfigs and Models and may dry-run the Endpoint's patch (the conflict probe):
    # World does not say which call was refused or failed, so the message names them all.
    ack = targets.kind_of(ctx.promotion["target"]) == "ack"
    if world.forbidden:
        if ack:
            raise TargetProblem("Forbidden", f"the operator may not read or patch {_what(ctx)}: {world.error}; its "
                                f"ClusterRole must grant get and patch on Endpoints, and list, create, patch and "
                                f"delete on EndpointConfigs and Models, in {ref.api_version}")
        raise TargetProblem("Forbidden", f"the operator may not read {_what(ctx)}: {world.error}; grant its "
                            f"ServiceAccount get (and patch) on {ref.kind} in {ref.api_version}")
    if world.error:
        doing = f"reading {_what(ctx)} and its ACK objects, or the dry run of its patch," if ack \
            else f"reading {_what(ctx)}"
        raise TargetProblem("TargetError", f"{doing} failed: {world.error}")
    if (ref.api_version, ref.kind) in world.unserved:
        raise TargetProblem("TargetKindNotServed", f"the API server does not serve {ref.kind} in {ref.api_version} "
                            f"(is its CRD or controller installed?)")
    if world.objects.get(ref) is None:
        raise TargetProblem("TargetNotFound", f"{_what(ctx)} does not exist in namespace {ref.namespace}")


def _apply_problems(ctx: Context, applied: ApplyResult, what: str, grant: str = "") -> None:
    """`grant`: the verbs and kind a refusal asks the user to grant."""
    if applied.conflict:
        raise TargetProblem("FieldConflict", f"{what}: another field manager owns a field this promotion sets, and "
                            f"it was not overwritten: {applied.conflict}. Remove the field from that manager's "
                            f"configuration, or set spec.promotion.forceConflicts to take it over")
    if applied.forbidden:
        raise TargetProblem("Forbidden", f"{what} was refused: {applied.error}; grant the operator's "
                            f"ServiceAccount {grant}")
    if applied.error:
        raise TargetProblem("TargetError", f"{what} failed: {applied.error}")


def _last_known_good(memory: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """What a new attempt records as `previous`: the live configuration, unless the memory holds an attempt that
    never succeeded (a success clears `pending`). Then the target may name a copy SageMaker refused, or one half
    made, and the configuration to roll back to stays the one recorded before it."""
    if memory.get("pending") and memory.get("previous"):
        return dict(memory["previous"])
    return dict(live)


def _start(memory: dict[str, Any], ctx: Context, desired: Configuration, rollback: bool, previous: Mapping[str, Any],
           pending: Mapping[str, Any], state: str, new_names: bool = False) -> None:
    """Record a new attempt before the first change it makes. `previous` is the live configuration it replaces;
    `new_names`: it creates objects, named after the attempt number (a promotion always counts as a new attempt,
    a rollback that only points the target back does not)."""
    memory.update(attempt=int(memory.get("attempt") or 0) + (1 if new_names or not rollback else 0),
                  pending=dict(pending), pendingGeneration=ctx.generation,
                  previous=_last_known_good(memory, previous), rollback=rollback, state=state,
                  startedAt=st.timestamp(ctx.now))
    memory.pop("plannedPatch", None)


def _succeed(ctx: Context, step: Step) -> Step:
    memory = step.memory
    pending, rollback = memory.pop("pending"), memory.pop("rollback", False)
    memory.pop("pendingObjects", None)
    memory.pop("pendingGeneration", None)
    memory.pop("startedAt", None)
    memory.update(current=pending, state=ROLLED_BACK if rollback else SUCCEEDED, appliedAt=st.timestamp(ctx.now))
    if pending.get("recommendationId"):
        memory["appliedRecommendationId"] = pending["recommendationId"]
    else:
        memory.pop("appliedRecommendationId", None)
    configuration = Configuration.from_row(pending).describe()
    if rollback:
        reason, message = "RolledBack", f"rolled back to {configuration} on {_what(ctx)}"
    else:
        reason, message = "Promoted", f"{configuration} is promoted to {_what(ctx)}"
    step.events.append(("Normal", reason, message))
    step.promoted = step.ready = (st.TRUE, reason, message)
    step.phase = st.PROMOTED_PHASE
    return _collect_garbage(ctx, step)


def _fail(ctx: Context, step: Step, reason: str, message: str) -> Step:
    step.memory["state"] = FAILED
    step.promoted = (st.FALSE, reason, message)
    step.ready = (st.FALSE, reason, message)
    return step


def _waiting(step: Step, message: str) -> Step:
    step.promoted = (st.UNKNOWN, "Promoting", message)
    step.ready = (st.UNKNOWN, "Promoting", message)
    step.poll_after = "poll"
    return step


def _waiting_for_controller(ctx: Context, step: Step, message: str) -> Step:
    """A wait on the target's controller, which may never end (a stuck ACK sync, a pod that cannot schedule). Past
    the deadline it is reported as a failure, but watched on: the controller may still get there."""
    _waiting(step, message)
    started = st.parse_timestamp(step.memory.get("startedAt"))
    deadline = int(ctx.promotion.get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_S)
    if started is None or (ctx.now - started).total_seconds() <= deadline:
        return step
    overdue = (f"no outcome {_duration(ctx.now - started)} after the attempt started (spec.promotion."
               f"progressDeadlineSeconds is {deadline}); still watching: {message}")
    step.promoted = step.ready = (st.FALSE, PROGRESS_DEADLINE_EXCEEDED, overdue)
    step.poll_after = "retry"
    return step


def _duration(elapsed: datetime.timedelta) -> str:
    minutes = int(elapsed.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


# -- patch in place (KServe, generic) ----------------------------------------------------------------------------

def _assignments(ctx: Context, live: Mapping[str, Any], configuration: Configuration):
    if targets.kind_of(ctx.promotion["target"]) == "kserve":
        return targets.kserve_assignments(live, configuration)
    return targets.generic_assignments(ctx.promotion.get("fieldPaths") or {}, configuration)


def _patch_in_place(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
                    restoring: Mapping[str, Any]) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    if ctx.applied is not None:
        _apply_problems(ctx, ctx.applied, f"server-side apply to {_what(ctx)}",
                        f"patch on {ref.kind} in {ref.api_version}")
        if targets.kind_of(ctx.promotion["target"]) == "kserve":
            memory["state"] = WAITING_FOR_TARGET
            return _waiting(step, f"applied {Configuration.from_row(memory['pending']).describe()} to {_what(ctx)}; "
                                  f"waiting for it to be Ready")
        return _succeed(ctx, step)

    _read_problems(ctx, ctx.world)
    live = ctx.world.objects[ref]
    if memory.get("state") == WAITING_FOR_TARGET and _same_attempt(memory, desired, rollback, ctx.generation):
        return _kserve_settled(ctx, step, live)

    same = _same_attempt(memory, desired, rollback, ctx.generation) and memory.get("state") != FAILED
    if rollback:
        # Back to what `previous` recorded, by applying its patch; what is rolled back from becomes `previous`.
        target_entry = dict(restoring)
        body = target_entry.get("patch") or {}
        previous = dict(memory.get("current") or {})
    else:
        assignments = _assignments(ctx, live, desired)
        body = paths.apply_body(live, assignments)
        target_entry = {**desired.as_status(), "patch": body}
        previous = {**{k: v for k, v in (memory.get("current") or {}).items() if k != "patch"},
                    "patch": paths.apply_body(live, targets.restoring(live, assignments))}
    document = targets.apply_document(ref, body)
    if dry_run:
        changes = targets.differences(live, assignments)
        _between_attempts(memory, PLANNED)
        memory["plannedPatch"] = {"objects": [document]}
        message = (f"dry run: would apply {desired.describe()} to {_what(ctx)} "
                   f"({'; '.join(changes) if changes else 'no change'}); nothing was changed")
        step.promoted = (st.FALSE, "DryRun", message)
        return step
    if not same:
        _start(memory, ctx, desired, rollback, previous, target_entry, UPDATING_TARGET)
    step.effect = ApplyObjects((document,), force_conflicts=bool(ctx.promotion.get("forceConflicts")))
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

def _ack(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
         restoring: Mapping[str, Any]) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    same = _same_attempt(memory, desired, rollback, ctx.generation) and memory.get("state") != FAILED
    if ctx.applied is not None:
        # ApplyObjects stops at the first failure and `applied` holds what went through before it: the object
        # that failed is the first one asked for (the recorded copies, else the Endpoint's patch) not in it.
        creating = memory.get("state") == CREATING_RESOURCES
        asked = list(memory.get("pendingObjects") or []) if creating else [ref.describe()]
        done = [r.describe() for r in ctx.applied.applied]
        failed = next((entry for entry in asked if entry not in done), asked[-1] if asked else _what(ctx))
        what = f"server-side apply of {failed}" + (f" (after {', '.join(done)})" if done else "")
        _apply_problems(ctx, ctx.applied, what, f"{'create and patch' if creating else 'patch'} on "
                                                f"{failed.split('/', 1)[0]} in {ref.api_version}")
        pending = memory["pending"]
        if memory.get("state") == CREATING_RESOURCES:
            return _waiting(step, f"created {', '.join(memory.get('pendingObjects') or [])}; waiting for ACK to "
                                  f"create them in SageMaker")
        memory["state"] = WAITING_FOR_TARGET
        return _waiting(step, f"{_what(ctx)} now names EndpointConfig {pending['endpointConfigName']}; waiting for "
                              f"SageMaker to update it")

    _read_problems(ctx, ctx.world)
    world = ctx.world
    endpoint = world.objects[ref]
    configs = world.listings.get(KindRef(ref.api_version, "EndpointConfig", ref.namespace), ())
    models = world.listings.get(KindRef(ref.api_version, "Model", ref.namespace), ())
    # The spec's variant first: the user may name another one than the last promotion changed.
    hint = [ctx.promotion["target"].get("variantName"), (memory.get("current") or {}).get("variantName")]
    live = targets.ack_live(endpoint, configs, models, hint)

    if not same:
        if world.conflict and not dry_run:
            _apply_problems(ctx, ApplyResult(conflict=world.conflict), f"pointing {_what(ctx)} at a new EndpointConfig")
        return _ack_begin(ctx, step, desired, rollback, dry_run, live, configs, restoring)
    pending = memory["pending"]
    if memory.get("state") == CREATING_RESOURCES:
        created = [o for name in memory.get("pendingObjects") or []
                   for o in (_listed(world, ref, name),) if o is not None]
        for obj in created:
            terminal = condition(obj, targets.ACK_TERMINAL)
            if terminal and terminal.get("status") == "True":
                return _fail(ctx, step, "ResourceRejected",
                             f"ACK could not create {obj['kind']} {obj['metadata']['name']} in SageMaker: "
                             f"{terminal.get('message') or 'terminal condition without a message'}")
        if len(created) < len(memory.get("pendingObjects") or []):
            # Recorded but not created (the operator stopped in between): create them now.
            return _ack_create(ctx, step, desired, live, pending, resume=True)
        unsynced = [o["kind"] + "/" + o["metadata"]["name"] for o in created
                    if not condition_is(o, targets.ACK_SYNCED, "True")]
        if unsynced:
            return _waiting_for_controller(ctx, step, f"waiting for ACK to create {', '.join(unsynced)} in SageMaker")
        memory["state"] = UPDATING_TARGET
    if live.config_name != pending["endpointConfigName"]:
        if memory.get("state") == WAITING_FOR_TARGET:
            return _fail(ctx, step, "EndpointUpdateFailed",
                         f"{_what(ctx)} was pointed at EndpointConfig {pending['endpointConfigName']} but now names "
                         f"{live.config_name}: another writer changed it during the promotion")
        memory["state"] = UPDATING_TARGET
        step.effect = ApplyObjects((targets.endpoint_patch(ref, pending["endpointConfigName"]),),
                                   force_conflicts=bool(ctx.promotion.get("forceConflicts")))
        return _waiting(step, f"pointing {_what(ctx)} at EndpointConfig {pending['endpointConfigName']}")
    memory["state"] = WAITING_FOR_TARGET
    verdict, detail = targets.ack_endpoint_verdict(endpoint, pending["endpointConfigName"])
    if verdict == "failed":
        return _fail(ctx, step, "EndpointUpdateFailed",
                     f"SageMaker could not update {_what(ctx)} to EndpointConfig {pending['endpointConfigName']}: "
                     f"{detail}; the endpoint keeps serving its previous configuration. Roll back with the annotation "
                     f"{ROLLBACK_ANNOTATION}=true, or edit the spec to try again")
    if verdict == "waiting":
        return _waiting_for_controller(ctx, step, f"waiting for {_what(ctx)} to serve EndpointConfig "
                                                  f"{pending['endpointConfigName']}: {detail}")
    return _succeed(ctx, step)


def _listed(world: World, ref: ObjectRef, entry: str) -> Mapping[str, Any] | None:
    kind, name = entry.split("/", 1)
    listing = world.listings.get(KindRef(ref.api_version, kind, ref.namespace), ())
    return next((o for o in listing if o["metadata"]["name"] == name), None)


def _ack_begin(ctx: Context, step: Step, desired: Configuration, rollback: bool, dry_run: bool,
               live: targets.AckLive, configs, restoring: Mapping[str, Any]) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    current = memory.get("current") or {}
    known = current.get("recommendationId") if current.get("endpointConfigName") == live.config_name else None
    snapshot = live.configuration(known)
    # A rollback restores the configuration it names; a promotion of the configuration `previous` recorded (after
    # a rollback) reuses the objects kept for it.
    source = restoring if rollback else (memory.get("previous") or {})
    reusable = rollback or (desired.recommendation_id and source.get("recommendationId") == desired.recommendation_id
                            and targets.by_sagemaker_name(configs, "endpointConfigName", source.get("endpointConfigName")))
    if reusable:
        # Back to a configuration whose objects still exist (kept for rollback): point the endpoint at them.
        name = source.get("endpointConfigName")
        if not name or not targets.by_sagemaker_name(configs, "endpointConfigName", name):
            raise TargetProblem("NothingToRollBack", f"EndpointConfig {name}, which {_what(ctx)} used before, no "
                                f"longer exists in namespace {ref.namespace}", retry=False)
        reused = {k: v for k, v in source.items() if k != "patch"}
        if live.config_name != name:
            if dry_run:
                return _ack_planned(ctx, step, desired, [targets.endpoint_patch(ref, name)])
            _start(memory, ctx, desired, rollback, snapshot, reused, UPDATING_TARGET)
            memory.pop("pendingObjects", None)
            step.effect = ApplyObjects((targets.endpoint_patch(ref, name),),
                                       force_conflicts=bool(ctx.promotion.get("forceConflicts")))
            return _waiting(step, f"pointing {_what(ctx)} at EndpointConfig {name} again")
        if targets.ack_serves(live.endpoint, name):
            if dry_run:
                return _ack_planned(ctx, step, desired, [])
            _start(memory, ctx, desired, rollback, snapshot, reused, UPDATING_TARGET)
            memory.pop("pendingObjects", None)
            return _succeed(ctx, step)  # already there: SageMaker has nothing to update
        # The endpoint names it but SageMaker does not serve it (an update to it failed): ACK never sends a name
        # whose update failed again, so only a copy under a new name retries it. The live objects are its own.
    if live.config is None:
        raise TargetProblem("SourceNotFound", f"EndpointConfig {live.config_name or '(none)'}, which {_what(ctx)} "
                            f"uses, is not an ACK resource in namespace {ref.namespace}; promotion copies it to make the "
                            f"new one")
    if live.variant is None:
        raise TargetProblem("SourceNotFound", f"EndpointConfig {live.config_name} has no production variants")
    if live.realises(desired) and targets.ack_serves(live.endpoint, live.config_name):
        if dry_run:
            return _ack_planned(ctx, step, desired, [])
        memory.update(pending={**snapshot, **desired.as_status()}, rollback=rollback,
                      previous=_last_known_good(memory, snapshot))
        return _succeed(ctx, step)
    needs_model = any(live.environment().get(k) != v for k, v in desired.environment.items())
    if needs_model and live.model is None:
        raise TargetProblem("SourceNotFound", f"Model {live.variant.get('modelName')}, which EndpointConfig "
                            f"{live.config_name} serves, is not an ACK resource in namespace {ref.namespace}; "
                            f"promotion copies it to set the environment")
    name = targets.object_name(ref.name, ctx.owner_uid, int(memory.get("attempt") or 0) + 1)
    variant_name = live.variant["variantName"]
    if int(live.variant.get("initialInstanceCount") or 1) != desired.instance_count:
        variant_name = targets.variant_name_for(variant_name, desired.instance_count)
    pending = {**desired.as_status(), "endpointConfigName": name,
               "modelName": name if needs_model else live.variant.get("modelName"), "variantName": variant_name}
    if dry_run:
        bodies = _ack_bodies(ctx, live, desired, pending)
        return _ack_planned(ctx, step, desired, [*bodies, targets.endpoint_patch(ref, name)])
    making_room = _make_room(ctx, step, live, [*(["Model/" + name] if needs_model else []), "EndpointConfig/" + name])
    if making_room is not None:
        return making_room
    _start(memory, ctx, desired, rollback, snapshot, pending, CREATING_RESOURCES, new_names=True)
    return _ack_create(ctx, step, desired, live, pending, resume=False)


def _ack_bodies(ctx: Context, live: targets.AckLive, desired: Configuration, pending: Mapping[str, Any]):
    bodies = []
    name = pending["endpointConfigName"]
    if pending["modelName"] == name:
        bodies.append(targets.model_copy(live, name, desired.environment, ctx.job_name))
    bodies.append(targets.config_copy(live, name, desired, pending["modelName"], pending["variantName"],
                                      ctx.job_name))
    return bodies


def _ack_create(ctx: Context, step: Step, desired: Configuration, live: targets.AckLive, pending: Mapping[str, Any],
                resume: bool) -> Step:
    memory = step.memory
    if live.config is None or live.variant is None:
        raise TargetProblem("SourceNotFound", f"EndpointConfig {live.config_name} to copy is gone")
    bodies = _ack_bodies(ctx, live, desired, pending)
    names = [f"{b['kind']}/{b['metadata']['name']}" for b in bodies]
    memory["pendingObjects"] = names
    inventory = list(memory.get("createdObjects") or [])
    # Room was made before the attempt started (_make_room): nothing is dropped from the list.
    memory["createdObjects"] = inventory + [n for n in names if n not in inventory]
    step.effect = ApplyObjects(tuple(bodies))
    verb = "creating" if not resume else "creating (again, after a restart)"
    return _waiting(step, f"{verb} {', '.join(names)} for {desired.describe()}")


def _ack_planned(ctx: Context, step: Step, desired: Configuration, documents: list[dict[str, Any]]) -> Step:
    _between_attempts(step.memory, PLANNED)
    step.memory["plannedPatch"] = {"objects": documents}
    changes = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in documents) or "nothing (already serving it)"
    conflict = f"; it would conflict with another field manager: {ctx.world.conflict}" \
        if ctx.world and ctx.world.conflict else ""
    step.promoted = (st.FALSE, "DryRun", f"dry run: promoting {desired.describe()} to {_what(ctx)} would apply "
                                         f"{changes}{conflict}; nothing was changed")
    return step


# -- garbage collection ----------------------------------------------------------------------------------------

def _kept(memory: Mapping[str, Any]) -> set[str]:
    """What current, previous and pending configurations still use (rollback needs previous)."""
    keep = set(memory.get("pendingObjects") or [])
    for entry in (memory.get("current"), memory.get("previous"), memory.get("pending")):
        for field, kind in (("endpointConfigName", "EndpointConfig"), ("modelName", "Model")):
            if entry and entry.get(field):
                keep.add(f"{kind}/{entry[field]}")
    return keep


def _collect_garbage(ctx: Context, step: Step) -> Step:
    memory, ref = step.memory, target_ref(ctx)
    stale = [entry for entry in memory.get("createdObjects") or [] if entry not in _kept(memory)]
    if stale and step.effect is None:
        step.effect = DeleteObjects(tuple(ObjectRef(ref.api_version, entry.split("/", 1)[0], ref.namespace,
                                                     entry.split("/", 1)[1]) for entry in stale))
    return step


def _make_room(ctx: Context, step: Step, live: targets.AckLive, needed: list[str]) -> Step | None:
    """createdObjects is bounded (the CRD caps it at MAX_CREATED_OBJECTS), and dropping a name from it would leak
    the object behind it. Before an attempt adds `needed` to a full list, what no configuration uses is deleted;
    None when there is room."""
    memory, ref, world = step.memory, target_ref(ctx), ctx.world
    inventory = list(memory.get("createdObjects") or [])
    if len(inventory) + len(needed) <= MAX_CREATED_OBJECTS:
        return None
    # Objects someone deleted by hand are gone from the listings: forget them (only kinds that were listed).
    listed = {kind for kind in ("Model", "EndpointConfig") if KindRef(ref.api_version, kind, ref.namespace) in
              world.listings and (ref.api_version, kind) not in world.unserved}
    inventory = [e for e in inventory if e.split("/", 1)[0] not in listed or _listed(world, ref, e) is not None]
    memory["createdObjects"] = inventory
    if len(inventory) + len(needed) <= MAX_CREATED_OBJECTS:
        return None
    # What the endpoint names is the source of the copies, whichever configuration it belongs to.
    in_use = _kept(memory) | {f"EndpointConfig/{live.config_name}", f"Model/{(live.variant or {}).get('modelName')}"}
    spare = [entry for entry in inventory if entry not in in_use]
    if spare:
        step.effect = DeleteObjects(tuple(ObjectRef(ref.api_version, entry.split("/", 1)[0], ref.namespace,
                                                    entry.split("/", 1)[1]) for entry in spare))
        return _waiting(step, f"deleting {', '.join(spare)}, which no configuration uses, to make room in "
                              f"status.promotion.createdObjects before the next attempt on {_what(ctx)}")
    raise TargetProblem("TooManyObjects", f"the next attempt on {_what(ctx)} would create {', '.join(needed)}, but "
                        f"status.promotion.createdObjects holds at most {MAX_CREATED_OBJECTS} objects and every one "
                        f"is still used by the current, previous or pending configuration or by the endpoint: "
                        f"{', '.join(inventory)}. Nothing was started or forgotten. Delete by hand the ones you can "
                        f"spare in namespace {ref.namespace} (objects that no longer exist are forgotten); the "
                        f"operator tries again")


def _collected(ctx: Context, step: Step) -> Step:
    memory, deleted = step.memory, ctx.deleted
    gone = {f"{r.kind}/{r.name}" for r in deleted.deleted}
    memory["createdObjects"] = [e for e in memory.get("createdObjects") or [] if e not in gone]
    if gone:
        step.events.append(("Normal", "PromotionCleanedUp", f"deleted {', '.join(sorted(gone))}, which no promoted "
                                                            f"or previous configuration uses any more"))
    if deleted.error:
        step.events.append(("Warning", "PromotionCleanupFailed", f"could not delete what an earlier promotion "
                                                                 f"created: {deleted.error}; retrying later"))
        step.poll_after = "retry"
    return step
