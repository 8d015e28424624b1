"""The reasons promotion gives in the Promoted and AwaitingApproval conditions (Ready takes Promoted's when the
promotion decides it)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Promoted
    PROMOTED = "Promoted"
    PROMOTING = "Promoting"
    ROLLED_BACK = "RolledBack"
    AWAITING_APPROVAL = "AwaitingApproval"
    DRY_RUN = "DryRun"
    SLA_NOT_MET = "SLANotMet"
    NO_BEST_CONFIGURATION = "NoBestConfiguration"
    UNSUPPORTED_CONFIGURATION = "UnsupportedConfiguration"
    UNSUPPORTED_TARGET = "UnsupportedTarget"
    NOTHING_TO_ROLL_BACK = "NothingToRollBack"
    ENDPOINT_UPDATE_FAILED = "EndpointUpdateFailed"
    RESOURCE_REJECTED = "ResourceRejected"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    SOURCE_NOT_FOUND = "SourceNotFound"
    TOO_MANY_OBJECTS = "TooManyObjects"
    FIELD_CONFLICT = "FieldConflict"
    FORBIDDEN = "Forbidden"
    TARGET_ERROR = "TargetError"
    TARGET_KIND_NOT_SERVED = "TargetKindNotServed"
    TARGET_NOT_FOUND = "TargetNotFound"
    # A ScalableTarget rightsizer did not create registers the variant a promotion must deregister or register.
    FOREIGN_SCALABLE_TARGET = "ForeignScalableTarget"
    # The ACK Application Auto Scaling CRDs are not served, and status.best.scaling needs them.
    SCALING_KIND_NOT_SERVED = "ScalingKindNotServed"
    # spec.promotion.minSavingsPercent: the winner saves too little against status.baseline (a decision: Ready stays
    # True), or the saving is unknown because the baseline was not measured or priced (a person must look).
    INSUFFICIENT_SAVINGS = "InsufficientSavings"
    SAVINGS_UNKNOWN = "SavingsUnknown"
    # AwaitingApproval (also NoBestConfiguration and RolledBack)
    APPROVAL_REQUIRED = "ApprovalRequired"
    PARTIAL_RESULTS = "PartialResults"  # Automatic, but the selection is from a job that did not finish
    APPROVAL_STALE = "ApprovalStale"
    APPROVED = "Approved"
    NOT_REQUIRED = "NotRequired"
