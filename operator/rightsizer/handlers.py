"""The kopf shell: turn Kubernetes events into reconcile() calls and carry out the actions it returns.

Each handler runs `drive`: reconcile, write the status patch, carry out the one backend action the outcome
holds, feed its result back, repeat. Status is written straight to the /status subresource before each
action, so a crash between two lines never leaves a job the status does not name.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import copy
import dataclasses
import datetime
import functools
import logging
import os
import threading
import weakref
from typing import Any, Callable

import kopf
import urllib3
from kubernetes import client

from rightsizer import kube
from rightsizer import metrics
from rightsizer import polling
from rightsizer import reconcile as core
from rightsizer import schema
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import base, clients, registry
from rightsizer.model import Owner
from rightsizer.promotion import executor as promotion_executor
from rightsizer.promotion import objects as promotion_objects

# kopf keeps per-handler progress and the last-handled spec in annotations under this prefix, and ignores every
# annotation under it when it diffs an object: the users' own rightsizer.io/approve and rightsizer.io/rollback
# must stay outside it, or changing them would trigger nothing.
ANNOTATION_PREFIX = "kopf.rightsizer.io"
FINALIZER = "rightsizer.io/finalizer"
RETRY_BACKOFF_SECONDS = 15
MAX_STEPS_PER_VISIT = 8
TRANSIENT_RETRY_SECONDS = (15, 60)  # after a transient error; the longer one when SageMaker throttles us
# Everything time-based can be compressed (tests, demos): 0.01 turns a 30 s poll into 0.3 s.
TIME_SCALE = float(os.environ.get("RIGHTSIZER_TIME_SCALE", "1"))
TIMING = base.Timing().scaled(TIME_SCALE)
# How often the poll scheduler looks for due objects: a poll is at most this late.
POLL_TICK_SECONDS = max(0.2, 1 * TIME_SCALE)


class _ObjectLock:
    """One object's lock. The table holds it weakly, so it lives while a visit holds or awaits it and no longer:
    a deleted object leaves nothing behind, whichever way it went (threading.Lock itself takes no weak reference)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> _ObjectLock:
        self._lock.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self._lock.release()


_object_locks: weakref.WeakValueDictionary[str, _ObjectLock] = weakref.WeakValueDictionary()
_object_locks_guard = threading.Lock()
# The resourceVersion each object had after this process last wrote it: a visit whose body from kopf is that very
# version starts from the body, without reading the object again. Bounded: a forgotten one only costs a read.
_written_versions: collections.OrderedDict[str, str] = collections.OrderedDict()
WRITTEN_VERSIONS_KEPT = 65536


class _LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's own essence of an object (spec, labels, annotations), built from only those parts: kopf deep-copies
    the whole body first, status and managedFields too, on every watch event (12 % of the operator's CPU with
    1,000 jobs, profiled with py-spy: benchmarks/operator_scale.py)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        fields = list(extra_fields or ())
        if not all(_within_essence(field) for field in fields):
            return super().build(body=body, extra_fields=fields)
        metadata = body.get("metadata") or {}
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        return super().build(body=kopf.Body(lean), extra_fields=fields)


def _within_essence(field: Any) -> bool:
    path = tuple(field.split(".")) if isinstance(field, str) else tuple(field)
    return path[:1] == ("spec",) or path[:2] in (("metadata", "labels"), ("metadata", "annotations"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = _LeanDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    # Only our explicit transition Events reach users; kopf's own per-handler chatter stays in the logs.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = int(os.environ.get("RIGHTSIZER_WORKERS", "8"))


@kopf.on.startup()
async def start_polling(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.poll_schedule = polling.Schedule(served_grace=5 * POLL_TICK_SECONDS)
    # A poll runs outside any handler, where kopf.event finds no Event queue: it runs in a copy of the context kopf
    # gives an object's handlers (kopf's own way to post from threads a handler starts), kept by the first visit.
    memo.handler_context = []  # per-object memos are shallow copies: they share this list and the schedule
    visit = functools.partial(_visit_due, settings.execution.executor, memo.handler_context, memo.poll_schedule)
    memo.poller = asyncio.create_task(polling.run(memo.poll_schedule, visit, POLL_TICK_SECONDS),
                                      name="rightsizer poll scheduler")


@kopf.on.cleanup()
async def stop_polling(memo: kopf.Memo, **_: Any) -> None:
    poller = memo.get("poller")
    if poller is not None:
        poller.cancel()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod, the ServiceAccount; elsewhere the kubeconfig KUBECONFIG names now. (The client library reads
    # KUBECONFIG once, when it is imported, so a cluster started after that would be missed.)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _api() -> client.ApiClient:
    return kube.shared_client()


def _lock_for(uid: str) -> _ObjectLock:
    # A poll and a change handler of one object may run at once; only one may drive it.
    with _object_locks_guard:
        lock = _object_locks.get(uid)
        if lock is None:
            lock = _object_locks[uid] = _ObjectLock()
        return lock


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _backend_for(spec: dict[str, Any]) -> base.Backend:
    # Unchecked: a job started under an older spec must still be stoppable after an edit broke a rule.
    parsed = spec_module.parse(spec, check=False)
    return clients.open_client(parsed)


def _write_status(owner: Owner, patch: dict[str, Any]) -> dict[str, Any]:
    """Patch the status subresource; returns the object as the API server now has it."""
    written: dict[str, Any] = client.CustomObjectsApi(_api()).patch_namespaced_custom_object_status(
        schema.GROUP, schema.VERSION, owner.namespace, schema.PLURAL, owner.name, {"status": patch})
    return written


def _merged(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = {**status, **patch}
    return {key: value for key, value in merged.items() if value is not None}


def _promotion_executor(spec: dict[str, Any]) -> promotion_executor.Executor:
    target = (spec.get("promotion") or {}).get("target") or {}
    return promotion_executor.Executor(_api(), (target.get("apiVersion"), target.get("kind")) if target else None)


def _execute(effect: Any, backend_of: Callable[[], base.Backend], owner: Owner,
             spec: dict[str, Any]) -> core.ActionResult:
    """Carry out one action; returns what it came back with, for the next Observation."""
    if isinstance(effect, promotion_objects.ReadWorld):
        return _promotion_executor(spec).read(effect)
    if isinstance(effect, core.ReadBaseline):  # the promotion target, read the way promotion reads it
        return core.BaselineRead(_promotion_executor(spec).read(effect.read))
    if isinstance(effect, promotion_objects.ApplyObjects):
        return _promotion_executor(spec).apply(effect)
    if isinstance(effect, promotion_objects.DeleteObjects):
        return _promotion_executor(spec).delete(effect)
    try:
        if isinstance(effect, core.SubmitJob):
            return backend_of().submit(effect.plan, owner)
        if isinstance(effect, core.DescribeJob):
            snapshot = backend_of().describe(effect.job_name)
            return core.JobSeen(snapshot) if snapshot is not None else core.JobMissing()
        if isinstance(effect, core.StopJob):
            return backend_of().stop(effect.job_name)
        if isinstance(effect, core.RecommendScaling):
            return core.ScalingAnswer(backend_of().recommend_scaling(effect.call))
    except base.RejectedError as error:
        if isinstance(effect, core.RecommendScaling):
            return core.ScalingRefused(error.rejected)
        return core.CallRefused(error.rejected)
    except base.TransientBackendError as error:
        delay = TRANSIENT_RETRY_SECONDS[1 if error.throttled else 0] * max(TIME_SCALE, 0.01)
        raise kopf.TemporaryError(f"{error}; retrying in {delay:.0f} s", delay=delay) from error
    raise TypeError(f"no executor for action {effect!r}")


def _remember(written: dict[str, Any]) -> None:
    metadata = written["metadata"]
    with _object_locks_guard:
        _written_versions[metadata["uid"]] = metadata["resourceVersion"]
        _written_versions.move_to_end(metadata["uid"])
        while len(_written_versions) > WRITTEN_VERSIONS_KEPT:
            _written_versions.popitem(last=False)


def _latest(body: kopf.Body) -> dict[str, Any] | None:
    """The object as the API server has it now: kopf's body when it is what this process wrote last, or a first
    sight (the event that brought it is the newest known); else read again, since a visit that held the object's
    lock before us may have moved its status on after the event kopf hands us."""
    with _object_locks_guard:
        written = _written_versions.get(body.metadata.uid or "")
    if written is None or written == body.metadata.get("resourceVersion"):
        return dict(body)  # read only: the visit copies the spec and status it works on
    return _fresh(_owner_of(body))


def _owner_of(body: kopf.Body) -> Owner:
    return Owner(body.metadata.namespace or "", body.metadata.name or "", body.metadata.uid or "")


def _fresh(owner: Owner) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(_api()).get_namespaced_custom_object(
            schema.GROUP, schema.VERSION, owner.namespace, schema.PLURAL, owner.name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _ensure_finalizer(owner: Owner, latest: dict[str, Any] | None) -> None:
    """Put our finalizer on before a job can exist, so that a delete racing the create still stops the job.
    kopf keeps it while the delete handler's filter matches (a job may be running) and drops it after.
    `latest` is the object as this visit last wrote it: tried first, read afresh only after a conflict."""
    api = client.CustomObjectsApi(_api())
    for attempt in range(5):
        current = latest if attempt == 0 and latest is not None else _fresh(owner)
        if current is None:
            return
        finalizers = current["metadata"].get("finalizers") or []
        if FINALIZER in finalizers:
            return
        try:
            api.patch_namespaced_custom_object(
                schema.GROUP, schema.VERSION, owner.namespace, schema.PLURAL, owner.name,
                {"metadata": {"finalizers": [*finalizers, FINALIZER],
                              "resourceVersion": current["metadata"]["resourceVersion"]}})
            return
        except client.ApiException as error:
            if error.status != 409:  # someone else changed the object: read it again and retry
                raise
    raise kopf.TemporaryError("could not add the finalizer: the object keeps changing", delay=1)


Log = logging.Logger | logging.LoggerAdapter


def drive(target: kopf.Body | Owner, deleting: bool = False, logger: Log | None = None, trigger: str = "change",
          schedule: polling.Schedule | None = None) -> None:
    """Visit one object: from kopf's body of it (a change), or from its name (a poll: read afresh). The visit notes
    in `schedule` when the object next asks for a look."""
    with metrics.RECONCILE_SECONDS.labels(trigger).time():
        try:
            _drive(target, deleting, logger, schedule)
        except (urllib3.exceptions.HTTPError, client.ApiException) as error:
            if isinstance(error, client.ApiException) and not (error.status == 429 or (error.status or 0) >= 500):
                raise
            # The API server is away or overloaded: kopf logs a TemporaryError in one line, any other exception
            # with its whole traceback (some 60 lines per failure, for as long as the outage lasts).
            delay = TRANSIENT_RETRY_SECONDS[0] * max(TIME_SCALE, 0.01)
            raise kopf.TemporaryError(f"the API server did not answer ({_one_line(error)}); retrying in {delay:.0f} s",
                                      delay=delay) from error


def _one_line(error: Exception) -> str:
    if isinstance(error, client.ApiException):
        return f"{error.status} {error.reason}"
    cause = getattr(error, "reason", None) or error  # urllib3's MaxRetryError wraps the connection's error
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"{type(cause).__name__}: {text.rsplit('>: ', 1)[-1]}"  # without urllib3's "<...Connection object at 0x..>"


def _drive(target: kopf.Body | Owner, deleting: bool, logger: Log | None, schedule: polling.Schedule | None) -> None:
    owner = target if isinstance(target, Owner) else _owner_of(target)
    backend: list[base.Backend] = []

    with _lock_for(owner.uid):
        current = _fresh(owner) if isinstance(target, Owner) else _latest(target)
        if current is None or current["metadata"]["uid"] != owner.uid:
            metrics.observe_phase(owner.uid, None)
            _note_poll(schedule, owner, None)
            return
        _note_poll(schedule, owner, current)
        spec = copy.deepcopy(current.get("spec") or {})
        status = copy.deepcopy(current.get("status") or {})
        generation = current["metadata"].get("generation", 0)
        annotations = dict(current["metadata"].get("annotations") or {})

        def backend_of() -> base.Backend:
            if not backend:
                backend.append(_backend_for(spec))
            return backend[0]

        result: core.ActionResult | None = None
        for _step in range(MAX_STEPS_PER_VISIT):
            observation = core.Observation(generation=generation, now=_now(), owner=owner,
                                           timing=TIMING, deleting=deleting,
                                           annotations=annotations, result=result)
            outcome = core.reconcile(spec, status, observation)
            if isinstance(outcome.effect, core.SubmitJob):
                unsendable = _unsendable(backend_of)
                if unsendable is not None:  # refused before anything would leave: decide again, knowing it
                    outcome = core.reconcile(spec, status, dataclasses.replace(observation, unsendable=unsendable))
            if outcome.status_patch:
                updated = _merged(status, outcome.status_patch)
                current = _write_status(owner, st.merge_patch(status, updated))
                _remember(current)
                _note_poll(schedule, owner, current)
                status = updated
            seen = result.snapshot if isinstance(result, (core.JobSeen, base.Adopted)) else None
            if seen is not None and seen.results_version is not None:
                backend_of().persisted(seen)  # status now holds it: the backend may start its next load test
            for action in outcome.actions:
                if isinstance(action, core.EmitEvent):
                    kopf.event(kopf.Body(current), type=action.type, reason=action.reason, message=action.message)
            retry = next((a for a in outcome.actions if isinstance(a, core.RetryLater)), None)
            if retry is not None:
                raise kopf.TemporaryError(retry.message, delay=retry.seconds)
            effect = outcome.effect
            if effect is None:
                metrics.observe_phase(owner.uid, None if deleting else status.get("phase"))
                return
            if isinstance(effect, core.SubmitJob) and spec.get("deletionPolicy", "Stop") == "Stop":
                _ensure_finalizer(owner, current)
            if logger:
                logger.info(f"{type(effect).__name__} {_describe_effect(effect)}")
            result = _execute(effect, backend_of, owner, spec)


def _note_poll(schedule: polling.Schedule | None, owner: Owner, seen: dict[str, Any] | None) -> None:
    """Tell the poll schedule when the object as last read or written asks for a look (None: it is gone)."""
    if schedule is None:
        return
    due = st.parse_timestamp(((seen or {}).get("status") or {}).get("nextPollTime"))
    schedule.note(owner.uid, polling.Due(owner.namespace, owner.name, owner.uid, due) if due else None)


def _unsendable(backend_of: Callable[[], base.Backend]) -> base.Rejected | None:
    try:
        return backend_of().unsendable()
    except base.RejectedError:  # the backend cannot even be opened (no region): the submit says so
        return None


def _describe_effect(effect) -> str:
    if isinstance(effect, core.SubmitJob):
        return effect.plan.job_name
    if isinstance(effect, (core.DescribeJob, core.StopJob)):
        return effect.job_name
    if isinstance(effect, core.RecommendScaling):
        return ", ".join(f"{key}={value}" for key, value in effect.call.request.items() if isinstance(value, str))
    if isinstance(effect, promotion_objects.ApplyObjects):
        return ", ".join(ref.describe() for ref in effect.refs())
    if isinstance(effect, promotion_objects.DeleteObjects):
        return ", ".join(ref.describe() for ref in effect.refs)
    if isinstance(effect, core.ReadBaseline):
        effect = effect.read
    return ", ".join(ref.describe() for ref in effect.objects)


def _stops_on_delete(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return core.stops_on_delete(spec, status)


@kopf.on.resume(schema.GROUP, schema.VERSION, schema.PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(schema.GROUP, schema.VERSION, schema.PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.update(schema.GROUP, schema.VERSION, schema.PLURAL, field="spec", backoff=RETRY_BACKOFF_SECONDS)
def reconcile_spec(body: kopf.Body, logger: logging.Logger, memo: kopf.Memo, **_: Any) -> None:
    drive(body, logger=logger, schedule=_poll_schedule(memo))


def _poll_schedule(memo: kopf.Memo) -> polling.Schedule | None:
    """The operator's poll schedule, for a handler's visit; keeps the handler's context for polls (first visit)."""
    kept = memo.get("handler_context")
    if kept is not None and not kept:
        kept.append(contextvars.copy_context())
    schedule: polling.Schedule | None = memo.get("poll_schedule")
    return schedule


@kopf.on.field(schema.GROUP, schema.VERSION, schema.PLURAL, field=("metadata", "annotations", "rightsizer.io/approve"),
               backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.field(schema.GROUP, schema.VERSION, schema.PLURAL, field=("metadata", "annotations", "rightsizer.io/rollback"),
               backoff=RETRY_BACKOFF_SECONDS)
def promotion_annotation_changed(body: kopf.Body, logger: logging.Logger, memo: kopf.Memo, old: Any, new: Any,
                                 **_: Any) -> None:
    # Approval and rollback are annotations, not spec: the spec handler does not see them change.
    if old != new:
        drive(body, logger=logger, trigger="annotation", schedule=_poll_schedule(memo))


def poll(due: polling.Due, schedule: polling.Schedule | None = None) -> None:
    """A look the status asked for: the object is read afresh (the schedule holds only when it is due)."""
    drive(Owner(due.namespace, due.name, due.uid), logger=_ObjectLog(due), trigger="poll", schedule=schedule)


_POLL_LOGGER = logging.getLogger("rightsizer.poll")


class _ObjectLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines of a poll, prefixed with the object as kopf prefixes a handler's."""

    def __init__(self, due: polling.Due) -> None:
        super().__init__(_POLL_LOGGER, {})
        self.prefix = f"[{due.namespace}/{due.name}]"

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.prefix} {msg}", kwargs


async def _visit_due(executor: concurrent.futures.Executor, handler_context: list[contextvars.Context],
                     schedule: polling.Schedule, due: polling.Due) -> float | None:
    """Run one poll in kopf's worker threads; returns how long to hold the object after a failure."""
    try:
        context = handler_context[0].copy()  # one context cannot be entered by two threads at once
        await asyncio.get_running_loop().run_in_executor(executor, context.run, poll, due, schedule)
    except kopf.TemporaryError as error:  # logged in one line, as kopf logs a handler's
        _ObjectLog(due).warning(f"poll failed temporarily: {error}")
        return error.delay if error.delay is not None else RETRY_BACKOFF_SECONDS
    except Exception:
        _ObjectLog(due).exception(f"poll failed; retrying in {RETRY_BACKOFF_SECONDS} s")
        return RETRY_BACKOFF_SECONDS
    return None


@kopf.on.delete(schema.GROUP, schema.VERSION, schema.PLURAL, when=_stops_on_delete, backoff=RETRY_BACKOFF_SECONDS)
def stop_on_delete(body: kopf.Body, logger: logging.Logger, memo: kopf.Memo, **_: Any) -> None:
    drive(body, deleting=True, logger=logger, trigger="delete", schedule=_poll_schedule(memo))
