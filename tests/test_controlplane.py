"""`rightsizer cluster up/status/down` and the harness behind it: idempotent start, clean stop, a real RBAC
authorizer and working service-account tokens, and where the binaries come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rightsizer import schema
from rightsizer.cluster import binaries
from rightsizer.cluster.controlplane import ControlPlane, _alive
from conftest import wait_for

pytestmark = pytest.mark.cluster


def rightsizer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rightsizer.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_cli_up_is_idempotent_and_down_cleans_up(tmp_path):
    state_dir = tmp_path / "cluster"
    first = rightsizer("cluster", "up", "--state-dir", str(state_dir), "--install-crds")
    assert first.returncode == 0, first.stderr
    kubeconfig = Path(first.stdout.strip())
    assert kubeconfig == state_dir / "kubeconfig" and kubeconfig.exists()
    state = json.loads((state_dir / "state.json").read_text())

    second = rightsizer("cluster", "up", "--state-dir", str(state_dir))
    assert second.returncode == 0 and Path(second.stdout.strip()) == kubeconfig
    assert json.loads((state_dir / "state.json").read_text()) == state  # the same processes, not new ones

    status = rightsizer("cluster", "status", "--state-dir", str(state_dir))
    assert status.returncode == 0 and json.loads(status.stdout)["server"] == state["server"]

    from rightsizer import kube
    api = kube.api_client(kubeconfig)
    assert client.ApiextensionsV1Api(api).read_custom_resource_definition("rightsizejobs.rightsizer.io")
    assert client.VersionApi(api).get_code().git_version == binaries.pinned_versions()["kube-apiserver"]

    down = rightsizer("cluster", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert not state_dir.exists()
    assert not _alive(state["apiserver_pid"]) and not _alive(state["etcd_pid"])
    assert rightsizer("cluster", "status", "--state-dir", str(state_dir)).returncode == 1


def test_up_restarts_a_control_plane_whose_processes_died(tmp_path):
    plane = ControlPlane(tmp_path / "cluster")
    first = plane.up()
    try:
        os.kill(first.apiserver_pid, 9)
        os.waitpid(first.apiserver_pid, 0)
        assert plane.running() is None
        second = plane.up()
        assert second.apiserver_pid != first.apiserver_pid
        assert not _alive(first.etcd_pid)  # the orphaned etcd was stopped, not leaked
        assert plane.running() == second
    finally:
        plane.down()


def test_rbac_is_enforced_for_service_account_tokens(api, crd_installed, namespace):
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}).status.token

    configuration = client.Configuration()
    configuration.host = api.configuration.host
    configuration.ssl_ca_cert = api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CustomObjectsApi(client.ApiClient(configuration))

    with pytest.raises(ApiException) as forbidden:
        as_reader.list_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL)
    assert forbidden.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in forbidden.value.body

    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "rsj-reader"},
        "rules": [{"apiGroups": [schema.GROUP], "resources": [schema.PLURAL], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "rsj-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rsj-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    # The RBAC authorizer learns of the binding from its own watch: wait for it instead of reading at once.
    assert wait_for(lambda: _allowed_list(as_reader, namespace), timeout=30) == {"items": []}
    with pytest.raises(ApiException) as still_forbidden:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespaced_secret(namespace)
    assert still_forbidden.value.status == 403


def _allowed_list(as_reader: client.CustomObjectsApi, namespace: str) -> dict | None:
    try:
        listed = as_reader.list_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL)
    except ApiException as error:
        if error.status == 403:
            return None
        raise
    return {"items": listed["items"]}


def test_kubebuilder_assets_is_used_when_set(tmp_path, monkeypatch, control_plane):
    built = binaries.resolve(build=False)
    for name in ("kube-apiserver", "etcd"):
        (tmp_path / name).symlink_to(getattr(built, name.replace("-", "_")))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert binaries.resolve() == binaries.ControlPlaneBinaries(tmp_path / "kube-apiserver", tmp_path / "etcd")


def test_kubebuilder_assets_without_binaries_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(binaries.BinariesUnavailable, match=r"lacks executable .*kube-apiserver, .*etcd"):
        binaries.resolve()


def test_versions_are_pinned_in_the_wrapper_modules():
    versions = binaries.pinned_versions()
    assert versions == {"kube-apiserver": "v1.36.3", "etcd": "v3.6.8"}
    kubernetes_mod = (binaries.GOMOD_DIR / "kube-apiserver" / "go.mod").read_text()
    # every staging module is pinned to the v0.x release that matches the kubernetes version
    staging = [line for line in kubernetes_mod.splitlines() if line.startswith("replace k8s.io/")]
    assert len(staging) >= 30 and all(line.endswith(" v0.36.3") for line in staging)
