"""`rightsizer demo` (what `make demo` runs): the reference use case end to end on this machine.

It makes the fraud model, finds a cluster (KUBECONFIG's, or starts `rightsizer cluster up`), installs the CRD,
runs the operator, applies manifests/samples/fraud-local.yaml pointed at the model it made, follows the
RightsizeJob's status until the job ends, prints the results and the winner, and removes everything it
started or created, also when interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

from kubernetes import client

from rightsizer import kube, schema, selection
from rightsizer.tools import report
from rightsizer import spec as spec_module
from rightsizer.model import Recommendation, StepFailure

NAMESPACE = "rightsizer-demo"
# The demo runs local jobs only: boto3's credential chain must not probe the instance-metadata address.
NO_CLOUD = {"AWS_EC2_METADATA_DISABLED": "true"}
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fraud-local.yaml"
POLL_SECONDS = 2.0
TIMEOUT_SECONDS = 20 * 60


def _say(stream: TextIO, message: str) -> None:
    print(f"[demo] {message}", file=stream, flush=True)


def _reachable(kubeconfig: str | None) -> bool:
    if not kubeconfig or not Path(kubeconfig).exists():
        return False
    try:
        client.VersionApi(kube.api_client(kubeconfig)).get_code(_request_timeout=5)
        return True
    except Exception:  # any failure means: not usable, start our own
        return False


@contextlib.contextmanager
def _cluster(stream: TextIO) -> Iterator[str]:
    existing = os.environ.get("KUBECONFIG")
    if _reachable(existing):
        _say(stream, f"using the cluster of KUBECONFIG={existing}")
        yield existing
        return
    from rightsizer.cluster.controlplane import ControlPlane

    with tempfile.TemporaryDirectory(prefix="rightsizer-demo-cluster-") as state:
        plane = ControlPlane(Path(state))
        running = plane.up(log=lambda message: _say(stream, message))
        try:
            yield str(running.kubeconfig)
        finally:
            plane.down()
            _say(stream, "stopped the control plane it started")


@contextlib.contextmanager
def _operator(kubeconfig: str, log_path: Path, stream: TextIO) -> Iterator[subprocess.Popen]:
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "rightsizer.cli", "operator", "--standalone",
                                    f"--namespace={NAMESPACE}"],
                                   env={**os.environ, "KUBECONFIG": kubeconfig, **NO_CLOUD},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _say(stream, f"operator running (pid {process.pid}, log {log_path})")
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # kopf's graceful stop
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            _say(stream, "operator stopped")


def demo_job(model_dir: Path) -> dict[str, Any]:
    """The sample, pointed at the model this run made."""
    body = copy.deepcopy(schema.rightsize_jobs(SAMPLE.read_text())[0])
    body["metadata"]["namespace"] = NAMESPACE
    local = body["spec"]["model"]["local"]
    local["modelUri"] = f"file://{model_dir / 'model.ubj'}"
    local["payload"]["path"] = str(model_dir / "payload.csv")
    return body


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}


def _follow(objects: client.CustomObjectsApi, name: str, stream: TextIO, operator: subprocess.Popen) -> dict:
    deadline, last = time.monotonic() + TIMEOUT_SECONDS, None
    while time.monotonic() < deadline:
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}; see its log")
        body = objects.get_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, name)
        status = body.get("status") or {}
        progress = status.get("progress") or {}
        ready = _conditions(body).get("Ready") or {}
        phase = status.get("phase", "Pending")
        if progress:
            line = (f"{phase}: {progress.get('completed', 0)}/{progress.get('total')} configurations; "
                    f"{progress.get('current') or ready.get('message', '')}")
        else:
            line = f"{phase}: {ready.get('message') or 'waiting for the operator'}"
        if line != last:
            _say(stream, line)
            last = line
        succeeded = _conditions(body).get("Succeeded") or {}
        if succeeded.get("status") in ("True", "False"):
            return body
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"the job did not finish within {TIMEOUT_SECONDS // 60} minutes")


def _delete(objects: client.CustomObjectsApi, name: str, stream: TextIO) -> None:
    """Delete the job and wait until it is gone: the operator stops a load test still running first, and only
    then lets its finalizer go."""
    with contextlib.suppress(client.ApiException):
        objects.delete_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            objects.get_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, name)
        except client.ApiException as error:
            if error.status == 404:
                _say(stream, f"deleted RightsizeJob {NAMESPACE}/{name}")
                return
            raise
        time.sleep(0.5)
    _say(stream, f"RightsizeJob {NAMESPACE}/{name} is still being deleted")


def summary(body: dict[str, Any]) -> str:
    """The results table and the winner, from the RightsizeJob's status (what `kubectl get -o yaml` shows)."""
    status = body.get("status") or {}
    parsed = spec_module.parse(body["spec"])
    rows = [Recommendation.from_status_row(row) for row in status.get("recommendations") or ()]
    chosen = selection.select(rows, parsed.selection.objective, selection.constraints_for(parsed))
    failures = [StepFailure(f.get("instanceType"), f.get("environment") or {}, f.get("failureReason", ""))
                for f in (status.get("steps") or {}).get("failures") or ()]
    return report.results_table(chosen, unmeasured=failures)


def run(stream: TextIO = sys.stdout) -> int:
    from rightsizer.reference import fraud_model

    os.environ.update(NO_CLOUD)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rightsizer-demo-") as workdir:
        work = Path(workdir)
        _say(stream, "making the reference fraud model (synthetic data, 300 trees)")
        example = fraud_model.write_example(work / "model")
        _say(stream, f"model ready: ROC-AUC {example.roc_auc:.4f}, AUC-PR {example.auc_pr:.3f}")
        with _cluster(stream) as kubeconfig:
            api = kube.api_client(kubeconfig)
            kube.install_crds(api)
            core, objects = client.CoreV1Api(api), client.CustomObjectsApi(api)
            with contextlib.suppress(client.ApiException):
                core.create_namespace({"metadata": {"name": NAMESPACE}})
            body = demo_job(example.model.parent)
            name = body["metadata"]["name"]
            with _operator(kubeconfig, work / "operator.log", stream) as operator:
                with contextlib.suppress(client.ApiException):
                    objects.delete_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL,
                                                            name)
                objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, body)
                _say(stream, f"applied RightsizeJob {NAMESPACE}/{name}")
                try:
                    final = _follow(objects, name, stream, operator)
                finally:
                    _delete(objects, name, stream)
        print(summary(final), file=stream)
        ready = _conditions(final).get("Ready") or {}
        _say(stream, f"Ready={ready.get('status')} ({ready.get('reason')}): {ready.get('message')}")
        _say(stream, f"done in {time.monotonic() - started:.0f} s")
        return 0 if ready.get("status") == "True" else 1
