"""The local backend's experiment run: every configuration of a RightsizeJob benchmarked on this host, one after
another, the way SageMaker Inference Recommender benchmarks every endpoint configuration of an Advanced job. What
runs, and how a load test becomes metrics, is decided in plan.py; this module starts and stops the processes.

Configurations run one at a time, in the order spec.search gives (every one, or an adaptive search's probes and
survivors: backends/search.py), whatever spec.resourceLimit.maxParallelOfTests says: the model server and the
load generator each need cores of their own (a load generator sharing the server's cores takes CPU time the
server would have used, so the server measures slower), and two benchmarks side by side would measure each other.
For each configuration, Experiment.run:
1. starts the model server (ServerProcess) pinned to the placement's CPUs, held to its memory cap, with the
   configuration's environment on top of the server's own settings, and waits for it to be ready; start to ready
   is ModelSetupTime;
2. load-tests it on 127.0.0.1 with plan.traffic_pattern_of(spec) and the spec's stoppingConditions, from a load
   generator pinned to the placement's load-generator CPUs;
3. reads the server's CPU and memory over the window that gave the maximum invocations, and stops the server.

Decisions:
- A crashed server, one that never became ready or passed its memory cap, and a failed load generator fail only
  their configuration, with the reason (the server's output tail is in ServerProcess's reasons).
- The load generator passing 90 % CPU (Locust's warning) does not fail a configuration, but its detail says
  that the maximum may be the generator's rather than the server's.
- spec.jobDurationInSeconds (x time_scale) counts from job_started_at, or from run() when it is not given: no
  configuration starts after it, and the running load test is cut at it. A server's start-up is not cut: it
  ends within SERVER_READY_TIMEOUT_S.
- stop() and the job duration leave the configuration in flight unfinished: it gets no outcome, so a restart
  runs it again. A finished run of a repeated configuration goes to on_run at once, and `runs` gives such runs
  back after a restart: none is run twice. before_run is called before every load test (the backend waits there
  until status holds what finished).

Threads: run() blocks; start and stop the experiment from one long-lived thread (ServerProcess ties a server's
life to the thread that started it). on_progress runs on run()'s thread and on the load generator's reader
thread; on_outcome runs on run()'s thread. stop() may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import rightsizer
from rightsizer.model import CurrentConfiguration, Recommendation, StepFailure
from rightsizer.backends import search
from rightsizer.backends.inprocess import PROGRESS_TEXT_MAX, ExperimentRefused, duration_reason, job_deadline
from rightsizer.backends.local.plan import (ConfigurationOutcome, PlannedConfiguration, max_invocations_window,
                                            measured_outcome, median_outcome, plan_experiment, restored_outcomes,
                                            traffic_pattern_of)
from rightsizer.loadtest.load_generator import LoadProgress, LoadTarget, LoadTest, RunSettings, StopReason
from rightsizer.loadtest.placement import HostFacts, PlacementError
from rightsizer.loadtest.server_process import ServerFailed, ServerProcess
from rightsizer.spec import RightsizeJobSpec

log = logging.getLogger(__name__)

# Real seconds, never scaled: loading a model takes as long in a compressed test as in a real one.
SERVER_READY_TIMEOUT_S = 120.0
SERVER_STOP_GRACE_S = 5.0
BUILT_IN_SERVER_MODULE = "rightsizer.reference.model_server"
BUILT_IN_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
class ExperimentError(ExperimentRefused):
    """The job cannot run on this host at all (not a problem of one configuration); the message says why."""


@dataclasses.dataclass(frozen=True)
class ExperimentProgress:
    completed: int
    total: int
    current: str | None  # what runs now, at most PROGRESS_TEXT_MAX characters; None between configurations
    configuration: PlannedConfiguration | None
    load: LoadProgress | None


# ---- run ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ServerCommand:
    command: tuple[str, ...]
    ready_path: str
    invoke_path: str
    port_env: str
    environment: Mapping[str, str]  # under the configuration's environment


def _server_command(local_model: Mapping[str, Any]) -> _ServerCommand:
    environment: dict[str, str] = {}
    if local_model.get("modelUri"):
        # A custom server may ignore it; the built-in one needs it.
        environment["RIGHTSIZER_MODEL_URI"] = local_model["modelUri"]
    server = local_model.get("server")
    if server:
        return _ServerCommand(tuple(server["command"]), server.get("readyPath", "/ping"),
                              server.get("invokePath", "/invocations"), server.get("portEnv", BUILT_IN_PORT_ENV),
                              environment)
    # The built-in server must import this package whether or not it is installed (a source checkout).
    package_root = str(Path(rightsizer.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return _ServerCommand((sys.executable, "-m", BUILT_IN_SERVER_MODULE), "/ping", "/invocations",
                          BUILT_IN_PORT_ENV, environment)


def _read_payload(local_model: Mapping[str, Any]) -> tuple[bytes, str]:
    payload = local_model.get("payload") or {}
    path = payload.get("path")
    if not path:
        raise ExperimentError("spec.model.local.payload.path is required: the request body every user sends")
    try:
        return Path(path).read_bytes(), payload.get("contentType") or "text/csv"
    except OSError as error:
        raise ExperimentError(f"cannot read spec.model.local.payload.path {path}: "
                              f"{error.strerror or error}") from error


class _LoadClock:
    """Maps the load generator's clock (seconds since its first tick) onto time.monotonic() here.

    Each progress message is received some delay after it was sent, so the smallest received-minus-elapsed is
    the closest estimate of when the load test's clock started."""

    def __init__(self):
        self.offset: float | None = None

    def observe(self, elapsed_s: float) -> None:
        offset = time.monotonic() - elapsed_s
        if self.offset is None or offset < self.offset:
            self.offset = offset


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Experiment:
    """Runs every planned configuration of one job on this host; see the module docstring."""

    def __init__(self, spec: RightsizeJobSpec, job_name: str, *, host: HostFacts | None = None,
                 time_scale: float = 1.0,
                 completed: Mapping[str, ConfigurationOutcome | Recommendation] = types.MappingProxyType({}),
                 on_progress: Callable[[ExperimentProgress], None] | None = None,
                 on_outcome: Callable[[ConfigurationOutcome], None] | None = None,
                 job_started_at: datetime.datetime | None = None,
                 failed: Iterable[StepFailure] = (),
                 runs: Iterable[Recommendation] = (),
                 on_run: Callable[[ConfigurationOutcome], None] | None = None,
                 before_run: Callable[[], None] | None = None,
                 baseline: CurrentConfiguration | None = None):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if not spec.model.local:
            raise ExperimentError("spec.model.local is required with spec.backend: local")
        self.spec = spec
        self.job_name = job_name
        self.time_scale = float(time_scale)
        self.repetitions = int((spec.local or {}).get("repetitions") or 1)
        self._run_number = 1
        self.job_started_at = job_started_at
        try:
            self.plan: tuple[PlannedConfiguration, ...] = tuple(
                plan_experiment(spec, job_name, host or HostFacts.detect(), baseline))
        except PlacementError as error:
            raise ExperimentError(str(error)) from error
        self._payload, self._content_type = _read_payload(spec.model.local)
        self._server_command = _server_command(spec.model.local)
        # Valid by construction (spec.parse made them), so nothing here can refuse them.
        self._traffic = traffic_pattern_of(spec)
        self._stopping = spec.stopping_conditions
        self._run_settings = RunSettings()
        self._target_invocations = spec.stopping_conditions.max_invocations if spec.stopping_conditions else None
        by_id = {planned.recommendation_id: planned for planned in self.plan}
        unknown = sorted(set(completed) - set(by_id))
        if unknown:
            log.warning("%s: finished configurations %s are not in the plan; ignored", job_name, ", ".join(unknown))
        self._restored = restored_outcomes(self.plan, completed, failed)
        # Finished repetitions of configurations not complete yet, and every probe (from an earlier run): not run
        # again.
        self._restored_runs: dict[str, list[ConfigurationOutcome]] = {}
        self._restored_probes: dict[str, Recommendation] = {}
        for finished_run in runs:
            planned = by_id.get(finished_run.recommendation_id)
            if planned is not None and finished_run.probe:
                self._restored_probes[finished_run.recommendation_id] = finished_run
            elif planned is not None and finished_run.recommendation_id not in self._restored:
                self._restored_runs.setdefault(finished_run.recommendation_id, []).append(
                    ConfigurationOutcome(planned, finished_run, None, None, "restored from an earlier run"))
        self._resources = {p.recommendation_id: search.Resources(p.placement.vcpus, p.placement.instance_memory_bytes,
                                                                 p.placement.price_per_hour)
                           for p in self.plan if p.placement is not None}
        self._on_progress = on_progress
        self._on_outcome = on_outcome
        self._on_run = on_run
        self._before_run = before_run
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._running_server: ServerProcess | None = None
        self._running_load: LoadTest | None = None
        self._started = False
        self._finished_count = len(self._restored)
        self.end_reason: str | None = None  # why run() returned before every configuration had an outcome
        # What the load tests of this run took (probes and full runs), for benchmarks/search.py.
        self.load_tests = 0
        self.load_seconds = 0.0

    @property
    def restored(self) -> tuple[ConfigurationOutcome, ...]:
        """The outcomes passed in as `completed` (finished before a restart), in plan order."""
        return tuple(self._restored[p.recommendation_id] for p in self.plan if p.recommendation_id in self._restored)

    @property
    def stopped(self) -> bool:
        return self._stop_requested.is_set()

    def stop(self) -> None:
        """Stop the load test and the server now running, and start no other configuration. Returns once both
        have exited (a few seconds at most: call it off an event loop). Thread-safe, idempotent.

        Not from on_progress: load progress arrives on the thread that must read the load test's final message,
        so stopping from there can make the stop wait for the load generator's kill timeout."""
        with self._lock:
            self._stop_requested.set()
            load, server = self._running_load, self._running_server
        if load is not None:
            load.stop()
        if server is not None:
            server.stop(grace_seconds=SERVER_STOP_GRACE_S)

    def run(self) -> list[ConfigurationOutcome]:
        """Run the configurations that have no outcome yet, in the order spec.search gives (backends/search.py);
        return every outcome (restored ones included) in plan order. Skipped configurations get theirs first."""
        with self._lock:
            if self._started:
                raise RuntimeError("an Experiment runs once")
            self._started = True
        deadline = self._deadline()
        outcomes = dict(self._restored)
        for planned in self.plan:
            if planned.skipped and planned.recommendation_id not in outcomes:
                self._record(outcomes, ConfigurationOutcome(planned, None, planned.skipped_reason, None))
        runs: dict[str, list[ConfigurationOutcome]] = {key: list(value) for key, value in self._restored_runs.items()}
        probes = dict(self._restored_probes)
        for recommendation_id in [key for key, value in runs.items() if len(value) >= self.repetitions]:
            self._record(outcomes, median_outcome(runs.pop(recommendation_id)[:self.repetitions],
                                                  self._target_invocations))
        try:
            while True:
                step = search.next_step(self.plan, self.spec, self._search_state(outcomes, runs, probes),
                                        self.repetitions)
                for cut in step.cut:
                    self._record(outcomes, cut)
                for recommendation_id, reason in step.finish.items():
                    measured = median_outcome(runs.pop(recommendation_id), self._target_invocations)
                    self._record(outcomes, dataclasses.replace(measured, detail=f"{reason}; {measured.detail}"))
                if step.cut or step.finish:
                    continue
                if step.trial is None:
                    break
                planned, self._run_number = step.trial.planned, step.trial.run_number
                if self.stopped:
                    self.end_reason = "stopped"
                    return self._sorted(outcomes)
                if deadline is not None and time.monotonic() >= deadline:
                    self.end_reason = self._duration_reason()
                    self._record_partial_runs(outcomes, runs)
                    return self._sorted(outcomes)
                if self._before_run is not None:
                    self._before_run()  # e.g. until status holds every finished run (the backend's barrier)
                    if self.stopped:
                        self.end_reason = "stopped"
                        return self._sorted(outcomes)
                outcome = self._run_configuration(planned, deadline, probe=step.trial.probe)
                if outcome is None:
                    if self.end_reason != "stopped":
                        self._record_partial_runs(outcomes, runs)
                    return self._sorted(outcomes)
                if outcome.recommendation is None:  # a failure is not worth repeating
                    runs.pop(planned.recommendation_id, None)  # nor are its earlier runs a result
                    self._record(outcomes, outcome)
                    continue
                if step.trial.probe:
                    probe = dataclasses.replace(outcome.recommendation, probe=True)
                    probes[planned.recommendation_id] = probe
                    if self._on_run is not None:
                        self._notify(self._on_run, dataclasses.replace(outcome, recommendation=probe))
                    continue
                runs.setdefault(planned.recommendation_id, []).append(outcome)
                if len(runs[planned.recommendation_id]) == self.repetitions:
                    self._record(outcomes, median_outcome(runs.pop(planned.recommendation_id),
                                                          self._target_invocations))
                elif self._on_run is not None:
                    self._notify(self._on_run, outcome)
        finally:
            self._report(None, None)
        return self._sorted(outcomes)

    def _search_state(self, outcomes: Mapping[str, ConfigurationOutcome],
                      runs: Mapping[str, list[ConfigurationOutcome]],
                      probes: Mapping[str, Recommendation]) -> search.State:
        measured = {rid: median_outcome(finished, self._target_invocations).recommendation
                    for rid, finished in runs.items() if finished}
        return search.State(decided=set(outcomes), probes=probes,
                            runs={rid: len(finished) for rid, finished in runs.items()},
                            measured={rid: r for rid, r in measured.items() if r is not None},
                            resources=self._resources)

    @staticmethod
    def _sorted(outcomes: Mapping[str, ConfigurationOutcome]) -> list[ConfigurationOutcome]:
        return sorted(outcomes.values(), key=lambda outcome: outcome.planned.index)

    def _record_partial_runs(self, outcomes: dict[str, ConfigurationOutcome],
                             runs: dict[str, list[ConfigurationOutcome]]) -> None:
        """The job duration ended the repetitions: what was measured still counts, as SageMaker's does."""
        for measured in runs.values():
            self._record(outcomes, median_outcome(measured, self._target_invocations))
        runs.clear()

    # -- one configuration --------------------------------------------------------------------------------------

    def _run_configuration(self, planned: PlannedConfiguration, deadline: float | None,
                           probe: bool = False) -> ConfigurationOutcome | None:
        """The configuration's outcome, or None when stop() or the job duration interrupted it."""
        placement = planned.placement
        self._report(planned, f"{planned.label}: starting the model server")
        command = self._server_command
        server = ServerProcess(command.command, cpus=placement.cpus, memory_limit_bytes=placement.memory_limit_bytes,
                               environment={**command.environment, **planned.environment},
                               port_env=command.port_env, ready_path=command.ready_path)
        try:
            with self._lock:
                if self.stopped:
                    self.end_reason = "stopped"
                    return None
                self._running_server = server
                server.start()
            return self._benchmark(planned, server, deadline, probe)
        except Exception as error:  # noqa: BLE001 - one configuration's surprise must not end the others
            if self.stopped:
                self.end_reason = "stopped"
                return None
            log.exception("%s: benchmarking %s failed", self.job_name, planned.label)
            return ConfigurationOutcome(planned, None, f"the benchmark failed: {type(error).__name__}: {error}",
                                        None)
        finally:
            with self._lock:
                self._running_server = None
                self._running_load = None
            server.stop(grace_seconds=SERVER_STOP_GRACE_S)

    def _benchmark(self, planned: PlannedConfiguration, server: ServerProcess,
                   deadline: float | None, probe: bool) -> ConfigurationOutcome | None:
        placement = planned.placement
        # A probe runs the pattern compressed (spec.search Adaptive); the job's own time_scale applies on top.
        time_scale = self.time_scale * (
            search.probe_time_scale(self.spec.search, self._traffic.duration_seconds) if probe else 1.0)
        settings = (dataclasses.replace(self._run_settings, flat_levels=search.PROBE_FLAT_LEVELS) if probe
                    else self._run_settings)
        try:
            setup_seconds = server.wait_until_ready(timeout=SERVER_READY_TIMEOUT_S)
        except ServerFailed as failure:
            if self.stopped:
                self.end_reason = "stopped"
                return None
            return ConfigurationOutcome(planned, None, failure.reason, None)
        job_duration_s = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.end_reason = self._duration_reason()
                return None
            job_duration_s = remaining / time_scale  # the load generator scales it back
        self._report(planned, f"{planned.label}: model server ready after {setup_seconds:.1f} s, starting the load")
        clock = _LoadClock()

        def on_load_progress(progress: LoadProgress) -> None:
            clock.observe(progress.elapsed_s)
            self._report(planned, self._load_text(planned, progress), progress)

        test = LoadTest(LoadTarget(server.url(self._server_command.invoke_path), self._payload, self._content_type),
                        self._traffic, self._stopping, cpus=placement.load_generator_cpus,
                        time_scale=time_scale, job_duration_s=job_duration_s, settings=settings,
                        on_progress=on_load_progress)
        with self._lock:
            if self.stopped:
                self.end_reason = "stopped"
                return None
            invocation_start = _utc_now()
            test.start()
            self._running_load = test
        try:
            result = test.wait()
        finally:
            test.stop()
        ended = time.monotonic()
        self.load_tests += 1
        self.load_seconds += result.duration_s
        invocation_end = _utc_now()
        if self.stopped and result.stop_reason is StopReason.CANCELLED:
            self.end_reason = "stopped"
            return None
        if result.stop_reason is StopReason.JOB_DURATION:
            # Cut short, its maximum is only what the first users reached: not a measurement of the configuration.
            self.end_reason = self._duration_reason()
            return None
        # Read before stopping: a stopped server has no failure to report.
        server_failure = server.failure_reason()
        server.stop(grace_seconds=SERVER_STOP_GRACE_S)
        start = clock.offset if clock.offset is not None else ended - result.duration_s
        usage = None
        window = max_invocations_window(result, self._run_settings.window_s)
        if window is not None:
            usage = server.sampler.usage(start + window[0], start + window[1])
        if usage is None:
            usage = server.sampler.usage(start, start + result.duration_s)
        return measured_outcome(planned, result, setup_seconds=setup_seconds, usage=usage,
                                stopping=self.spec.stopping_conditions, server_failure=server_failure,
                                invocation_start=invocation_start, invocation_end=invocation_end)

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        return job_deadline(self.spec.job_duration_seconds, self.job_started_at, self.time_scale)

    def _duration_reason(self) -> str:
        return duration_reason(self.spec.job_duration_seconds, len(self.plan) - self._finished_count)

    def _record(self, outcomes: dict[str, ConfigurationOutcome], outcome: ConfigurationOutcome) -> None:
        outcomes[outcome.planned.recommendation_id] = outcome
        self._finished_count = len(outcomes)
        if outcome.failure_reason:
            log.info("%s: %s failed: %s", self.job_name, outcome.planned.label, outcome.failure_reason)
        if self._on_outcome is not None:
            self._notify(self._on_outcome, outcome)
        self._report(None, None)

    def _notify(self, listener: Callable[[ConfigurationOutcome], None], outcome: ConfigurationOutcome) -> None:
        try:
            listener(outcome)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the benchmarks
            log.exception("%s: the outcome callback failed", self.job_name)

    @staticmethod
    def _load_text(planned: PlannedConfiguration, progress: LoadProgress) -> str:
        users = f"{progress.users} user{'' if progress.users == 1 else 's'}"
        text = f"{planned.label}: {progress.stage}, {users}, {progress.rps:.0f} req/s"
        if progress.p95_ms is not None:
            text += f", p95 {progress.p95_ms:.0f} ms"
        return text

    def _report(self, planned: PlannedConfiguration | None, current: str | None,
                load: LoadProgress | None = None) -> None:
        if self._on_progress is None:
            return
        if current and planned is not None and self._run_number == search.PROBE:
            current = f"probe: {current}"
        elif current and planned is not None and self.repetitions > 1:
            current = f"run {self._run_number}/{self.repetitions}: {current}"
        progress = ExperimentProgress(completed=self._finished_count, total=len(self.plan),
                                      current=current[:PROGRESS_TEXT_MAX] if current else None,
                                      configuration=planned, load=load)
        try:
            self._on_progress(progress)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the benchmarks
            log.exception("%s: the progress callback failed", self.job_name)


__all__ = ["Experiment", "ExperimentError", "ExperimentProgress"]
