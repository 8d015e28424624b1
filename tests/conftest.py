"""Fixtures: one real kube-apiserver + etcd per test session (the project's own harness), the CRD installed in
it, and a fresh namespace per test (namespaces are never finalized without a controller-manager)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
import uuid
from pathlib import Path

import hypothesis
import pytest
from kubernetes import client

# On CI (a clean clone: no example database) every run draws the same examples, so a submission is judged on the
# draws it was tested with, not turned red by a new one; a developer's runs keep exploring, and what they find is
# pinned as an explicit example (Hypothesis's own advice for CI: derandomize).
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

# Set before the operator's modules are imported: compress its clocks (a 30 s poll becomes 0.6 s) and lift the
# SageMaker call-rate limit, which the simulated service does not need.
os.environ.setdefault("RIGHTSIZER_TIME_SCALE", "0.02")
os.environ.setdefault("RIGHTSIZER_SAGEMAKER_CALLS_PER_SECOND", "500")
os.environ.setdefault("RIGHTSIZER_SAGEMAKER_BURST", "500")

from rightsizer import kube, schema
from rightsizer.cluster.controlplane import ControlPlane
from rightsizer.cluster import node as node_module

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"


def pytest_configure(config):
    config.addinivalue_line("markers", "node: runs the single-node cluster of `rightsizer cluster up --node` (root)")


def load_samples() -> list[dict]:
    """Every RightsizeJob in manifests/samples (the kustomization file is not one)."""
    return [document for path in sorted(SAMPLES.glob("*.yaml")) for document in schema.rightsize_jobs(path.read_text())]


def wait_for(predicate, timeout: float = 40.0, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")


def refusals(log: str) -> list[str]:
    """Log lines where the API server refused the operator (403). A millisecond timestamp such as ",403" is not."""
    return [line for line in log.splitlines() if re.search(r"Forbidden|\b403\b(?<!,403)", line)]


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


@pytest.fixture(autouse=True)
def no_unstubbed_sagemaker():
    """Any SageMaker call a test has not routed to botocore's Stubber (tests/sagemaker_sim.py) fails loudly:
    nothing in the suite may reach AWS."""
    from rightsizer.backends.sagemaker.client import use_client_factory

    def refuse(region: str):
        raise AssertionError(f"unstubbed SageMaker client requested for {region}")

    use_client_factory(refuse)
    yield
    use_client_factory(refuse)


# ---- nothing leaves the machine -------------------------------------------------------------------------------

# Set before boto3 is imported anywhere: its credential chain would otherwise probe the instance-metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


# The addresses the harness's own node gives itself, its Pods and its Services (rightsizer.cluster.node): they
# live on bridges and in network namespaces of this machine.
HARNESS_NETWORKS = tuple(ipaddress.ip_network(network) for network in (
    f"{node_module.NODE_IP}/32", node_module.POD_CIDR, node_module.SERVICE_CIDR))


def allowed_address(host: str) -> bool:
    """Whether a test may connect to `host`: loopback, and the harness's own node, Pods and Services."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is not the address
    except ValueError:
        return host == "localhost"  # any other name would need a lookup that may itself leave the machine
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_loopback or any(address in network for network in HARNESS_NETWORKS)


class NetworkRefused(AssertionError):
    """A test tried to open a connection to an address outside allowed_address()."""


def _guarded(original):
    def connect(sock: socket.socket, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else str(address)
            if not allowed_address(str(host)):
                raise NetworkRefused(f"a test tried to connect to {host}: only loopback is allowed "
                                     f"(tests/conftest.py allowed_address)")
        return original(sock, address, *args, **kwargs)
    connect.__wrapped__ = original  # type: ignore[attr-defined]
    return connect


@pytest.fixture(autouse=True)
def no_connection_leaves_the_machine(monkeypatch):
    """Fails any connect() of this process to a non-loopback address before a packet is sent (asyncio, aiohttp,
    urllib3 and botocore all connect through socket.socket). Child processes are not covered: they connect only to
    127.0.0.1 by construction (model servers, load generators, the control plane)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(socket.socket.connect_ex))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
