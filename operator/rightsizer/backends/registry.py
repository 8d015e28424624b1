"""Which backends exist: spec.backend -> its policy. Adding a backend adds its package and one line here.

`validate` is how every caller (the reconcile core, `rightsizer validate`, `rightsizer run`) turns a raw spec into
values: the backend-neutral rules of `spec.parse` and the chosen backend's own, reported together.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

from rightsizer import schema
from rightsizer import spec as spec_module
from rightsizer.backends import base
from rightsizer.backends.kubernetes.policy import POLICY as KUBERNETES
from rightsizer.backends.local.policy import POLICY as LOCAL
from rightsizer.backends.sagemaker.policy import POLICY as SAGEMAKER

POLICIES: Mapping[str, base.BackendPolicy] = {policy.name: policy for policy in (SAGEMAKER, LOCAL, KUBERNETES)}


def policy(name: str) -> base.BackendPolicy:
    """The policy of a spec.backend value (the CRD's enum lists exactly these names)."""
    return POLICIES[name]


@dataclasses.dataclass(frozen=True)
class Validated:
    spec: spec_module.RightsizeJobSpec
    policy: base.BackendPolicy
    warnings: tuple[str, ...]


def validate(raw_spec: Mapping[str, Any]) -> Validated:
    """The parsed spec, its backend's policy and its warnings; raises spec.InvalidSpec with every violation.
    The spec is one the API server admitted (its structural schema holds); a file is read with validate_file."""
    try:
        key = json.dumps(raw_spec, sort_keys=True, separators=(",", ":"))
    except TypeError:  # not JSON (a YAML date, say): judged as it is, not remembered
        return _validate(raw_spec)
    return _validate_json(key)


# Every visit and every poll judges its spec again, and a visit that finds a submit unsendable judges it twice;
# the answer depends only on the spec, and a parsed spec is immutable.
@functools.lru_cache(maxsize=256)
def _validate_json(key: str) -> Validated:
    return _validate(json.loads(key))


def _validate(raw_spec: Mapping[str, Any]) -> Validated:
    parsed = spec_module.parse(raw_spec, check=False)
    chosen = policy(parsed.backend)
    errors = spec_module.semantic_errors(parsed) + chosen.errors(parsed)
    if errors:
        raise spec_module.InvalidSpec(errors)
    return Validated(parsed, chosen, tuple(chosen.warnings(parsed)))


def validate_file(raw_spec: Any) -> Validated:
    """validate() for a spec read from a file, where no API server has checked it: the CRD's structural schema
    first (every violation named), so that a wrong type is an error message, not a crash."""
    structural = schema.spec_violations(raw_spec)
    if structural:
        raise spec_module.InvalidSpec(structural)
    return validate(raw_spec)
