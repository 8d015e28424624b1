"""The kubernetes backend: a RightsizeJob's configurations measured as Pods on the cluster's own nodes
(experiment.py), run by a thread of the operator (backends/inprocess.py) so that status follows each one closely.
Jobs of different RightsizeJobs run side by side: the scheduler places their Pods."""

from __future__ import annotations

import os

from kubernetes import client
from kubernetes.client.rest import ApiException

from rightsizer import kube, model
from rightsizer.backends import base, inprocess
from rightsizer.backends.kubernetes.experiment import KubernetesExperiment

# The operator's own image runs the load generator and the reference server, unless spec.kubernetes.image says.
IMAGE_ENV = "RIGHTSIZER_IMAGE"
# Set from the downward API by manifests/manager/manager.yaml: the operator reads its own Pod's image.
POD_NAME_ENV, POD_NAMESPACE_ENV = "POD_NAME", "POD_NAMESPACE"


class KubernetesBackend(inprocess.InProcessBackend):
    def __init__(self, api: client.ApiClient | None = None):
        super().__init__(self._experiment, scheme="kubernetes")
        self.api = api or kube.shared_client()

    def _experiment(self, plan: base.JobPlan, owner: model.Owner, resume: base.ResumeState,
                    hooks: inprocess.Hooks) -> KubernetesExperiment:
        image = (plan.spec.kubernetes.image if plan.spec.kubernetes else None) or self._own_image()
        return KubernetesExperiment(
            plan.spec, plan.job_name, owner, self.api, image=image,
            completed={r.recommendation_id: r for r in resume.completed}, failed=resume.failed,
            job_started_at=hooks.started_at(), on_progress=hooks.on_progress, on_outcome=hooks.on_outcome,
            before_run=hooks.before_run, runs=resume.runs, on_run=hooks.on_run)

    def _own_image(self) -> str:
        if os.environ.get(IMAGE_ENV):
            return os.environ[IMAGE_ENV]
        name, namespace = os.environ.get(POD_NAME_ENV), os.environ.get(POD_NAMESPACE_ENV)
        if name and namespace:
            try:
                pod = client.CoreV1Api(self.api).read_namespaced_pod(name, namespace)
                return str(pod.spec.containers[0].image)
            except ApiException as error:
                raise inprocess.ExperimentRefused(
                    f"spec.kubernetes.image is not set and the operator cannot read its own Pod {namespace}/{name} "
                    f"for its image: {error.reason}") from error
        raise inprocess.ExperimentRefused(
            f"spec.kubernetes.image is required: the operator does not run in a Pod (no {POD_NAME_ENV}) and "
            f"{IMAGE_ENV} is not set, so it has no image of its own for the load generator")
