"""The distributed load generator (Locust master and workers, as the kubernetes backend runs them in Pods), here as
processes on 127.0.0.1 against the threaded stub servers of test_load_generator, with patterns compressed to
seconds; and its pure parts (the termination-message encoding, the master's merge of worker reports) alone."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_load_generator import (CONTINUE, PAYLOAD, QUICK, alive, latency_threshold, socket_bound_but_closed,
                                 start_server)  # noqa: F401 (start_server is a fixture)
from test_load_shape import phases, stairs
from rightsizer.loadtest import distributed
from rightsizer.loadtest.distributed import RESULT_LIMIT_BYTES, _ReportMerger, decode_result, encode_result
from rightsizer.loadtest.load_generator import (LoadResult, LoadTarget, LoadTest, LoadTestConfig, RunSettings,
                                                StopReason, TimelinePoint, _Measurements)
from rightsizer.spec import StoppingConditions

OPERATOR = Path(distributed.__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def start_role(tmp_path):
    """Starts `python -m rightsizer.loadtest.distributed ROLE ...` with the config in RIGHTSIZER_LOAD_TEST; kills
    whatever is left at the end. Each process's stderr goes to tmp_path/<role>-<n>.err."""
    processes = []

    def start(role: str, *args: str, config: LoadTestConfig) -> subprocess.Popen:
        env = {**os.environ, distributed.CONFIG_ENV: config.to_json(),
               "PYTHONPATH": os.pathsep.join(p for p in (str(OPERATOR), os.environ.get("PYTHONPATH")) if p)}
        name = tmp_path / f"{role}-{len(processes)}"
        with open(f"{name}.out", "wb") as stdout, open(f"{name}.err", "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "rightsizer.loadtest.distributed", role, *args],
                                       env=env, stdout=stdout, stderr=stderr)
        process.stderr_path = Path(f"{name}.err")
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_distributed(start_role, tmp_path, config: LoadTestConfig, workers: int = 2):
    """A master and `workers` workers to the end: the decoded result, the master's exit code, the workers' exit
    codes and the seconds the master took."""
    port, result_file = free_port(), tmp_path / "termination-log"
    started = time.monotonic()
    master = start_role("master", "--expect-workers", str(workers), "--bind-host", "127.0.0.1", "--bind-port",
                        str(port), "--result-file", str(result_file), "--worker-timeout-s", "30", config=config)
    started_workers = [start_role("worker", "--master-host", "127.0.0.1", "--master-port", str(port), config=config)
                       for _ in range(workers)]
    master.wait(60)
    took = time.monotonic() - started
    codes = [worker.wait(20) for worker in started_workers]  # the master quits them as it ends
    data = result_file.read_bytes()
    assert len(data) <= RESULT_LIMIT_BYTES
    return decode_result(data), master.returncode, codes, took


def config_for(target: LoadTarget, pattern, stopping=CONTINUE, settings=QUICK, time_scale=1 / 30) -> LoadTestConfig:
    return LoadTestConfig(target, pattern, stopping, settings, time_scale=time_scale)


def test_a_master_and_two_workers_run_the_pattern_and_measure_whole_seconds(start_server, start_role, tmp_path):
    _, target = start_server(base_ms=5)
    payload = tmp_path / "payload.json"
    payload.write_bytes(PAYLOAD)
    # The payload as a file, as a Pod gets it from a ConfigMap; only the workers read it.
    from_file = LoadTarget(target.url, b"", payload_path=str(payload))
    result, master_code, worker_codes, _ = run_distributed(start_role, tmp_path,
                                                           config_for(from_file, stairs(30, 4, 1)))
    assert result.stop_reason == StopReason.TRAFFIC_PATTERN_COMPLETE, result.detail
    assert (master_code, worker_codes, result.workers) == (0, [0, 0], 2)
    timeline = result.timeline
    assert [p.stage for p in timeline] == sorted(p.stage for p in timeline)
    assert {p.stage for p in timeline} == {"step 1/4", "step 2/4", "step 3/4", "step 4/4"}
    assert [p.users for p in timeline] == sorted(p.users for p in timeline) and timeline[-1].users == 4
    # The master ticks on whole seconds, so every interval is whole seconds long, however late reports came.
    assert all(p.duration_s == int(p.duration_s) >= 1 for p in timeline)
    assert 4 <= sum(p.duration_s for p in timeline) <= 5
    assert result.total_requests == sum(p.requests for p in timeline) > 0 and result.total_failures == 0
    assert timeline[-1].rps > 1.5 * timeline[0].rps > 0  # closed loop: 4 users answer faster than 1
    assert 5.0 <= result.run_p50_ms <= result.run_p95_ms <= result.run_p99_ms
    assert result.max_invocations_per_minute > 0 and result.users_at_max_invocations >= 2
    start, end = result.max_invocations_window_s
    assert 0 <= start < end <= result.duration_s
    assert result.cpu_warning in (True, False)


def test_a_latency_breach_stops_the_distributed_test(start_server, start_role, tmp_path):
    # 2 ms + 20 ms per request in flight: about 22 ms at 1 user, 42 at 2, 62 at 3, however the workers share them.
    _, target = start_server(base_ms=2, per_inflight_ms=20)
    result, master_code, worker_codes, _ = run_distributed(
        start_role, tmp_path, config_for(target, stairs(30, 10, 1), latency_threshold("P95", 52)))
    assert result.stop_reason == StopReason.LATENCY_THRESHOLD, result.detail
    assert (master_code, worker_codes) == (0, [0, 0])
    assert "P95 latency" in result.detail and "52 ms threshold" in result.detail
    *before, breach = result.timeline
    assert breach.p95_ms > 52 and breach.users >= 2
    assert len(result.timeline) < 10  # before the 10 s pattern ended
    if result.max_invocations_per_minute is not None:
        assert result.model_latency_p95_ms <= 52 and result.users_at_max_invocations < breach.users


def test_the_request_cap_is_shared_among_the_workers_and_hard(start_server, start_role, tmp_path):
    _, target = start_server()
    capped = RunSettings(window_s=2, max_requests=60)
    result, master_code, worker_codes, _ = run_distributed(
        start_role, tmp_path, config_for(target, phases((3, 0, 600)), StoppingConditions(), capped, time_scale=0.05))
    assert result.stop_reason == StopReason.REQUEST_CAP, result.detail
    assert (master_code, worker_codes) == (0, [0, 0])
    # Each worker sends at most its share, 30, which it logs as it exits.
    sent = [int(re.search(rb"sent (\d+) requests \(at most 30\)", path.read_bytes())[1])
            for path in sorted(tmp_path.glob("worker-*.err"))]
    assert len(sent) == 2 and all(count <= 30 for count in sent) and sum(sent) > 0
    assert 0 <= result.total_requests <= sum(sent)


def test_workers_that_never_come_fail_the_master_within_its_timeout(start_role, tmp_path):
    result_file = tmp_path / "termination-log"
    config = config_for(LoadTarget("http://127.0.0.1:9/infer", PAYLOAD), phases((1, 0, 60)))
    started = time.monotonic()
    master = start_role("master", "--expect-workers", "2", "--bind-host", "127.0.0.1", "--bind-port",
                        str(free_port()), "--result-file", str(result_file), "--worker-timeout-s", "2",
                        config=config)
    assert master.wait(30) != 0
    assert time.monotonic() - started < 20
    result = decode_result(result_file.read_bytes())
    assert result.stop_reason == StopReason.GENERATOR_ERROR and result.failed
    assert "0 of 2 workers connected within 2 s" in result.detail
    assert result.workers == 0 and result.total_requests == 0 and result.timeline == ()


def test_a_master_without_its_configuration_writes_a_generator_error(start_role, tmp_path):
    result_file = tmp_path / "termination-log"
    config = config_for(LoadTarget("http://127.0.0.1:9/infer", PAYLOAD), phases((1, 0, 60)))
    master = start_role("master", "--config-env", "RIGHTSIZER_NOT_SET", "--expect-workers", "1",
                        "--result-file", str(result_file), config=config)
    assert master.wait(30) != 0
    result = decode_result(result_file.read_bytes())
    assert result.stop_reason == StopReason.GENERATOR_ERROR and "RIGHTSIZER_NOT_SET is not set" in result.detail


def test_a_server_that_never_answers_stops_the_distributed_test(start_role, tmp_path):
    with socket_bound_but_closed() as port:
        target = LoadTarget(f"http://127.0.0.1:{port}/infer", PAYLOAD)
        result, master_code, worker_codes, took = run_distributed(
            start_role, tmp_path, config_for(target, phases((1, 0, 600)), StoppingConditions(), time_scale=0.05),
            workers=1)
    assert result.stop_reason == StopReason.SERVER_UNREACHABLE and result.failed, result.detail
    assert "ConnectionRefused" in result.detail and target.url in result.detail
    assert (master_code, worker_codes) == (0, [0])  # the generator worked; the server did not
    assert took < 25  # the 30 s pattern did not run out
    assert result.max_invocations_per_minute is None


def start_and_wait_for_a_measured_interval(start_role, tmp_path, config: LoadTestConfig, workers: int):
    port = free_port()
    master = start_role("master", "--expect-workers", str(workers), "--bind-host", "127.0.0.1", "--bind-port",
                        str(port), "--result-file", str(tmp_path / "termination-log"), config=config)
    started_workers = [start_role("worker", "--master-host", "127.0.0.1", "--master-port", str(port), config=config)
                       for _ in range(workers)]
    deadline = time.monotonic() + 20
    while b"successful requests/s" not in master.stderr_path.read_bytes():  # the master logs each interval
        assert time.monotonic() < deadline and master.poll() is None, master.stderr_path.read_text()
        time.sleep(0.1)
    return master, started_workers


def test_sigterm_cancels_the_master_which_still_reports_what_it_measured(start_server, start_role, tmp_path):
    _, target = start_server()
    master, (worker,) = start_and_wait_for_a_measured_interval(
        start_role, tmp_path, config_for(target, phases((1, 0, 600)), time_scale=0.05), workers=1)
    master.send_signal(signal.SIGTERM)  # what the kubelet sends when the Pod is deleted
    assert master.wait(15) == 0 and worker.wait(15) == 0
    result = decode_result((tmp_path / "termination-log").read_bytes())
    assert result.stop_reason == StopReason.CANCELLED and "SIGTERM" in result.detail
    assert result.timeline and result.total_requests > 0


def test_a_lost_worker_fails_the_test_and_keeps_what_was_measured(start_server, start_role, tmp_path):
    _, target = start_server()
    master, (doomed, survivor) = start_and_wait_for_a_measured_interval(
        start_role, tmp_path, config_for(target, phases((2, 0, 600)), time_scale=0.05), workers=2)
    doomed.send_signal(signal.SIGKILL)
    lost = time.monotonic()
    assert master.wait(30) == 1
    assert time.monotonic() - lost < 20  # it goes silent for _WORKER_SILENT_S, then the master gives up
    assert survivor.wait(15) == 0
    result = decode_result((tmp_path / "termination-log").read_bytes())
    assert result.stop_reason == StopReason.GENERATOR_ERROR and "sent no report" in result.detail, result.detail
    assert result.timeline and result.total_requests > 0 and result.workers == 2


def test_a_worker_quits_when_its_master_is_gone(start_server, start_role, tmp_path):
    _, target = start_server()
    config = config_for(target, phases((1, 0, 600)), time_scale=0.05)
    port = free_port()
    master = start_role("master", "--expect-workers", "1", "--bind-host", "127.0.0.1", "--bind-port", str(port),
                        "--result-file", str(tmp_path / "termination-log"), config=config)
    worker = start_role("worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                        "--master-timeout-s", "2", config=config)
    deadline = time.monotonic() + 20
    while b"the load test starts" not in master.stderr_path.read_bytes():
        assert time.monotonic() < deadline and master.poll() is None, master.stderr_path.read_text()
        time.sleep(0.1)
    master.send_signal(signal.SIGKILL)
    master.wait()
    gone = time.monotonic()
    assert worker.wait(20) == 1
    assert time.monotonic() - gone < 15
    assert b"was silent" in worker.stderr_path.read_bytes()
    assert not alive(worker.pid)


# ---- the termination message -------------------------------------------------------------------------------------

def result_with(detail: str, points: int) -> LoadResult:
    timeline = tuple(TimelinePoint(float(i + 1), 1.0, 1 + i // 10, f"phase {1 + i // 600}/9", 1000 + i, i % 3,
                                   997.125, 10.123456789, 20.5, 31.25) for i in range(points))
    return LoadResult(StopReason.GENERATOR_ERROR, detail, 123456.789123, 10.1234567, 20.2345678, 30.3456789, 12,
                      10**9, 12345, 9.87654321, 19.87654321, 29.87654321, 20.0, True, 5000.123456, timeline,
                      (4000.0, 4005.0), workers=7)


@pytest.mark.parametrize("points", [0, 1, 5000])
def test_the_result_never_exceeds_a_termination_message(points):
    # Multi-byte characters, quotes and control characters grow under JSON escaping and UTF-8.
    detail = "Traceback (most recent call last):\n" + "é🙂\"\\\x01 " * 30_000 + "\nRuntimeError: the end"
    data = encode_result(result_with(detail, points))
    assert len(data) <= RESULT_LIMIT_BYTES
    decoded = decode_result(data)
    assert decoded.detail.startswith("Traceback (most recent call last):")
    assert decoded.detail.endswith("RuntimeError: the end") and "characters cut" in decoded.detail
    assert json.loads(data)["timeline_intervals"] == points
    if points:
        # Evenly spaced intervals, the first and the last among them, each one as it was measured.
        original, kept = result_with("", points).timeline, decoded.timeline
        assert 1 <= len(kept) <= points
        assert (kept[-1].elapsed_s, kept[-1].requests) == (original[-1].elapsed_s, original[-1].requests)
        assert points == 1 or (kept[0].elapsed_s, kept[0].requests) == (original[0].elapsed_s, original[0].requests)
        assert [p.elapsed_s for p in kept] == sorted({p.elapsed_s for p in kept})
        assert kept[len(kept) // 2].p50_ms == 10.123 and kept[len(kept) // 2].stage.startswith("phase ")
    assert (decoded.workers, decoded.cpu_warning, decoded.total_requests) == (7, True, 10**9)
    assert decoded.max_invocations_window_s == (4000.0, 4005.0)
    assert decoded.model_latency_p95_ms == 20.235  # 3 decimals, microseconds


def test_a_short_result_survives_the_termination_message_whole():
    timeline = tuple(TimelinePoint(float(i + 1), 1.0, i + 1, "step 1/3", 100, 0, 100.0, 5.5, 6.25, None)
                     for i in range(3))
    result = LoadResult(StopReason.LATENCY_THRESHOLD, "P95 latency 61.2 ms ... exceeded the 52 ms threshold", 6000.0,
                        5.5, 6.25, 7.125, 2, 300, 0, 5.5, 6.25, 7.0, 6.0, False, 3.0, timeline, (1.0, 3.0), workers=2)
    assert decode_result(encode_result(result)) == result
    assert decode_result(encode_result(result).decode()) == result  # the Pod status holds it as a string


# ---- the master's merge of worker reports -------------------------------------------------------------------------

def test_the_master_counts_each_request_in_the_second_it_completed_whatever_order_reports_come_in():
    measurements = _Measurements(CONTINUE, RunSettings(window_s=2))
    merger = _ReportMerger(measurements, ["a", "b"])
    merger.open_slot(100.0, 1, "step 1/3")
    merger.end_slot(101.0, 1)
    merger.open_slot(101.0, 2, "step 2/3")
    merger.end_slot(102.0, 2)
    merger.open_slot(102.0, 3, "step 3/3")

    # Worker a is ahead: one report, made at 101.5, carries seconds 100 and 101.
    merger.add_report("a", 101.5, [[100, [5.0] * 10, 1], [101, [6.0] * 20, 0]])
    assert merger.close_next() is None  # b has not reported past 101 yet
    merger.add_report("b", 100.9, [[100, [7.0] * 4, 0]])
    assert merger.close_next() is None
    # b's next report brings the rest of second 100, all of 101 and the start of 102.
    merger.add_report("b", 102.3, [[100, [7.0] * 6, 0], [101, [8.0] * 30, 2], [102, [9.0] * 5, 0]])
    first = merger.close_next()
    assert (first.start, first.end, first.users, first.stage) == (100.0, 101.0, 1, "step 1/3")
    assert (first.requests, first.failures) == (21, 1) and sorted(first.latencies_ms) == [5.0] * 10 + [7.0] * 10
    assert merger.close_next() is None  # a has reported only up to 101.5

    merger.add_report("a", 102.1, [[101, [6.0] * 5, 0], [102, [9.0] * 3, 0]])
    second = merger.close_next()
    assert (second.start, second.end, second.requests, second.failures) == (101.0, 102.0, 57, 2)
    assert len(second.latencies_ms) == 55
    assert merger.close_next() is None and merger.pending  # the third slot has not ended

    # A request reported for a second already closed counts nowhere (a worker clock stepping back).
    merger.add_report("a", 102.2, [[101, [6.0], 0]])
    assert merger.late_requests == 1
    merger.end_slot(103.0, 3)
    merger.add_report("a", 103.4, [[102, [9.0] * 2, 0], [103, [9.0] * 50, 0]])
    merger.add_report("b", 103.0, [[102, [9.0] * 10, 0]])
    third = merger.close_next()
    assert (third.users, third.requests) == (3, 20) and not merger.pending
    assert measurements.total_requests == 21 + 57 + 20
    assert [p.rps for p in measurements.timeline(100.0)] == [20.0, 55.0, 20.0]  # not the arrival-time jitter
    # Reports of a worker the master does not know change nothing.
    merger.add_report("intruder", 200.0, [[103, [1.0] * 9, 0]])
    assert merger.reported_until == {"a": 103.4, "b": 103.0}


# ---- the configuration of the Pods --------------------------------------------------------------------------------

def test_the_pods_configuration_carries_a_payload_file_and_a_cluster_target():
    target = LoadTarget("http://10.96.0.17:8080/invocations", b"", payload_path="/etc/rightsizer/payload",
                        loopback_only=False)
    config = LoadTestConfig(target, stairs(30, 4, 1), CONTINUE, QUICK, job_duration_s=90.0)
    assert LoadTestConfig.from_json(config.to_json()) == config
    # The local generator keeps to loopback, whatever the target says of itself.
    with pytest.raises(ValueError, match="loopback targets only"):
        LoadTest(target, stairs(30, 4, 1))
    with pytest.raises(ValueError, match="refused"):
        LoadTarget("http://10.96.0.17:8080/invocations", PAYLOAD)
    with pytest.raises(ValueError, match="not both"):
        LoadTarget("http://127.0.0.1:8080/invocations", PAYLOAD, payload_path="/etc/rightsizer/payload")
