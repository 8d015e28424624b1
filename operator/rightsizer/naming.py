"""Deterministic job names, the same for every backend: `<name>-<hash>-g<generation>`, at most 63 characters.

The hash covers the owner's uid and the job's definition, so the same definition always maps to the same name (a
retry or a restart adopts instead of duplicating) and any job-defining edit to a new one; the generation says
which spec generation first asked for it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from rightsizer.model import Owner

MAX_JOB_NAME = 63  # SageMaker allows 64; Kubernetes-style 63 keeps the name usable as a label value too
NAME_HASH_CHARS = 8
JOB_NAME_SUFFIX = re.compile(r"-([0-9a-f]{%d})-g([0-9]+)$" % NAME_HASH_CHARS)


def definition_hash(definition: Mapping[str, Any], owner: Owner) -> str:
    canonical = json.dumps({"uid": owner.uid, "request": definition}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:NAME_HASH_CHARS]


def job_name(owner: Owner, digest: str, generation: int) -> str:
    suffix = f"-{digest}-g{generation}"
    base = re.sub(r"[^a-zA-Z0-9-]", "-", owner.name).strip("-") or "rsj"
    return base[: MAX_JOB_NAME - len(suffix)].rstrip("-") + suffix


def name_digest(name: str | None) -> str | None:
    """The definition hash inside a job name this module made, or None."""
    match = JOB_NAME_SUFFIX.search(name or "")
    return match.group(1) if match else None


def job_name_for(definition: Mapping[str, Any], owner: Owner, generation: int, current_name: str | None) -> str:
    """Keeps `current_name` when it already names this definition (e.g. after a selection edit bumped the
    generation), so only job-defining edits produce a new job."""
    digest = definition_hash(definition, owner)
    if current_name is not None and name_digest(current_name) == digest:
        return current_name
    return job_name(owner, digest, generation)
