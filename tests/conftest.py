"""Fixtures: one real kube-apiserver + etcd per test session (the project's own harness), the CRD installed in
it, and a fresh namespace per test (namespaces are never finalized without a controller-manager)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from rightsizer import kube
from rightsizer.cluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"


def load_samples() -> list[dict]:
    """Every RightsizeJob in manifests/samples (the kustomization file is not one)."""
    documents = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "RightsizeJob"]
    return documents


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    running = plane.up()
    # kopf (in KopfRunner) and the kubernetes client both find the cluster through KUBECONFIG.
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(running.kubeconfig)
    yield running
    if previous is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = previous
    plane.down()


@pytest.fixture(scope="session")
def api(control_plane) -> client.ApiClient:
    return kube.api_client(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def crd_installed(api):
    kube.install_crds(api)
    return True


@pytest.fixture
def namespace(api) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name
