"""The pure core: (spec, status, observation) -> (actions, status patch). No I/O, no kopf, no boto3.

The handlers feed it what they observed and carry out what it returns, so every decision can be tested as a
plain function call and a restart at any line converges: the status it reads is the only memory there is.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Mapping

from rightsizer import spec as spec_module
from rightsizer import status as st

NORMAL, WARNING = "Normal", "Warning"


@dataclasses.dataclass(frozen=True)
class Observation:
    generation: int
    now: datetime.datetime


@dataclasses.dataclass(frozen=True)
class EmitEvent:
    type: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    actions: tuple[Any, ...]
    status_patch: dict[str, Any]


def _event_if_changed(before: list | None, after: list, condition_type: str, event_type: str) -> list[EmitEvent]:
    """One Event per transition (status, reason or message), so a level-triggered loop never spams."""
    old, new = st.find(before, condition_type), st.find(after, condition_type)
    if new is None:
        return []
    key = ("status", "reason", "message")
    if old is not None and all(old.get(k) == new.get(k) for k in key):
        return []
    return [EmitEvent(event_type, new["reason"], new["message"])]


def reconcile(spec: Mapping[str, Any], status: Mapping[str, Any], observation: Observation) -> Outcome:
    conditions_before = list(status.get("conditions") or [])
    generation, now = observation.generation, observation.now
    conditions = conditions_before

    def condition(kind: str, value: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = st.set_condition(conditions, kind, value, reason, message, generation, now)

    try:
        parsed = spec_module.parse(spec)
    except spec_module.InvalidSpec as invalid:
        message = "invalid spec: " + "; ".join(invalid.errors)
        condition(st.VALIDATED, st.FALSE, "InvalidSpec", message)
        condition(st.READY, st.FALSE, "InvalidSpec", message)
        patch = {"observedGeneration": generation, "phase": status.get("phase") or st.PENDING,
                 "conditions": conditions, "warnings": None}
        return Outcome(tuple(_event_if_changed(conditions_before, conditions, st.VALIDATED, WARNING)), patch)

    warnings = spec_module.soft_warnings(parsed)
    if warnings:
        condition(st.VALIDATED, st.TRUE, "ValidWithWarnings",
                  f"{len(warnings)} warning(s): " + "; ".join(warnings))
    else:
        condition(st.VALIDATED, st.TRUE, "Valid", "the spec is valid")

    if not status.get("jobName"):
        # Nothing has been started for this resource yet: say so on every condition, even as Unknown.
        condition(st.READY, st.UNKNOWN, "JobPending",
                  f"the spec is valid; {spec_module.describe_job(parsed)} is not submitted yet")
        condition(st.JOB_SUBMITTED, st.FALSE, "NotSubmitted", f"no job has been submitted for generation {generation}")
        condition(st.SUCCEEDED, st.UNKNOWN, "JobPending", "no job has run yet")
        condition(st.SLA_SATISFIED, st.UNKNOWN, "NoResults", "no configuration has been benchmarked yet")

    patch = {"observedGeneration": generation, "phase": status.get("phase") or st.PENDING,
             "conditions": conditions, "warnings": [w[: st.MAX_WARNING_CHARS] for w in warnings[: st.MAX_WARNINGS]] or None}
    events = _event_if_changed(conditions_before, conditions, st.VALIDATED, WARNING if warnings else NORMAL)
    return Outcome(tuple(events), patch)
