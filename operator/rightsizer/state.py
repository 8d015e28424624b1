"""A RightsizeJob's status, typed: what the operator remembers between visits (status is its only memory).

`JobState.from_storage` reads the stored dict (any field may be absent); `for_storage` writes the dict the CRD's
status schema accepts (crds/rightsizejobs.yaml, status), with the same keys and shapes. An absent field is None
here and no key there, so what is read is written back unchanged, and `changes` finds the fields a visit moved:
the patch. Fields the schema has and this module does not know are never read, written or patched.
The promotion flow's part (status.promotion) stays in its stored form here; `promotion.memory` types it.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Mapping

from rightsizer import model
from rightsizer import status as st
from rightsizer.model import JobStatus
from rightsizer.spec import TargetRef

# A job-defining edit clears these along with the job: they describe one job.
JOB_FIELDS = ("job_arn", "backend_status", "failure_reason", "start_time", "completion_time", "last_polled_time",
              "recommendations", "recommendations_total", "endpoint_performances", "steps", "best", "next_poll_time",
              "submit_attempts", "progress", "baseline")


@dataclasses.dataclass(frozen=True)
class RecommendationRow:
    """An entry of status.recommendations: a measured configuration and the selection's verdict on it."""

    recommendation: model.Recommendation
    meets_sla: bool | None = None
    sla_message: str | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> RecommendationRow:
        return cls(model.Recommendation.from_status_row(raw), raw.get("meetsSLA"), raw.get("slaMessage"))

    def for_storage(self) -> dict[str, Any]:
        row = self.recommendation.to_status_row()
        if self.meets_sla is not None:
            row["meetsSLA"] = self.meets_sla
        if self.sla_message is not None:
            row["slaMessage"] = self.sla_message
        return row


@dataclasses.dataclass(frozen=True)
class Best:
    """status.best: the selected configuration and why."""

    recommendation: model.Recommendation
    reason: str
    # Why the selection is from partial results (the job stopped, or ended before measuring every configuration).
    partial: str | None = None
    # How it should scale for spec.autoscaling (or why it cannot): asked once per best configuration.
    scaling: model.Scaling | None = None
    # Against status.baseline, when spec.baseline measured one.
    savings: model.Savings | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> Best:
        scaling, savings = raw.get("scaling"), raw.get("savings")
        return cls(model.Recommendation.from_status_row(raw), raw.get("reason", ""), raw.get("partial"),
                   model.Scaling.from_row(scaling) if scaling else None,
                   model.Savings.from_storage(savings) if savings is not None else None)

    def for_storage(self) -> dict[str, Any]:
        r = self.recommendation
        stored = {"recommendationId": r.recommendation_id, "instanceType": r.instance_type,
                  "initialInstanceCount": r.initial_instance_count, "environment": dict(r.environment),
                  "metrics": dict(r.metrics), "reason": self.reason, "partial": self.partial,
                  "recommended": r.recommended, "placement": r.placement.to_row() if r.placement else None,
                  "uncertainty": r.uncertainty.for_storage() if r.uncertainty else None,
                  "scaling": self.scaling.to_row() if self.scaling else None,
                  "savings": self.savings.for_storage() if self.savings else None, **r.provenance()}
        return {key: value for key, value in stored.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class BaselineState:
    """status.baseline: the configuration spec.promotion.target served when it was read (before the job was
    submitted), then its measurement and verdict, or why the job did not measure it."""

    target: TargetRef
    read_at: datetime.datetime
    current: model.CurrentConfiguration
    measured: RecommendationRow | None = None
    failure_reason: str | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> BaselineState:
        target = raw.get("target") or {}
        read_at = st.parse_timestamp(raw.get("readAt"))
        current = model.CurrentConfiguration(raw.get("instanceType"), int(raw.get("initialInstanceCount") or 1),
                                             dict(raw.get("environment") or {}), raw.get("endpointName"),
                                             raw.get("region"))
        # Measured: the row's own keys (recommendationId, metrics, the verdict) beside the configuration's.
        measured = RecommendationRow.from_storage(raw) if raw.get("recommendationId") else None
        return cls(TargetRef(target.get("apiVersion", ""), target.get("kind", ""), target.get("name", "")),
                   read_at or datetime.datetime.fromtimestamp(0, datetime.timezone.utc), current, measured,
                   raw.get("failureReason"))

    def for_storage(self) -> dict[str, Any]:
        current = self.current
        stored: dict[str, Any] = {
            "target": {"apiVersion": self.target.api_version, "kind": self.target.kind, "name": self.target.name},
            "readAt": st.timestamp(self.read_at), "instanceType": current.instance_type,
            "initialInstanceCount": current.instance_count, "environment": dict(current.environment),
            "endpointName": current.endpoint_name, "region": current.region, "failureReason": self.failure_reason}
        if self.measured is not None:
            row = self.measured.for_storage()
            stored.update({key: row.get(key) for key in ("recommendationId", "metrics", "meetsSLA", "slaMessage")})
        return {key: value for key, value in stored.items() if value is not None}

    def for_target(self, target: TargetRef) -> bool:
        """Whether this was read from `target` (an edit of spec.promotion.target asks for another baseline)."""
        return self.target == target


def _steps_from_storage(raw: Mapping[str, Any]) -> model.StepSummary:
    return model.StepSummary(int(raw.get("total") or 0), dict(raw.get("byStatus") or {}),
                             tuple(model.StepFailure.from_status_row(f) for f in raw.get("failures") or ()))


def _steps_for_storage(steps: model.StepSummary) -> dict[str, Any]:
    return {"total": steps.total, "byStatus": dict(steps.by_status),
            "failures": [{"instanceType": f.instance_type, "environment": dict(f.environment),
                          "failureReason": f.failure_reason, **({"skipped": True} if f.skipped else {}),
                          **({"baseline": True} if f.baseline else {})}
                         for f in steps.failures]}


def _progress_from_storage(raw: Mapping[str, Any]) -> model.Progress:
    return model.Progress(int(raw.get("completed") or 0), int(raw.get("total") or 0), raw.get("current"),
                          st.parse_timestamp(raw.get("startedAt")),
                          tuple(model.Recommendation.from_status_row(r) for r in raw.get("runs") or ()))


def _progress_for_storage(progress: model.Progress) -> dict[str, Any]:
    return {"completed": progress.completed, "total": progress.total,
            **({"current": progress.current} if progress.current else {}),
            **({"startedAt": st.timestamp(progress.started)} if progress.started else {}),
            **({"runs": [RecommendationRow(r).for_storage() for r in progress.runs]} if progress.runs else {})}


@dataclasses.dataclass(frozen=True)
class JobState:
    """status.* of a RightsizeJob (see the module's docstring for the storage contract)."""

    observed_generation: int | None = None
    phase: st.Phase | None = None
    job_name: str | None = None
    job_arn: str | None = None
    backend_status: JobStatus | None = None
    failure_reason: str | None = None
    start_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    last_polled_time: datetime.datetime | None = None
    next_poll_time: datetime.datetime | None = None
    submit_attempts: int | None = None
    warnings: tuple[str, ...] | None = None
    conditions: st.Conditions = ()
    recommendations: tuple[RecommendationRow, ...] | None = None
    recommendations_total: int | None = None
    endpoint_performances: tuple[model.EndpointPerformance, ...] | None = None
    steps: model.StepSummary | None = None
    best: Best | None = None
    progress: model.Progress | None = None
    # The promotion flow's memory, in its stored form (typed by rightsizer.promotion.memory).
    promotion: Mapping[str, Any] | None = None
    baseline: BaselineState | None = None

    def condition(self, condition_type: str) -> st.ConditionRecord | None:
        return st.find(self.conditions, condition_type)

    def condition_is(self, condition_type: str, status: st.ConditionStatus) -> bool:
        found = self.condition(condition_type)
        return found is not None and found.status == status

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any] | None) -> JobState:
        raw = raw or {}

        def optional(key: str, read: Any) -> Any:
            value = raw.get(key)
            return None if value is None else read(value)

        return cls(
            observed_generation=raw.get("observedGeneration"), phase=optional("phase", st.Phase),
            job_name=raw.get("jobName"), job_arn=raw.get("jobArn"),
            backend_status=optional("backendStatus", JobStatus), failure_reason=raw.get("failureReason"),
            start_time=st.parse_timestamp(raw.get("startTime")),
            completion_time=st.parse_timestamp(raw.get("completionTime")),
            last_polled_time=st.parse_timestamp(raw.get("lastPolledTime")),
            next_poll_time=st.parse_timestamp(raw.get("nextPollTime")),
            submit_attempts=raw.get("submitAttempts"), warnings=optional("warnings", tuple),
            conditions=tuple(st.ConditionRecord.from_storage(c) for c in raw.get("conditions") or ()),
            recommendations=optional("recommendations",
                                     lambda rows: tuple(RecommendationRow.from_storage(r) for r in rows)),
            recommendations_total=raw.get("recommendationsTotal"),
            endpoint_performances=optional("endpointPerformances", lambda rows: tuple(
                model.EndpointPerformance(p["endpointName"], p["maxInvocations"], p["modelLatency"]) for p in rows)),
            steps=optional("steps", _steps_from_storage), best=optional("best", Best.from_storage),
            progress=optional("progress", _progress_from_storage), promotion=raw.get("promotion"),
            baseline=optional("baseline", BaselineState.from_storage))

    def for_storage(self) -> dict[str, Any]:
        def optional(value: Any, write: Any = lambda v: v) -> Any:
            return None if value is None else write(value)

        stored = {
            "observedGeneration": self.observed_generation, "phase": optional(self.phase, str),
            "jobName": self.job_name, "jobArn": self.job_arn, "backendStatus": optional(self.backend_status, str),
            "failureReason": self.failure_reason, "startTime": optional(self.start_time, st.timestamp),
            "completionTime": optional(self.completion_time, st.timestamp),
            "lastPolledTime": optional(self.last_polled_time, st.timestamp),
            "nextPollTime": optional(self.next_poll_time, st.timestamp), "submitAttempts": self.submit_attempts,
            "warnings": optional(self.warnings, list),
            "conditions": [c.for_storage() for c in self.conditions] or None,
            "recommendations": optional(self.recommendations, lambda rows: [r.for_storage() for r in rows]),
            "recommendationsTotal": self.recommendations_total,
            "endpointPerformances": optional(self.endpoint_performances, lambda rows: [
                {"endpointName": p.endpoint_name, "maxInvocations": p.max_invocations,
                 "modelLatency": p.model_latency} for p in rows]),
            "steps": optional(self.steps, _steps_for_storage), "best": optional(self.best, Best.for_storage),
            "progress": optional(self.progress, _progress_for_storage), "promotion": self.promotion,
            "baseline": optional(self.baseline, BaselineState.for_storage),
        }
        return {key: value for key, value in stored.items() if value is not None}

    def cleared(self, *fields: str) -> JobState:
        absent: dict[str, Any] = {field: None for field in fields}
        return dataclasses.replace(self, **absent)


def changes(before: JobState, after: JobState) -> dict[str, Any]:
    """The status fields `after` moved from `before`, at the top level (None: remove the field). An unchanged
    field is not in it: a converged object costs no write."""
    old, new = before.for_storage(), after.for_storage()
    return {key: new.get(key) for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
