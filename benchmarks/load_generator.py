"""How fast and how accurate the local load generator (rightsizer.loadtest.load_generator) is on this machine.

1. Capacity: requests/s that one generator process pinned to one core sustains against nginx (`return 200`, one
   process, no access log) pinned to another core. nginx answers in microseconds on one core, so the generator,
   not the server, is the bottleneck being measured.
2. Accuracy: the P95 the generator reports (its own per-request listener, the run in an HDR histogram) and Locust's own P95 (response times
   rounded to 2 significant digits), against a reference taken on the same requests in the same run: the
   kernel's timestamps of each request and response on the loopback interface, captured with tcpdump. The wire
   sees every one of the generator's requests, uses its own clock, and adds no load to the server; the only thing
   it leaves out is the generator's own overhead, which is exactly the error being measured. Two servers: nginx
   (sub-millisecond) and a Python asyncio server that answers after 10 ms + an exponential 5 ms (P95 near 25 ms).

Needs Debian's nginx and tcpdump (`apt-get update && apt-get install -y nginx tcpdump`), root for the capture,
and 2 CPUs. Each load run lasts --seconds (default 6).

    .venv/bin/python benchmarks/load_generator.py
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from rightsizer.loadtest.load_generator import LoadResult, LoadTarget, LoadTest, RunSettings  # noqa: E402
from rightsizer.spec import Phase, StoppingConditions, TrafficPattern  # noqa: E402

SERVER_CPU, GENERATOR_CPU = 0, 1
# One row of the fraud model's 30 features, as an Open Inference (V2) request.
PAYLOAD = (b'{"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP32", "data": ['
           + b", ".join([b"0.5"] * 30) + b"]}]}")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 '{{"outputs": []}}'; }}
    }}
}}
"""

# Minimal HTTP/1.1 keep-alive server: enough for one POST per round trip, nothing more.
SLOW_SERVER = textwrap.dedent("""
    import asyncio, random, sys
    port = int(sys.argv[1])
    rng = random.Random(7)
    body = b'{"outputs": []}'
    response = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                % (len(body), body))

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                await asyncio.sleep((10 + rng.expovariate(1 / 5)) / 1000)
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def start_nginx(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (workdir / "nginx.conf").write_text(NGINX_CONF.format(dir=workdir, port=port))
    process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(workdir), "-e",
                                str(workdir / "error.log"), "-c", str(workdir / "nginx.conf")],
                               preexec_fn=pinned(SERVER_CPU))
    wait_listening(port, process)
    return process, port


def start_slow_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port)], stdout=subprocess.PIPE, text=True,
                               preexec_fn=pinned(SERVER_CPU))
    assert process.stdout.readline().strip() == "ready"
    return process, port


def wait_listening(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def steady_load(port: int, users: int, seconds: float) -> tuple[LoadResult, float]:
    """One run at a constant number of users on the generator's core; also its mean CPU use (% of one core)."""
    pattern = TrafficPattern("PHASES", (Phase(users, 0, round(seconds)),))
    test = LoadTest(LoadTarget(f"http://127.0.0.1:{port}/v2/models/fraud/infer", PAYLOAD), pattern,
                    StoppingConditions(flat_invocations="Continue"), cpus=[GENERATOR_CPU],
                    settings=RunSettings(window_s=3))
    test.start()
    samples: list[float] = []
    child = psutil.Process(test.pid)
    child.cpu_percent()
    done = threading.Event()

    def sample():
        while not done.wait(1):
            try:
                samples.append(child.cpu_percent())
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = test.wait()
    done.set()
    sampler.join()
    # The first second is the interpreter importing Locust; the last may be the shutdown.
    steady = samples[1:-1] or samples
    return result, float(numpy.mean(steady)) if steady else float("nan")


class WireCapture:
    """tcpdump on lo, kept to segments that carry data; per-request latencies from the kernel's timestamps."""

    def __init__(self, port: int, workdir: Path):
        self.port, self.file = port, workdir / f"wire-{port}.pcap"
        probe_port = free_port()
        payload_only = "(((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)"
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "128", "-B", "32768", "--time-stamp-precision=nano", "-Z", "root",
             "-w", str(self.file), f"(tcp port {port} and {payload_only}) or (udp port {probe_port})"],
            stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        if "listening" not in line:
            raise SystemExit(f"tcpdump did not start: {line.strip()}")
        # tcpdump says "listening" a while before it captures (starting the load at once lost the first ~0.5 s of
        # requests, with the kernel's drop counter at 0). Probe datagrams until its first buffer reaches the file.
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            while self.file.stat().st_size <= 24:
                if time.monotonic() > deadline:
                    raise SystemExit("tcpdump captured nothing in 10 s")
                probe.sendto(b"probe" * 100, ("127.0.0.1", probe_port))
                time.sleep(0.01)

    def stop(self) -> tuple[numpy.ndarray, str]:
        time.sleep(0.5)  # let the last answers reach the file
        self.process.send_signal(signal.SIGINT)
        report = self.process.communicate(timeout=10)[1]
        dropped = next((line.strip() for line in report.splitlines() if "dropped by kernel" in line), "?")
        return self.latencies_ms(), dropped

    def latencies_ms(self) -> numpy.ndarray:
        data = self.file.read_bytes()
        magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
        if magic != 0xA1B23C4D:
            raise SystemExit("expected a little-endian, nanosecond pcap file")
        link_header = {1: 14, 113: 16, 276: 20}[linktype]
        # Per client port: when its request started, when the latest answer segment arrived.
        started: dict[int, float] = {}
        answered: dict[int, float] = {}
        latencies = []
        offset = 24
        while offset + 16 <= len(data):
            seconds, nanoseconds, captured, _ = struct.unpack_from("<IIII", data, offset)
            packet = data[offset + 16:offset + 16 + captured]
            offset += 16 + captured
            t = seconds + nanoseconds / 1e9
            ip = packet[link_header:]
            if ip[9] != 6:  # not TCP: a probe datagram
                continue
            ip_header = (ip[0] & 0x0F) * 4
            source, destination = struct.unpack_from("!HH", ip, ip_header)
            if destination == self.port:  # the client sends (a request, or the rest of one)
                if source in answered:
                    latencies.append(answered.pop(source) - started[source])
                    started[source] = t
                started.setdefault(source, t)
            elif source == self.port and destination in started:
                answered[destination] = t  # the last answer segment so far ends the round trip
        latencies.extend(answered[p] - started[p] for p in answered)
        return numpy.array(latencies) * 1000


def accuracy(port: int, users: int, seconds: float, workdir: Path) -> dict:
    capture = WireCapture(port, workdir)
    result, _ = steady_load(port, users, seconds)
    wire, dropped = capture.stop()
    return {"result": result, "wire_requests": len(wire), "wire_p95": numpy.percentile(wire, 95), "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each load run")
    parser.add_argument("--capacity-users", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--accuracy-users", type=int, default=8, help="users of the accuracy runs at load")
    args = parser.parse_args()
    # The capacity runs saturate the generator on purpose; the table's cpu_warning column says so once per run.
    logging.getLogger("rightsizer.loadtest.load_generator").setLevel(logging.ERROR)
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("tcpdump") or not shutil.which("nginx"):
        raise SystemExit("needs 2 CPUs, nginx and tcpdump: apt-get update && apt-get install -y nginx tcpdump")

    with tempfile.TemporaryDirectory(prefix="lg-bench-") as tmp:
        workdir = Path(tmp)
        nginx, nginx_port = start_nginx(workdir)
        try:
            print(f"capacity: nginx `return 200` on CPU {SERVER_CPU}, generator on CPU {GENERATOR_CPU}, "
                  f"{args.seconds:g} s per run")
            print(f"{'users':>5} {'req/s mean':>10} {'req/s best 3 s':>14} {'generator CPU':>13} "
                  f"{'cpu_warning':>11} {'listener p95':>12} {'failures':>8}")
            for users in args.capacity_users:
                result, cpu = steady_load(nginx_port, users, args.seconds)
                print(f"{users:>5} {result.total_requests / result.duration_s:>10.0f} "
                      f"{result.max_invocations_per_minute / 60:>14.0f} {cpu:>12.0f}% {str(result.cpu_warning):>11} "
                      f"{result.run_p95_ms:>12.3f} {result.total_failures:>8}")

            # 1 user shows the generator's own per-request cost; at load it also queues behind its other users.
            runs = [("nginx return 200", users, accuracy(nginx_port, users, args.seconds, workdir))
                    for users in (1, args.accuracy_users)]
        finally:
            nginx.terminate()
            nginx.wait()
        slow, slow_port = start_slow_server()
        try:
            runs.append(("asyncio 10 ms + exp(5 ms)", args.accuracy_users,
                         accuracy(slow_port, args.accuracy_users, args.seconds, workdir)))
        finally:
            slow.terminate()
            slow.wait()

    print(f"\naccuracy: P95 (ms) vs the same requests' round trips on the wire (tcpdump on lo), {args.seconds:g} s")
    print(f"{'server':<26} {'users':>5} {'requests gen/wire':>17} {'wire p95':>9} {'listener p95 (ratio)':>20} "
          f"{'minus wire':>10} {'Locust p95 (ratio)':>19}  capture")
    for name, users, run in runs:
        result: LoadResult = run["result"]
        print(f"{name:<26} {users:>5} {result.total_requests:>8}/{run['wire_requests']:<8} {run['wire_p95']:>9.3f} "
              f"{result.run_p95_ms:>9.3f} ({result.run_p95_ms / run['wire_p95']:.3f}) "
              f"{result.run_p95_ms - run['wire_p95']:>10.3f} "
              f"{result.locust_p95_ms:>10.1f} ({result.locust_p95_ms / run['wire_p95']:.3f})  {run['dropped']}")


if __name__ == "__main__":
    main()
