"""Run one model-server configuration on this host: pinned to its CPUs, held to its memory cap, watched, stopped.

How it runs:
- Pinning: a tiny launcher (this interpreter, isolated mode) sets the CPU affinity and the parent-death
  signal on itself and then execs the server. Its threads and forked workers inherit the affinity; the
  parent-death signal is not inherited across fork, so a server's workers must arm their own (the built-in
  server's do, on their supervisor) or they outlive a caller that was killed.
  Popen's preexec_fn would do the same, but it is not safe once the caller has threads, and the operator has
  many.
- Own session: the server runs in a session and process group of its own, so stop() reaches its workers too.
- Memory cap: a psutil watchdog sums RSS over the process tree every 100 ms and kills the tree with SIGKILL
  when the sum is above the cap. RLIMIT_AS is not used. It limits address space, which threaded numeric
  servers reserve far beyond what they touch: an xgboost process with 16 request threads measured VmSize
  1.3 GiB at 73 MiB RSS (glibc malloc arenas and thread stacks; OpenMP and BLAS pools add more), and under
  RLIMIT_AS = 1 GiB it failed with "can't start new thread" while using 73 MiB. A cgroup would be exact, but an
  operator in a pod cannot usually create one. Summed RSS counts copy-on-write pages shared by forked workers
  once per worker, so it errs towards killing early. psutil's memory_full_info().pss would not.
- No orphans: stop() sends SIGTERM to the group and to every descendant, waits, then sends SIGKILL. If the
  caller dies, the kernel kills the server's main process (PR_SET_PDEATHSIG). That signal follows the *thread* that
  started the server, so start and stop a server from one thread that outlives it, not from a short-lived one.

Times (ResourceSample.at, usage windows, setup) are time.monotonic() seconds.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Callable, Iterable, Mapping, Sequence

import psutil

from rightsizer.loadtest.placement import format_bytes

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Run as `python -I -S -c LAUNCHER <caller pid> <cpus> <command...>`.
# -I -S: no site, no user paths, no PYTHON* variables, so it starts in about 20 ms and cannot import
# the caller's modules.
_LAUNCHER = r"""
import ctypes, os, signal, sys
caller, cpus, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
    sys.exit("cannot set PR_SET_PDEATHSIG: " + os.strerror(ctypes.get_errno()))
if os.getppid() != caller:  # the caller died before the signal was armed
    sys.exit(1)
try:
    os.execvp(command[0], command)
except OSError as error:
    sys.stderr.write(f"cannot run {command[0]!r}: {error.strerror}\n")
    sys.exit(127)
"""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now. Another process can take it before the server binds
    it. The server then fails at start with "address already in use" in its output."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def summarize_output(text: str, max_chars: int = 800) -> str:
    """A crashed server's output as a reason, on one line: a Python traceback becomes its last line (the
    exception), after what the server said before it; longer text loses its beginning at a word, never mid-word."""
    raw = [line.rstrip() for line in text.splitlines() if line.strip()]
    lines = [line.strip() for line in raw]
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), None)
    if start is not None:
        # The exception is the last line a traceback does not indent (frames and source lines are indented).
        exception = next((line for line in reversed(raw) if not line[:1].isspace()), raw[-1])
        lines = lines[:start] + [exception.strip()]
    summary = "; ".join(lines)
    if len(summary) > max_chars:
        kept = summary[-max_chars:]
        summary = "... " + (kept.split(None, 1)[1] if " " in kept else kept)
    return summary


class ServerFailed(RuntimeError):
    """The server could not be started or made ready; `reason` is fit for a status message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ResourceSample:
    at: float  # end of the interval (time.monotonic())
    interval_seconds: float
    cpu_percent: float  # summed over cores, like SageMaker's CPUUtilization: 220 = 2.2 cores busy
    rss_bytes: int  # the highest summed RSS of the process tree seen in the interval
    memory_percent: float | None  # rss_bytes as a percent of the memory cap (None without a cap)
    processes: int


@dataclasses.dataclass(frozen=True)
class ResourceUsage:
    """Resource use over a time window, e.g. the load-test window with the maximum invocations."""

    start: float
    end: float
    cpu_percent: float  # mean over the window, weighting each sample by how much of the window it covers
    cpu_percent_max: float
    rss_bytes: int  # peak
    memory_percent: float | None  # peak, of the cap
    samples: int


def summarize(samples: Iterable[ResourceSample], start: float, end: float,
              memory_limit_bytes: int | None = None) -> ResourceUsage | None:
    """Resource use in [start, end] from the samples whose intervals overlap it; None if none do.

    A zero-length window (start == end) gives the sample whose interval contains that instant.
    """
    weighted = []
    for sample in samples:
        begins = sample.at - sample.interval_seconds
        if start == end:
            if begins <= start <= sample.at:
                weighted.append((sample, 1.0))
        else:
            overlap = min(end, sample.at) - max(start, begins)
            if overlap > 0:
                weighted.append((sample, overlap))
    if not weighted:
        return None
    total = sum(weight for _, weight in weighted)
    rss = max(sample.rss_bytes for sample, _ in weighted)
    return ResourceUsage(
        start=start, end=end,
        cpu_percent=sum(sample.cpu_percent * weight for sample, weight in weighted) / total,
        cpu_percent_max=max(sample.cpu_percent for sample, _ in weighted),
        rss_bytes=rss,
        memory_percent=100.0 * rss / memory_limit_bytes if memory_limit_bytes else None,
        samples=len(weighted))


def _process_tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class ResourceSampler:
    """A thread that watches a process tree: it records CPU and memory about once a second, and checks
    memory every `check_interval` against the cap, calling `on_memory_exceeded(rss)` once when the cap is
    passed. One thread does both because both read the same tree."""

    def __init__(self, pid: int, *, memory_limit_bytes: int | None = None, interval: float = 1.0,
                 check_interval: float = 0.1, on_memory_exceeded: Callable[[int], None] | None = None,
                 max_samples: int = 86_400):
        self.pid = pid
        self.memory_limit_bytes = memory_limit_bytes
        self.interval = interval
        self.check_interval = check_interval
        self._on_memory_exceeded = on_memory_exceeded
        self._samples: collections.deque[ResourceSample] = collections.deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"resource-sampler-{pid}", daemon=True)
        self._root: psutil.Process | None = None
        # CPU seconds per process, keyed by (pid, create time) so that a reused pid is a new process.
        self._cpu_seen: dict[tuple[int, float], float] = {}
        self._cpu_at_last_sample: dict[tuple[int, float], float] = {}
        self._last_sample_at = 0.0
        self._interval_peak_rss = 0
        self._interval_processes = 0
        self.peak_rss_bytes = 0
        self.memory_exceeded = False

    def start(self) -> ResourceSampler:
        try:
            self._root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            self._root = None
        self._check()
        self._cpu_at_last_sample = dict(self._cpu_seen)
        self._last_sample_at = time.monotonic()
        self._interval_peak_rss = 0
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching, after one last check and a last (shorter) sample."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def samples(self) -> list[ResourceSample]:
        with self._lock:
            return list(self._samples)

    def usage(self, start: float, end: float) -> ResourceUsage | None:
        return summarize(self.samples, start, end, self.memory_limit_bytes)

    def _run(self) -> None:
        next_sample = self._last_sample_at + self.interval
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.check_interval)
            # A watchdog that died on one odd reading would leave the memory cap unenforced: log and go on.
            try:
                self._check()
                if stopping or time.monotonic() >= next_sample:
                    self._record()
                    next_sample = max(next_sample + self.interval, time.monotonic() + self.check_interval)
            except Exception:
                log.exception("sampling process tree %d failed", self.pid)

    def _check(self) -> None:
        processes = _process_tree(self._root) if self._root else []
        rss = 0
        alive = 0
        for process in processes:
            try:
                with process.oneshot():
                    memory = process.memory_info()
                    cpu = process.cpu_times()
                    key = (process.pid, process.create_time())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += memory.rss
            alive += 1
            # children_user/children_system are left out: they reappear there when a child is reaped,
            # after its time was already counted while it ran.
            self._cpu_seen[key] = cpu.user + cpu.system
        self._interval_peak_rss = max(self._interval_peak_rss, rss)
        self._interval_processes = max(self._interval_processes, alive)
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        if self.memory_limit_bytes is not None and rss > self.memory_limit_bytes and not self.memory_exceeded:
            self.memory_exceeded = True
            if self._on_memory_exceeded:
                self._on_memory_exceeded(rss)

    def _record(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_sample_at
        if elapsed <= 0:
            return
        # A process first seen in this interval counts from zero: it was started after the last sample.
        cpu_seconds = sum(seconds - self._cpu_at_last_sample.get(key, 0.0) for key, seconds in self._cpu_seen.items())
        if self._interval_processes:
            limit = self.memory_limit_bytes
            sample = ResourceSample(
                at=now, interval_seconds=elapsed, cpu_percent=max(0.0, 100.0 * cpu_seconds / elapsed),
                rss_bytes=self._interval_peak_rss,
                memory_percent=100.0 * self._interval_peak_rss / limit if limit else None,
                processes=self._interval_processes)
            with self._lock:
                self._samples.append(sample)
        # Processes that ended are dropped once their last CPU seconds have been counted.
        self._cpu_at_last_sample = dict(self._cpu_seen)
        self._cpu_seen = {}
        self._last_sample_at = now
        self._interval_peak_rss = 0
        self._interval_processes = 0


# Servers still running when the interpreter exits normally are stopped (PR_SET_PDEATHSIG covers the rest).
_running: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_running_servers() -> None:
    for server in list(_running):
        server.stop(grace_seconds=1.0)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ServerProcess:
    """One model server process (tree) for one configuration.

        server = ServerProcess(["mlserver", "start", "/models/fraud"], cpus=(0,), memory_limit_bytes=2 * GIB,
                               environment={"OMP_NUM_THREADS": "1"}, port_env="MLSERVER_HTTP_PORT",
                               ready_path="/v2/models/fraud/ready").start()
        try:
            setup = server.wait_until_ready(timeout=120)   # raises ServerFailed with the reason
            ...  # load test against server.url("/invocations"); server.sampler.usage(t0, t1)
            if server.failure_reason(): ...
        finally:
            server.stop()
    """

    def __init__(self, command: Sequence[str], *, cpus: Sequence[int], memory_limit_bytes: int | None = None,
                 environment: Mapping[str, str] | None = None, port: int | None = None,
                 port_env: str | None = None, ready_path: str = "/ping", name: str = "the model server",
                 cwd: str | os.PathLike | None = None, base_environment: Mapping[str, str] | None = None,
                 sample_interval: float = 1.0, memory_check_interval: float = 0.1):
        if not command:
            raise ValueError("the server command is empty")
        if not cpus:
            raise ValueError("the server needs at least one CPU")
        self.command = tuple(command)
        self.cpus = tuple(sorted(set(cpus)))
        self.memory_limit_bytes = memory_limit_bytes
        # The configuration's environment parameters go on top of the inherited environment, and the port
        # on top of both.
        self.environment = dict(os.environ if base_environment is None else base_environment)
        self.environment.update(environment or {})
        self.port = free_port() if port is None else port
        if port_env:
            self.environment[port_env] = str(self.port)
        self.ready_path = ready_path if ready_path.startswith("/") else "/" + ready_path
        self.name = name
        self.cwd = cwd
        self.sample_interval = sample_interval
        self.memory_check_interval = memory_check_interval
        self.setup_seconds: float | None = None
        self.forced_kill = False  # whether stop() had to send SIGKILL
        self.sampler: ResourceSampler | None = None
        self._popen: subprocess.Popen | None = None
        self._log_path: str | None = None
        self._final_output: str | None = None
        self._started_at = 0.0
        self._memory_failure: str | None = None
        self._stopping = False
        self._stop_lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        log_fd, self._log_path = tempfile.mkstemp(prefix="rightsizer-server-", suffix=".log")
        self._started_at = time.monotonic()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), ",".join(map(str, self.cpus)),
                 *self.command],
                env=self.environment, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log_fd,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        finally:
            os.close(log_fd)
        _running.add(self)
        self.sampler = ResourceSampler(
            self._popen.pid, memory_limit_bytes=self.memory_limit_bytes, interval=self.sample_interval,
            check_interval=self.memory_check_interval, on_memory_exceeded=self._memory_exceeded).start()
        return self

    def __enter__(self) -> ServerProcess:
        return self.start() if self._popen is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._require_started().pid

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path if path.startswith('/') else '/' + path}"

    @property
    def ready_url(self) -> str:
        return self.url(self.ready_path)

    @property
    def returncode(self) -> int | None:
        return self._require_started().poll()

    def _require_started(self) -> subprocess.Popen:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen

    # -- readiness -----------------------------------------------------------------------------------------

    def wait_until_ready(self, timeout: float = 120.0, poll_interval: float = 0.1) -> float:
        """Poll GET ready_path until it answers 2xx; return the setup time (start to ready) in seconds.

        Raises ServerFailed as soon as the server exits or passes its memory cap, or when `timeout` seconds
        pass, with the tail of its output in the reason.
        """
        popen = self._require_started()
        deadline = time.monotonic() + timeout
        last_answer = "no answer yet"
        while True:
            if popen.poll() is not None or self._memory_failure:
                if self._memory_failure:  # the watchdog's SIGKILL is on its way: report once it has landed
                    try:
                        popen.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                raise ServerFailed(self.failure_reason() or f"{self.name} stopped before it was ready")
            ready, last_answer = self._probe(max(0.05, min(1.0, deadline - time.monotonic())))
            if ready:
                self.setup_seconds = time.monotonic() - self._started_at
                return self.setup_seconds
            if time.monotonic() >= deadline:
                raise ServerFailed(f"{self.name} was not ready within {timeout:g} s (GET {self.ready_url}: "
                                   f"{last_answer}){self._output_suffix()}")
            time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))

    def _probe(self, timeout: float) -> tuple[bool, str]:
        # http.client rather than urllib: urllib would send loopback requests to an HTTP(S)_PROXY.
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            connection.request("GET", self.ready_path)
            response = connection.getresponse()
            response.read()
            return 200 <= response.status < 300, f"HTTP {response.status}"
        except ConnectionRefusedError:
            return False, "connection refused"
        except (OSError, http.client.HTTPException) as error:
            return False, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        finally:
            connection.close()

    # -- failure -------------------------------------------------------------------------------------------

    def _memory_exceeded(self, rss: int) -> None:
        self._memory_failure = (f"{self.name} exceeded its {format_bytes(self.memory_limit_bytes)} memory cap "
                                f"(peak {format_bytes(rss)})")
        if not self._stopping:
            self._signal_all(signal.SIGKILL, self._members())

    def failure_reason(self) -> str | None:
        """Why the server is no longer serving: it passed its memory cap, or it exited without being asked to.
        None while it runs, and after a stop() that ended it."""
        if self._memory_failure:
            return self._memory_failure
        code = self._require_started().poll()
        if code is None or self._stopping:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        when = "" if self.setup_seconds is not None else " before it was ready"
        return f"{self.name} {how}{when}{self._output_suffix()}"

    def output_tail(self, lines: int = 15, max_chars: int = 2000) -> str:
        """The last lines the server wrote to stdout and stderr."""
        if self._final_output is not None:
            text = self._final_output
        elif self._log_path:
            try:
                with open(self._log_path, "rb") as log:
                    log.seek(0, os.SEEK_END)
                    log.seek(max(0, log.tell() - 64 * 1024))
                    text = log.read().decode("utf-8", errors="replace")
            except OSError:
                text = ""
        else:
            text = ""
        tail = "\n".join(text.strip().splitlines()[-lines:])
        return tail[-max_chars:]

    def _output_suffix(self) -> str:
        tail = summarize_output(self.output_tail())
        return f"; output: {tail}" if tail else ""

    # -- stop ----------------------------------------------------------------------------------------------

    def _members(self) -> list[psutil.Process]:
        """The server and everything it started: its descendants, and whatever is still in its session
        (processes whose parent died are reparented and are no longer descendants)."""
        popen = self._require_started()
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(popen.pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = process
        except psutil.NoSuchProcess:
            pass
        for process in psutil.process_iter():
            try:
                if process.pid not in found and os.getsid(process.pid) == popen.pid:
                    found[process.pid] = process
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                continue
        return list(found.values())

    def _signal_all(self, sig: int, members: Iterable[psutil.Process]) -> None:
        try:
            os.killpg(self._require_started().pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for process in members:  # descendants that left the process group (setsid, setpgid)
            try:
                process.send_signal(sig)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def _wait_gone(self, members: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
        popen = self._require_started()
        others = [process for process in members if process.pid != popen.pid]
        deadline = time.monotonic() + timeout
        while True:
            popen.poll()
            alive = [process for process in others if _alive(process)]
            if popen.returncode is None:
                alive.append(psutil.Process(popen.pid))
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.05)

    def stop(self, grace_seconds: float = 5.0) -> None:
        """SIGTERM to the server and everything it started; SIGKILL to what is left after `grace_seconds`.
        Returns once all of it has exited. Idempotent."""
        if self._popen is None:
            return
        with self._stop_lock:
            if self._stopping and self._final_output is not None:
                return
            self._stopping = True
            if self.sampler:
                self.sampler.stop()
            members = self._members()
            self._signal_all(signal.SIGTERM, members)
            if self._wait_gone(members, grace_seconds):
                self.forced_kill = True
                members = [*self._members(), *members]  # and whatever was started during the grace period
                self._signal_all(signal.SIGKILL, members)
                self._wait_gone(members, 5.0)
            self._popen.wait()
            # A process whose parent died before it is reparented to us when we are PID 1 or a subreaper
            # (an operator container without an init); reap those, or they stay zombies.
            for process in members:
                if process.pid != self._popen.pid:
                    try:
                        os.waitpid(process.pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
            self._final_output = self.output_tail(lines=200, max_chars=20_000)
            if self._log_path:
                try:
                    os.unlink(self._log_path)
                except OSError:
                    pass
            _running.discard(self)
