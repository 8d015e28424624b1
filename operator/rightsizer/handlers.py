"""The kopf shell: turn Kubernetes events into reconcile() calls and carry out the actions it returns."""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

import kopf

from rightsizer import reconcile as core
from rightsizer import schema

# kopf keeps per-handler progress and the last-handled spec in annotations; ours carry our own prefix.
ANNOTATION_PREFIX = "rightsizer.io"
FINALIZER = "rightsizer.io/finalizer"
RETRY_BACKOFF_SECONDS = 15


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    # Only our explicit transition Events reach users; kopf's own per-handler chatter stays in the logs.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = 8


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod, the ServiceAccount; elsewhere the kubeconfig KUBECONFIG names now. (The client library reads
    # KUBECONFIG once, when it is imported, so a cluster started after that would be missed.)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def execute(outcome: core.Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    for action in outcome.actions:
        if isinstance(action, core.EmitEvent):
            kopf.event(body, type=action.type, reason=action.reason, message=action.message)
        else:
            raise TypeError(f"no executor for action {action!r}")
    for key, value in outcome.status_patch.items():
        if body.status.get(key) != value:
            patch.status[key] = value


@kopf.on.resume(schema.GROUP, schema.VERSION, schema.PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(schema.GROUP, schema.VERSION, schema.PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.update(schema.GROUP, schema.VERSION, schema.PLURAL, field="spec", backoff=RETRY_BACKOFF_SECONDS)
def reconcile_spec(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    outcome = core.reconcile(
        copy.deepcopy(dict(body.get("spec") or {})),
        copy.deepcopy(dict(body.get("status") or {})),
        core.Observation(generation=body.metadata.get("generation", 0), now=_now()),
    )
    execute(outcome, body, patch)
