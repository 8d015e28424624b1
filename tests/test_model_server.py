"""The built-in model server, run as a real process on 127.0.0.1 (an ephemeral port): SageMaker's /ping and
/invocations contract, its environment, worker processes, shutdown and start-up failures."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xgboost

from conftest import wait_for
from rightsizer.reference import fraud_model, model_server

START_TIMEOUT = 30.0
STARTUP_LINE = re.compile(r"workers (?P<workers>\d+), threads (?P<threads>\d+), listening on "
                          r"http://(?P<host>[^ ]+):(?P<port>\d+)$")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return fraud_model.write_example(tmp_path_factory.mktemp("example"), trees=30, legitimate_rows=20_000,
                                     fraud_rows=200)


@pytest.fixture(scope="module")
def booster(example):
    return xgboost.Booster(model_file=str(example.model))


@dataclasses.dataclass
class RunningServer:
    process: subprocess.Popen
    startup_line: str
    host: str
    port: int

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()

    def invoke(self, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        return self.request("POST", "/invocations", body, content_type)


def server_environment(**settings: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("SM_", "SAGEMAKER_", "RIGHTSIZER_MODEL", "RIGHTSIZER_BIND", "OMP_"))}
    return {**environment, "SAGEMAKER_BIND_TO_PORT": "0", **settings}


def read_stderr_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stderr], [], [], timeout)
    return process.stderr.readline() if ready else ""


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(**settings: str):
    process = subprocess.Popen([sys.executable, "-m", "rightsizer.reference.model_server"],
                               env=server_environment(**settings), stderr=subprocess.PIPE, text=True)
    try:
        line = read_stderr_line(process, START_TIMEOUT).strip()
        match = STARTUP_LINE.search(line)
        assert match, f"no startup line: {line!r}"
        yield RunningServer(process, line, match["host"].strip("[]"), int(match["port"]))
    finally:
        stop(process)


@pytest.fixture(scope="module")
def server(example):
    with running_server(SM_MODEL_DIR=str(example.model.parent), OMP_NUM_THREADS="1") as running:
        yield running


def csv_predictions(body: bytes) -> np.ndarray:
    return np.array([float(line) for line in body.decode().splitlines()], dtype=np.float32)


def in_process_predictions(booster: xgboost.Booster, csv: bytes) -> np.ndarray:
    rows = [[float(value) for value in line.split(",")] for line in csv.decode().splitlines()]
    return booster.predict(xgboost.DMatrix(np.array(rows)))


def test_startup_line_names_the_model_and_settings(server, example):
    assert f"model {example.model} (30 trees, 30 features)" in server.startup_line
    assert server.host == "127.0.0.1" and server.port > 0
    assert "workers 1, threads 1" in server.startup_line


def test_ping_answers_once_the_model_is_loaded(server):
    assert server.request("GET", "/ping")[0] == 200


def test_csv_and_json_invocations_give_the_in_process_probabilities(server, example, booster):
    csv = example.payload.read_bytes()
    expected = in_process_predictions(booster, csv)
    rows = [[float(value) for value in line.split(",")] for line in csv.decode().splitlines()]

    status, content_type, body = server.invoke(csv, "text/csv")
    assert (status, content_type) == (200, "text/csv")
    np.testing.assert_array_equal(csv_predictions(body), expected)

    for document in ({"instances": rows}, rows):
        status, content_type, body = server.invoke(json.dumps(document).encode(), "application/json")
        assert (status, content_type) == (200, "application/json")
        np.testing.assert_array_equal(np.array(json.loads(body)["predictions"], dtype=np.float32), expected)


def test_csv_variants_single_row_crlf_charset_and_no_final_newline(server, example, booster):
    row = example.payload_row.read_bytes()
    expected = in_process_predictions(booster, row)
    two_rows = example.payload.read_bytes().splitlines()[:2]

    for body, content_type, count in ((row, "text/csv", 1), (row.rstrip(b"\n"), "text/csv; charset=utf-8", 1),
                                      (b"\r\n".join(two_rows) + b"\r\n", "Text/CSV", 2)):
        status, _, response = server.invoke(body, content_type)
        assert status == 200, response
        predictions = csv_predictions(response)
        assert len(predictions) == count and predictions[0] == expected[0]


def test_other_content_types_are_refused_with_415(server, example):
    for content_type in ("text/plain", "application/x-recordio-protobuf", None):
        status, _, body = server.invoke(example.payload_row.read_bytes(), content_type)
        problem = f"unsupported Content-Type {content_type!r}" if content_type else "no Content-Type"
        assert (status, body.decode()) == (415, f"{problem}: send text/csv or application/json\n")


@pytest.mark.parametrize("content_type, body, reason", [
    ("text/csv", b"", "empty body"),
    ("text/csv", b"\n\n", "empty body"),
    ("text/csv", b"1,2,x" + b",0" * 27 + b"\n", "could not convert string 'x'"),
    ("text/csv", ",".join(fraud_model.FEATURES).encode() + b"\n", "could not convert string 'Time'"),
    ("text/csv", b"0," * 28 + b"0\n", "must have 30 features; got 29"),
    ("text/csv", b"0," * 29 + b"0\n" + b"0," * 28 + b"0\n", "number of columns changed from 30 to 29"),
    ("text/csv", b"0,,1" + b",0" * 27 + b"\n", "could not convert string ''"),
    ("application/json", b"{not json", "malformed JSON"),
    ("application/json", b'{"rows": [[1, 2]]}', "expected {\"instances\""),
    ("application/json", b'{"instances": []}', "expected {\"instances\""),
    ("application/json", b'{"instances": [1, 2, 3]}', "expected {\"instances\""),
    ("application/json", json.dumps({"instances": [[0.0] * 30, [0.0] * 29]}).encode(), "all of one length"),
    ("application/json", json.dumps({"instances": [[0.0] * 29]}).encode(), "must have 30 features; got 29"),
    ("application/json", json.dumps([[[0.0] * 30]]).encode(), "flat list of numbers"),
    ("application/json", json.dumps([["a"] * 30]).encode(), "rows must be lists of numbers"),
])
def test_malformed_bodies_are_refused_with_400_and_a_reason(server, content_type, body, reason):
    status, response_type, response = server.invoke(body, content_type)

    assert status == 400
    assert response_type.startswith("text/plain")
    assert reason in response.decode()


def test_wrong_paths_and_methods(server):
    assert server.request("GET", "/invocations")[0] == 405
    assert server.request("POST", "/ping", b"")[0] == 405
    assert server.request("GET", "/v2/models/fraud/ready")[0] == 404
    assert server.request("GET", "/ping")[0] == 200


@pytest.mark.parametrize("as_uri", [Path.as_uri, lambda path: f"file://{path.parent}", str])
def test_model_uri_wins_over_the_model_directory(example, tmp_path, as_uri):
    with running_server(SM_MODEL_DIR=str(tmp_path), RIGHTSIZER_MODEL_URI=as_uri(example.model)) as running:
        assert f"model {example.model} " in running.startup_line
        assert running.invoke(example.payload_row.read_bytes(), "text/csv")[0] == 200


def test_bind_host_can_be_ipv6_loopback(example):
    with running_server(SM_MODEL_DIR=str(example.model.parent), RIGHTSIZER_BIND_HOST="::1") as running:
        assert "listening on http://[::1]:" in running.startup_line
        assert running.request("GET", "/ping")[0] == 200


def test_omp_num_threads_reaches_xgboost(example):
    # The startup line reads the thread count back from the booster's own configuration.
    with running_server(SM_MODEL_DIR=str(example.model.parent), OMP_NUM_THREADS="3") as running:
        assert STARTUP_LINE.search(running.startup_line)["threads"] == "3"


def test_threads_default_to_the_cpus_the_server_may_use(example):
    with running_server(SM_MODEL_DIR=str(example.model.parent)) as running:
        assert int(STARTUP_LINE.search(running.startup_line)["threads"]) == len(os.sched_getaffinity(0))


def test_two_workers_serve_from_two_processes(example):
    # Each request predicts 3,000 rows (milliseconds), so a worker busy with one leaves the next connection
    # to the other worker: which process accepts a connection is the kernel's choice.
    rows = fraud_model.generate_dataset(legitimate_rows=3_000, fraud_rows=0).features
    body = "".join(fraud_model.csv_line(row) + "\n" for row in rows).encode()
    with running_server(SM_MODEL_DIR=str(example.model.parent), SAGEMAKER_MODEL_SERVER_WORKERS="2",
                        OMP_NUM_THREADS="1") as running:
        assert "workers 2" in running.startup_line
        workers = wait_for_workers(running.process, 2)
        serving: set[int] = set()
        deadline = time.monotonic() + 20
        while len(serving) < 2 and time.monotonic() < deadline:
            connections = [http.client.HTTPConnection(running.host, running.port, timeout=10) for _ in range(4)]
            for connection in connections:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
            # Connections stay open until each worker's share is counted.
            statuses = [connection.getresponse().status for connection in connections]
            assert statuses == [200] * 4
            serving |= {worker.pid for worker in workers if worker_owns_a_connection(worker, running.port)}
            for connection in connections:
                connection.close()
        assert serving == {worker.pid for worker in workers}


def wait_for_workers(process: subprocess.Popen, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        # multiprocessing's resource tracker is a child too, but does not listen.
        workers = [child for child in psutil.Process(process.pid).children()
                   if any(connection.status == psutil.CONN_LISTEN for connection in child.net_connections("tcp"))]
        if len(workers) == count:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"{count} listening workers did not appear")


def worker_owns_a_connection(worker: psutil.Process, port: int) -> bool:
    return any(connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == port
               for connection in worker.net_connections("tcp"))


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(example, workers):
    rows = fraud_model.generate_dataset(legitimate_rows=2_000, fraud_rows=0).features
    body = "".join(fraud_model.csv_line(row) + "\n" for row in rows).encode()
    with running_server(SM_MODEL_DIR=str(example.model.parent), SAGEMAKER_MODEL_SERVER_WORKERS=workers) as running:
        if workers == "2":
            wait_for_workers(running.process, 2)
        processes = [psutil.Process(running.process.pid), *psutil.Process(running.process.pid).children()]
        connection = http.client.HTTPConnection(running.host, running.port, timeout=10)
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "text/csv")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body[:1000])
        time.sleep(0.5)  # the server has the headers: the request is in flight

        running.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        connection.send(body[1000:])
        response = connection.getresponse()

        assert response.status == 200 and len(response.read().splitlines()) == 2_000
        assert running.process.wait(timeout=15) == 0
        # The workers are the supervisor's children: they finish their own exit a moment after it; wait for that.
        wait_for(lambda: not any(alive(process) for process in processes), timeout=15)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((running.host, running.port), timeout=2)
        assert running.process.stderr.read() == ""


def corrupt_model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.ubj").write_bytes(b"this is not a model")
    return tmp_path


@pytest.mark.parametrize("make_settings, message", [
    (lambda tmp_path: {"SM_MODEL_DIR": str(tmp_path)}, "no model.ubj, model.json, model.bst in"),
    (lambda tmp_path: {"SM_MODEL_DIR": str(tmp_path / "absent")}, "does not exist"),
    (lambda tmp_path: {"SM_MODEL_DIR": str(corrupt_model_dir(tmp_path))}, "as an XGBoost model"),
    (lambda tmp_path: {"RIGHTSIZER_MODEL_URI": "s3://bucket/model.tar.gz"}, "only file:// URIs"),
    (lambda tmp_path: {"RIGHTSIZER_MODEL_URI": (tmp_path / "model.ubj").as_uri()}, "does not exist"),
    (lambda tmp_path: {"RIGHTSIZER_MODEL_URI": "file://model.ubj"}, "file:///path/to/model.ubj"),
])
def test_a_missing_or_corrupt_model_fails_fast_with_a_clear_message(tmp_path, make_settings, message):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "rightsizer.reference.model_server"],
                            env=server_environment(**make_settings(tmp_path)), capture_output=True, text=True,
                            timeout=30)

    assert result.returncode == 1
    assert result.stderr.startswith("rightsizer model server: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("name, value, message", [
    ("SAGEMAKER_BIND_TO_PORT", "http", "SAGEMAKER_BIND_TO_PORT='http' is not an integer"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "SAGEMAKER_MODEL_SERVER_WORKERS=0 is below 1"),
    ("OMP_NUM_THREADS", "-2", "OMP_NUM_THREADS=-2 is below 1"),
    # Absurd: XGBoost raised mid-startup, and the traceback became the configuration's failure reason.
    ("OMP_NUM_THREADS", "99999999999999999999", "OMP_NUM_THREADS=99999999999999999999 is above 1024"),
    ("SAGEMAKER_BIND_TO_PORT", "70000", "SAGEMAKER_BIND_TO_PORT=70000 is above 65535"),
])
def test_invalid_settings_are_named(example, name, value, message):
    environment = {"SM_MODEL_DIR": str(example.model.parent), name: value}

    with pytest.raises(model_server.ConfigurationError, match=re.escape(message)):
        model_server.settings_from_environment(environment)


def test_a_port_in_use_fails_fast(example):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        result = subprocess.run([sys.executable, "-m", "rightsizer.reference.model_server"], capture_output=True,
                                text=True, timeout=30,
                                env=server_environment(SM_MODEL_DIR=str(example.model.parent),
                                                       SAGEMAKER_BIND_TO_PORT=str(taken.getsockname()[1])))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr and "Address already in use" in result.stderr


def test_workers_die_with_a_killed_caller(example, tmp_path):
    """The caller (an operator, `rightsizer run`) killed outright: the server's main process gets the launcher's
    parent-death signal, and its workers their own, on it."""
    caller = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from rightsizer.loadtest.server_process import ServerProcess
server = ServerProcess([sys.executable, "-m", "rightsizer.reference.model_server"], cpus=[0],
                       port_env="SAGEMAKER_BIND_TO_PORT", environment={{"SM_MODEL_DIR": {str(example.model.parent)!r},
                                     "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}}).start()
server.wait_until_ready(timeout={START_TIMEOUT})
print(server.pid, flush=True)
time.sleep(120)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        supervisor = psutil.Process(int(caller.stdout.readline()))
        deadline = time.monotonic() + START_TIMEOUT
        workers: list[psutil.Process] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = [child for child in supervisor.children()
                       if any(c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp"))]
            time.sleep(0.1)
        assert len(workers) == 2
        caller.kill()
        caller.wait(timeout=5)
        gone, alive = psutil.wait_procs([supervisor, *workers], timeout=10)
        assert alive == [], f"left serving: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()
