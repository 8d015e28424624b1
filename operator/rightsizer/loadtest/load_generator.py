"""One load test of one model server on this machine, in SageMaker Inference Recommender's terms.

Locust drives the load: headless, FastHttpUser (about 3x the requests per core of HttpUser), and a LoadTestShape
whose tick() asks load_shape for the target user count and returns a spawn rate high enough to reach it at once.
Locust runs in a child Python process, never in the caller's: the caller is an asyncio operator, and gevent's
monkey-patching must not reach it. The child can be pinned to CPUs so that it does not steal the server's.

Latencies are measured by an events.request listener, not taken from Locust's statistics, which round response
times to two significant digits. They are grouped into the intervals between two shape ticks (about one second
each) and kept exact over the sliding window the stopping rules judge; the whole run goes into an HDR histogram
(hdrhistogram, 3 significant digits), so memory does not grow with the run. Once per interval the child checks
SageMaker's stopping conditions:

* the latency threshold (its percentile over a sliding window, once the window holds enough requests);
* maxInvocations: successful invocations per minute over a full window reach the target;
* flatInvocations Stop (the default): the best of the last 4 user levels is under 5 % above the first of them,
  Triton Model Analyzer's throughput-plateau rule;
* the traffic pattern, or jobDurationInSeconds, ends.

Safety stops: a request cap, a wall-clock cap, a server that stops answering or answers only errors, the caller's
stop(), and the parent's death (the child's stdin closes).

The pattern and the stopping conditions are the spec's own values (rightsizer.spec.TrafficPattern and
StoppingConditions). The parent hands them to the child as one JSON line (LoadTestConfig.to_json/from_json, the
only place they become bytes); the child talks back in JSON lines on its original stdout (progress about once
per second, then one result); everything else the child prints goes to stderr, which the parent logs.

Asyncio callers: `await asyncio.to_thread(run_load_test, ...)`, or LoadTest.start() and then
`await asyncio.to_thread(test.wait)`, calling test.stop() on cancellation. on_progress runs on a reader thread:
hand its argument to the loop with loop.call_soon_threadsafe.
"""

from __future__ import annotations

import base64
import collections
import enum
import ipaddress
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rightsizer.loadtest.load_shape import LoadShape
from rightsizer.spec import LatencyThreshold, Percentile, Phase, Stairs, StoppingConditions, TrafficPattern

log = logging.getLogger(__name__)

# Locust warns above 100 users/s. A tick's jump is far smaller (SageMaker adds at most 3 users per step), and
# up to 100 users the dispatcher spawns them all in a single iteration, without sleeping.
_SPAWN_RATE = 100.0
# Locust samples its own CPU every 10 s; a compressed trial may be over before the first sample.
_CPU_SAMPLE_INTERVAL_S = 2.0
_CONTROL_POLL_S = 0.2
# The run histogram's range, in microseconds: one hour, far above any request timeout.
_HISTOGRAM_HIGHEST_US = 3_600_000_000
# Importing Locust and spawning the first users takes about a second; the parent waits this long on top of the
# wall-clock cap before it kills a child that has not finished.
_STARTUP_AND_SHUTDOWN_GRACE_S = 30.0
_STOP_GRACE_S = 5.0
_STDERR_TAIL_LINES = 40


class StopReason(enum.StrEnum):
    LATENCY_THRESHOLD = "LatencyThresholdBreached"
    MAX_INVOCATIONS = "MaxInvocationsReached"
    THROUGHPUT_FLAT = "ThroughputFlat"
    TRAFFIC_PATTERN_COMPLETE = "TrafficPatternComplete"
    JOB_DURATION = "JobDurationReached"
    REQUEST_CAP = "RequestCapReached"
    WALL_CLOCK_CAP = "WallClockCapReached"
    SERVER_UNREACHABLE = "ServerUnreachable"
    SERVER_ERRORS = "ServerErrors"
    CANCELLED = "Cancelled"
    GENERATOR_ERROR = "GeneratorError"


FAILED_REASONS = frozenset({StopReason.SERVER_UNREACHABLE, StopReason.SERVER_ERRORS, StopReason.GENERATOR_ERROR})

# The latency percentiles a LoadResult and its TimelinePoints keep (their p50, p95 and p99 fields).
KEPT_PERCENTILES = (Percentile("P50"), Percentile("P95"), Percentile("P99"))


def kept_percentile(wanted: Percentile) -> Percentile:
    """The kept percentile that stands for `wanted`: itself when kept, else the next stricter one (P90 is read as
    P95), P99 above that."""
    return min((p for p in KEPT_PERCENTILES if p.value >= wanted.value), key=lambda p: p.value,
               default=KEPT_PERCENTILES[-1])


def _kept_field(percentile: Percentile, template: str) -> str:
    if percentile not in KEPT_PERCENTILES:
        raise ValueError(f"{percentile.name} is not kept; kept_percentile() names the one that stands for it")
    return template.format(percentile.name.lower())


@dataclass(frozen=True)
class LoadTarget:
    """What each Locust user POSTs, in a loop without think time (SageMaker's users do the same).

    The payload is inline bytes, or the file at payload_path (read once by the process that sends it: in a Pod, a
    mounted ConfigMap or a file in the image), never both."""

    url: str
    payload: bytes
    content_type: str = "application/json"
    payload_path: str | None = None
    # False only for the distributed generator's Pods (rightsizer.loadtest.distributed): there the target is the
    # ClusterIP or cluster DNS name of the Service the operator created for the configuration under test, the one
    # URL the operator writes into their configuration. The local generator refuses such a target (LoadTest).
    loopback_only: bool = True

    def __post_init__(self):
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"load target {self.url!r} is not an http(s) URL")
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if self.loopback_only and not loopback:
            # The local backend load-tests servers it started itself; aiming it elsewhere would be a load attack.
            raise ValueError(f"load target {self.url!r} refused: only loopback addresses such as 127.0.0.1 are "
                             "allowed (names such as localhost are refused too, since they may resolve elsewhere)")
        if not isinstance(self.payload, bytes):
            raise TypeError("LoadTarget.payload must be bytes")
        if self.payload_path is not None and self.payload:
            raise ValueError("a load target's payload is inline bytes or payload_path, not both")

    def body(self) -> bytes:
        """The bytes each request POSTs."""
        return self.payload if self.payload_path is None else Path(self.payload_path).read_bytes()


@dataclass(frozen=True)
class RunSettings:
    """How a run is judged and bounded. Times are real seconds: time_scale does not shrink them."""

    # Sliding window of the latency check, of maxInvocations and of "sustained" invocations, in whole ticks of
    # about a second.
    window_s: float = 5.0
    # Below this many requests in the window, the latency check stops only a breach that more fast requests
    # could no longer undo. A high percentile needs more: the window must hold at least min_slow_requests above
    # the threshold to breach, so that one slow request (a cold start) cannot stop a P99 test at 1 user.
    min_window_samples: int = 50
    min_slow_requests: int = 5
    flat_levels: int = 4
    flat_min_gain: float = 0.05
    max_requests: int = 5_000_000
    # None: the (scaled) traffic pattern's duration plus 30 s.
    max_wall_s: float | None = None
    # No successful answer for this long while requests keep failing: the server is down (refused, reset, timed
    # out) or answers only errors (a wrong URL, a model that did not load). Either way the rest of the run would
    # measure nothing.
    failing_after_s: float = 3.0
    request_timeout_s: float = 30.0

    def wall_cap_s(self, shape: LoadShape) -> float:
        return self.max_wall_s or shape.total_duration() + 30.0


@dataclass(frozen=True)
class TimelinePoint:
    """One interval between two shape ticks (about a second). Latencies are of successful requests."""

    elapsed_s: float  # at the end of the interval
    duration_s: float
    users: int
    stage: str
    requests: int
    failures: int
    rps: float  # successful requests per second
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def latency_ms(self, percentile: Percentile) -> float | None:
        """The interval's latency at one of KEPT_PERCENTILES."""
        return getattr(self, _kept_field(percentile, "{}_ms"))


def throughput_spread(timeline: Sequence[TimelinePoint], window_intervals: int,
                      users_at_max: int | None) -> tuple[float | None, int]:
    """The noise of a run's maximum invocations, as (relative standard deviation in percent, windows it is over).

    Once the server saturates (from the first interval at the users of the maximum on), more users add no
    throughput, so every window there measures the same capacity: their spread is the measurement's noise. The
    windows are consecutive, not overlapping. A run that ended within one window of saturating falls back to its
    intervals: the standard error of their mean rate (an underestimate, their noise being correlated)."""
    if users_at_max is None:
        return None, 0
    start = next((i for i, point in enumerate(timeline) if point.users >= users_at_max), None)
    if start is None:
        return None, 0
    saturated = [point for point in timeline[start:] if point.duration_s > 0]
    windows = [saturated[i:i + window_intervals] for i in range(0, len(saturated) - window_intervals + 1,
                                                                    window_intervals)]
    rates = [sum(p.rps * p.duration_s for p in w) / sum(p.duration_s for p in w) for w in windows]
    if len(rates) >= 2:
        return _relative_sd(rates), len(rates)
    rates = [point.rps for point in saturated[:window_intervals]]
    if len(rates) < 2:
        return None, len(rates) // window_intervals
    spread = _relative_sd(rates)
    return (None if spread is None else spread / math.sqrt(len(rates))), 1


def _relative_sd(values: Sequence[float]) -> float | None:
    mean = sum(values) / len(values)
    if mean <= 0:
        return None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return round(100.0 * math.sqrt(variance) / mean, 2)


@dataclass(frozen=True)
class LoadProgress:
    elapsed_s: float
    users: int  # from now on
    stage: str
    rps: float  # over the interval that just ended
    p95_ms: float | None  # over the sliding window
    requests: int
    failures: int


@dataclass(frozen=True)
class LoadResult:
    """One load test. The model_latency_* fields are exact client-side round trips over loopback (SageMaker's
    ModelLatency is also seen from outside the container), over the window of max_invocations_per_minute."""

    stop_reason: StopReason
    detail: str
    # Highest successful invocations per minute over a sliding window of RunSettings.window_s whose latency
    # percentile stayed within the threshold; None if no window did.
    max_invocations_per_minute: float | None
    model_latency_p50_ms: float | None
    model_latency_p95_ms: float | None
    model_latency_p99_ms: float | None
    users_at_max_invocations: int | None
    total_requests: int
    total_failures: int
    # Percentiles of every successful request of the run (HDR histogram, 3 significant digits), next to Locust's
    # rounded one (all requests).
    run_p50_ms: float | None
    run_p95_ms: float | None
    run_p99_ms: float | None
    locust_p95_ms: float | None
    # Locust's generator passed 90 % CPU: it may have been the bottleneck, so the trial is suspect.
    cpu_warning: bool
    duration_s: float
    timeline: tuple[TimelinePoint, ...]
    # Start and end, in seconds since the run started, of the window of max_invocations_per_minute.
    max_invocations_window_s: tuple[float, float] | None = None
    # Locust processes that generated the load: 1 for the local generator, the workers of a distributed one.
    workers: int = 1
    # How much max_invocations_per_minute moves within this run: the relative standard deviation, in percent, of
    # the throughput of the windows at saturation (throughput_spread), and how many windows that is.
    throughput_spread_percent: float | None = None
    spread_windows: int = 0

    @property
    def failed(self) -> bool:
        return self.stop_reason in FAILED_REASONS

    def window_latency_ms(self, percentile: Percentile) -> float | None:
        """The latency at one of KEPT_PERCENTILES over the window of max_invocations_per_minute."""
        return getattr(self, _kept_field(percentile, "model_latency_{}_ms"))

    def run_latency_ms(self, percentile: Percentile) -> float | None:
        """The latency at one of KEPT_PERCENTILES over every successful request of the run."""
        return getattr(self, _kept_field(percentile, "run_{}_ms"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["stop_reason"] = StopReason(values["stop_reason"])
        values["timeline"] = tuple(TimelinePoint(**point) for point in values["timeline"])
        if values["max_invocations_window_s"] is not None:
            values["max_invocations_window_s"] = tuple(values["max_invocations_window_s"])
        return cls(**values)

    @classmethod
    def without_measurements(cls, reason: StopReason, detail: str) -> LoadResult:
        nothing = {f.name: None for f in fields(cls)}
        return cls(**{**nothing, "stop_reason": reason, "detail": detail, "total_requests": 0, "total_failures": 0,
                      "cpu_warning": False, "duration_s": 0.0, "timeline": (), "spread_windows": 0})


@dataclass(frozen=True)
class LoadTestConfig:
    """Everything the child process needs for one load test. to_json/from_json are the one encode/decode pair of
    the spec's values on the way to the child."""

    target: LoadTarget
    pattern: TrafficPattern
    stopping: StoppingConditions
    settings: RunSettings
    time_scale: float = 1.0
    job_duration_s: float | None = None
    cpus: tuple[int, ...] | None = None

    def to_json(self) -> str:
        return json.dumps({
            "target": {"url": self.target.url, "payload": base64.b64encode(self.target.payload).decode("ascii"),
                       "content_type": self.target.content_type, "payload_path": self.target.payload_path,
                       "loopback_only": self.target.loopback_only},
            "pattern": asdict(self.pattern),
            "stopping": asdict(self.stopping),
            "settings": asdict(self.settings),
            "time_scale": self.time_scale,
            "job_duration_s": self.job_duration_s,
            "cpus": None if self.cpus is None else list(self.cpus),
        })

    @classmethod
    def from_json(cls, text: str | bytes) -> LoadTestConfig:
        data = json.loads(text)
        target, pattern, stopping = data["target"], data["pattern"], data["stopping"]
        threshold = stopping["latency_threshold"]
        return cls(
            target=LoadTarget(target["url"], base64.b64decode(target["payload"]), target["content_type"],
                              target.get("payload_path"), target.get("loopback_only", True)),
            pattern=TrafficPattern(pattern["traffic_type"], tuple(Phase(**phase) for phase in pattern["phases"]),
                                   Stairs(**pattern["stairs"]) if pattern["stairs"] is not None else None),
            stopping=StoppingConditions(
                max_invocations=stopping["max_invocations"],
                latency_threshold=None if threshold is None else LatencyThreshold(
                    Percentile.parse(threshold["percentile"]), threshold["milliseconds"]),
                flat_invocations=stopping["flat_invocations"]),
            settings=RunSettings(**data["settings"]),
            time_scale=data["time_scale"],
            job_duration_s=data["job_duration_s"],
            cpus=None if data["cpus"] is None else tuple(data["cpus"]),
        )


class LoadTest:
    """A load test in a child process: start(), then wait() for the result, or stop() to cancel.

    Also a context manager that starts on entry and stops (if still running) on exit.
    """

    def __init__(self, target: LoadTarget, pattern: TrafficPattern, stopping: StoppingConditions | None = None, *,
                 cpus: Collection[int] | None = None, time_scale: float = 1.0, job_duration_s: float | None = None,
                 settings: RunSettings | None = None, on_progress: Callable[[LoadProgress], None] | None = None):
        if not target.loopback_only:
            raise ValueError(f"the local load generator drives loopback targets only, not {target.url!r}")
        self.target = target
        self.shape = LoadShape(pattern, time_scale=time_scale, job_duration_s=job_duration_s)
        if stopping is not None and not isinstance(stopping, StoppingConditions):
            raise TypeError(f"stopping must be a spec.StoppingConditions, got {type(stopping).__name__}")
        self.stopping = stopping or StoppingConditions()
        self.settings = settings or RunSettings()
        self.cpus = sorted(set(cpus)) if cpus is not None else None
        if self.cpus is not None:
            allowed = os.sched_getaffinity(0)
            if not self.cpus or not set(self.cpus) <= allowed:
                raise ValueError(f"cpus {self.cpus} must be a non-empty subset of this process's CPUs "
                                 f"{sorted(allowed)}")
        self.on_progress = on_progress
        self._config = LoadTestConfig(target, pattern, self.stopping, self.settings, time_scale, job_duration_s,
                                      None if self.cpus is None else tuple(self.cpus))
        self.max_wall_s = self.settings.wall_cap_s(self.shape)
        self._process: subprocess.Popen | None = None
        self._readers: list[threading.Thread] = []
        self._result: LoadResult | None = None
        self._child_error: str | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._overdue: threading.Timer | None = None
        self._killed_overdue = False
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> LoadTest:
        if self._process is not None:
            raise RuntimeError("a LoadTest runs once")
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # A new session keeps a terminal's Ctrl-C away from the child: the parent decides when it stops, and the
        # child still reports what it measured.
        self._process = subprocess.Popen([sys.executable, "-c", _CHILD_BOOTSTRAP], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                         start_new_session=True)
        self._process.stdin.write(self._config.to_json().encode() + b"\n")
        self._process.stdin.flush()
        self._readers = [threading.Thread(target=self._read_events, name="load-generator-events", daemon=True),
                         threading.Thread(target=self._read_stderr, name="load-generator-stderr", daemon=True)]
        for reader in self._readers:
            reader.start()
        self._overdue = threading.Timer(self.max_wall_s + _STARTUP_AND_SHUTDOWN_GRACE_S, self._kill_overdue)
        self._overdue.daemon = True
        self._overdue.start()
        return self

    def stop(self) -> None:
        """Cancel the test and return once the child has exited (its partial measurements stay in wait())."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._cancelled = True
        try:
            process.stdin.write(b"stop\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("load generator %d ignored stop for %.0f s; killing it", process.pid, _STOP_GRACE_S)
            process.kill()
            process.wait()

    def wait(self, timeout: float | None = None) -> LoadResult:
        """The result, once the child has finished. Raises TimeoutError if `timeout` passes first (the test
        keeps running)."""
        if self._process is None:
            raise RuntimeError("LoadTest.wait() before start()")
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"load test still running after {timeout} s") from None
        for reader in self._readers:
            reader.join()
        if self._overdue:
            self._overdue.cancel()
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        if self._result is not None:
            return self._result
        if self._killed_overdue:
            return LoadResult.without_measurements(
                StopReason.WALL_CLOCK_CAP,
                f"the load generator was killed after overrunning its {self.max_wall_s:.0f} s wall-clock cap")
        if self._cancelled:
            return LoadResult.without_measurements(StopReason.CANCELLED, "stopped by the caller")
        detail = self._child_error or "\n".join(self._stderr_tail) or "no output"
        return LoadResult.without_measurements(
            StopReason.GENERATOR_ERROR, f"the load generator exited with code {self._process.returncode}: {detail}")

    def __enter__(self) -> LoadTest:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        if self._overdue:
            self._overdue.cancel()

    def _kill_overdue(self) -> None:
        if self._process and self._process.poll() is None:
            self._killed_overdue = True
            self._process.kill()

    def _read_events(self) -> None:
        for line in self._process.stdout:
            message = json.loads(line)
            kind = message.pop("type")
            if kind == "progress":
                if self.on_progress is not None:
                    try:
                        self.on_progress(LoadProgress(**message))
                    except Exception:
                        log.exception("load test progress callback failed")
            elif kind == "result":
                self._result = LoadResult.from_dict(message)
            elif kind == "error":
                self._child_error = message["detail"]

    def _read_stderr(self) -> None:
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            log.warning("load generator %d: %s", self._process.pid, line)


def run_load_test(target: LoadTarget, pattern: TrafficPattern, stopping: StoppingConditions | None = None, *,
                  cpus: Collection[int] | None = None, time_scale: float = 1.0, job_duration_s: float | None = None,
                  settings: RunSettings | None = None,
                  on_progress: Callable[[LoadProgress], None] | None = None) -> LoadResult:
    """Run one load test to its end (blocking). `pattern` and `stopping` are the spec's trafficPattern and
    stoppingConditions (None: no condition but the default flatInvocations Stop); `job_duration_s` is its
    jobDurationInSeconds. See the module docstring."""
    with LoadTest(target, pattern, stopping, cpus=cpus, time_scale=time_scale, job_duration_s=job_duration_s,
                  settings=settings, on_progress=on_progress) as test:
        return test.wait()


# ---- the child process ----------------------------------------------------------------------------------------

# gevent must patch the standard library before anything else imports it, hence a fresh interpreter whose first
# statement is the patch.
_CHILD_BOOTSTRAP = ("from gevent import monkey; monkey.patch_all(); "
                    "from rightsizer.loadtest.load_generator import _child_main; _child_main()")


def _child_main() -> None:
    # JSON lines go to the original stdout; fd 1 then points at stderr, so a stray print cannot corrupt them.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    code = 0
    try:
        config, pending_input = _read_first_line(0)
        _ChildRun(LoadTestConfig.from_json(config), channel, pending_input).execute()
    except BaseException:
        _send(channel, "error", detail=traceback.format_exc())
        code = 1
    try:
        channel.flush()
    except BrokenPipeError:
        pass
    # Skip interpreter shutdown: Locust's killed greenlets and gevent's hub have nothing left to flush.
    os._exit(code)


def _read_first_line(fd: int) -> tuple[bytes, bytes]:
    """The first line on `fd`, and whatever followed it in the same reads (a "stop" that came right after)."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("the parent closed the control pipe before sending the configuration")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


def _send(channel, kind: str, **payload) -> None:
    try:
        channel.write(json.dumps({"type": kind, **payload}) + "\n")
    except BrokenPipeError:
        pass  # the parent is gone; the control loop notices and ends the run


@dataclass
class _Interval:
    start: float
    users: int
    stage: str
    end: float = 0.0
    requests: int = 0
    failures: int = 0
    latencies_ms: Any = None  # a numpy array once the interval is closed


class _Measurements:
    """SageMaker's stopping rules and the run's figures, from the latencies of successful requests. No I/O, no clock.

    The sliding window's latencies are kept exact (the latency threshold, maxInvocations and the best sustained
    window are judged on them, at every interval's end); the whole run goes into an HDR histogram (3 significant
    digits) and one timeline point per interval. Memory does not grow with the number of requests."""

    def __init__(self, stopping: StoppingConditions, settings: RunSettings):
        import numpy
        from hdrh.histogram import HdrHistogram

        self.np = numpy
        self.stopping = stopping
        self.settings = settings
        self.window_intervals = max(1, round(settings.window_s))
        self.window: collections.deque[_Interval] = collections.deque(maxlen=self.window_intervals)
        self.points: list[tuple] = []  # one TimelinePoint's fields per closed interval, times absolute
        self.run_histogram = HdrHistogram(1, _HISTOGRAM_HIGHEST_US, 3)
        self.open: _Interval | None = None
        self.open_latencies: list[float] = []
        self.total_requests = 0
        self.total_failures = 0
        # One [users, successes, seconds] per consecutive run of intervals at the same user count.
        self.levels: list[list[float]] = []
        self.best: dict[str, Any] | None = None
        self.best_window: tuple[float, float] | None = None  # perf_counter seconds

    def record(self, latency_ms: float, ok: bool) -> None:
        # Outside an interval only requests cut short by the end of the run complete; leaving them out keeps the
        # totals equal to the timeline's sums.
        if self.open is None:
            return
        self.total_requests += 1
        self.open.requests += 1
        if ok:
            self.open_latencies.append(latency_ms)
            # Microseconds, at least 1; a latency above the histogram's hour is counted as that hour.
            self.run_histogram.record_value(min(max(1, round(latency_ms * 1000)), _HISTOGRAM_HIGHEST_US))
        else:
            self.total_failures += 1
            self.open.failures += 1

    def open_interval(self, now: float, users: int, stage: str) -> None:
        self.open = _Interval(now, users, stage)
        self.open_latencies = []

    def close_interval(self, now: float, users: int) -> _Interval | None:
        """Ends the open interval. `users` is what Locust actually ran, which the timeline shows instead of the
        target if spawning fell behind."""
        interval, self.open = self.open, None
        if interval is None:
            return None
        interval.end = now
        interval.users = users
        interval.latencies_ms = self.np.array(self.open_latencies, dtype=float)
        self.window.append(interval)
        successes, seconds = len(interval.latencies_ms), interval.end - interval.start
        self.points.append((interval.end, seconds, interval.users, interval.stage, interval.requests,
                            interval.failures, successes / seconds if seconds > 0 else 0.0,
                            *self.percentiles(interval.latencies_ms)))
        if self.levels and self.levels[-1][0] == interval.users:
            self.levels[-1][1] += successes
            self.levels[-1][2] += seconds
        else:
            if self.levels and interval.users < self.levels[-1][0]:
                # A later phase starting lower begins a new sweep; comparing across it would be meaningless.
                self.levels.clear()
            self.levels.append([interval.users, successes, seconds])
        if len(self.window) == self.window_intervals:
            self._consider_window()
        return interval

    @staticmethod
    def rate(intervals) -> float:
        """Successful requests per second over consecutive intervals."""
        seconds = sum(i.end - i.start for i in intervals)
        return sum(len(i.latencies_ms) for i in intervals) / seconds if seconds > 0 else 0.0

    def latencies(self, intervals):
        return self.np.concatenate([i.latencies_ms for i in intervals]) if intervals else self.np.array([])

    def percentiles(self, latencies, qs=(50, 95, 99)) -> list[float | None]:
        if len(latencies) == 0:
            return [None] * len(qs)
        return [float(v) for v in self.np.percentile(latencies, qs)]

    def run_percentiles(self, qs=(50, 95, 99)) -> list[float | None]:
        if self.run_histogram.get_total_count() == 0:
            return [None] * len(qs)
        return [self.run_histogram.get_value_at_percentile(q) / 1000 for q in qs]

    def stop_check(self) -> tuple[StopReason, str] | None:
        """The first of SageMaker's stopping conditions met by the closed intervals, if any."""
        return self._latency_breach() or self._max_invocations_reached() or self._throughput_flat()

    def _latency_breach(self) -> tuple[StopReason, str] | None:
        threshold = self.stopping.latency_threshold
        if threshold is None or not self.window:
            return None
        latencies = self.latencies(self.window)
        n = len(latencies)
        if n == 0:
            return None
        percentile, limit_ms = threshold.percentile.value, threshold.milliseconds
        enough = max(self.settings.min_window_samples,
                     math.ceil(self.settings.min_slow_requests / (1 - percentile / 100)))
        if n >= enough:
            breached = self.np.percentile(latencies, percentile) > limit_ms
        else:
            # Even if the missing requests were all fast, this many slow ones would keep the percentile above.
            slow = int((latencies > limit_ms).sum())
            breached = slow > (1 - percentile / 100) * enough
        if not breached:
            return None
        value = self.np.percentile(latencies, percentile)
        seconds = self.window[-1].end - self.window[0].start
        return (StopReason.LATENCY_THRESHOLD,
                f"{threshold.percentile.name} latency {value:.1f} ms over the last {seconds:.1f} s ({n} requests) "
                f"exceeded the {limit_ms:g} ms threshold at {self.window[-1].users} users")

    def _max_invocations_reached(self) -> tuple[StopReason, str] | None:
        target = self.stopping.max_invocations
        if target is None or len(self.window) < self.window_intervals:
            return None
        rps = self.rate(self.window)
        if rps * 60 < target:
            return None
        return (StopReason.MAX_INVOCATIONS,
                f"{rps * 60:.0f} invocations/min over the last {self.window_intervals} s reached maxInvocations "
                f"{target} at {self.window[-1].users} users")

    def _throughput_flat(self) -> tuple[StopReason, str] | None:
        count = self.settings.flat_levels
        finished = self.levels[:-1]  # the last level may still be growing
        if not self.stopping.stops_when_flat or len(finished) < count:
            return None
        recent = finished[-count:]
        rates = [successes / seconds if seconds > 0 else 0.0 for _, successes, seconds in recent]
        if not max(rates) < (1 + self.settings.flat_min_gain) * rates[0]:
            return None
        return (StopReason.THROUGHPUT_FLAT,
                f"throughput flat: {' -> '.join(f'{r:.0f}' for r in rates)} req/s at "
                f"{' -> '.join(str(int(users)) for users, _, _ in recent)} users gained less than "
                f"{self.settings.flat_min_gain:.0%} over {count} user levels")

    def _consider_window(self) -> None:
        """Keeps the window now ending if it has the most successful invocations yet and held the threshold (the
        earliest of equals)."""
        rps = self.rate(self.window)
        if rps <= 0 or (self.best is not None and rps <= self.best["max_invocations_per_minute"] / 60):
            return
        latencies = self.latencies(self.window)
        threshold = self.stopping.latency_threshold
        if threshold is not None and self.np.percentile(latencies, threshold.percentile.value) > threshold.milliseconds:
            return
        p50, p95, p99 = self.percentiles(latencies)
        self.best = {"max_invocations_per_minute": rps * 60, "model_latency_p50_ms": p50,
                     "model_latency_p95_ms": p95, "model_latency_p99_ms": p99,
                     "users_at_max_invocations": max(i.users for i in self.window)}
        self.best_window = (self.window[0].start, self.window[-1].end)

    def best_sustained_window(self) -> dict[str, Any]:
        """The window with the most successful invocations whose latency percentile held the threshold; a run
        shorter than one window is judged whole."""
        if self.points and len(self.points) < self.window_intervals:
            self._consider_window()
        return self.best or {"max_invocations_per_minute": None, "model_latency_p50_ms": None,
                             "model_latency_p95_ms": None, "model_latency_p99_ms": None,
                             "users_at_max_invocations": None}

    def timeline(self, started: float) -> list[TimelinePoint]:
        return [TimelinePoint(round(end - started, 3), round(seconds, 3), *rest)
                for end, seconds, *rest in self.points]

    def result(self, reason: StopReason, detail: str, started: float | None, now: float, *,
               locust_p95_ms: float | None, cpu_warning: bool, workers: int = 1) -> LoadResult:
        """The run's LoadResult; times on the clock of `started` and `now` (None: the run never started)."""
        started = now if started is None else started
        p50, p95, p99 = self.run_percentiles()
        best = self.best_sustained_window()
        timeline = tuple(self.timeline(started))
        spread, windows = throughput_spread(timeline, self.window_intervals, best["users_at_max_invocations"])
        return LoadResult(
            stop_reason=reason, detail=detail, **best, throughput_spread_percent=spread, spread_windows=windows,
            total_requests=self.total_requests, total_failures=self.total_failures,
            run_p50_ms=p50, run_p95_ms=p95, run_p99_ms=p99, locust_p95_ms=locust_p95_ms,
            cpu_warning=cpu_warning, duration_s=round(now - started, 3), timeline=timeline,
            max_invocations_window_s=None if self.best_window is None else
            (round(self.best_window[0] - started, 3), round(self.best_window[1] - started, 3)),
            workers=workers)


# ---- the Locust side, shared by the local child and the distributed roles (rightsizer.loadtest.distributed) ----

def _prepare_locust() -> None:
    """Logging to stderr and Locust's CPU sampling, in a process gevent has patched."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    import locust.runners

    locust.runners.CPU_MONITOR_INTERVAL = _CPU_SAMPLE_INTERVAL_S


@dataclass
class _RequestBudget:
    """Requests one Locust process may still send: the local child's whole request cap, a worker's share of it."""

    limit: int
    issued: int = 0

    @property
    def spent(self) -> bool:
        return self.issued >= self.limit


def _inference_user_class(target: LoadTarget, payload: bytes, settings: RunSettings, budget: _RequestBudget):
    """Locust's user: POSTs `payload` to the target in a loop, without think time, while the budget lasts.
    A distributed master builds the same class (users are dispatched by class name) and never runs it."""
    import gevent
    from locust import FastHttpUser, task

    parts = urlsplit(target.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"Content-Type": target.content_type}

    class InferenceUser(FastHttpUser):
        host = f"{parts.scheme}://{parts.netloc}"
        network_timeout = settings.request_timeout_s
        connection_timeout = settings.request_timeout_s

        @task
        def invoke(self):
            if budget.spent:
                gevent.sleep(_CONTROL_POLL_S)  # the control loop is about to end the run
                return
            budget.issued += 1
            self.client.post(path, data=payload, headers=headers, name="invoke")

    return InferenceUser


def _pattern_shape_class(tick: Callable[[], tuple[int, float] | None]):
    """A Locust LoadTestShape whose tick() is `tick`."""
    from locust import LoadTestShape

    class PatternShape(LoadTestShape):
        def tick(self):
            return tick()

    return PatternShape


class _AnswerWatch:
    """Whether the server still answers: a failing verdict once no request has succeeded for failing_after_s while
    the latest one failed. Times come from the caller's clock."""

    def __init__(self, url: str, now: float):
        self.url = url
        self.last_success = now
        # Why the latest request failed, None if it succeeded.
        self.last_failure: str | None = None
        self.last_failure_was_transport = False

    def restart(self, now: float) -> None:
        self.last_success, self.last_failure = now, None

    def on_request(self, now: float, response, exception) -> None:
        if exception is None:
            self.last_success = now
            self.last_failure = None
        else:
            # FastHttpUser reports status 0 when no HTTP answer came at all.
            status = getattr(response, "status_code", 0) or 0
            self.last_failure_was_transport = not status
            self.last_failure = repr(exception) if not status else f"HTTP {status}: {exception}"

    def verdict(self, now: float, failing_after_s: float) -> tuple[StopReason, str] | None:
        if not self.last_failure or now - self.last_success < failing_after_s:
            return None
        return (StopReason.SERVER_UNREACHABLE if self.last_failure_was_transport else StopReason.SERVER_ERRORS,
                f"no successful answer from {self.url} for {now - self.last_success:.1f} s "
                f"(last error: {self.last_failure})")


def _pattern_end(shape: LoadShape, elapsed: float) -> tuple[StopReason, str] | None:
    """The stop reason once the (scaled) pattern, or jobDurationInSeconds, is over at `elapsed`."""
    if elapsed < shape.total_duration():
        return None
    return ((StopReason.JOB_DURATION, "jobDurationInSeconds reached") if shape.capped_by_job_duration else
            (StopReason.TRAFFIC_PATTERN_COMPLETE, "the traffic pattern ran to its end"))


def _safety_stop(settings: RunSettings, *, failing: tuple[StopReason, str] | None, capped: bool, wall_s: float,
                 wall_cap_s: float) -> tuple[StopReason, str] | None:
    """The safety stops, a failing server first: a server that is down, the request cap, the wall-clock cap."""
    if failing is not None:
        return failing
    if capped:
        return StopReason.REQUEST_CAP, f"request cap of {settings.max_requests} reached"
    if wall_s >= wall_cap_s:
        return StopReason.WALL_CLOCK_CAP, f"wall-clock cap of {wall_cap_s:.0f} s reached"
    return None


def _locust_p95_ms(env) -> float | None:
    total = env.stats.total
    return float(total.get_response_time_percentile(0.95)) if total.num_requests else None


class _ChildRun:
    def __init__(self, config: LoadTestConfig, channel, pending_input: bytes):
        self.config = config
        self.channel = channel
        self.pending_input = pending_input
        self.target = config.target
        self.shape = LoadShape(config.pattern, time_scale=config.time_scale, job_duration_s=config.job_duration_s)
        self.stopping = config.stopping
        self.settings = config.settings
        self.measurements = _Measurements(self.stopping, self.settings)
        self.started: float | None = None
        self.reason: tuple[StopReason, str] | None = None
        self.budget = _RequestBudget(self.settings.max_requests)
        self.answers = _AnswerWatch(self.target.url, time.perf_counter())
        self.cpu_warning = False
        self.runner = None

    def execute(self) -> None:
        if self.config.cpus:
            os.sched_setaffinity(0, self.config.cpus)
        _prepare_locust()
        from locust.env import Environment

        user = _inference_user_class(self.target, self.target.body(), self.settings, self.budget)
        env = Environment(user_classes=[user], shape_class=_pattern_shape_class(self.tick)())
        env.events.request.add_listener(self.on_request)
        env.events.cpu_warning.add_listener(self.on_cpu_warning)
        self.runner = env.create_local_runner()
        self.answers.restart(time.perf_counter())
        self.runner.start_shape()
        self.control_loop()
        users = self.runner.user_count
        self.runner.quit()
        now = time.perf_counter()
        self.measurements.close_interval(now, users)
        self.send_result(env, now)

    def on_request(self, response_time, response=None, exception=None, **_) -> None:
        self.answers.on_request(time.perf_counter(), response, exception)
        self.measurements.record(response_time, exception is None)

    def on_cpu_warning(self, **_) -> None:
        self.cpu_warning = True

    def tick(self):
        try:
            now = time.perf_counter()
            if self.started is None:
                self.started = now
            closed = self.measurements.close_interval(now, self.runner.user_count)
            if closed is not None and self.reason is None:
                self.reason = self.measurements.stop_check()
            elapsed = now - self.started
            if self.reason is None:
                self.reason = _pattern_end(self.shape, elapsed)
            if self.reason is not None:
                return None
            users, stage = self.shape.users_at(elapsed), self.shape.stage_label(elapsed)
            self.measurements.open_interval(now, users, stage)
            if closed is not None:
                self.send_progress(elapsed, users, stage, closed)
            return users, _SPAWN_RATE
        except Exception:
            # An exception would kill Locust's shape greenlet silently and leave the users running.
            self.reason = (StopReason.GENERATOR_ERROR, traceback.format_exc())
            return None

    def send_progress(self, elapsed: float, users: int, stage: str, closed: _Interval) -> None:
        m = self.measurements
        (p95,) = m.percentiles(m.latencies(m.window), (95,))
        seconds = closed.end - closed.start
        _send(self.channel, "progress", elapsed_s=round(elapsed, 3), users=users, stage=stage,
              rps=len(closed.latencies_ms) / seconds if seconds > 0 else 0.0, p95_ms=p95,
              requests=m.total_requests, failures=m.total_failures)

    def control_loop(self) -> None:
        """Until a stop reason: the caller's stop, the parent's death, and the safety caps."""
        import select  # gevent's, once patched: waiting here lets the users run

        parent = os.getppid()
        control_input = self.pending_input
        wall_start = time.perf_counter()
        max_wall = self.settings.wall_cap_s(self.shape)
        while self.reason is None:
            if b"stop" in control_input:
                self.reason = (StopReason.CANCELLED, "stopped by the caller")
                break
            readable, _, _ = select.select([0], [], [], _CONTROL_POLL_S)
            if readable:
                chunk = os.read(0, 4096)
                if not chunk:
                    self.reason = (StopReason.CANCELLED, "the parent process closed the control pipe (it exited)")
                    break
                control_input = (control_input + chunk)[-16:]
            if self.reason is not None:  # a tick decided while this loop waited
                break
            now = time.perf_counter()
            if os.getppid() != parent:
                self.reason = (StopReason.CANCELLED, "the parent process exited")
            else:
                self.reason = _safety_stop(self.settings,
                                           failing=self.answers.verdict(now, self.settings.failing_after_s),
                                           capped=self.budget.spent, wall_s=now - wall_start, wall_cap_s=max_wall)

    def send_result(self, env, now: float) -> None:
        reason, detail = self.reason
        result = self.measurements.result(reason, detail, self.started, now, locust_p95_ms=_locust_p95_ms(env),
                                          cpu_warning=self.cpu_warning)
        _send(self.channel, "result", **asdict(result))
