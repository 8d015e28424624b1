"""The local load generator against real HTTP servers on 127.0.0.1, with patterns compressed to seconds.

Each server is a separate process (so a test can kill it like a crashed model server): a threaded HTTP/1.1
server whose every answer (with a given status) takes base_ms + per_inflight_ms × (requests in flight), optionally
one request at a time (a server that cannot go faster however many users call it).
"""

import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from test_load_shape import phases, stairs
from rightsizer.loadtest import load_generator as load_generator_module
from rightsizer.loadtest.load_generator import (LoadProgress, LoadTarget, LoadTest, LoadTestConfig, RunSettings,
                                                StopReason, TimelinePoint, kept_percentile, run_load_test)
from rightsizer.spec import LatencyThreshold, Percentile, StoppingConditions

SERVER = textwrap.dedent("""
    import http.server, sys, threading, time
    base_ms, per_inflight_ms = float(sys.argv[1]), float(sys.argv[2])
    serial, status = sys.argv[3] == "serial", int(sys.argv[4])
    lock, one_at_a_time = threading.Lock(), threading.Lock()
    inflight = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else delayed ACKs add 40 ms to every keep-alive answer

        def do_POST(self):
            global inflight
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                inflight += 1
                delay = (base_ms + per_inflight_ms * inflight) / 1000
            if serial:
                with one_at_a_time:
                    time.sleep(delay)
            else:
                time.sleep(delay)
            with lock:
                inflight -= 1
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # the generator hanging up at the end of a run is no news

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_port, flush=True)
    server.serve_forever()
""")

PAYLOAD = b'{"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP32", "data": [0.5]}]}'
QUICK = RunSettings(window_s=2, min_window_samples=20, failing_after_s=1.5)
CONTINUE = StoppingConditions(flat_invocations="Continue")


def latency_threshold(percentile: str, milliseconds: int) -> StoppingConditions:
    return StoppingConditions(latency_threshold=LatencyThreshold(Percentile.parse(percentile), milliseconds))


@pytest.fixture
def start_server():
    servers = []

    def start(base_ms=2.0, per_inflight_ms=0.0, serial=False, status=200):
        process = subprocess.Popen([sys.executable, "-c", SERVER, str(base_ms), str(per_inflight_ms),
                                    "serial" if serial else "parallel", str(status)], stdout=subprocess.PIPE, text=True)
        servers.append(process)
        port = int(process.stdout.readline())
        return process, LoadTarget(f"http://127.0.0.1:{port}/v2/models/fraud/infer", PAYLOAD)

    yield start
    for process in servers:
        process.kill()
        process.wait()


def test_phases_drive_the_user_counts_and_every_request_is_accounted(start_server):
    _, target = start_server(base_ms=10)
    progress: list[LoadProgress] = []
    # At 1/20 of the time: phase 1 adds one user per second from 1, phase 2 holds 2 users.
    result = run_load_test(target, phases((1, 3, 80), (2, 0, 40)), CONTINUE,
                           time_scale=0.05, settings=QUICK, on_progress=progress.append)
    assert result.stop_reason == StopReason.TRAFFIC_PATTERN_COMPLETE and not result.failed
    assert [p.users for p in result.timeline] == [1, 2, 3, 4, 2, 2]
    assert [p.stage for p in result.timeline] == ["phase 1/2"] * 4 + ["phase 2/2"] * 2
    assert all(0.9 < p.duration_s < 1.2 for p in result.timeline)
    assert result.duration_s == pytest.approx(6, abs=0.5)
    # Closed loop: a fast server answers about in proportion to the users calling it.
    rps = [p.rps for p in result.timeline]
    assert rps[3] > 2 * rps[0] > 0
    assert result.total_requests == sum(p.requests for p in result.timeline) > 0
    assert result.total_failures == 0
    assert [p.users for p in progress] == [2, 3, 4, 2, 2]
    assert progress[-1].requests == sum(p.requests for p in result.timeline[:-1])
    # Exact percentiles are no smaller than the server's own 10 ms, and Locust's rounded one is close to them.
    assert 10.0 <= result.run_p50_ms <= result.run_p95_ms <= result.run_p99_ms
    assert abs(result.locust_p95_ms - result.run_p95_ms) <= max(1.0, 0.1 * result.run_p95_ms)
    assert result.max_invocations_per_minute > 0 and result.users_at_max_invocations in (3, 4)
    # The window it comes from, on the run's clock: QUICK's 2 intervals of about a second.
    start, end = result.max_invocations_window_s
    assert 0 <= start < end <= result.duration_s and end - start == pytest.approx(2, abs=0.4)


def test_stairs_step_up_by_users_per_step_and_the_job_duration_cuts_them(start_server):
    _, target = start_server()
    result = run_load_test(target, stairs(30, 5, 2), CONTINUE, time_scale=1 / 30,
                           job_duration_s=120, settings=QUICK)
    assert result.stop_reason == StopReason.JOB_DURATION
    assert [(p.users, p.stage) for p in result.timeline] == [(2, "step 1/5"), (4, "step 2/5"), (6, "step 3/5"),
                                                             (8, "step 4/5")]


def test_a_latency_breach_stops_the_test_and_max_invocations_comes_from_before_it(start_server):
    # 2 ms + 20 ms per request in flight: about 22 ms at 1 user, 42 at 2, 62 at 3.
    _, target = start_server(base_ms=2, per_inflight_ms=20)
    started = time.monotonic()
    result = run_load_test(target, stairs(30, 8, 1), latency_threshold("P95", 52), time_scale=1 / 30,
                           settings=QUICK)
    assert result.stop_reason == StopReason.LATENCY_THRESHOLD, result.detail
    assert "P95 latency" in result.detail and "52 ms threshold" in result.detail
    *before, breach = result.timeline
    assert breach.users == 3 and breach.p95_ms > 52
    assert time.monotonic() - started < 8  # well before the 8 s pattern (plus start-up) would have ended
    assert result.users_at_max_invocations <= 2
    assert result.model_latency_p95_ms <= 52
    # 1 then 2 users at about 22 and 42 ms: some 46 invocations per second, sustained over the 2 s window.
    assert 1500 < result.max_invocations_per_minute < 4000
    assert result.max_invocations_per_minute <= 60 * max(p.rps for p in before) * 1.001


def test_max_invocations_stops_once_a_full_window_reaches_it(start_server):
    _, target = start_server()
    result = run_load_test(target, phases((2, 0, 600)), StoppingConditions(max_invocations=3000), time_scale=0.05, settings=QUICK)
    assert result.stop_reason == StopReason.MAX_INVOCATIONS, result.detail
    assert len(result.timeline) == 2  # the first full 2 s window already carries 2 users' worth
    assert result.max_invocations_per_minute >= 3000


def test_flat_throughput_stops_the_test_unless_told_to_continue(start_server):
    # One request at a time: from the first user on, more users only queue.
    _, target = start_server(base_ms=5, serial=True)
    pattern = stairs(30, 8, 1)
    flat = run_load_test(target, pattern, StoppingConditions(), time_scale=1 / 30, settings=QUICK)
    assert flat.stop_reason == StopReason.THROUGHPUT_FLAT, flat.detail
    assert 5 <= len(flat.timeline) <= 7
    assert "gained less than 5%" in flat.detail
    kept_going = run_load_test(target, pattern, CONTINUE, time_scale=1 / 30, settings=QUICK)
    assert kept_going.stop_reason == StopReason.TRAFFIC_PATTERN_COMPLETE
    assert [p.users for p in kept_going.timeline] == list(range(1, 9))


def test_a_server_that_dies_mid_run_fails_the_test_promptly(start_server):
    server, target = start_server()
    second_tick = threading.Event()
    test = LoadTest(target, phases((2, 0, 600)), time_scale=0.05, settings=QUICK,
                    on_progress=lambda p: p.elapsed_s >= 2 and second_tick.set())
    with test:
        assert second_tick.wait(20)
        server.kill()
        died = time.monotonic()
        result = test.wait(timeout=20)
    assert time.monotonic() - died < 5
    assert result.failed and result.stop_reason == StopReason.SERVER_UNREACHABLE
    assert target.url in result.detail and "Connection" in result.detail, result.detail
    assert result.timeline[0].requests > 0 and result.timeline[-1].failures > 0
    assert result.max_invocations_per_minute > 0  # what it measured while the server lived is kept


def test_a_server_that_never_answers_fails_the_test_quickly():
    with socket_bound_but_closed() as port:
        started = time.monotonic()
        result = run_load_test(LoadTarget(f"http://127.0.0.1:{port}/infer", PAYLOAD), phases((1, 0, 600)),
                               time_scale=0.05, settings=QUICK)
    assert result.stop_reason == StopReason.SERVER_UNREACHABLE
    assert "ConnectionRefused" in result.detail, result.detail
    assert time.monotonic() - started < 8
    assert result.max_invocations_per_minute is None


def test_a_server_answering_only_errors_fails_the_test_quickly(start_server):
    _, target = start_server(status=503)
    started = time.monotonic()
    result = run_load_test(target, phases((2, 0, 600)), time_scale=0.05, settings=QUICK)
    assert result.stop_reason == StopReason.SERVER_ERRORS and result.failed
    assert "HTTP 503" in result.detail, result.detail
    assert time.monotonic() - started < 8
    assert result.total_failures == result.total_requests > 0
    assert result.max_invocations_per_minute is None and result.run_p95_ms is None


def test_stop_cancels_promptly_and_leaves_no_child_process(start_server):
    _, target = start_server()
    cpu = min(os.sched_getaffinity(0))
    first_tick = threading.Event()
    test = LoadTest(target, phases((1, 0, 600)), cpus=[cpu], time_scale=0.05, settings=QUICK,
                    on_progress=lambda p: first_tick.set())
    test.start()
    try:
        assert first_tick.wait(20)
        child = psutil.Process(test.pid)
        assert child.cpu_affinity() == [cpu]
        asked = time.monotonic()
        test.stop()
        assert time.monotonic() - asked < 3
    finally:
        test.stop()
    result = test.wait(timeout=5)
    assert result.stop_reason == StopReason.CANCELLED and not result.failed
    assert result.total_requests > 0 and result.timeline
    assert not psutil.pid_exists(test.pid) or psutil.Process(test.pid).status() == psutil.STATUS_ZOMBIE
    assert test.pid not in [p.pid for p in psutil.Process().children(recursive=True)]


def test_the_child_exits_when_its_parent_dies(start_server, tmp_path):
    _, target = start_server()
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, threading
        from rightsizer.loadtest.load_generator import LoadTarget, LoadTest, RunSettings
        from rightsizer.spec import Phase, TrafficPattern
        ticked = threading.Event()
        test = LoadTest(LoadTarget({target.url!r}, b"{{}}"), TrafficPattern("PHASES", (Phase(1, 0, 600),)),
                        time_scale=0.05, on_progress=lambda p: ticked.set()).start()
        ticked.wait(20)
        print(test.pid, flush=True)
        threading.Event().wait()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.1)
    assert not alive(child)


def test_the_request_cap_is_hard(start_server):
    _, target = start_server()
    capped = RunSettings(window_s=2, max_requests=60)
    result = run_load_test(target, phases((3, 0, 600)), StoppingConditions(), time_scale=0.05, settings=capped)
    assert result.stop_reason == StopReason.REQUEST_CAP
    assert 0 < result.total_requests <= 60


@pytest.mark.parametrize("url", ["http://10.0.0.7:8080/infer", "http://localhost:8080/infer",
                                 "http://example.com/infer", "ftp://127.0.0.1/infer"])
def test_only_loopback_targets_are_accepted(url):
    with pytest.raises(ValueError, match="refused|not an http"):
        LoadTarget(url, PAYLOAD)


def test_bad_stopping_conditions_are_refused_before_any_process_starts():
    target = LoadTarget("http://127.0.0.1:9/infer", PAYLOAD)
    # The spec's values refuse themselves (tests/test_spec.py has every rule); a LoadTest takes only those.
    with pytest.raises(ValueError, match="flatInvocations"):
        LoadTest(target, phases((1, 0, 10)), StoppingConditions(flat_invocations="Sometimes"))
    with pytest.raises(ValueError, match="percentile"):
        LoadTest(target, phases((1, 0, 10)), latency_threshold("median", 5))
    with pytest.raises(TypeError, match="spec.StoppingConditions"):
        LoadTest(target, phases((1, 0, 10)), {"flatInvocations": "Continue"})
    with pytest.raises(ValueError, match="cpus"):
        LoadTest(target, phases((1, 0, 10)), cpus=[10_000])


@pytest.mark.parametrize("pattern,stopping", [
    (phases((1, 3, 80), (2, 0, 40)), StoppingConditions(max_invocations=3000, flat_invocations="Continue")),
    (stairs(150, 5, 2), latency_threshold("P99.9", 52)),
    (stairs(150, 5, 2), StoppingConditions()),
])
def test_the_childs_configuration_survives_its_json_round_trip(pattern, stopping):
    config = LoadTestConfig(LoadTarget("http://127.0.0.1:9/infer", b"\x00\xffbinary"), pattern, stopping, QUICK,
                            time_scale=0.05, job_duration_s=120.0, cpus=(0, 1))
    decoded = LoadTestConfig.from_json(config.to_json())
    assert decoded == config
    if stopping.latency_threshold is not None:
        assert type(decoded.stopping.latency_threshold.percentile) is Percentile


def test_a_percentile_the_result_does_not_keep_is_read_as_the_next_stricter_kept_one():
    assert [kept_percentile(Percentile.parse(p)).name for p in ("P10", "P50", "P90", "P95", "P99", "P99.9")] == \
        ["P50", "P50", "P95", "P95", "P99", "P99"]
    point = TimelinePoint(1.0, 1.0, 1, "phase 1/1", 10, 0, 10.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0)
    assert point.latency_ms(Percentile.parse("P99")) == 3.0
    with pytest.raises(ValueError, match="P90 is not kept"):
        point.latency_ms(Percentile.parse("P90"))


def test_the_loadtest_package_imports_only_the_operators_plain_values():
    """The load test runs in a child process and in benchmarks: of the operator it takes rightsizer.spec's values and
    rightsizer.pricing's catalogue, and nothing that talks to Kubernetes or SageMaker."""
    package = Path(load_generator_module.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = ([f"rightsizer.{alias.name}" for alias in node.names] if node.module == "rightsizer"
                         else [node.module])
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported |= {name for name in names
                         if name.split(".")[0] == "rightsizer" and not name.startswith("rightsizer.loadtest")}
    assert imported == {"rightsizer.spec", "rightsizer.pricing"}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class socket_bound_but_closed:
    """A loopback port that nothing listens on (bound, not listening, so no other test takes it meanwhile)."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return self.socket.getsockname()[1]

    def __exit__(self, *exc_info):
        self.socket.close()


# ---- the measurements, without processes ----------------------------------------------------------------------------

def measure(intervals: list[tuple[int, list[float]]], threshold_ms: int | None = 50, window_s: float = 5.0,
            percentile: float = 95.0):
    """Feeds (users, latencies of the interval's successful requests) one-second intervals to the child's
    measurements, as its tick and request listener do."""
    from rightsizer.loadtest.load_generator import _Measurements
    stopping = latency_threshold(f"P{percentile:g}", threshold_ms) if threshold_ms else StoppingConditions()
    measurements = _Measurements(stopping, RunSettings(window_s=window_s))
    for second, (users, latencies) in enumerate(intervals):
        measurements.open_interval(float(second), users, "phase 1")
        for latency in latencies:
            measurements.record(latency, True)
        measurements.record(999.0, False)
        measurements.close_interval(float(second + 1), users)
    return measurements


def best_window_by_brute_force(intervals, threshold_ms, size):
    """Every window of `size` consecutive seconds, the most requests first: the first that holds the threshold."""
    import numpy
    size = min(size, len(intervals))
    windows = [intervals[end - size:end] for end in range(size, len(intervals) + 1)]
    for window in sorted(windows, key=lambda w: sum(len(lat) for _, lat in w), reverse=True):
        latencies = [latency for _, lat in window for latency in lat]
        if not latencies:
            break
        if threshold_ms is None or numpy.percentile(latencies, 95) <= threshold_ms:
            return len(latencies) / size * 60, numpy.percentile(latencies, 95), max(users for users, _ in window)
    return None, None, None


@pytest.mark.parametrize("seed", range(6))
def test_the_best_sustained_window_is_found_as_the_intervals_close(seed):
    import random
    generator = random.Random(seed)
    intervals = []
    for second in range(generator.randint(3, 60)):
        users = 1 + second // 3
        # Throughput grows with users until the server saturates, then latency climbs.
        count = min(users, 8) * generator.randint(20, 30)
        latencies = [generator.expovariate(1 / (5 + 4 * max(0, users - 8) + generator.random())) for _ in range(count)]
        intervals.append((users, latencies))
    threshold = generator.choice([None, 12, 30])

    measurements = measure(intervals, threshold)
    best = measurements.best_sustained_window()

    invocations, p95, users = best_window_by_brute_force(intervals, threshold, 5)
    if invocations is None:
        assert best["max_invocations_per_minute"] is None
    else:
        assert best["max_invocations_per_minute"] == pytest.approx(invocations)
        assert best["model_latency_p95_ms"] == pytest.approx(p95) and best["users_at_max_invocations"] == users


def test_memory_is_the_window_and_the_run_histogram_not_every_request():
    intervals = [(10, [5.0 + (i % 7) for i in range(300)]) for _ in range(200)]
    measurements = measure(intervals)
    assert len(measurements.window) == 5  # latencies kept for the sliding window only
    # Each closed second leaves ten figures, not its latencies.
    assert all(len(point) == 10 and all(isinstance(v, (int, float, str)) for v in point)
               for point in measurements.points)
    assert measurements.total_requests == 200 * 301 and measurements.total_failures == 200
    timeline = measurements.timeline(0.0)
    assert len(timeline) == 200 and timeline[-1].elapsed_s == 200.0 and timeline[-1].rps == 300.0


def test_run_percentiles_come_from_the_histogram_within_its_precision():
    import numpy
    import random
    generator = random.Random(7)
    intervals = [(5, [generator.lognormvariate(2.0, 0.6) for _ in range(2000)]) for _ in range(20)]
    measurements = measure(intervals, threshold_ms=None)
    everything = [latency for _, latencies in intervals for latency in latencies]
    for got, exact in zip(measurements.run_percentiles(), numpy.percentile(everything, [50, 95, 99])):
        assert got == pytest.approx(exact, rel=2e-3)  # 3 significant digits, and nearest rank vs. interpolation
    assert measure([], threshold_ms=None).run_percentiles() == [None, None, None]


def test_the_best_window_is_reported_with_its_bounds():
    intervals = [(1, [5.0] * 10), (2, [5.0] * 30), (3, [5.0] * 50), (4, [5.0] * 40)]
    measurements = measure(intervals, window_s=2)
    assert measurements.best_sustained_window()["max_invocations_per_minute"] == pytest.approx(45 * 60)
    assert measurements.best_window == (2.0, 4.0)  # seconds 2-4 of the feed: the 50 and 40 intervals


def test_a_run_shorter_than_the_window_is_judged_whole():
    intervals = [(1, [4.0] * 10), (2, [6.0] * 20)]
    best = measure(intervals).best_sustained_window()
    assert best["max_invocations_per_minute"] == pytest.approx(30 / 2 * 60)
    assert best["users_at_max_invocations"] == 2


@pytest.mark.parametrize("percentile,slow,breached", [
    (99.0, 1, False),  # one cold request at 1 user: not a P99 breach
    (99.0, 5, False),
    (99.0, 6, True),
    (95.0, 5, False),
    (95.0, 6, True),
])
def test_a_high_percentile_needs_several_slow_requests_to_breach(percentile, slow, breached):
    intervals = [(1, [400.0] * slow + [5.0] * 30)]
    reason = measure(intervals, threshold_ms=100, percentile=percentile).stop_check()
    assert (reason is not None and reason[0] is StopReason.LATENCY_THRESHOLD) == breached


def test_with_enough_requests_the_percentile_itself_is_judged():
    fast_then_slow = [(4, [5.0] * 940 + [400.0] * 60)]  # 6 % slow: P95 breached, P90 not
    assert measure(fast_then_slow, threshold_ms=100, percentile=95.0).stop_check()[0] is StopReason.LATENCY_THRESHOLD
    assert measure(fast_then_slow, threshold_ms=100, percentile=90.0).stop_check() is None
