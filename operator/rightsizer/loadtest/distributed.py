"""One load test driven by Locust in master/worker mode, each role a Pod of the project's image (the kubernetes
backend). Same traffic patterns and SageMaker stopping rules as the local generator (load_generator): the master
ticks the same LoadShape, and the same _Measurements judges the same ~1 s intervals over the same sliding window.

    python -m rightsizer.loadtest.distributed master --expect-workers N [--config-env RIGHTSIZER_LOAD_TEST]
        [--bind-port 5557] [--result-file /dev/termination-log] [--worker-timeout-s 120] [--bind-host '*']
    python -m rightsizer.loadtest.distributed worker --master-host HOST [--master-port 5557]
        [--config-env RIGHTSIZER_LOAD_TEST] [--master-timeout-s 60] [--connect-timeout-s 120]

Both roles read LoadTestConfig.to_json() from the environment variable that --config-env names. Its target is
normally not loopback (LoadTarget.loopback_only False: the ClusterIP or DNS name of the configuration's Service),
and its payload may be a file in the container (LoadTarget.payload_path), which only the workers read.

Master: waits --worker-timeout-s for N workers, tells each its share of the request cap, runs the pattern, stops at
the first stopping rule or safety stop (as the local child does, plus a worker that goes silent), quits the
workers, writes encode_result() to --result-file, prints the whole result (timeline included) as one JSON line on
stdout, and exits 0; 1 when the result is GeneratorError (workers never came, a worker was lost, an exception).
Worker: runs FastHttpUser users POSTing the payload in a loop, and exits once the master quits it (0), or when it
hears nothing from the master for --master-timeout-s or cannot reach it within --connect-timeout-s (1).

Measurement: worker reports reach the master asynchronously, every REPORT_INTERVAL_S (Locust's
WORKER_REPORT_INTERVAL, lowered from its 3 s), so the interval a sample arrives in says little about when its
request completed. Each worker therefore sends, per whole second of time.time(), the latencies of the successful
requests that completed in it and the count of failed ones (_WorkerRun.on_report). The master ticks on whole
seconds of time.time() too, and closes an interval only once every worker has reported past its end
(_ReportMerger): intervals and stopping rules lag the load by a report interval or so, and are exact.
Pods of one cluster share NTP-synchronised clocks: the workers' seconds and the master's ticks are compared as is.

The result file is a Kubernetes termination message, which the kubelet cuts at 4096 bytes
(https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/): encode_result() keeps to
that; the operator reads it back with decode_result() from the container's state.terminated.message.

Locust's master/worker mode: https://docs.locust.io/en/stable/running-distributed.html; its custom messages
(the request-cap share): https://docs.locust.io/en/stable/running-distributed.html#communicating-across-nodes.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Run as a program (a Pod's command), Locust needs gevent's patched standard library, before anything imports
    # socket or threading. Imported as a library (the operator calls decode_result), this module patches nothing.
    from gevent import monkey

    monkey.patch_all()

import argparse
import collections
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from rightsizer.loadtest.load_generator import (_CONTROL_POLL_S, _SPAWN_RATE, LoadResult, LoadTestConfig,
                                                StopReason, TimelinePoint, _AnswerWatch, _inference_user_class,
                                                _Interval, _locust_p95_ms, _Measurements, _pattern_end,
                                                _pattern_shape_class, _prepare_locust, _RequestBudget, _safety_stop)
from rightsizer.loadtest.load_shape import LoadShape

log = logging.getLogger("rightsizer.loadtest.distributed")  # not __name__: run as a program it is __main__

CONFIG_ENV = "RIGHTSIZER_LOAD_TEST"
MASTER_PORT = 5557
RESULT_FILE = "/dev/termination-log"
WORKER_TIMEOUT_S = 120.0
# Locust's own default for a worker that hears no heartbeat from its master (MASTER_HEARTBEAT_TIMEOUT).
MASTER_TIMEOUT_S = 60.0
# As long as a master waits for its workers by default: Pods of one test start in any order.
CONNECT_TIMEOUT_S = 120.0
REPORT_INTERVAL_S = 1.0
# The kubelet keeps at most this much of a termination message.
RESULT_LIMIT_BYTES = 4096
# The detail's share of the result; a traceback keeps its beginning and its end.
_DETAIL_LIMIT_BYTES = 1536
# A worker that has sent no report for this long is lost (dead, or cut off): the load it generated is unknown.
_WORKER_SILENT_S = 10.0
_REPORT_KEY = "rightsizer"
_BUDGET_MESSAGE = "rightsizer_request_budget"
_TIMELINE_COLUMNS = tuple(f.name for f in fields(TimelinePoint))


# ---- the result, as a termination message ------------------------------------------------------------------------

def encode_result(result: LoadResult) -> bytes:
    """The result as compact JSON of at most RESULT_LIMIT_BYTES: LoadResult's fields, floats to 3 decimals, the
    detail shortened to _DETAIL_LIMIT_BYTES, and as many evenly spaced timeline intervals (the first and last
    among them) as fit, as {"columns": [...], "rows": [[...], ...]}; "timeline_intervals" counts them all."""
    data: dict[str, Any] = {f.name: _compact(getattr(result, f.name)) for f in fields(LoadResult)
                            if f.name != "timeline"}
    data["detail"] = _shorten(result.detail, _DETAIL_LIMIT_BYTES)
    data["timeline_intervals"] = len(result.timeline)
    rows = [[_compact(getattr(point, name)) for name in _TIMELINE_COLUMNS] for point in result.timeline]
    count = min(len(rows), RESULT_LIMIT_BYTES // 40)  # a row takes 40 bytes at the very least
    while True:
        data["timeline"] = {"columns": _TIMELINE_COLUMNS, "rows": _evenly_spaced(rows, count)}
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) <= RESULT_LIMIT_BYTES:
            return encoded
        if count == 0:  # cannot happen: all but the detail are numbers, booleans and a StopReason
            raise AssertionError(f"a result without timeline takes {len(encoded)} bytes")
        count = count * 3 // 4


def decode_result(data: str | bytes) -> LoadResult:
    """The LoadResult that encode_result() wrote (its timeline possibly thinned out, its detail shortened)."""
    values = json.loads(data)
    timeline = values["timeline"]
    values["timeline"] = [dict(zip(timeline["columns"], row)) for row in timeline["rows"]]
    return LoadResult.from_dict(values)


def _compact(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, tuple):
        return [_compact(v) for v in value]
    return value


def _shorten(text: str, limit_bytes: int) -> str:
    """`text`, or its beginning and its end around a marker, so that it takes at most limit_bytes as JSON."""
    def size(candidate: str) -> int:
        return len(json.dumps(candidate, ensure_ascii=False).encode())

    keep = min(len(text), limit_bytes)
    candidate = text
    while size(candidate) > limit_bytes:
        keep = keep * 9 // 10
        head = keep // 3
        candidate = f"{text[:head]} [... {len(text) - keep} characters cut ...] {text[len(text) - (keep - head):]}"
    return candidate


def _evenly_spaced(rows: Sequence[Any], count: int) -> list[Any]:
    if count >= len(rows):
        return list(rows)
    if count <= 1:
        return list(rows[-1:]) if count == 1 else []
    last = len(rows) - 1
    return [rows[round(i * last / (count - 1))] for i in range(count)]


# ---- the master's side: worker reports into measured intervals ---------------------------------------------------

@dataclass
class _Slot:
    """One interval as the master ticked it, from start to end (whole seconds of time.time()): the target users
    while it runs, the users Locust reported running once it has ended (as the local child records them)."""

    start: float
    users: int
    stage: str
    end: float | None = None


class _ReportMerger:
    """Worker reports into the shared _Measurements, each request in the interval in which it completed.

    A report carries, per whole second of the worker's time.time(), the latencies of the successful requests that
    completed in it since the previous report and the count of failed ones, and `until`: when the report was made
    (every later request completes after it). An interval is closed once every worker has reported past its end,
    whatever order the reports arrive in. No I/O, no clock."""

    def __init__(self, measurements: _Measurements, workers: Iterable[str]):
        self.measurements = measurements
        self.reported_until: dict[str, float] = dict.fromkeys(workers, -math.inf)
        self.slots: collections.deque[_Slot] = collections.deque()
        self.seconds: dict[int, tuple[list[float], list[int]]] = {}  # second -> (latencies_ms, [failures])
        self.closed_until = -math.inf
        # Requests reported for an interval already closed (a worker clock stepping back); counted nowhere.
        self.late_requests = 0

    def open_slot(self, start: float, users: int, stage: str) -> None:
        self.slots.append(_Slot(start, users, stage))

    def end_slot(self, end: float, users: int) -> None:
        """Ends the open slot, if any: `users` is what Locust ran, which the timeline shows."""
        if self.slots and self.slots[-1].end is None:
            self.slots[-1].end = end
            self.slots[-1].users = users

    def add_report(self, worker: str, until: float, seconds: Iterable[Sequence[Any]]) -> None:
        """One worker's report: `seconds` holds [second, latencies_ms, failures] triples."""
        if worker not in self.reported_until:
            return
        for second, latencies, failures in seconds:
            if second < self.closed_until:
                self.late_requests += len(latencies) + failures
                continue
            bucket = self.seconds.setdefault(int(second), ([], [0]))
            bucket[0].extend(latencies)
            bucket[1][0] += failures
        self.reported_until[worker] = max(self.reported_until[worker], until)

    @property
    def pending(self) -> bool:
        """Whether a ticked interval is still open or waits for reports."""
        return bool(self.slots)

    def close_next(self) -> _Interval | None:
        """Closes the oldest interval if it has ended and every worker has reported past its end."""
        horizon = min(self.reported_until.values(), default=-math.inf)
        slot = self.slots[0] if self.slots else None
        if slot is None or slot.end is None or slot.end > horizon:
            return None
        self.slots.popleft()
        end = slot.end
        measurements = self.measurements
        measurements.open_interval(slot.start, slot.users, slot.stage)
        for second in sorted(s for s in self.seconds if s < end):
            latencies, (failures,) = self.seconds.pop(second)
            if second < slot.start:  # before the first tick: no user ran yet
                self.late_requests += len(latencies) + failures
                continue
            for latency in latencies:
                measurements.record(latency, True)
            for _ in range(failures):
                measurements.record(0.0, False)
        self.closed_until = end
        return measurements.close_interval(end, slot.users)


class _MasterRun:
    def __init__(self, config: LoadTestConfig, *, expect_workers: int, bind_host: str, bind_port: int,
                 worker_timeout_s: float):
        if expect_workers < 1:
            raise ValueError(f"--expect-workers must be at least 1, got {expect_workers}")
        self.config = config
        self.settings = config.settings
        self.shape = LoadShape(config.pattern, time_scale=config.time_scale, job_duration_s=config.job_duration_s)
        self.measurements = _Measurements(config.stopping, config.settings)
        self.expect_workers = expect_workers
        self.bind_host, self.bind_port = bind_host, bind_port
        self.worker_timeout_s = worker_timeout_s
        self.workers: tuple[str, ...] = ()
        self.merger = _ReportMerger(self.measurements, ())
        self.reason: tuple[StopReason, str] | None = None
        self.pattern_over: tuple[StopReason, str] | None = None
        self.started: float | None = None  # time.time() of the first tick
        self.boundary: float | None = None  # the latest tick's whole second
        self.issued: dict[str, int] = {}
        self.budget_spent = False
        self.failing: tuple[StopReason, str] | None = None
        self.last_report: dict[str, float] = {}  # time.monotonic() of each worker's latest report
        self.runner: Any = None

    def execute(self) -> LoadResult:
        _prepare_locust()
        import gevent
        import locust.runners
        from locust.env import Environment

        locust.runners.WORKER_REPORT_INTERVAL = REPORT_INTERVAL_S
        # The master never runs a user; it only needs the class the workers run, by name.
        user = _inference_user_class(self.config.target, b"", self.settings, _RequestBudget(0))
        env = Environment(user_classes=[user], shape_class=_pattern_shape_class(self.tick)())
        env.events.worker_report.add_listener(self.on_worker_report)
        gevent.signal_handler(signal.SIGTERM, self.on_sigterm)
        self.runner = self.bind(env)
        try:
            if self.wait_for_workers():
                log.info("%d workers connected; the load test starts", len(self.workers))
                share = max(1, self.settings.max_requests // len(self.workers))
                self.runner.send_message(_BUDGET_MESSAGE, {"max_requests": share})
                self.runner.start_shape()
                self.control_loop()
            now = time.time()
        finally:
            self.quit_workers()
        reason, detail = self.reason or (StopReason.GENERATOR_ERROR, "the master stopped without a reason")
        cpu_warning = bool(self.runner.worker_cpu_warning_emitted or self.runner.cpu_warning_emitted)
        return self.measurements.result(reason, detail, self.started, now, locust_p95_ms=_locust_p95_ms(env),
                                        cpu_warning=cpu_warning, workers=len(self.workers))

    def bind(self, env) -> Any:
        try:
            return env.create_master_runner(self.bind_host, self.bind_port)
        except SystemExit:  # Locust exits when the port is taken
            raise RuntimeError(f"the master cannot listen on {self.bind_host}:{self.bind_port}") from None

    def on_sigterm(self) -> None:
        if self.reason is None:
            self.reason = (StopReason.CANCELLED, "the master received SIGTERM (its Pod is being deleted)")

    def wait_for_workers(self) -> bool:
        import gevent

        deadline = time.monotonic() + self.worker_timeout_s
        while self.runner.worker_count < self.expect_workers and self.reason is None:
            if time.monotonic() >= deadline:
                self.reason = (StopReason.GENERATOR_ERROR,
                               f"only {self.runner.worker_count} of {self.expect_workers} workers connected within "
                               f"{self.worker_timeout_s:g} s")
                break
            gevent.sleep(0.1)
        self.workers = tuple(client.id for client in self.runner.clients.ready)
        if self.reason is not None:
            return False
        self.merger = _ReportMerger(self.measurements, self.workers)
        self.last_report = dict.fromkeys(self.workers, time.monotonic())
        return True

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        report = data.get(_REPORT_KEY)
        if report is None or client_id not in self.last_report:
            return
        self.last_report[client_id] = time.monotonic()
        self.merger.add_report(client_id, report["until"], report["seconds"])
        self.issued[client_id] = report["issued"]
        self.budget_spent = self.budget_spent or report["spent"]
        if report["failing"] is not None and self.failing is None:
            reason, detail = report["failing"]
            self.failing = (StopReason(reason), detail)

    def tick(self) -> tuple[int, float] | None:
        try:
            boundary = self.wait_for_boundary()
            if self.started is None:
                self.started = boundary
            self.merger.end_slot(boundary, self.runner.user_count)
            if self.reason is not None or self.pattern_over is not None:
                return None
            elapsed = boundary - self.started
            self.pattern_over = _pattern_end(self.shape, elapsed)
            if self.pattern_over is not None:
                return None  # Locust stops the users; the control loop waits for the last reports
            users, stage = self.shape.users_at(elapsed), self.shape.stage_label(elapsed)
            self.merger.open_slot(boundary, users, stage)
            return users, _SPAWN_RATE
        except Exception:
            # An exception would kill Locust's shape greenlet silently and leave the users running.
            self.reason = (StopReason.GENERATOR_ERROR, traceback.format_exc())
            return None

    def wait_for_boundary(self) -> float:
        """Sleeps until the next whole second of time.time() not ticked yet, and returns it: the workers bucket
        requests by whole seconds, so intervals from one whole second to another take whole buckets."""
        import gevent

        now = time.time()
        target = math.floor(now) + 1.0 if self.boundary is None else max(self.boundary + 1.0, math.floor(now))
        while now < target:
            gevent.sleep(target - now)
            now = time.time()
        self.boundary = target
        return target

    def control_loop(self) -> None:
        """Until a stop reason: the stopping rules on each interval closed, the pattern's end once its last
        interval is closed, a lost worker, and the safety stops."""
        import gevent

        wall_start = time.monotonic()
        wall_cap = self.settings.wall_cap_s(self.shape)
        while self.reason is None:
            gevent.sleep(_CONTROL_POLL_S)
            while self.reason is None and (closed := self.merger.close_next()) is not None:
                self.reason = self.measurements.stop_check()
                self.log_interval(closed)
            if self.reason is not None:
                break
            if self.pattern_over is not None and not self.merger.pending:
                self.reason = self.pattern_over
                break
            now = time.monotonic()
            self.reason = self.lost_worker(now) or _safety_stop(
                self.settings, failing=self.failing,
                capped=self.budget_spent or sum(self.issued.values()) >= self.settings.max_requests,
                wall_s=now - wall_start, wall_cap_s=wall_cap)

    def lost_worker(self, now: float) -> tuple[StopReason, str] | None:
        for worker, last in self.last_report.items():
            if now - last > _WORKER_SILENT_S:
                return (StopReason.GENERATOR_ERROR,
                        f"worker {worker} sent no report for {now - last:.0f} s (it died or lost the master): the "
                        "load it generated is unknown")
        return None

    def log_interval(self, closed: _Interval) -> None:
        seconds = closed.end - closed.start
        rps = len(closed.latencies_ms) / seconds if seconds > 0 else 0.0
        log.info("%.0f s: %d users (%s), %.1f successful requests/s, %d failures", closed.end - (self.started or 0),
                 closed.users, closed.stage, rps, closed.failures)

    def quit_workers(self) -> None:
        """Quits every worker, also those Locust forgot after they reported stopping (it quits only the
        connected ones), and the master's own greenlets."""
        from locust.rpc import Message

        for worker in self.workers:
            self.runner.server.send_to_client(Message("quit", None, worker))
        self.runner.quit()


# ---- the worker's side -------------------------------------------------------------------------------------------

class _WorkerRun:
    def __init__(self, config: LoadTestConfig, *, master_host: str, master_port: int, master_timeout_s: float,
                 connect_timeout_s: float):
        self.config = config
        self.settings = config.settings
        self.master_host, self.master_port = master_host, master_port
        self.master_timeout_s = master_timeout_s
        self.connect_timeout_s = connect_timeout_s
        # The master sends this worker's share of the request cap before the first users.
        self.budget = _RequestBudget(self.settings.max_requests)
        self.answers = _AnswerWatch(config.target.url, time.monotonic())
        self.seconds: dict[int, tuple[list[float], list[int]]] = {}  # as _ReportMerger.seconds, since the last report

    def execute(self) -> int:
        _prepare_locust()
        import locust.runners
        from locust.env import Environment

        locust.runners.WORKER_REPORT_INTERVAL = REPORT_INTERVAL_S
        locust.runners.MASTER_HEARTBEAT_TIMEOUT = self.master_timeout_s
        locust.runners.CONNECT_RETRY_COUNT = max(1, math.ceil(self.connect_timeout_s / locust.runners.CONNECT_TIMEOUT))
        target = self.config.target
        env = Environment(user_classes=[_inference_user_class(target, target.body(), self.settings, self.budget)])
        env.events.request.add_listener(self.on_request)
        env.events.report_to_master.add_listener(self.on_report)
        env.events.test_start.add_listener(lambda **_: self.answers.restart(time.monotonic()))
        try:
            runner = env.create_worker_runner(self.master_host, self.master_port)
        except ConnectionError:
            log.error("no master answered at %s:%d within %.0f s", self.master_host, self.master_port,
                      self.connect_timeout_s)
            return 1
        # Registered before this greenlet yields, so before the master's first message is read.
        runner.register_message(_BUDGET_MESSAGE, self.on_budget)
        # Locust's worker quits after MASTER_HEARTBEAT_TIMEOUT without a heartbeat from its master, but only once
        # one has come: counting from the connection also covers a master that dies before its first.
        runner.last_heartbeat_timestamp = time.time()
        log.info("connected to the master at %s:%d", self.master_host, self.master_port)
        runner.greenlet.join()
        log.info("sent %d requests (at most %d)", self.budget.issued, self.budget.limit)
        silent = time.time() - runner.last_heartbeat_timestamp
        if silent > self.master_timeout_s:
            log.error("the master at %s:%d was silent for %.0f s; this worker quits", self.master_host,
                      self.master_port, silent)
            return 1
        return 0

    def on_budget(self, msg: Any, **_: Any) -> None:
        self.budget.limit = int(msg.data["max_requests"])

    def on_request(self, response_time: float, response: Any = None, exception: Any = None, **_: Any) -> None:
        bucket = self.seconds.setdefault(int(time.time()), ([], [0]))
        self.answers.on_request(time.monotonic(), response, exception)
        if exception is None:
            bucket[0].append(response_time)
        else:
            bucket[1][0] += 1

    def on_report(self, data: dict[str, Any], **_: Any) -> None:
        """Adds the seconds since the previous report to the one Locust sends now (no greenlet switch between
        taking them and stamping `until`, so every later request completes after it)."""
        seconds, self.seconds = self.seconds, {}
        failing = self.answers.verdict(time.monotonic(), self.settings.failing_after_s)
        data[_REPORT_KEY] = {
            "until": time.time(),
            "seconds": [[second, latencies, failures] for second, (latencies, (failures,)) in sorted(seconds.items())],
            "issued": self.budget.issued, "spent": self.budget.spent,
            "failing": None if failing is None else [str(failing[0]), failing[1]],
        }


# ---- the command line ---------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Runs one role. Needs a process of its own that gevent has patched (`python -m` does so first)."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    args = _parser().parse_args(argv)
    logging.getLogger("rightsizer").setLevel(logging.INFO)
    return _master(args) if args.role == "master" else _worker(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rightsizer.loadtest.distributed",
                                     description="A distributed Locust load test (see the module's docstring).")
    roles = parser.add_subparsers(dest="role", required=True)
    master = roles.add_parser("master", help="tick the traffic pattern, judge the stopping rules, write the result")
    master.add_argument("--config-env", default=CONFIG_ENV,
                        help="the environment variable holding LoadTestConfig.to_json() (default %(default)s)")
    master.add_argument("--expect-workers", type=int, required=True, help="workers to wait for before starting")
    master.add_argument("--bind-host", default="*", help="interface Locust's master listens on (default: all)")
    master.add_argument("--bind-port", type=int, default=MASTER_PORT, help="default %(default)s")
    master.add_argument("--result-file", default=RESULT_FILE,
                        help=f"where encode_result() goes, at most {RESULT_LIMIT_BYTES} bytes (default %(default)s)")
    master.add_argument("--worker-timeout-s", type=float, default=WORKER_TIMEOUT_S,
                        help="how long to wait for the workers before failing (default %(default)s)")
    worker = roles.add_parser("worker", help="run users against the target as the master directs")
    worker.add_argument("--config-env", default=CONFIG_ENV, help="as the master's (default %(default)s)")
    worker.add_argument("--master-host", required=True)
    worker.add_argument("--master-port", type=int, default=MASTER_PORT, help="default %(default)s")
    worker.add_argument("--master-timeout-s", type=float, default=MASTER_TIMEOUT_S,
                        help="quit when the master has been silent this long (default %(default)s)")
    worker.add_argument("--connect-timeout-s", type=float, default=CONNECT_TIMEOUT_S,
                        help="fail when no master answers within this long (default %(default)s)")
    return parser


def _read_config(variable: str) -> LoadTestConfig:
    text = os.environ.get(variable)
    if not text:
        raise ValueError(f"the environment variable {variable} is not set: it holds LoadTestConfig.to_json()")
    return LoadTestConfig.from_json(text)


def _master(args: argparse.Namespace) -> int:
    try:
        run = _MasterRun(_read_config(args.config_env), expect_workers=args.expect_workers,
                         bind_host=args.bind_host, bind_port=args.bind_port, worker_timeout_s=args.worker_timeout_s)
        result = run.execute()
    except Exception:
        result = dataclasses.replace(
            LoadResult.without_measurements(StopReason.GENERATOR_ERROR, traceback.format_exc()), workers=0)
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    code = 1 if result.stop_reason is StopReason.GENERATOR_ERROR else 0
    try:
        with open(args.result_file, "wb") as file:
            file.write(encode_result(result))
    except OSError as error:
        log.error("cannot write the result to %s: %s", args.result_file, error)
        code = 1
    log.info("%s: %s", result.stop_reason, result.detail)
    return code


def _worker(args: argparse.Namespace) -> int:
    try:
        run = _WorkerRun(_read_config(args.config_env), master_host=args.master_host, master_port=args.master_port,
                         master_timeout_s=args.master_timeout_s, connect_timeout_s=args.connect_timeout_s)
        return run.execute()
    except Exception:
        log.exception("the worker failed")
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: Locust's killed greenlets, gevent's hub and zmq's sockets have nothing left to do,
    # and zmq may wait on messages to peers that are gone.
    os._exit(code)
