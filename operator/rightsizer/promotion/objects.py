"""What promotion reads and writes, as plain values: object references, what was read, what an apply did, and
the three actions the shell carries out for it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

FIELD_MANAGER = "rightsizer"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "rightsizer")
JOB_LABEL = "rightsizer.io/rightsizejob"


@dataclasses.dataclass(frozen=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def describe(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclasses.dataclass(frozen=True, order=True)
class KindRef:
    """Every object of one kind in one namespace (ACK objects are found by their SageMaker name, not by ours)."""

    api_version: str
    kind: str
    namespace: str


@dataclasses.dataclass(frozen=True)
class World:
    """What the API server holds now: each object asked for (None when absent), each listing asked for."""

    objects: Mapping[ObjectRef, Mapping[str, Any] | None] = dataclasses.field(default_factory=dict)
    listings: Mapping[KindRef, tuple[Mapping[str, Any], ...]] = dataclasses.field(default_factory=dict)
    # apiVersion/kind pairs the API server does not serve (no such CRD installed).
    unserved: frozenset[tuple[str, str]] = frozenset()
    # A refusal (403) or another API error while reading, with the API server's message.
    error: str | None = None
    forbidden: bool = False
    # What a dry-run apply of the probes said: another manager owns a field the change would set.
    conflict: str | None = None


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    applied: tuple[ObjectRef, ...] = ()
    # Server-side apply conflicts: the API server's message names the other manager and the fields.
    conflict: str | None = None
    error: str | None = None
    forbidden: bool = False


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    deleted: tuple[ObjectRef, ...] = ()  # deleted now, or already gone
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class ReadWorld:
    objects: tuple[ObjectRef, ...]
    listings: tuple[KindRef, ...] = ()
    # Server-side applies to try with dryRun=All after reading: a field conflict shows before anything is created.
    probes: tuple[Mapping[str, Any], ...] = ()
    force_conflicts: bool = False


@dataclasses.dataclass(frozen=True)
class ApplyObjects:
    """Server-side apply, field manager `rightsizer`, one object after the other; stops at the first failure."""

    bodies: tuple[Mapping[str, Any], ...]
    force_conflicts: bool = False

    def refs(self) -> tuple[ObjectRef, ...]:
        return tuple(ref_of(body) for body in self.bodies)


@dataclasses.dataclass(frozen=True)
class DeleteObjects:
    refs: tuple[ObjectRef, ...]


def ref_of(body: Mapping[str, Any]) -> ObjectRef:
    metadata = body.get("metadata") or {}
    return ObjectRef(body["apiVersion"], body["kind"], metadata.get("namespace", ""), metadata["name"])


def condition(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == kind), None)


def condition_is(obj: Mapping[str, Any] | None, kind: str, value: str) -> bool:
    found = condition(obj, kind)
    return found is not None and found.get("status") == value
