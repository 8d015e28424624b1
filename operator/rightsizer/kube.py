"""Small Kubernetes chores shared by the CLI, the demo and the tests: clients and CRD installation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from rightsizer import schema

FIELD_MANAGER = "rightsizer"


def api_client(kubeconfig: Path | str | None = None) -> client.ApiClient:
    """A client for `kubeconfig`; without one, the pod's ServiceAccount when in a cluster, else ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                client_configuration=configuration)
    return client.ApiClient(configuration)


_shared: dict[str, client.ApiClient] = {}


def shared_client() -> client.ApiClient:
    """The operator's one client: in a pod, the ServiceAccount; elsewhere the kubeconfig KUBECONFIG names (one
    client per kubeconfig, so that a test switching KUBECONFIG gets its own)."""
    key = os.environ.get("KUBECONFIG") or "in-cluster"
    if key not in _shared:
        _shared[key] = api_client(os.environ.get("KUBECONFIG"))
    return _shared[key]


def install_crds(api: client.ApiClient, timeout_seconds: float = 30) -> None:
    """Create or update the RightsizeJob CRD and wait until the API server serves it (Established)."""
    extensions = client.ApiextensionsV1Api(api)
    crd = schema.crd()
    name = crd["metadata"]["name"]
    try:
        existing = extensions.read_custom_resource_definition(name)
        crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": existing.metadata.resource_version}}
        extensions.replace_custom_resource_definition(name, crd)
    except ApiException as error:
        if error.status != 404:
            raise
        extensions.create_custom_resource_definition(crd)
    wait_established(api, name, timeout_seconds)


def wait_established(api: client.ApiClient, name: str, timeout_seconds: float = 30) -> None:
    extensions = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} was not Established within {timeout_seconds} s")


def api_message(error: Exception) -> str:
    """The API server's own message (a Status object's), else the error as the client states it."""
    try:
        return str(json.loads(getattr(error, "body", None) or "").get("message") or error)
    except (TypeError, ValueError, AttributeError):
        return str(error)
