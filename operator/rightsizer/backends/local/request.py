"""A local job's name and request, pure (the reconcile core builds it)."""

from __future__ import annotations

from typing import Any, Mapping

from rightsizer import schema
from rightsizer.backends import base
from rightsizer.backends.sagemaker import translate

# Spec fields that do not define the experiment: editing them re-selects or re-promotes without a new job.
NOT_JOB_DEFINING = ("selection", "promotion", "deletionPolicy")


def build_request(raw_spec: Mapping[str, Any], owner: base.Owner, generation: int,
                  current_name: str | None = None) -> dict[str, Any]:
    """The job's name (`<name>-<hash>-g<generation>`, as for SageMaker) and the spec that defines it."""
    definition = {key: value for key, value in schema.with_defaults(raw_spec).items() if key not in NOT_JOB_DEFINING}
    return {"JobName": translate.job_name_for(definition, owner, generation, current_name), "Spec": definition}
