"""manifests/default applies cleanly to the real API server, and its RBAC is least privilege, proved twice: the
operator runs a full reconcile with nothing but its ServiceAccount's token, requests outside its needs are
Forbidden, and the ClusterRole's rules equal the calls the code makes (a new call without a rule fails)."""

from __future__ import annotations

import ast
import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from conftest import REPO, load_samples, refusals, wait_for
from rightsizer import schema
from rightsizer.cluster import binaries
from rightsizer.promotion import executor
from sagemaker_sim import SimulatedInferenceRecommender

pytestmark = pytest.mark.cluster
OPERATOR_NAMESPACE, SERVICE_ACCOUNT = "rightsizer-system", "rightsizer-operator"
# What kopf itself does, beyond our own calls: it lists and watches the resources it serves and patches their
# metadata (its progress annotations and the finalizer); it posts Events (kopf.event()); its observers list and
# watch CRDs and namespaces.
KOPF_NEEDS = {("rightsizer.io", "rightsizejobs", "list"), ("rightsizer.io", "rightsizejobs", "watch"),
              ("rightsizer.io", "rightsizejobs", "patch"), ("", "events", "create"),
              ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
              ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
              ("", "namespaces", "list"), ("", "namespaces", "watch")}
# kubernetes client method -> (resource suffix, verb) for the calls the operator process makes itself.
CLIENT_METHODS = {
    "get_namespaced_custom_object": ("", "get"),
    "patch_namespaced_custom_object": ("", "patch"),
    "patch_namespaced_custom_object_status": ("/status", "patch"),
    "list_namespaced_custom_object": ("", "list"),
    "create_namespaced_custom_object": ("", "create"),
    "delete_namespaced_custom_object": ("", "delete"),
    "replace_namespaced_custom_object": ("", "update"),
}
# Typed client methods (the kubernetes backend's calls) -> (group, resource, verb).
TYPED_METHODS = {
    "create_namespaced_deployment": ("apps", "deployments", "create"),
    "list_namespaced_deployment": ("apps", "deployments", "list"),
    "delete_namespaced_deployment": ("apps", "deployments", "delete"),
    "create_namespaced_job": ("batch", "jobs", "create"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "create_namespaced_service": ("", "services", "create"),
    "read_namespaced_service": ("", "services", "get"),
    "list_namespaced_service": ("", "services", "list"),
    "delete_namespaced_service": ("", "services", "delete"),
    "read_namespaced_pod": ("", "pods", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_node": ("", "nodes", "get"),
    "connect_get_node_proxy_with_path": ("", "nodes/proxy", "get"),
}
# Modules that run inside the operator process (the CLI's cluster and install commands are admin tools).
OPERATOR_MODULES = ["handlers.py", "reconcile.py", "selection.py", "spec.py", "status.py", "model.py", "naming.py",
                    "metrics.py", "schema.py", "kube.py", "backends", "promotion"]


def kustomize_build(path: str) -> list[dict]:
    output = subprocess.run([str(binaries.kustomize()), "build", str(REPO / path)], capture_output=True, text=True,
                            check=True).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module")
def installed(api, crd_installed):
    objects = kustomize_build("manifests/default")
    applier = dynamic.DynamicClient(api)
    for body in objects:
        resource = applier.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        resource.server_side_apply(body=body, name=body["metadata"]["name"],
                                   namespace=body["metadata"].get("namespace"), field_manager="kubectl",
                                   force_conflicts=True)
    # The RBAC authorizer sees the new ClusterRole and binding through its own watch: until it does, the
    # ServiceAccount's requests are refused. Wait for it, as every later request here depends on it.
    wait_for(lambda: operator_may(api, "watch", "rightsizejobs") and operator_may(api, "patch", "rightsizejobs",
                                                                                 "status"), timeout=30)
    return objects


def operator_may(api, verb: str, resource: str, subresource: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_subject_access_review({"spec": {
        "user": f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}",
        "resourceAttributes": {"group": "rightsizer.io", "resource": resource, "subresource": subresource,
                               "verb": verb}}})
    return bool(review.status.allowed)


def test_default_applies_cleanly(installed, api):
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in installed)
    assert kinds == ["ClusterRole/rightsizer-operator", "ClusterRole/rightsizer-rightsizejob-editor",
                     "ClusterRole/rightsizer-rightsizejob-viewer", "ClusterRoleBinding/rightsizer-operator",
                     "CustomResourceDefinition/rightsizejobs.rightsizer.io", "Deployment/rightsizer-operator",
                     "Namespace/rightsizer-system", "Service/rightsizer-operator-metrics",
                     "ServiceAccount/rightsizer-operator"]
    deployment = client.AppsV1Api(api).read_namespaced_deployment("rightsizer-operator", OPERATOR_NAMESPACE)
    assert deployment.spec.replicas == 1 and deployment.spec.strategy.type == "Recreate"
    container = deployment.spec.template.spec.containers[0]
    assert container.image == "ghcr.io/example/rightsizer:0.1.0"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert deployment.spec.template.spec.security_context.run_as_non_root is True
    assert deployment.spec.template.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.liveness_probe.http_get.path == "/healthz"


def service_account_kubeconfig(api, path: Path) -> Path:
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, OPERATOR_NAMESPACE, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "operator", "clusters": admin["clusters"],
              "users": [{"name": "operator", "user": {"token": token}}],
              "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"],
                                                            "user": "operator"}}]}
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_reconciles_with_its_service_account_alone(installed, api, namespace, tmp_path, monkeypatch):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS", "COMPLETED"])
    sim.install()
    monkeypatch.setenv("KUBECONFIG", str(service_account_kubeconfig(api, tmp_path / "operator.kubeconfig")))
    body = copy.deepcopy(next(s for s in load_samples() if s["metadata"]["name"] == "fraud-default"))
    body["metadata"]["namespace"] = namespace
    objects = client.CustomObjectsApi(api)  # the admin creates and reads; the operator acts as its ServiceAccount
    with KopfRunner(["run", "--standalone", f"--namespace={namespace}", "-m", "rightsizer.handlers"]) as runner:
        objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, body)
        done = wait_for(lambda: (b := objects.get_namespaced_custom_object(
            schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "fraud-default"))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in b.get("status", {}).get("conditions", []))
            and b)
        events = wait_for(lambda: client.CoreV1Api(api).list_namespaced_event(namespace).items)
    assert runner.exception is None, runner.output
    assert refusals(runner.output) == [], runner.output
    assert done["status"]["best"]["instanceType"] == "ml.m5.2xlarge"
    assert {e.source.component for e in events} == {"kopf"}


def as_operator(api, tmp_path) -> client.ApiClient:
    from rightsizer import kube
    return kube.api_client(service_account_kubeconfig(api, tmp_path / "probe.kubeconfig"))


@pytest.mark.parametrize("attempt", [
    "read a Secret", "list Secrets cluster-wide", "create a DaemonSet", "patch a Deployment", "delete a RightsizeJob",
    "create a RightsizeJob", "patch the CRD", "create a ClusterRoleBinding",
])
def test_requests_outside_its_needs_are_forbidden(installed, api, namespace, tmp_path, attempt):
    operator_api = as_operator(api, tmp_path)
    core, apps = client.CoreV1Api(operator_api), client.AppsV1Api(operator_api)
    objects, extensions = client.CustomObjectsApi(operator_api), client.ApiextensionsV1Api(operator_api)
    rbac = client.RbacAuthorizationV1Api(operator_api)
    calls = {
        "read a Secret": lambda: core.read_namespaced_secret("anything", namespace),
        "list Secrets cluster-wide": lambda: core.list_secret_for_all_namespaces(),
        "create a DaemonSet": lambda: apps.create_namespaced_daemon_set(namespace, {
            "metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}}),
        # The kubernetes backend creates and deletes its Deployments, never changes anyone's.
        "patch a Deployment": lambda: apps.patch_namespaced_deployment("anything", namespace, {"spec": {"replicas": 0}}),
        "delete a RightsizeJob": lambda: objects.delete_namespaced_custom_object(
            schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "anything"),
        "create a RightsizeJob": lambda: objects.create_namespaced_custom_object(
            schema.GROUP, schema.VERSION, namespace, schema.PLURAL, {"apiVersion": "rightsizer.io/v1alpha1",
                                                                   "kind": "RightsizeJob", "metadata": {"name": "x"},
                                                                   "spec": {"model": {}}}),
        "patch the CRD": lambda: extensions.patch_custom_resource_definition(
            "rightsizejobs.rightsizer.io", {"metadata": {"labels": {"x": "y"}}}),
        "create a ClusterRoleBinding": lambda: rbac.create_cluster_role_binding({
            "metadata": {"name": "escalate"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}]}),
    }
    with pytest.raises(ApiException) as refused:
        calls[attempt]()
    assert refused.value.status == 403, refused.value.body


def test_it_may_watch_rightsizejobs_in_every_namespace(installed, api):
    assert operator_may(api, "watch", "rightsizejobs") is True


def code_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every Kubernetes API call the operator process makes itself."""
    package = REPO / "operator" / "rightsizer"
    files = [path for entry in OPERATOR_MODULES for path in
             ((package / entry).rglob("*.py") if (package / entry).is_dir() else [package / entry])]
    calls = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name in CLIENT_METHODS:
                    suffix, verb = CLIENT_METHODS[name]
                    calls.add(("rightsizer.io", "rightsizejobs" + suffix, verb))
                elif name in TYPED_METHODS:
                    calls.add(TYPED_METHODS[name])
                elif name.startswith(("read_namespaced_", "list_namespaced_", "create_namespaced_",
                                      "patch_namespaced_", "delete_namespaced_", "replace_namespaced_", "read_node",
                                      "connect_", "delete_collection_")):
                    raise AssertionError(f"{path.name}: {name} is not mapped to an RBAC rule in this test")
    return calls


def promotion_calls() -> set[tuple[str, str, str]]:
    """Promotion reaches kinds known only at run time through the dynamic client; every such call names its verb
    in `_resource(..., verb)`, which refuses anything outside PERMISSIONS (or the spec's own generic target)."""
    source = REPO / "operator" / "rightsizer" / "promotion" / "executor.py"
    verbs = {node.args[2].value for node in ast.walk(ast.parse(source.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_resource"}
    assert verbs == {"get", "list", "patch", "delete"}
    granted = {(group, plural, verb) for (group, plural), allowed in executor.PERMISSIONS.items() for verb in allowed}
    # Each verb the code uses is granted on some kind, and each grant is one the code uses (create: by apply).
    assert {verb for _, _, verb in granted} == verbs | {"create"}
    return granted


def test_the_cluster_role_grants_exactly_what_the_code_calls():
    role = next(o for o in kustomize_build("manifests/rbac")
                if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "rightsizer-operator")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    needed = code_calls() | KOPF_NEEDS | promotion_calls()
    assert ("rightsizer.io", "rightsizejobs/status", "patch") in needed  # the scan does see the code's calls
    assert granted == needed
