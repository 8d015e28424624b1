"""The small interface every backend implements, and the backend-neutral shapes its answers take.

A backend runs one named job at a time per RightsizeJob: submit (idempotent by name), describe, stop. What it
reports back is normalised here so that status, selection and promotion never depend on which backend ran.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Mapping, Protocol

from rightsizer.status import parse_timestamp

# Backend status words (SageMaker's RecommendationJobStatus; the local backend uses the same words).
PENDING, IN_PROGRESS, COMPLETED, FAILED = "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"
STOPPING, STOPPED, DELETING, DELETED = "STOPPING", "STOPPED", "DELETING", "DELETED"
ACTIVE_STATUSES = frozenset({PENDING, IN_PROGRESS, STOPPING})
# DELETING/DELETED exist in the enum but no Delete operation does: seen, they end the job like a failure.
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, STOPPED, DELETING, DELETED})


@dataclasses.dataclass(frozen=True)
class Owner:
    """The RightsizeJob a job belongs to: named in the job's tags, hashed into its name."""

    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class JobPlan:
    job_name: str
    request: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Recommendation:
    recommendation_id: str
    instance_type: str | None
    initial_instance_count: int | None
    environment: Mapping[str, str]
    metrics: Mapping[str, float | int]
    serverless: Mapping[str, int] | None = None
    invocation_start: datetime.datetime | None = None
    invocation_end: datetime.datetime | None = None

    @classmethod
    def from_status_row(cls, row: Mapping[str, Any]) -> "Recommendation":
        """A row of status.recommendations read back (re-selection, a resumed local job, a report)."""
        return cls(recommendation_id=row.get("recommendationId", ""), instance_type=row.get("instanceType"),
                   initial_instance_count=row.get("initialInstanceCount"),
                   environment=dict(row.get("environment") or {}), metrics=dict(row.get("metrics") or {}),
                   serverless=row.get("serverless"), invocation_start=parse_timestamp(row.get("invocationStartTime")),
                   invocation_end=parse_timestamp(row.get("invocationEndTime")))


# SageMaker's FailureReason of a benchmark step is at most this long; status.steps.failures keeps that bound.
STEP_FAILURE_REASON_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class StepFailure:
    instance_type: str | None
    environment: Mapping[str, str]
    failure_reason: str
    # The local backend's "did not fit this host": a failed step for SageMaker's counts, but no measurement.
    skipped: bool = False


@dataclasses.dataclass(frozen=True)
class StepSummary:
    total: int
    by_status: Mapping[str, int]
    failures: tuple[StepFailure, ...] = ()


@dataclasses.dataclass(frozen=True)
class EndpointPerformance:
    endpoint_name: str
    max_invocations: int
    model_latency: int


@dataclasses.dataclass(frozen=True)
class JobSnapshot:
    """What the backend says about a job right now."""

    job_name: str
    status: str
    job_arn: str | None = None
    failure_reason: str | None = None
    creation_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    recommendations: tuple[Recommendation, ...] = ()
    steps: StepSummary | None = None
    endpoint_performances: tuple[EndpointPerformance, ...] = ()
    # Configurations finished out of planned, and what runs now (the local backend; SageMaker reports steps).
    progress: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Submitted:
    job_arn: str


@dataclasses.dataclass(frozen=True)
class Adopted:
    """The name was taken by a job whose tags name this RightsizeJob: ours, from an earlier attempt."""

    snapshot: JobSnapshot


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The backend refused the job or the call for a reason that retrying soon will not fix."""

    reason: str  # CamelCase condition reason, e.g. AccessDenied
    message: str
    retryable_later: bool  # environmental (permissions, quotas): worth another try after a long pause


@dataclasses.dataclass(frozen=True)
class NameTaken:
    """The name belongs to a job that is not ours (its tags name someone else)."""

    message: str


@dataclasses.dataclass(frozen=True)
class StopDone:
    already_finished: bool = False
    not_found: bool = False


SubmitResult = Submitted | Adopted | Rejected | NameTaken


class TransientBackendError(RuntimeError):
    """Throttling, 5xx or a lost connection that survived the client's own retries: try again later."""

    def __init__(self, message: str, throttled: bool = False):
        super().__init__(message)
        self.throttled = throttled


class Backend(Protocol):
    def submit(self, plan: JobPlan, owner: Owner) -> SubmitResult: ...

    def describe(self, job_name: str) -> JobSnapshot | None:
        """The job, or None when the backend does not know it."""

    def stop(self, job_name: str) -> StopDone: ...


class RejectedError(RuntimeError):
    """A describe or stop call refused for a lasting reason (e.g. AccessDenied)."""

    def __init__(self, rejected: Rejected):
        super().__init__(rejected.message)
        self.rejected = rejected
