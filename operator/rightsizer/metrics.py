"""Prometheus metrics of the operator process, served by `rightsizer operator --metrics-port`."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

JOBS_BY_PHASE = Gauge("rightsizer_jobs", "RightsizeJobs this operator reconciles, by status.phase", ["phase"])
SAGEMAKER_CALLS = Counter("rightsizer_sagemaker_api_calls_total",
                          "SageMaker API calls by operation and outcome (ok or the error code)",
                          ["operation", "outcome"])
RECONCILE_SECONDS = Histogram("rightsizer_reconcile_duration_seconds",
                              "Time of one visit of a RightsizeJob (reconcile, status writes, backend calls)",
                              ["trigger"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

_phases: dict[str, str] = {}
_lock = threading.Lock()


def observe_phase(uid: str, phase: str | None) -> None:
    """Record the phase of one RightsizeJob (None when it is gone) and refresh the per-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop(uid, None)
        else:
            _phases[uid] = phase
        counts: dict[str, int] = {}
        for value in _phases.values():
            counts[value] = counts.get(value, 0) + 1
        for label in set(counts) | {sample.labels["phase"] for sample in JOBS_BY_PHASE.collect()[0].samples}:
            JOBS_BY_PHASE.labels(phase=label).set(counts.get(label, 0))
