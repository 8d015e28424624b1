"""The kubernetes backend's policy, pure: a job is the spec itself, run as Pods on the cluster's nodes by a thread
of the operator; looked at every 2 s (a describe reads the operator's own memory), and run again after a restart
without the configurations status already holds."""

from __future__ import annotations

from rightsizer.backends import base
from rightsizer.backends.scaling import DerivesScaling
from rightsizer.model import CurrentConfiguration
from rightsizer.spec import RightsizeJobSpec, configuration_count

# A candidate here is a node selector and Pod resources, which what a target serves is not always; listing the
# current configuration among the candidates compares with it.
BASELINE_UNSUPPORTED = ("spec.baseline is not supported with spec.backend: kubernetes; add the current configuration "
                        "to spec.kubernetes.candidates to compare with it")


class KubernetesPolicy(base.RunsTheSpecItself, DerivesScaling):
    name = "kubernetes"
    display_name = "the kubernetes backend"
    capabilities = base.Capabilities(existing_endpoint=False, jobs_outlive_operator=False, parallel_tests=True)

    def errors(self, spec: RightsizeJobSpec) -> list[str]:
        errors = []
        settings = spec.kubernetes
        if settings is not None:
            names = [c.name for c in settings.candidates]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:  # the API server's list-map keys refuse these; a file read by `rightsizer run` may not
                errors.append(f"spec.kubernetes.candidates: names must be unique, {', '.join(duplicates)} repeated")
        if spec.baseline is not None:  # the CRD refuses it too
            errors.append(BASELINE_UNSUPPORTED)
        return errors

    def baseline_problem(self, spec: RightsizeJobSpec, current: CurrentConfiguration) -> str | None:
        return BASELINE_UNSUPPORTED

    def warnings(self, spec: RightsizeJobSpec) -> list[str]:
        warnings = []
        if spec.deletion_policy == "Retain":
            warnings.append("spec.deletionPolicy Retain keeps nothing with the kubernetes backend: the experiment's "
                            "Deployments, Services and Jobs belong to the RightsizeJob and are deleted with it")
        settings = spec.kubernetes
        if settings is None or spec.selection.objective not in ("CostPerInference", "CostPerHour"):
            return warnings
        unpriced = [c.name for c in settings.candidates if c.priced_instance_type is None]
        if not unpriced:
            return warnings
        return warnings + [f"spec.kubernetes.candidates {', '.join(unpriced)}: no instance type in the node selector or "
                f"instanceType; the cost comes from the node.kubernetes.io/instance-type label of the node the "
                f"Pods land on, and is missing if that node has none or no price is known"]

    def describe_job(self, spec: RightsizeJobSpec) -> str:
        return f"the load test of {configuration_count(spec)} configuration(s) on the cluster's nodes"


POLICY = KubernetesPolicy()
