"""How fast the built-in model server (rightsizer.reference.model_server) serves the reference fraud model, against
the in-process XGBoost floor for the same payload, and optionally against MLServer, side by side in one run.

Run: .venv/bin/python benchmarks/model_server.py [--seconds 4] [--users 16] [--example DIR] [--mlserver]

Cases: the server pinned to 1 CPU (1 worker, OMP_NUM_THREADS=1) with the load generator pinned to another CPU,
and the server on 2 CPUs (2 workers, OMP_NUM_THREADS=1 each). With only 2 CPUs on the machine the second case
shares them with the load generator, and says so. Payloads: one row, and the ~10 KB CSV of write_example().

Load: Locust FastHttpUser, headless from Python, closed loop with --users users and no wait; latencies are
exact (every response time from the request event, not Locust's rounded histogram), recorded after a 1 s
warm-up. Floor: CSV parse + Booster.inplace_predict of the same payload, back to back in this process on the
server's CPU with one thread; its rate is what one core could do with no HTTP at all.

--mlserver also serves the same model.ubj with MLServer 1.7.1 + mlserver-xgboost (parallel_workers=0, MLServer's
fastest setting on one CPU) on the same pinned CPU, through the V2 protocol with the same rows as
JSON; its virtual environment is made once under ~/.cache/rightsizer/bench-mlserver (about a minute).
"""

from __future__ import annotations

# Locust patches the standard library for gevent; it must come before anything that opens sockets.
import locust  # noqa: F401  isort: skip

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import gevent
import numpy as np
import psutil
import xgboost
from locust import FastHttpUser, constant, task
from locust.env import Environment

from rightsizer.reference import fraud_model

WARM_UP_SECONDS = 1.0
# The floor is the best of several batches: on a shared machine a slow batch measures the neighbours, not XGBoost.
FLOOR_BATCHES, FLOOR_BATCH_CALLS, FLOOR_WARM_UP_CALLS = 5, 400, 200
MLSERVER_VENV = Path.home() / ".cache" / "rightsizer" / "bench-mlserver"
MLSERVER_PINS = ["mlserver==1.7.1", "uvloop==0.21.0", "xgboost-cpu==3.2.0", "scikit-learn==1.9.1"]
# mlserver-xgboost requires xgboost[scikit-learn], whose wheel carries a CUDA build and NCCL (about 700 MB);
# xgboost-cpu above provides the same module.
MLSERVER_NO_DEPS_PINS = ["mlserver-xgboost==1.7.1"]


@dataclasses.dataclass(frozen=True)
class Payload:
    name: str
    csv: bytes

    @property
    def rows(self) -> list[list[float]]:
        return np.loadtxt(io.BytesIO(self.csv), delimiter=",", ndmin=2).tolist()


@dataclasses.dataclass(frozen=True)
class Request:
    path: str
    content_type: str
    body: bytes


@dataclasses.dataclass(frozen=True)
class LoadResult:
    requests: int
    failures: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_percent: float
    generator_cpu_percent: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_ms_per_request(self) -> float:
        """Less sensitive to neighbours than req/s: CPU time taken from the server is not counted."""
        return 10 * self.server_cpu_percent * self.seconds / self.requests


def measure_floor(model: Path, payload: Payload, cpus: set[int]) -> float:
    """Seconds per parse + predict of the payload (mean of the fastest batch), one thread, pinned like the server."""
    booster = xgboost.Booster(model_file=str(model))
    booster.set_param({"nthread": 1})
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        def call() -> None:
            booster.inplace_predict(np.loadtxt(io.BytesIO(payload.csv), delimiter=",", comments=None, ndmin=2))

        for _ in range(FLOOR_WARM_UP_CALLS):
            call()
        batches = []
        for _ in range(FLOOR_BATCHES):
            started = time.perf_counter()
            for _ in range(FLOOR_BATCH_CALLS):
                call()
            batches.append((time.perf_counter() - started) / FLOOR_BATCH_CALLS)
        return min(batches)
    finally:
        os.sched_setaffinity(0, previous)


def pin(cpus: set[int]):
    return lambda: os.sched_setaffinity(0, cpus)


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before answering {url}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def builtin_server(model_dir: Path, cpus: set[int], workers: int):
    environment = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": "0",
                   "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "rightsizer.reference.model_server"], env=environment,
                               stderr=subprocess.PIPE, text=True, preexec_fn=pin(cpus))
    try:
        line = process.stderr.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise RuntimeError(f"model server did not start: {line}{process.stderr.read()}")
        wait_for_http(f"{match[1]}/ping", process)
        yield match[1], process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_mlserver_venv() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    marker = MLSERVER_VENV / "installed.json"
    wanted = json.dumps(MLSERVER_PINS + MLSERVER_NO_DEPS_PINS)
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating {MLSERVER_VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + MLSERVER_PINS, check=True)
    subprocess.run(pip + ["--no-deps"] + MLSERVER_NO_DEPS_PINS, check=True)
    marker.write_text(wanted)
    return python


@contextlib.contextmanager
def mlserver(model: Path, cpus: set[int]):
    command = ensure_mlserver_venv().parent / "mlserver"
    with tempfile.TemporaryDirectory(prefix="bench-mlserver-") as repository:
        repository = Path(repository)
        (repository / "fraud").mkdir()
        (repository / "fraud" / "model.ubj").write_bytes(model.read_bytes())
        (repository / "fraud" / "model-settings.json").write_text(json.dumps({
            "name": "fraud", "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": "./model.ubj"}}))
        http_port = free_port()
        (repository / "settings.json").write_text(json.dumps({
            "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": http_port,
            "grpc_port": free_port(), "metrics_port": free_port()}))
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen([str(command), "start", str(repository)], env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=pin(cpus))
        try:
            wait_for_http(f"http://127.0.0.1:{http_port}/v2/models/fraud/ready", process)
            yield f"http://127.0.0.1:{http_port}", process
        except RuntimeError as error:
            stop(process)
            raise RuntimeError(f"{error}\n{process.stderr.read()[-3000:]}") from None
        finally:
            stop(process)


def v2_request(payload: Payload) -> Request:
    rows = payload.rows
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [len(rows), len(rows[0])],
                        "data": [value for row in rows for value in row]}],
            "outputs": [{"name": "predict_proba"}]}
    return Request("/v2/models/fraud/infer", "application/json", json.dumps(body).encode())


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def process_tree_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += cpu_seconds(member)
    return total


def drive_load(base_url: str, request: Request, server: subprocess.Popen, *, users: int, seconds: float,
               generator_cpus: set[int]) -> LoadResult:
    """Closed-loop load from Locust users in this process; exact response times after the warm-up."""

    class InvocationUser(FastHttpUser):
        host = base_url
        wait_time = constant(0)

        @task
        def invoke(self) -> None:
            self.client.post(request.path, data=request.body, headers={"Content-Type": request.content_type})

    latencies: list[float] = []
    failures = 0
    recording = False

    def record(response_time, exception, **_) -> None:
        nonlocal failures
        if recording:
            latencies.append(response_time)
            failures += exception is not None

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, generator_cpus)
    environment = Environment(user_classes=[InvocationUser])
    environment.events.request.add_listener(record)
    runner = environment.create_local_runner()
    try:
        runner.start(users, spawn_rate=users)
        gevent.sleep(WARM_UP_SECONDS)
        server_process, generator_process = psutil.Process(server.pid), psutil.Process()
        # The generator is this process alone: the server is one of its children.
        server_cpu, generator_cpu = process_tree_cpu_seconds(server_process), cpu_seconds(generator_process)
        recording, started = True, time.perf_counter()
        gevent.sleep(seconds)
        recording, elapsed = False, time.perf_counter() - started
        server_cpu = process_tree_cpu_seconds(server_process) - server_cpu
        generator_cpu = cpu_seconds(generator_process) - generator_cpu
    finally:
        runner.quit()
        os.sched_setaffinity(0, previous)
    if not latencies:
        raise RuntimeError(f"no responses from {base_url}{request.path}")
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return LoadResult(len(latencies), failures, elapsed, p50, p95, p99,
                      100 * server_cpu / elapsed, 100 * generator_cpu / elapsed)


def describe(label: str, result: LoadResult, floor_per_second: float, note: str = "") -> str:
    failures = f", {result.failures} failed" if result.failures else ""
    return (f"  {label:<34} {result.per_second:7.0f} req/s  p50 {result.p50_ms:5.2f}  p95 {result.p95_ms:6.2f}  "
            f"p99 {result.p99_ms:6.2f} ms  {result.per_second / floor_per_second:4.0%} of floor  "
            f"server CPU {result.server_cpu_percent:3.0f} % ({result.server_cpu_ms_per_request:.2f} ms/req)  "
            f"generator CPU {result.generator_cpu_percent:3.0f} %{failures}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per case, after 1 s warm-up")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--example", type=Path, help="a directory written by write_example() (default: make one)")
    parser.add_argument("--mlserver", action="store_true", help="also serve the model with MLServer 1.7.1")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs at least 2 CPUs: one for the server, one for the load generator")
    server_cpu, generator_cpu = {cpus[0]}, {cpus[1]}
    shared = len(cpus) == 2

    with contextlib.ExitStack() as stack:
        example_dir = args.example
        if example_dir is None:
            example_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-model-")))
            started = time.perf_counter()
            example = fraud_model.write_example(example_dir)
            print(f"reference model: {fraud_model.TREES} trees, held-out AUC-PR {example.auc_pr:.3f}, written in "
                  f"{time.perf_counter() - started:.1f} s")
        model = example_dir / "model.ubj"
        payloads = [Payload("1 row", (example_dir / "payload-row.csv").read_bytes()),
                    Payload(f"10 KB ({len((example_dir / 'payload.csv').read_bytes())} B CSV)",
                            (example_dir / "payload.csv").read_bytes())]

        print(f"{args.users} users, {args.seconds:g} s per case; server CPU {cpus[0]}, load generator CPU {cpus[1]}")
        for payload in payloads:
            floor = 1 / measure_floor(model, payload, server_cpu)
            csv_request = Request("/invocations", "text/csv", payload.csv)
            print(f"{payload.name}: in-process floor (CSV parse + inplace_predict, 1 thread) {floor:.0f} calls/s "
                  f"({1e3 / floor:.3f} ms)")
            with builtin_server(example_dir, server_cpu, workers=1) as (url, process):
                one_cpu = drive_load(url, csv_request, process, users=args.users, seconds=args.seconds,
                                     generator_cpus=generator_cpu)
            print(describe("built-in, 1 CPU, 1 worker", one_cpu, floor))
            if args.mlserver:
                with mlserver(model, server_cpu) as (url, process):
                    reference = drive_load(url, v2_request(payload), process, users=args.users,
                                           seconds=args.seconds, generator_cpus=generator_cpu)
                print(describe("MLServer pw=0, 1 CPU (V2 JSON)", reference, floor,
                               f"  -> built-in serves {one_cpu.per_second / reference.per_second:.1f}x"))
            with builtin_server(example_dir, set(cpus[:2]), workers=2) as (url, process):
                two_cpus = drive_load(url, csv_request, process, users=args.users, seconds=args.seconds,
                                      generator_cpus=set(cpus[:2]) if shared else set(cpus[2:]))
            print(describe("built-in, 2 CPUs, 2 workers", two_cpus, 2 * floor,
                           "  (floor x 2; the load generator shares these 2 CPUs)" if shared else "  (floor x 2)"))


if __name__ == "__main__":
    main()
