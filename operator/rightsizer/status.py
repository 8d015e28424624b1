"""The status vocabulary every backend shares: condition types, reasons, phases, and condition bookkeeping
that follows Kubernetes conventions (metav1.Condition: lastTransitionTime moves only when status flips)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Iterable, Mapping


class Condition(enum.StrEnum):
    """Condition types. Ready is the summary; the others say which stage got where."""

    READY = "Ready"
    VALIDATED = "Validated"
    JOB_SUBMITTED = "JobSubmitted"
    SUCCEEDED = "Succeeded"
    SLA_SATISFIED = "SLASatisfied"
    SCALING_RECOMMENDED = "ScalingRecommended"  # only with spec.autoscaling
    AWAITING_APPROVAL = "AwaitingApproval"
    PROMOTED = "Promoted"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(enum.StrEnum):
    """Informational only (conditions are the contract), kept because `kubectl get` users read them."""

    PENDING = "Pending"
    SUBMITTED = "Submitted"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"
    PROMOTED = "Promoted"


class Reason(enum.StrEnum):
    """Condition reasons and Event reasons of the job's life (promotion's own are in rightsizer.promotion)."""

    VALID = "Valid"
    VALID_WITH_WARNINGS = "ValidWithWarnings"
    INVALID_SPEC = "InvalidSpec"
    JOB_PENDING = "JobPending"
    NOT_SUBMITTED = "NotSubmitted"
    SUBMITTING = "Submitting"
    JOB_SUBMITTING = "JobSubmitting"
    JOB_SUBMITTED = "JobSubmitted"
    JOB_ADOPTED = "JobAdopted"
    JOB_IN_PROGRESS = "JobInProgress"
    JOB_REPLACING = "JobReplacing"
    JOB_REPLACED = "JobReplaced"
    JOB_RESUMED = "JobResumed"
    JOB_COMPLETED = "JobCompleted"
    JOB_FAILED = "JobFailed"
    JOB_STOPPED = "JobStopped"
    JOB_STOP_FAILED = "JobStopFailed"
    JOB_DELETED = "JobDeleted"
    JOB_NOT_FOUND = "JobNotFound"
    NAME_TAKEN = "NameTaken"
    NO_RESULTS = "NoResults"
    NO_CANDIDATE_MEETS_SLA = "NoCandidateMeetsSLA"
    OBJECTIVE_UNMEASURED = "ObjectiveUnmeasured"  # the SLA is met, but the objective's metric is missing (a price)
    CANDIDATE_MEETS_SLA = "CandidateMeetsSLA"
    ENDPOINT_MEETS_SLA = "EndpointMeetsSLA"
    ENDPOINT_BENCHMARKED = "EndpointBenchmarked"
    BEST_SELECTED = "BestSelected"
    BEST_SELECTED_FROM_PARTIAL_RESULTS = "BestSelectedFromPartialResults"
    BEST_CHANGED = "BestChanged"
    SCALING_PENDING = "ScalingPending"
    SCALING_RECOMMENDED = "ScalingRecommended"
    NO_BEST_CONFIGURATION = "NoBestConfiguration"
    # spec.baseline: what the promotion target serves now cannot be read, or the backend cannot measure it.
    BASELINE_UNREADABLE = "BaselineUnreadable"
    BASELINE_UNSUPPORTED = "BaselineUnsupported"


# Short names for the words every module uses.
READY, VALIDATED, JOB_SUBMITTED, SUCCEEDED = Condition.READY, Condition.VALIDATED, Condition.JOB_SUBMITTED, \
    Condition.SUCCEEDED
SLA_SATISFIED, AWAITING_APPROVAL, PROMOTED = Condition.SLA_SATISFIED, Condition.AWAITING_APPROVAL, Condition.PROMOTED
SCALING_RECOMMENDED = Condition.SCALING_RECOMMENDED
CONDITION_ORDER = tuple(Condition)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
PENDING, SUBMITTED, IN_PROGRESS, COMPLETED = Phase.PENDING, Phase.SUBMITTED, Phase.IN_PROGRESS, Phase.COMPLETED
FAILED, STOPPED, PROMOTED_PHASE = Phase.FAILED, Phase.STOPPED, Phase.PROMOTED

MAX_MESSAGE_CHARS = 32768
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 1024


TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    if len(value) == 20 and value[10] == "T" and value[19] == "Z":  # ours: fromisoformat is ~20x faster than strptime
        return datetime.datetime.fromisoformat(value[:19]).replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class ConditionRecord:
    """One entry of status.conditions (metav1.Condition's fields)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    observed_generation: int | None
    last_transition_time: datetime.datetime

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> ConditionRecord:
        moment = parse_timestamp(raw.get("lastTransitionTime"))
        return cls(raw.get("type", ""), ConditionStatus(raw.get("status", UNKNOWN)), raw.get("reason", ""),
                   raw.get("message", ""), raw.get("observedGeneration"),
                   moment or datetime.datetime.fromtimestamp(0, datetime.timezone.utc))

    def for_storage(self) -> dict[str, Any]:
        return {"type": str(self.type), "status": str(self.status), "reason": str(self.reason), "message": self.message,
                "observedGeneration": self.observed_generation,
                "lastTransitionTime": timestamp(self.last_transition_time)}


Conditions = tuple[ConditionRecord, ...]


def find(conditions: Iterable[ConditionRecord], condition_type: str) -> ConditionRecord | None:
    return next((c for c in conditions if c.type == condition_type), None)


def set_condition(conditions: Conditions, condition_type: str, status: ConditionStatus, reason: str,
                  message: str, generation: int, now: datetime.datetime) -> Conditions:
    """The conditions with `condition_type` set; lastTransitionTime is kept unless the status changes."""
    previous = find(conditions, condition_type)
    transition = previous.last_transition_time if previous and previous.status == status else whole_seconds(now)
    updated = ConditionRecord(condition_type, status, reason, message[:MAX_MESSAGE_CHARS], generation, transition)
    others = [c for c in conditions if c.type != condition_type]
    return tuple(sorted([*others, updated], key=_order))


def whole_seconds(moment: datetime.datetime) -> datetime.datetime:
    """Status keeps seconds: a moment is what it reads back as."""
    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0)


def _order(condition: ConditionRecord) -> tuple[int, str]:
    kind = condition.type
    return (CONDITION_ORDER.index(kind) if kind in CONDITION_ORDER else len(CONDITION_ORDER), kind)


def changed(before: Conditions, after: Conditions, condition_type: str) -> bool:
    """Whether a condition's status or reason differs: the transitions worth an Event."""
    old, new = find(before, condition_type), find(after, condition_type)
    if new is None:
        return False
    return old is None or (old.status, old.reason) != (new.status, new.reason)


def merge_patch(before: Any, after: Any) -> Any:
    """The RFC 7386 merge patch that turns `before` into `after`: nested keys that disappeared become null,
    because a merge patch otherwise keeps them (a stale entry of steps.byStatus or best.environment)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    patch = {key: None for key in before if key not in after}
    for key, value in after.items():
        if key not in before:
            patch[key] = value
        elif before[key] != value:
            patch[key] = merge_patch(before[key], value)
    return patch
