"""An API-server outage mid-run: the API server is paused (SIGSTOP: connections hang, as behind a dead network),
then killed and started again on the same etcd after its history was compacted (so the operator's watch resumes
from a resourceVersion that is gone: 410 Gone). The operator must ride it out by itself: the job finishes once,
status is whole, nothing measured is lost, and the watch serves changes made after the outage.

Each test has a control plane of its own: pausing the session's would stall every other test's operator."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from conftest import wait_for
from rightsizer import kube, schema
from rightsizer.cluster.controlplane import ControlPlane
from sagemaker_sim import SimulatedInferenceRecommender
from test_local_operator import local_job, model  # noqa: F401 (fixture)
from test_sagemaker_operator import condition, creates, sample

pytestmark = pytest.mark.cluster
NAMESPACE = "outage"
PAUSE_SECONDS = 4.0


@pytest.fixture
def plane(tmp_path, monkeypatch):
    harness = ControlPlane(tmp_path / "plane")
    running = harness.up()
    monkeypatch.setenv("KUBECONFIG", str(running.kubeconfig))
    api = kube.api_client(running.kubeconfig)
    kube.install_crds(api)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    try:
        yield harness
    finally:
        harness.down()


def objects() -> client.CustomObjectsApi:
    # A client made after each restart would hide a stale connection pool: the same one is used throughout.
    return client.CustomObjectsApi(kube.shared_client())


def create(body: dict) -> None:
    body = {**body, "metadata": {**body["metadata"], "namespace": NAMESPACE}}
    objects().create_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, body)


def read(name: str) -> dict:
    return objects().get_namespaced_custom_object(schema.GROUP, schema.VERSION, NAMESPACE, schema.PLURAL, name)


def outage(harness: ControlPlane) -> None:
    pid = harness.running().apiserver_pid
    os.kill(pid, signal.SIGSTOP)
    time.sleep(PAUSE_SECONDS)
    harness.compact_etcd()
    harness.restart_apiserver()  # SIGKILL reaches a stopped process


def operator_args() -> list[str]:
    return ["run", "--standalone", "--debug", f"--namespace={NAMESPACE}", "-m", "rightsizer.handlers"]


def test_a_sagemaker_job_rides_out_an_api_server_outage_and_finishes_once(plane):
    sim = SimulatedInferenceRecommender(script=["IN_PROGRESS"] * 12 + ["COMPLETED"])
    sim.install()
    with KopfRunner(operator_args()) as runner:
        create(sample("fraud-default"))
        wait_for(lambda: condition(read("fraud-default"), "Ready").get("reason") == "JobInProgress", timeout=30)
        polls_before = sim.count("DescribeInferenceRecommendationsJob")
        outage(plane)
        done = wait_for(lambda: (body := read("fraud-default"))
                        and condition(body, "Ready").get("reason") == "BestSelected" and body, timeout=120)
        # The watch serves what changed after the outage: a job created now is seen and reconciled.
        create({**sample("fraud-default"), "metadata": {"name": "after-the-outage"}})
        wait_for(lambda: condition(read("after-the-outage"), "Ready"), timeout=60)
    assert runner.exception is None, runner.output
    status = done["status"]
    assert sim.count("DescribeInferenceRecommendationsJob") > polls_before  # polled again after the outage
    assert [c["JobName"] for c in creates(sim)].count(status["jobName"]) == 1
    assert status["steps"]["byStatus"] == {"COMPLETED": 5} and status["recommendationsTotal"] == 5
    assert status["phase"] == "Completed" and condition(done, "Succeeded")["reason"] == "JobCompleted"
    assert "Restarting the watch-stream" in runner.output, "no 410 Gone was met: the outage did not test it"


def test_a_local_job_rides_out_an_api_server_outage_and_loses_no_measurement(plane, model):
    with KopfRunner(operator_args()) as runner:
        create(local_job(model, phase_seconds=4, omp=("1", "2", "3")))
        first = wait_for(lambda: (body := read("fraud-local"))
                         and len((body.get("status") or {}).get("recommendations") or []) >= 1 and body, timeout=120)
        measured_before = {row["recommendationId"]: row["metrics"] for row in first["status"]["recommendations"]}
        outage(plane)
        done = wait_for(lambda: (body := read("fraud-local"))
                        and condition(body, "Ready").get("status") == "True" and body, timeout=180)
    assert runner.exception is None, runner.output
    status = done["status"]
    rows = {row["recommendationId"]: row["metrics"] for row in status["recommendations"]}
    assert len(rows) == 3 and status["steps"]["byStatus"] == {"COMPLETED": 3}
    for recommendation_id, metrics in measured_before.items():
        assert rows[recommendation_id] == metrics  # written before the outage, kept
    assert condition(done, "Ready")["reason"] == "BestSelected"
