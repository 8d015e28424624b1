"""The floor for benchmarks/operator_scale.py: a kopf operator that only writes one Ready condition per object.

Run by the benchmark as `python -m kopf run --standalone --namespace=NS benchmarks/bare_operator.py`, with the
same kopf settings rightsizer uses for its workers and watches, so that the difference is rightsizer's own work.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from rightsizer import schema


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 100  # no Events: the floor posts nothing but the status
    settings.execution.max_workers = 8


@kopf.on.resume(schema.GROUP, schema.VERSION, schema.PLURAL)
@kopf.on.create(schema.GROUP, schema.VERSION, schema.PLURAL)
def ready(patch: kopf.Patch, meta: kopf.Meta, **_: Any) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch.status["conditions"] = [{"type": "Ready", "status": "False", "reason": "NoCredentials",
                                   "message": "the floor: one condition, no work", "lastTransitionTime": now,
                                   "observedGeneration": meta.get("generation", 1)}]
    patch.status["observedGeneration"] = meta.get("generation", 1)
