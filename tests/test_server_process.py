"""Model server processes: pinning, readiness, memory cap, CPU sampling, stopping with no orphans.

The servers are small real processes (FAKE_SERVER below, written to a file per test) on 127.0.0.1 only. Every
process a test starts carries a marker in its environment, and a fixture checks afterwards that none is left.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from rightsizer.loadtest.placement import MIB
from rightsizer.loadtest.server_process import (
    ResourceSample, ServerFailed, ServerProcess, free_port, summarize, summarize_output)

FAKE_SERVER = textwrap.dedent(r'''
    """A stand-in model server. argv[1] says how it misbehaves. It never allocates more than 640 MiB, so that
    a broken watchdog fails the test rather than the machine."""
    import http.server, os, signal, subprocess, sys, threading, time

    mode = sys.argv[1]
    port = int(os.environ["TEST_PORT"])
    hoard = []

    def burn():
        while True:
            pass

    def grow(total_mib):
        for _ in range(total_mib // 20):
            hoard.append(b"x" * (20 << 20))  # bytes, so that the pages are touched and count in RSS
            time.sleep(0.02)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/ping":
                self.send_response(503 if mode == "never-ready" else 200)
            elif self.path == "/grow":
                self.send_response(200)
                threading.Thread(target=grow, args=(600,), daemon=True).start()
            else:
                self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    if mode == "crash":
        sys.stderr.write("loading model\nerror: model file /models/nope.ubj is missing\n")
        sys.exit(3)
    if mode == "allocate-in-child":
        hoard.append(b"x" * (40 << 20))
        subprocess.Popen([sys.executable, "-c", "import time\nhoard = []\nfor _ in range(30):\n"
                          "    hoard.append(b'x' * (20 << 20)); time.sleep(0.02)\ntime.sleep(60)"])
        time.sleep(60)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # A worker that leaves the server's session and also ignores SIGTERM.
        subprocess.Popen([sys.executable, "-c", "import os, signal, time\nos.setsid()\n"
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"])
    if mode == "burn":
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        threading.Thread(target=burn, daemon=True).start()
    if mode == "slow-start":
        time.sleep(float(sys.argv[2]))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


@pytest.fixture
def marker():
    """A value every process of the test inherits; no process may carry it once the test is over."""
    value = uuid.uuid4().hex
    yield value
    deadline = time.monotonic() + 3
    while True:
        left = [p for p in psutil.process_iter(["environ", "status"])
                if (p.info["environ"] or {}).get("RIGHTSIZER_TEST_MARKER") == value
                and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


@pytest.fixture
def fake_server(tmp_path, marker):
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    started = []

    def make(mode, *args, cpus=(0,), memory_limit_bytes=512 * MIB, environment=None, **options):
        server = ServerProcess([sys.executable, str(script), mode, *args], cpus=cpus,
                               memory_limit_bytes=memory_limit_bytes, port_env="TEST_PORT",
                               environment={"RIGHTSIZER_TEST_MARKER": marker, **(environment or {})},
                               name="the test server", **options)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop(grace_seconds=1)


def get(server: ServerProcess, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


def test_server_is_pinned_gets_its_environment_and_reports_setup_time(fake_server):
    server = fake_server("slow-start", "0.5", environment={"OMP_NUM_THREADS": "3"}, memory_limit_bytes=256 * MIB,
                         sample_interval=0.3)
    setup = server.wait_until_ready(timeout=10)
    assert 0.5 <= setup < 5 and server.setup_seconds == setup
    assert get(server, "/ping") == 200
    process = psutil.Process(server.pid)
    assert process.cpu_affinity() == [0]
    assert process.environ()["OMP_NUM_THREADS"] == "3"
    assert process.environ()["TEST_PORT"] == str(server.port)
    assert os.getpgid(server.pid) == os.getsid(server.pid) == server.pid  # its own session and group
    time.sleep(0.7)
    sample = server.sampler.samples[-1]
    assert 0 < sample.rss_bytes < 256 * MIB
    assert sample.memory_percent == pytest.approx(100 * sample.rss_bytes / (256 * MIB))
    assert server.failure_reason() is None
    server.stop()
    assert (server.returncode, server.forced_kill) == (-signal.SIGTERM, False)
    assert server.failure_reason() is None  # it was asked to stop


def test_a_server_that_exits_at_once_fails_fast_with_its_stderr(fake_server):
    server = fake_server("crash")
    started = time.monotonic()
    with pytest.raises(ServerFailed) as failure:
        server.wait_until_ready(timeout=30)
    assert time.monotonic() - started < 5
    assert failure.value.reason.startswith("the test server exited with code 3 before it was ready; output: ")
    assert "error: model file /models/nope.ubj is missing" in failure.value.reason
    assert server.failure_reason() == failure.value.reason


def test_a_command_that_does_not_exist_says_so(marker):
    server = ServerProcess(["/nonexistent/model-server", "--port", "1"], cpus=[0],
                           environment={"RIGHTSIZER_TEST_MARKER": marker}).start()
    try:
        with pytest.raises(ServerFailed, match=r"^the model server exited with code 127 before it was ready; "
                                               r"output: cannot run '/nonexistent/model-server': No such file"):
            server.wait_until_ready(timeout=10)
    finally:
        server.stop()


def test_a_server_that_never_gets_ready_times_out_with_its_last_answer(fake_server):
    server = fake_server("never-ready")
    with pytest.raises(ServerFailed, match=rf"^the test server was not ready within 1 s "
                                           rf"\(GET http://127\.0\.0\.1:{server.port}/ping: HTTP 503\)$"):
        server.wait_until_ready(timeout=1)


def test_memory_cap_counts_the_whole_tree_and_kills_it(fake_server):
    server = fake_server("allocate-in-child", memory_limit_bytes=150 * MIB)
    with pytest.raises(ServerFailed) as failure:
        server.wait_until_ready(timeout=10)
    reason = failure.value.reason
    assert reason.startswith("the test server exceeded its 150 MiB memory cap (peak ")
    assert 150 * MIB < server.sampler.peak_rss_bytes < 600 * MIB
    assert server.returncode == -signal.SIGKILL


def test_memory_cap_is_enforced_while_serving(fake_server):
    server = fake_server("serve", memory_limit_bytes=200 * MIB)
    server.wait_until_ready(timeout=10)
    assert get(server, "/grow") == 200
    deadline = time.monotonic() + 10
    while server.failure_reason() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.failure_reason().startswith("the test server exceeded its 200 MiB memory cap (peak ")
    server.stop()
    assert server.failure_reason().startswith("the test server exceeded its 200 MiB memory cap")


def test_cpu_is_summed_over_the_tree_and_held_to_the_pinned_core(fake_server):
    # Two busy processes (the server and its child) pinned to one CPU: together at most 100 %, never 200 %.
    # Other work on the CPU can take some of it, so the sampler is checked against the processes' own CPU
    # times over the same window, not against a fixed 100 %.
    server = fake_server("burn", sample_interval=0.5)
    server.wait_until_ready(timeout=10)
    burners = [psutil.Process(server.pid), *psutil.Process(server.pid).children()]
    assert len(burners) == 2 and all(process.cpu_affinity() == [0] for process in burners)

    def cpu_seconds():
        return sum(process.cpu_times().user + process.cpu_times().system for process in burners)

    time.sleep(0.3)
    window_start, cpu_at_start = time.monotonic(), cpu_seconds()
    time.sleep(2.0)
    window_end, cpu_at_end = time.monotonic(), cpu_seconds()
    time.sleep(0.6)  # until a sample covers the end of the window
    measured = 100 * (cpu_at_end - cpu_at_start) / (window_end - window_start)

    usage = server.sampler.usage(window_start, window_end)
    assert usage.samples >= 4
    assert usage.cpu_percent == pytest.approx(measured, abs=15)
    # Against the processes' own CPU times above, not a fixed floor: a busy machine leaves the burners less.
    assert 0 < usage.cpu_percent <= usage.cpu_percent_max < 115
    assert all(sample.processes == 2 for sample in server.sampler.samples if sample.at > window_start)
    assert usage.memory_percent == pytest.approx(100 * usage.rss_bytes / (512 * MIB))


def test_stop_escalates_to_sigkill_and_leaves_no_orphans(fake_server):
    server = fake_server("stubborn")
    server.wait_until_ready(timeout=10)
    worker = psutil.Process(server.pid).children()[0]
    deadline = time.monotonic() + 5
    while os.getsid(worker.pid) == server.pid and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.getsid(worker.pid) != server.pid  # it left the server's session and process group
    started = time.monotonic()
    server.stop(grace_seconds=0.5)
    assert 0.5 <= time.monotonic() - started < 4
    assert (server.returncode, server.forced_kill) == (-signal.SIGKILL, True)
    assert gone(server.pid) and gone(worker.pid)
    server.stop()  # idempotent


def test_the_server_dies_with_its_caller(tmp_path, marker):
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    caller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from rightsizer.loadtest.server_process import ServerProcess
            server = ServerProcess([sys.executable, {str(script)!r}, "serve"], cpus=[0], port_env="TEST_PORT",
                                   environment={{"RIGHTSIZER_TEST_MARKER": "{marker}"}}).start()
            server.wait_until_ready(timeout=10)
            print(server.pid, flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True,
        # The killed caller cannot delete the server's log: keep it in the test's directory.
        env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        server_pid = int(caller.stdout.readline())
        # The launcher has exec'd the server by now: what dies below is the server, not the launcher.
        assert str(script) in psutil.Process(server_pid).cmdline()
        caller.kill()
        caller.wait(timeout=5)
        deadline = time.monotonic() + 5
        while not gone(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(server_pid)
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()


def test_a_server_that_dies_after_it_was_ready_is_a_failure(fake_server):
    server = fake_server("serve")
    server.wait_until_ready(timeout=10)
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.returncode is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.failure_reason() == "the test server was killed by SIGKILL"


def test_constructor_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="empty"):
        ServerProcess([], cpus=[0])
    with pytest.raises(ValueError, match="at least one CPU"):
        ServerProcess(["true"], cpus=[])


# -- summarising samples over a window -------------------------------------------------------------------

SAMPLES = [
    ResourceSample(at=11.0, interval_seconds=1.0, cpu_percent=100.0, rss_bytes=100, memory_percent=10.0, processes=1),
    ResourceSample(at=12.0, interval_seconds=1.0, cpu_percent=200.0, rss_bytes=300, memory_percent=30.0, processes=2),
    ResourceSample(at=13.0, interval_seconds=1.0, cpu_percent=50.0, rss_bytes=200, memory_percent=20.0, processes=2),
]


def test_summary_weights_samples_by_their_overlap_with_the_window():
    usage = summarize(SAMPLES, 10.5, 12.0, memory_limit_bytes=1000)
    # 0.5 s at 100 % and 1 s at 200 %.
    assert usage.cpu_percent == pytest.approx((0.5 * 100 + 1.0 * 200) / 1.5)
    assert (usage.cpu_percent_max, usage.rss_bytes, usage.memory_percent, usage.samples) == (200.0, 300, 30.0, 2)


def test_summary_of_an_instant_is_the_sample_containing_it():
    usage = summarize(SAMPLES, 12.5, 12.5)
    assert (usage.cpu_percent, usage.rss_bytes, usage.memory_percent, usage.samples) == (50.0, 200, None, 1)


def test_summary_outside_the_samples_is_none():
    assert summarize(SAMPLES, 20.0, 30.0) is None
    assert summarize([], 0.0, 1.0) is None


def test_a_server_crashing_with_a_traceback_reports_its_exception_on_one_line(marker):
    crash = ("import sys; print('libgomp: Invalid value for environment variable OMP_NUM_THREADS', file=sys.stderr)\n"
             "def load():\n    raise ValueError(\"Invalid Parameter format for nthread expect int but value='9999'\")\n"
             "load()\n")
    server = ServerProcess([sys.executable, "-c", crash], cpus=[0],
                           environment={"RIGHTSIZER_TEST_MARKER": marker}).start()
    try:
        with pytest.raises(ServerFailed) as failure:
            server.wait_until_ready(timeout=10)
    finally:
        server.stop()
    # The whole traceback, cut at 1024 characters mid-word, used to be the configuration's failure reason.
    assert failure.value.reason == (
        "the model server exited with code 1 before it was ready; output: libgomp: Invalid value for environment "
        "variable OMP_NUM_THREADS; ValueError: Invalid Parameter format for nthread expect int but value='9999'")


def test_long_output_loses_its_beginning_at_a_word():
    text = "\n".join(f"line {i} says something rather long about the model" for i in range(100))
    summary = summarize_output(text, max_chars=120)
    assert summary.startswith("... ") and summary.endswith("line 99 says something rather long about the model")
    assert len(summary) <= 124 and summary.split()[1] in {"line", "says", "something", "rather", "long", "about",
                                                           "the", "model;"} | {str(i) for i in range(100)}
    assert summarize_output("") == "" and summarize_output("one line") == "one line"
