"""The imperative half of each backend, for the shell: spec.backend -> the client that makes its calls. Apart from
the registry of policies, so that the pure core never imports boto3 or the load-test tools, even indirectly."""

from __future__ import annotations

from rightsizer.backends import base
from rightsizer.spec import RightsizeJobSpec


def open_client(spec: RightsizeJobSpec) -> base.Backend:
    if spec.backend == "local":
        from rightsizer.backends.local.backend import LocalBackend  # its load tools load only when used

        return LocalBackend()
    if spec.backend == "kubernetes":
        from rightsizer.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend()
    if spec.backend == "sagemaker":
        from rightsizer.backends.sagemaker.client import SageMakerBackend

        return SageMakerBackend(spec.sagemaker.get("region"))
    raise ValueError(f"no client for backend {spec.backend!r}")
