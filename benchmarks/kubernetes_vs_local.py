"""The kubernetes backend against the local backend on the same configuration on the same host, side by side: the
fraud model on one CPU (the local backend's `local-1cpu` profile pinned to CPU 0 with its load generator on CPU 1;
a server Pod with a 1-CPU request and limit on this machine's node, with one Locust master and one worker Pod),
the same traffic pattern and stopping rules, alternating for --rounds rounds. Prints maxInvocations, P95 and CPU
per run and the kubernetes/local ratios.

    sudo .venv/bin/python benchmarks/kubernetes_vs_local.py [--rounds 2]

Needs root: it starts a single-node cluster (`rightsizer cluster up --node`) in a temporary state directory, loads
the project's image into it (built from the Dockerfile when its cache misses) and takes the node down afterwards.
No operator runs: the two experiments are driven in this process, with a RightsizeJob object as the owner of the
kubernetes backend's objects (so that the garbage collector does not take them).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client

from rightsizer import kube, schema
from rightsizer import spec as spec_module
from rightsizer.backends.kubernetes.experiment import KubernetesExperiment
from rightsizer.backends.local import experiment as local_experiment
from rightsizer.cluster import images
from rightsizer.cluster import node as node_module
from rightsizer.model import Owner
from rightsizer.reference import fraud_model

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
SHARED = {
    "environmentParameterRanges": {"OMP_NUM_THREADS": ["1"]},
    "trafficPattern": {"trafficType": "PHASES",
                       "phases": [{"initialNumberOfUsers": 1, "spawnRate": 30, "durationInSeconds": 40}]},
    "stoppingConditions": {"modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}],
                           "flatInvocations": "Stop"},
}
KUBERNETES = {
    "backend": "kubernetes",
    "model": {"kubernetes": {"framework": "xgboost", "modelUri": "file:///opt/rightsizer/models/fraud/model.ubj",
                             "payload": {"path": "/opt/rightsizer/models/fraud/payload.csv"}}},
    "kubernetes": {"candidates": [{"name": "one-cpu", "instanceType": "m5.large", "resources": {
        "requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}}],
        "image": images.PROJECT_REF, "imagePullPolicy": "Never", "loadGenerator": {"workers": 1}},
    **SHARED,
}


def local_spec(example: fraud_model.Example) -> dict:
    return {"backend": "local", "instanceTypes": ["local-1cpu"], "local": {"loadGeneratorCpus": [1]},
            "model": {"local": {"framework": "xgboost", "modelUri": f"file://{example.model}",
                                "payload": {"path": str(example.payload)}}}, **SHARED}


def figures(outcomes) -> dict:
    (outcome,) = outcomes
    if outcome.recommendation is None:
        raise SystemExit(f"{outcome.planned.label} failed: {outcome.failure_reason}")
    metrics = outcome.recommendation.metrics
    return {"maxInvocations": metrics["maxInvocations"], "p95": metrics["modelLatency"],
            "cpu": metrics.get("cpuUtilization"), "detail": outcome.detail}


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--rounds", type=int, default=2)
    options = arguments.parse_args()
    if os.geteuid() != 0:
        print("needs root (a kubelet and containerd)", file=sys.stderr)
        return 2
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with tempfile.TemporaryDirectory() as work:
        example = fraud_model.write_example(Path(work) / "model")
        harness = node_module.Node(Path(work) / "cluster")
        running = harness.up(log=print)
        try:
            images.load(running.binaries_dir / "ctr", running.containerd_socket, images.project_image(REPO, log=print))
            api = kube.api_client(running.kubeconfig)
            kube.install_crds(api)
            client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
            owner_body = {"apiVersion": f"{schema.GROUP}/{schema.VERSION}", "kind": "RightsizeJob",
                          "metadata": {"name": "bench-owner"}, "spec": copy.deepcopy(KUBERNETES)}
            created = client.CustomObjectsApi(api).create_namespaced_custom_object(
                schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, owner_body)
            owner = Owner(NAMESPACE, "bench-owner", created["metadata"]["uid"])
            on_cluster = spec_module.parse(KUBERNETES)
            on_host = spec_module.parse(local_spec(example))
            rows = []
            for round_number in range(1, options.rounds + 1):
                started = time.monotonic()
                local = figures(local_experiment.Experiment(on_host, f"bench-local-r{round_number}").run())
                local_seconds = time.monotonic() - started
                started = time.monotonic()
                pods = figures(KubernetesExperiment(on_cluster, f"bench-k8s-r{round_number}", owner, api,
                                                    image=images.PROJECT_REF, completed={}).run())
                pods_seconds = time.monotonic() - started
                rows.append((round_number, local, local_seconds, pods, pods_seconds))
                print(f"round {round_number}: local {local['maxInvocations']}/min P95 {local['p95']} ms "
                      f"CPU {local['cpu']} % in {local_seconds:.0f} s; kubernetes {pods['maxInvocations']}/min "
                      f"P95 {pods['p95']} ms CPU {pods['cpu']} % in {pods_seconds:.0f} s", flush=True)
                print(f"  local: {local['detail']}\n  kubernetes: {pods['detail']}", flush=True)
        finally:
            harness.down(log=print)
    print(f"\n{'round':>5} {'local inv/min':>14} {'k8s inv/min':>12} {'ratio':>6} {'local P95':>10} {'k8s P95':>8} "
          f"{'local CPU %':>12} {'k8s CPU %':>10}")
    for round_number, local, _, pods, _ in rows:
        print(f"{round_number:>5} {local['maxInvocations']:>14,} {pods['maxInvocations']:>12,} "
              f"{pods['maxInvocations'] / local['maxInvocations']:>6.2f} {local['p95']:>8} ms {pods['p95']:>5} ms "
              f"{local['cpu']!s:>12} {pods['cpu']!s:>10}")
    ratio = statistics.median(p["maxInvocations"] / l["maxInvocations"] for _, l, _, p, _ in rows)
    print(f"median throughput ratio kubernetes/local: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
