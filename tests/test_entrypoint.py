"""`rightsizer operator` as the image runs it (a real process): liveness endpoint, Prometheus metrics, JSON logs
naming the RightsizeJob on every per-object line, and a clean stop on SIGTERM."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client

from conftest import load_samples, wait_for
from rightsizer import schema

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_the_operator_process_serves_health_and_metrics_and_logs_json(api, crd_installed, namespace, tmp_path):
    health, metrics_port = free_port(), free_port()
    log = tmp_path / "operator.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "rightsizer.cli", "operator", "--standalone", f"--namespace={namespace}",
             f"--liveness=http://127.0.0.1:{health}/healthz", f"--metrics-port={metrics_port}", "--log-format=json"],
            stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        body = copy.deepcopy(next(s for s in load_samples() if s["metadata"]["name"] == "fraud-local"))
        body["metadata"]["namespace"] = namespace
        objects = client.CustomObjectsApi(api)
        objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, body)
        wait_for(lambda: objects.get_namespaced_custom_object(
            schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "fraud-local").get("status", {}).get("phase"))
        assert wait_for(lambda: fetch(f"http://127.0.0.1:{health}/healthz")) is not None
        exposition = wait_for(lambda: (text := fetch(f"http://127.0.0.1:{metrics_port}/metrics"))
                              and 'rightsizer_jobs{phase="Failed"} 1.0' in text and text)  # refused: Failed
        assert 'rightsizer_reconcile_duration_seconds_count{trigger="change"}' in exposition
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, log.read_text()
    per_object = [line for line in lines if line.get("object")]
    assert per_object and all(line["object"]["name"] == "fraud-local" and line["object"]["namespace"] == namespace
                              for line in per_object), per_object[:3]
