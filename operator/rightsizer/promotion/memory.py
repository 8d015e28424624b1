"""status.promotion, typed: what the promotion flow remembers between visits.

`from_storage` reads the stored dict (any field may be absent); `for_storage` writes the dict the CRD's status
schema accepts, with the keys and shapes of crds/rightsizejobs.yaml (status.promotion). An absent field stays
absent: None here, no key there, so what is read is written back unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime
from enum import StrEnum
from typing import Any, Mapping

from rightsizer import status as st
from rightsizer.model import Scaling
from rightsizer.promotion.targets import Configuration
from rightsizer.spec import PromotionMode, TargetRef


class State(StrEnum):
    AWAITING_APPROVAL = "AwaitingApproval"
    PLANNED = "Planned"  # DryRun
    CREATING_RESOURCES = "CreatingResources"
    UPDATING_TARGET = "UpdatingTarget"
    WAITING_FOR_TARGET = "WaitingForTarget"
    # ACK Endpoint with autoscaling: before UpdateEndpoint changes an autoscaled variant's instance type, and after it.
    DEREGISTERING_SCALING = "DeregisteringScaling"
    REGISTERING_SCALING = "RegisteringScaling"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


@dataclasses.dataclass(frozen=True)
class RecordedConfiguration:
    """A configuration as status.promotion records it (current, previous, pending)."""

    recommendation_id: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    environment: Mapping[str, str] | None = None
    # ACK Endpoint only.
    endpoint_config_name: str | None = None
    model_name: str | None = None
    variant_name: str | None = None
    # Patch-in-place targets: the server-side apply body that sets this configuration.
    patch: Mapping[str, Any] | None = None
    # ACK Endpoint only: status.best.scaling (its stored row), registered with Application Auto Scaling after the
    # endpoint serves this configuration; None: the variant is not autoscaled by rightsizer.
    scaling: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, configuration: Configuration, **fields: Any) -> RecordedConfiguration:
        return cls(**fields).updated(configuration)

    def updated(self, configuration: Configuration) -> RecordedConfiguration:
        """This record with `configuration`'s values over it; what `configuration` leaves unset stays."""
        return dataclasses.replace(self, recommendation_id=configuration.recommendation_id or self.recommendation_id,
                                   instance_type=configuration.instance_type or self.instance_type,
                                   instance_count=configuration.instance_count,
                                   environment=dict(configuration.environment))

    def autoscaled(self, configuration: Configuration) -> RecordedConfiguration:
        """This record with `configuration`'s scaling, which an ACK attempt registers (patch-in-place targets carry
        theirs in `patch`)."""
        return dataclasses.replace(self, scaling=configuration.scaling.to_row() if configuration.scaling else None)

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> RecordedConfiguration:
        environment, patch = raw.get("environment"), raw.get("patch")
        return cls(recommendation_id=raw.get("recommendationId"), instance_type=raw.get("instanceType"),
                   instance_count=raw.get("instanceCount"),
                   environment=dict(environment) if environment is not None else None,
                   endpoint_config_name=raw.get("endpointConfigName"), model_name=raw.get("modelName"),
                   variant_name=raw.get("variantName"), patch=patch, scaling=raw.get("scaling"))

    def for_storage(self) -> dict[str, Any]:
        stored = {"recommendationId": self.recommendation_id, "instanceType": self.instance_type,
                  "instanceCount": self.instance_count,
                  "environment": dict(self.environment) if self.environment is not None else None,
                  "endpointConfigName": self.endpoint_config_name, "modelName": self.model_name,
                  "variantName": self.variant_name, "patch": self.patch, "scaling": self.scaling}
        return {key: value for key, value in stored.items() if value is not None}

    def configuration(self) -> Configuration:
        scaling = Scaling.from_row(self.scaling) if self.scaling else None
        return Configuration(self.recommendation_id, self.instance_type, int(self.instance_count or 1),
                             dict(self.environment or {}),
                             scaling=scaling if scaling is not None and scaling.capacities is not None else None)

    def objects(self) -> set[str]:
        """The ACK objects (Kind/name) this configuration uses."""
        return {f"{kind}/{name}" for kind, name in (("EndpointConfig", self.endpoint_config_name),
                                                    ("Model", self.model_name)) if name}


@dataclasses.dataclass(frozen=True)
class PromotionMemory:
    target: TargetRef | None = None
    mode: PromotionMode | None = None
    state: State | None = None
    # Counts attempts; ACK object names carry it, so a rejected name is never retried.
    attempt: int | None = None
    applied_recommendation_id: str | None = None
    applied_at: datetime.datetime | None = None
    # Objects this operator created on the target's side and has not deleted yet (Kind/name).
    created_objects: tuple[str, ...] | None = None
    current: RecordedConfiguration | None = None
    # What the rollback annotation restores.
    previous: RecordedConfiguration | None = None
    # The attempt under way: recorded before its first change to the target.
    pending: RecordedConfiguration | None = None
    pending_generation: int | None = None
    pending_objects: tuple[str, ...] | None = None
    started_at: datetime.datetime | None = None
    # Whether the pending attempt is a rollback; stored with `pending`, as it means nothing without it.
    rollback: bool = False
    # DryRun only: the objects that would be applied.
    planned_objects: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any] | None) -> PromotionMemory:
        raw = raw or {}
        target, planned = raw.get("target"), raw.get("plannedPatch")
        return cls(
            target=TargetRef(target["apiVersion"], target["kind"], target["name"]) if target else None,
            mode=PromotionMode(raw["mode"]) if raw.get("mode") else None,
            state=State(raw["state"]) if raw.get("state") else None,
            attempt=raw.get("attempt"),
            applied_recommendation_id=raw.get("appliedRecommendationId"),
            applied_at=st.parse_timestamp(raw.get("appliedAt")),
            created_objects=_strings(raw.get("createdObjects")),
            current=_entry(raw.get("current")),
            previous=_entry(raw.get("previous")),
            pending=_entry(raw.get("pending")),
            pending_generation=raw.get("pendingGeneration"),
            pending_objects=_strings(raw.get("pendingObjects")),
            started_at=st.parse_timestamp(raw.get("startedAt")),
            rollback=bool(raw.get("rollback")),
            planned_objects=tuple(planned.get("objects") or ()) if planned is not None else None,
        )

    def for_storage(self) -> dict[str, Any]:
        target, pending = self.target, self.pending.for_storage() if self.pending else {}
        stored: dict[str, Any] = {
            "target": {"apiVersion": target.api_version, "kind": target.kind, "name": target.name} if target else None,
            "mode": self.mode.value if self.mode else None,
            "state": self.state.value if self.state else None,
            "attempt": self.attempt,
            "appliedRecommendationId": self.applied_recommendation_id,
            "appliedAt": st.timestamp(self.applied_at) if self.applied_at else None,
            "createdObjects": list(self.created_objects) if self.created_objects is not None else None,
            "current": self.current.for_storage() or None if self.current else None,
            "previous": self.previous.for_storage() or None if self.previous else None,
            "pending": pending or None,
            "pendingGeneration": self.pending_generation,
            "pendingObjects": list(self.pending_objects) if self.pending_objects is not None else None,
            "startedAt": st.timestamp(self.started_at) if self.started_at else None,
            "rollback": self.rollback if pending else None,
            "plannedPatch": {"objects": list(self.planned_objects)} if self.planned_objects is not None else None,
        }
        return {key: value for key, value in stored.items() if value is not None}


def _entry(raw: Mapping[str, Any] | None) -> RecordedConfiguration | None:
    """An empty entry records nothing, as an absent one: both are None, and neither is stored."""
    return RecordedConfiguration.from_storage(raw) if raw else None


def _strings(raw: Any) -> tuple[str, ...] | None:
    return tuple(raw) if raw is not None else None
