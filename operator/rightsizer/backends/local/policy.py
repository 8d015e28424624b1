"""The local backend's policy, pure: a job is the spec itself, run on the operator's host, looked at every 2 s
(a describe reads the operator's own memory), and run again after a restart without what status holds."""

from __future__ import annotations

import re

from rightsizer import pricing
from rightsizer.backends import base
from rightsizer.backends.scaling import DerivesScaling
from rightsizer.model import CurrentConfiguration
from rightsizer.spec import RightsizeJobSpec, configuration_count

# A local profile's name (rightsizer.loadtest.placement reads its CPUs and memory from it).
LOCAL_PROFILE = re.compile(r"local-[1-9][0-9]*cpu(?:-[1-9][0-9]*gi)?")


class LocalPolicy(base.RunsTheSpecItself, DerivesScaling):
    name = "local"
    display_name = "the local backend"
    capabilities = base.Capabilities(existing_endpoint=False, jobs_outlive_operator=False, parallel_tests=False)

    def errors(self, spec: RightsizeJobSpec) -> list[str]:
        return []  # what depends on the host (CPUs, payload) is found when the job is placed, per configuration

    def warnings(self, spec: RightsizeJobSpec) -> list[str]:
        # SageMaker's load-test guidance is SageMaker's: the local load generator has no such limits. A cost
        # objective without a price is the local backend's own pitfall: found here, before an hour of load tests.
        objective = spec.selection.objective
        if objective not in ("CostPerInference", "CostPerHour"):
            return []
        overrides = (spec.local or {}).get("pricePerHour") or {}
        unpriced = [t for t in dict.fromkeys(c.instance_type for c in spec.candidates if c.instance_type)
                    if _price(t, overrides) is None]
        if not unpriced:
            return []
        return [f"no price known for {', '.join(unpriced)}: spec.selection.objective {objective} cannot rank "
                f"{'it' if len(unpriced) == 1 else 'them'}; set spec.local.pricePerHour or choose objective "
                f"ModelLatency or MaxInvocations"]

    def describe_job(self, spec: RightsizeJobSpec) -> str:
        return f"the local load test of {configuration_count(spec)} configuration(s)"

    def baseline_problem(self, spec: RightsizeJobSpec, current: CurrentConfiguration) -> str | None:
        """The baseline runs as one more candidate: a local profile, or an ml.* type emulated by its vCPUs and
        memory (the bundled catalog; no accelerators)."""
        name = current.instance_type
        if name is None:
            return ("it names no instance type (an ACK variant's instanceType, a KServe predictor's "
                    "node.kubernetes.io/instance-type node selector, spec.promotion.fieldPaths.instanceType), so the "
                    "local backend cannot tell what to emulate")
        if LOCAL_PROFILE.fullmatch(name):
            return None
        size = pricing.instance_size(name)
        if size is None or not size.hosting:
            return (f"its instance type {name} is neither a local-<N>cpu[-<M>gi] profile nor a SageMaker hosting "
                    f"type of the bundled catalog, so the local backend cannot emulate it")
        if size.accelerators:
            return f"its instance type {name} has {size.accelerator_kind}; the local backend emulates only CPUs and memory"
        return None


def _price(instance_type: str, overrides: dict[str, float]) -> float | None:
    try:
        return pricing.price_per_hour(instance_type, overrides).price
    except ValueError:  # a malformed override: the schema's to refuse, not a missing price
        return 0.0


POLICY = LocalPolicy()
