"""The local backend through the operator, against the real API server: real model servers and load tests on
127.0.0.1, short traffic patterns. Status follows each configuration; a delete stops the load; an operator
killed mid-run resumes with only the unfinished configurations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from conftest import wait_for
from rightsizer import schema
from rightsizer.reference import fraud_model
from test_sagemaker_operator import condition, create, events, objects, operator_args, read

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fraud_model.write_example(tmp_path_factory.mktemp("fraud"), trees=20, legitimate_rows=20000,
                                     fraud_rows=100)


def local_job(model, name: str = "fraud-local", phase_seconds: int = 3, omp=("1", "2")) -> dict:
    return {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob", "metadata": {"name": name},
            "spec": {"backend": "local",
                     "model": {"local": {"framework": "xgboost", "modelUri": f"file://{model.model}",
                                         "payload": {"path": str(model.payload_row), "contentType": "text/csv"}}},
                     "instanceTypes": ["local-1cpu"],
                     "environmentParameterRanges": {"OMP_NUM_THREADS": list(omp)},
                     "trafficPattern": {"trafficType": "PHASES", "phases": [
                         {"initialNumberOfUsers": 1, "spawnRate": 60, "durationInSeconds": phase_seconds}]},
                     "stoppingConditions": {"modelLatencyThresholds": [{"percentile": "P95",
                                                                        "valueInMilliseconds": 100}]},
                     "local": {"pricePerHour": {"local-1cpu": 0.05}}}}


def servers_and_generators() -> list[psutil.Process]:
    """Model servers and load generators started by this process (the operator runs in it)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "model_server" in command or "load_generator" in command or "locust" in command:
            found.append(child)
    return found


def test_status_follows_each_configuration_and_the_best_is_selected(api, crd_installed, namespace, model):
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, local_job(model))
        partial = wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                           and (b.get("status") or {}).get("progress", {}).get("completed") == 1 and b, timeout=90)
        assert partial["status"]["progress"]["total"] == 2
        assert condition(partial, "Ready")["status"] == "Unknown"
        assert len(partial["status"]["recommendations"]) == 1  # written as soon as it finished
        done = wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                        and condition(b, "Ready").get("status") == "True" and b, timeout=90)
        # kopf lets the finalizer go in its own patch, once it sees the status that ended the job.
        released = wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                            and "rightsizer.io/finalizer" not in (b["metadata"].get("finalizers") or []) and b,
                            timeout=30)
    assert runner.exception is None, runner.output
    status = done["status"]
    assert condition(done, "Ready")["reason"] == "BestSelected" and status["phase"] == "Completed"
    assert status["backendStatus"] == "COMPLETED" and status["steps"]["byStatus"] == {"COMPLETED": 2}
    assert status["jobArn"] == f"local:{namespace}/{status['jobName']}"  # as submitted, not rewritten by polls
    rows = status["recommendations"]
    assert {row["environment"]["OMP_NUM_THREADS"] for row in rows} == {"1", "2"}
    for row in rows:
        metrics = row["metrics"]
        assert metrics["maxInvocations"] > 0 and 0 < metrics["modelLatency"] <= 100
        assert metrics["cpuUtilization"] > 0 and metrics["costPerHour"] == pytest.approx(0.05)
        assert row["instanceType"] == "local-1cpu" and row["meetsSLA"] is True
    assert status["best"]["recommendationId"] in {row["recommendationId"] for row in rows}
    assert released["status"]["best"] == status["best"]
    assert servers_and_generators() == []


def test_deleting_the_job_stops_the_load(api, crd_installed, namespace, model):
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, local_job(model, phase_seconds=60))
        wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                 and (b.get("status") or {}).get("backendStatus") == "IN_PROGRESS" and servers_and_generators(),
                 timeout=60)
        objects(api).delete_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL,
                                                     "fraud-local")
        wait_for(lambda: read(api, namespace, "fraud-local") is None, timeout=30)
        wait_for(lambda: not servers_and_generators(), timeout=15)
    assert runner.exception is None, runner.output


def orphaned_load_processes() -> list[psutil.Process]:
    """Model servers and load generators that no living process of this test session owns."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or ())
        if ("rightsizer.reference.model_server" in command or "load_generator" in command) and process.pid not in ours:
            found.append(process)
    return found


def operator_process(namespace: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rightsizer.cli", "operator", "--standalone",
                             f"--namespace={namespace}"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ}, start_new_session=True)


def restart_until_succeeded(api, namespace: str, log) -> dict:
    """After a kill: its model servers and load generator die with it (parent-death signal), leaving nothing
    behind; a new operator then takes the job over and finishes it. Returns the finished RightsizeJob."""
    wait_for(lambda: not orphaned_load_processes(), timeout=15)
    second = operator_process(namespace, log)
    try:
        return wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                        and condition(b, "Succeeded").get("status") == "True" and b, timeout=120)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)


def test_an_operator_killed_mid_run_resumes_only_the_unfinished_configurations(api, crd_installed, namespace, model,
                                                                               tmp_path):
    with open(tmp_path / "operator.log", "w") as log:
        first = operator_process(namespace, log)
        try:
            create(api, namespace, local_job(model, phase_seconds=4, omp=("1", "2", "3")))
            partial = wait_for(lambda: (b := read(api, namespace, "fraud-local"))
                               and (b.get("status") or {}).get("progress", {}).get("completed", 0) >= 1 and b,
                               timeout=90)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # no cleanup: what a crash or an OOM kill leaves
            first.wait()
        finished_before = {row["recommendationId"]: row for row in partial["status"]["recommendations"]}
        done = restart_until_succeeded(api, namespace, log)
    rows = {row["recommendationId"]: row for row in done["status"]["recommendations"]}
    assert len(rows) == 3
    for recommendation_id, before in finished_before.items():
        assert rows[recommendation_id]["metrics"] == before["metrics"]  # kept, not measured again
    assert ("Normal", "JobResumed") in events(api, namespace, "fraud-local")
    assert done["status"]["jobName"] == partial["status"]["jobName"]


def model_servers_with(operator: subprocess.Popen, variable: str, value: str) -> list[psutil.Process]:
    """The operator's model servers started with `variable=value` in their environment (only its own: other
    test runs on this machine may run model servers too)."""
    found = []
    try:
        descendants = psutil.Process(operator.pid).children(recursive=True)
    except psutil.Error:
        return []
    for process in descendants:
        try:
            if ("rightsizer.reference.model_server" in " ".join(process.cmdline())
                    and process.environ().get(variable) == value):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_every_finished_run_is_in_status_before_the_next_starts_and_a_kill_reruns_none(api, crd_installed, namespace,
                                                                                       model, tmp_path):
    body = local_job(model, phase_seconds=3)
    body["spec"]["local"]["repetitions"] = 2
    with open(tmp_path / "operator.log", "w") as log:
        first = operator_process(namespace, log)
        try:
            create(api, namespace, body)
            # Run 1 of OMP_NUM_THREADS=2 starts only once status holds run 1 of OMP_NUM_THREADS=1.
            wait_for(lambda: model_servers_with(first, "OMP_NUM_THREADS", "2"), timeout=90, interval=0.05)
            held = read(api, namespace, "fraud-local")["status"]["progress"]
            assert [r["environment"]["OMP_NUM_THREADS"] for r in held.get("runs", [])] == ["1"], held
            # Killed during run 2 of OMP_NUM_THREADS=1: both first runs are in status by then.
            wait_for(lambda: model_servers_with(first, "OMP_NUM_THREADS", "1"), timeout=90, interval=0.05)
            kept = read(api, namespace, "fraud-local")["status"]["progress"]
            assert sorted(r["environment"]["OMP_NUM_THREADS"] for r in kept["runs"]) == ["1", "2"], kept
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        done = restart_until_succeeded(api, namespace, log)
    first_runs = {r["recommendationId"]: r for r in kept["runs"]}
    rows = done["status"]["recommendations"]
    assert len(rows) == 2
    for row in rows:
        # Each row is the median of the kept first run and one new run: the first run was not done again.
        assert row["invocationStartTime"] == first_runs[row["recommendationId"]]["invocationStartTime"]
    assert "runs" not in done["status"]["progress"]
    assert done["status"]["progress"]["startedAt"] == kept["startedAt"]  # the duration's start survives the kill
    resumed = [e.message for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
               if e.reason == "JobResumed"]
    assert resumed and "2 run(s) of repeated ones kept" in resumed[0]
