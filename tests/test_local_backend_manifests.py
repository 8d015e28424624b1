"""manifests/local-backend: the default install plus what `backend: local` jobs need inside the operator's pod
(CPUs and memory for a model server beside the load generator, the reference model in /models/fraud)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from kubernetes import dynamic
from kubernetes.utils.quantity import parse_quantity

from conftest import REPO, load_samples
from rightsizer import spec as spec_module
from rightsizer.backends.local.plan import plan_experiment
from rightsizer.cluster import binaries
from rightsizer.loadtest.placement import GIB, HostFacts
from test_rbac import kustomize_build



@pytest.fixture(scope="module")
def local() -> list[dict]:
    return kustomize_build("manifests/local-backend")


def deployment(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment")


def test_only_the_operator_deployment_differs_from_the_default_install(local):
    default = kustomize_build("manifests/default")
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, local)) == sorted(map(key, default))
    assert [o for o in local if o["kind"] != "Deployment"] == [o for o in default if o["kind"] != "Deployment"]


def test_the_init_container_writes_the_samples_model_with_the_operators_own_image(local):
    pod = deployment(local)["spec"]["template"]["spec"]
    (init,), (operator,) = pod["initContainers"], pod["containers"]
    assert init["image"] == operator["image"] == "ghcr.io/example/rightsizer:0.1.0"
    assert [*init["command"], *init["args"]] == ["rightsizer", "example", "fraud-model", "/models/fraud"]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in operator["volumeMounts"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True  # like the operator: it writes to volumes only
    assert pod["shareProcessNamespace"] is True  # the pause container, not the operator, reaps orphans
    sample = next(s for s in load_samples() if s["metadata"]["name"] == "fraud-local")["spec"]["model"]["local"]
    assert sample["modelUri"] == "file:///models/fraud/model.ubj" and sample["payload"]["path"].startswith("/models/fraud/")


def test_a_further_overlay_retags_both_containers(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(REPO / "manifests" / "local-backend", tmp_path)],
        "images": [{"name": "ghcr.io/example/rightsizer", "newName": "registry.example.com/ml/rightsizer",
                    "newTag": "1.2.3"}]}))
    output = subprocess.run([str(binaries.kustomize()), "build", str(tmp_path)], capture_output=True, text=True,
                            check=True).stdout
    pod = deployment([d for d in yaml.safe_load_all(output) if d])["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["initContainers"] + pod["containers"]} == {"registry.example.com/ml/rightsizer:1.2.3"}


def test_the_pods_resources_fit_the_samples_local_1cpu_candidates(local):
    operator = deployment(local)["spec"]["template"]["spec"]["containers"][0]
    limits = operator["resources"]["limits"]
    # What the placement would read in that pod on an 8-CPU node: the CPU quota and the memory limit, with
    # the operator itself using some of it.
    host = HostFacts(cpus=tuple(range(8)), memory_total_bytes=int(parse_quantity(limits["memory"])),
                     memory_available_bytes=int(parse_quantity(limits["memory"])) - GIB // 2,
                     cpu_limit_cores=float(parse_quantity(limits["cpu"])))
    sample = next(s for s in load_samples() if s["metadata"]["name"] == "fraud-local")
    planned = plan_experiment(spec_module.parse(sample["spec"]), "fraud-local-0123abcd-g1", host)
    placed = {p.instance_type for p in planned if not p.skipped}
    assert placed == {"local-1cpu"}  # local-2cpu needs more than this overlay gives; its reason says so
    assert all("local-2cpu needs 2 vCPUs" in p.skipped_reason for p in planned if p.skipped)


@pytest.mark.cluster
def test_the_api_server_accepts_the_deployment(api, local):
    body = deployment(local)
    applier = dynamic.DynamicClient(api)
    namespaces = applier.resources.get(api_version="v1", kind="Namespace")
    namespaces.server_side_apply(body={"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": body["metadata"]["namespace"]}},
                                 name=body["metadata"]["namespace"], field_manager="test")
    applied = applier.resources.get(api_version="apps/v1", kind="Deployment").server_side_apply(
        body=body, name=body["metadata"]["name"], namespace=body["metadata"]["namespace"], field_manager="kubectl",
        force_conflicts=True, dry_run="All").to_dict()
    assert applied["spec"]["template"]["spec"]["initContainers"][0]["name"] == "example-model"
