"""`rightsizer run FILE` and `rightsizer example fraud-model DIR` as a user runs them (real processes, a short
traffic pattern), and the demo's job and summary."""

from __future__ import annotations

import html.parser
import subprocess
import sys

import pytest
import yaml

from conftest import SAMPLES
from rightsizer import schema
from rightsizer.tools import demo
from rightsizer.reference import fraud_model


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return fraud_model.write_example(tmp_path_factory.mktemp("fraud"), trees=20, legitimate_rows=20000,
                                     fraud_rows=100)


def rightsizer(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rightsizer.cli", *arguments], capture_output=True, text=True,
                          timeout=timeout)


def test_example_writes_the_model_and_payloads(tmp_path):
    result = rightsizer("example", "fraud-model", str(tmp_path), "--trees", "10")
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load(result.stdout)
    assert written["model"] == str(tmp_path / "model.ubj") and (tmp_path / "payload.csv").stat().st_size <= 10_000
    assert written["rocAuc"] > 0.95


def job_file(tmp_path, model, **spec_overrides) -> str:
    body = demo.demo_job(model.model.parent)
    body["spec"].update({"instanceTypes": ["local-1cpu", "ml.m5.24xlarge"],
                         "environmentParameterRanges": {"OMP_NUM_THREADS": ["1", "2"]},
                         "trafficPattern": {"trafficType": "PHASES", "phases": [
                             {"initialNumberOfUsers": 1, "spawnRate": 60, "durationInSeconds": 3}]},
                         **spec_overrides})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_run_prints_progress_the_table_and_the_winner_and_writes_a_report(tmp_path, small_model):
    # An SLA any host meets, however busy (a winner is what this test reads, not this machine's speed).
    generous = {"stoppingConditions": {"maxInvocations": 600, "modelLatencyThresholds": [
        {"percentile": "P95", "valueInMilliseconds": 2000}]}}
    result = rightsizer("run", job_file(tmp_path, small_model, **generous), "--report", str(tmp_path / "report.html"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # One line per configuration as it changes (not a terminal: no redrawing), then the table and the winner.
    assert "[1/4] local-1cpu (OMP_NUM_THREADS=1)" in out and "done" in out
    assert "ml.m5.24xlarge needs 96 vCPUs" in out  # does not fit this host: skipped, with the reason
    assert "Winner (*): local-1cpu x" in out
    table = [line for line in out.splitlines() if line.startswith(("*", "   local-1cpu", "   ml.m5"))]
    assert len(table) == 4 and table[0].startswith("*")
    document = (tmp_path / "report.html").read_text()
    parser = html.parser.HTMLParser()
    parser.feed(document)
    assert document.count("<svg") == 3 and "<script" not in document


def test_run_refuses_a_sagemaker_job_and_an_unreadable_payload(tmp_path, small_model):
    result = rightsizer("run", str(SAMPLES / "fraud-advanced.yaml"))
    assert result.returncode != 0
    assert "no RightsizeJob with backend: local" in result.stderr and "run in SageMaker" in result.stderr
    broken = job_file(tmp_path, small_model)
    text = open(broken).read().replace(str(small_model.payload), "/nonexistent/payload.csv")
    open(broken, "w").write(text)
    result = rightsizer("run", broken)
    assert result.returncode == 1 and "/nonexistent/payload.csv" in result.stderr


def test_the_demo_job_is_the_sample_pointed_at_the_model_it_made(tmp_path):
    body = demo.demo_job(tmp_path)
    assert body["metadata"] == {"name": "fraud-local", "namespace": demo.NAMESPACE}
    assert body["spec"]["model"]["local"]["modelUri"] == f"file://{tmp_path / 'model.ubj'}"
    assert body["spec"]["model"]["local"]["payload"]["path"] == str(tmp_path / "payload.csv")
    sample = schema.rightsize_jobs(open(SAMPLES / "fraud-local.yaml").read())[0]
    assert body["spec"]["trafficPattern"] == sample["spec"]["trafficPattern"]


def test_the_demo_summary_is_read_from_status_alone():
    rows = [{"recommendationId": f"j/{i:08d}", "instanceType": "local-1cpu", "initialInstanceCount": 1,
             "environment": {"OMP_NUM_THREADS": str(i + 1)},
             "metrics": {"maxInvocations": 40000 + i, "modelLatency": 3, "costPerHour": 0.05}} for i in range(2)]
    body = {"spec": schema.rightsize_jobs(open(SAMPLES / "fraud-local.yaml").read())[0]["spec"],
            "status": {"recommendations": rows, "steps": {"failures": [
                {"instanceType": "local-2cpu", "environment": {}, "failureReason": "does not fit"}]}}}
    text = demo.summary(body)
    assert text.splitlines()[1].startswith("*") and "OMP_NUM_THREADS=2" in text.splitlines()[1]
    assert "not measured: does not fit" in text
