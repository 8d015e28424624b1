"""The kubernetes backend's experiment run: every configuration of a RightsizeJob as real cluster work (plan.py says
what the objects are and how to read them; this module makes the API calls).

For each configuration, up to spec.resourceLimit.maxParallelOfTests at once:
1. create the server Deployment and Service; wait until every replica is Ready (or the configuration fails with
   the scheduler's or the kubelet's reason, or at spec.kubernetes.readyTimeoutSeconds);
2. create the Locust master Job and its Service, then the workers' Job aimed at it; while the load runs, sample
   the server Pods' CPU and memory from their nodes' kubelet summary API (through the API server);
3. read the result from the master Pod's termination message, the node's instance type and allocatable, and
   delete the configuration's objects (and wait until its Pods are gone, so that the next one measures alone).

stop() deletes every object of the job and returns once they are asked to go. An interrupted configuration gets
no outcome, so a restarted operator runs it again (after deleting what the interrupted run left).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

from kubernetes import client
from kubernetes.client.rest import ApiException

from rightsizer import kube
from rightsizer.backends import search
from rightsizer.backends.inprocess import PROGRESS_TEXT_MAX, ExperimentRefused, duration_reason, job_deadline
from rightsizer.backends.kubernetes import plan as kplan
from rightsizer.backends.local.plan import ConfigurationOutcome, restored_outcomes, traffic_pattern_of
from rightsizer.loadtest import distributed
from rightsizer.loadtest.load_generator import LoadResult, LoadTarget, LoadTestConfig, RunSettings, StopReason
from rightsizer.loadtest.load_shape import LoadShape
from rightsizer.model import Owner, Recommendation, StepFailure
from rightsizer.spec import RightsizeJobSpec, StoppingConditions

log = logging.getLogger(__name__)

POLL_S = 1.0
STATS_EVERY_S = 5.0  # the kubelet refreshes its figures every 10-15 s; sampling faster only repeats them
# After the load, how long to wait for the kubelet's next figures (its refresh is 10-15 s; cadvisor housekeeping).
STATS_SETTLE_S = 30.0
GONE_TIMEOUT_S = 120.0
# The load Jobs' activeDeadlineSeconds over the pattern's own wall-clock cap: image start and worker connection.
LOAD_DEADLINE_GRACE_S = 180
# A load generator Pod missing this long (not yet created, or deleted) ends the wait for its result.
MASTER_GONE_S = 60.0


class _Stopped(Exception):
    """stop() was called, or the job's duration ended: the configuration in flight gets no outcome."""


class KubernetesExperiment:
    def __init__(self, spec: RightsizeJobSpec, job_name: str, owner: Owner, api: client.ApiClient, *, image: str,
                 completed: Mapping[str, Recommendation], failed: Iterable[StepFailure] = (),
                 job_started_at: datetime.datetime | None = None,
                 on_progress: Callable[[Any], None] | None = None,
                 on_outcome: Callable[[ConfigurationOutcome], None] | None = None,
                 before_run: Callable[[], None] | None = None,
                 runs: Iterable[Recommendation] = (),
                 on_run: Callable[[ConfigurationOutcome], None] | None = None):
        if not spec.model.kubernetes or spec.kubernetes is None:
            raise ExperimentRefused("spec.model.kubernetes and spec.kubernetes are required with backend kubernetes")
        self.spec, self.job_name, self.owner = spec, job_name, owner
        self.settings = spec.kubernetes
        self.image = image
        self.core, self.apps, self.batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
        self.plan = kplan.plan_experiment(spec, job_name)
        self.container = kplan.server_container(spec.model.kubernetes, image)
        self.pattern = traffic_pattern_of(spec)
        self.workers = kplan.worker_count(self.settings, self.pattern)
        self.job_started_at = job_started_at
        self._restored = restored_outcomes(self.plan, completed, failed)
        # spec.search Adaptive's probes from an earlier run (status.progress.runs): not run again.
        planned_ids = {p.recommendation_id for p in self.plan}
        self._restored_probes = {r.recommendation_id: r for r in runs if r.probe and r.recommendation_id in planned_ids}
        self._on_progress, self._on_outcome, self._before_run = on_progress, on_outcome, before_run
        self._on_run = on_run
        self._stop = threading.Event()
        self.run_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._current: dict[int, str] = {}  # what each configuration in flight is doing
        self._finished = len(self._restored)
        self.end_reason: str | None = None

    @property
    def restored(self) -> tuple[ConfigurationOutcome, ...]:
        return tuple(self._restored[p.recommendation_id] for p in self.plan if p.recommendation_id in self._restored)

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> list[ConfigurationOutcome]:
        outcomes = dict(self._restored)
        for planned in self.plan:
            if planned.skipped and planned.recommendation_id not in outcomes:
                self._record(outcomes, ConfigurationOutcome(planned, None, planned.skipped_reason, None))
        self._delete_objects(self._selector())  # what an interrupted run left: its configurations run again
        self._wait_pods_gone(self._selector())
        deadline = job_deadline(self.spec.job_duration_seconds, self.job_started_at)
        parallel = kplan.parallel_tests(self.spec)
        probes = dict(self._restored_probes)
        # Trials that ended without a result (stopped, or the job's duration): never started again by this run.
        abandoned: set[str] = set()
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel,
                                                   thread_name_prefix=f"k8s {self.job_name}") as pool:
            running: dict[concurrent.futures.Future[ConfigurationOutcome | None], search.Trial] = {}
            while True:
                while len(running) < parallel and not self._ended(deadline):
                    in_flight = {t.planned.recommendation_id for t in running.values()} | abandoned
                    step = search.next_step(self.plan, self.spec, search.State(
                        decided=set(outcomes), probes=probes, runs={}, measured={}, in_flight=in_flight))
                    for cut in step.cut:
                        self._record(outcomes, cut)
                    if step.cut:
                        continue
                    if step.trial is None:
                        break
                    if self._before_run is not None:
                        self._before_run()  # until status holds every result so far
                    if self._stop.is_set():
                        break
                    running[pool.submit(self._run_configuration, step.trial.planned, deadline,
                                        step.trial.probe)] = step.trial
                if not running:
                    break
                done, _ = concurrent.futures.wait(running, timeout=POLL_S,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    trial, outcome = running.pop(future), future.result()
                    if outcome is None:
                        abandoned.add(trial.planned.recommendation_id)
                    elif trial.probe and outcome.recommendation is not None:
                        probe = dataclasses.replace(outcome.recommendation, probe=True)
                        probes[trial.planned.recommendation_id] = probe
                        if self._on_run is not None:
                            self._on_run(dataclasses.replace(outcome, recommendation=probe))
                    else:
                        self._record(outcomes, outcome)
        if self._stop.is_set():
            self.end_reason = "stopped"
        elif len(outcomes) < len(self.plan):
            self.end_reason = duration_reason(self.spec.job_duration_seconds, len(self.plan) - len(outcomes))
        self._report()
        return sorted(outcomes.values(), key=lambda outcome: outcome.planned.index)

    def stop(self) -> None:
        """Start no other configuration, and delete every object this run made. Thread-safe, idempotent."""
        self._stop.set()
        self._delete_objects(f"{self._selector()},{kplan.RUN_LABEL}={self.run_id}")

    # -- one configuration -------------------------------------------------------------------------------------

    def _run_configuration(self, planned: kplan.PlannedConfiguration, deadline: float | None,
                           probe: bool = False) -> ConfigurationOutcome | None:
        selector = f"{self._selector(planned.index)},{kplan.RUN_LABEL}={self.run_id}"
        try:
            return self._measure(planned, deadline, probe)
        except _Stopped:
            return None
        except Exception as error:  # noqa: BLE001 - one configuration's surprise must not end the others
            if self._stop.is_set():
                return None
            log.exception("%s: measuring %s failed", self.job_name, planned.label)
            return ConfigurationOutcome(planned, None, f"the benchmark failed: {type(error).__name__}: "
                                                       f"{kube.api_message(error)}", None)
        finally:
            with self._lock:
                self._current.pop(planned.index, None)
            self._delete_objects(selector)
            self._wait_pods_gone(selector)

    def _measure(self, planned: kplan.PlannedConfiguration, deadline: float | None,
                 probe: bool = False) -> ConfigurationOutcome:
        namespace, index = self.owner.namespace, planned.index
        candidate = kplan.candidate_of(self.spec, planned)
        object_names = kplan.names(self.job_name, index)
        self._progress(planned, "creating the server")
        for body in kplan.server_objects(job_name=self.job_name, index=index, owner=self.owner,
                                         container=self.container, candidate=candidate,
                                         environment=planned.environment,
                                         pull_policy=self.settings.image_pull_policy,
                                         spread=kplan.parallel_tests(self.spec) > 1):
            self._create(body)
        # 1. the server
        server_selector = self._selector(index, kplan.SERVER)
        began = time.monotonic()
        while True:
            self._check(deadline)
            pods = [kplan.pod_view(p) for p in self._pods(server_selector)]
            verdict = kplan.judge_server(pods, candidate.replicas, waited_seconds=time.monotonic() - began,
                                         timeout_seconds=self.settings.ready_timeout_seconds)
            if verdict.state == kplan.FAILED:
                return ConfigurationOutcome(planned, None, verdict.detail, None)
            if verdict.state == kplan.READY:
                break
            self._progress(planned, f"starting the server: {verdict.detail}")
            time.sleep(POLL_S)
        setup = kplan.setup_seconds(pods)
        nodes = sorted({pod.node for pod in pods if pod.node})
        server_address = self.core.read_namespaced_service(object_names.server, namespace).spec.cluster_ip
        # 2. the load
        target = f"http://{server_address}:{self.container.port}{self.container.invoke_path}"
        remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
        payload = self.spec.model.kubernetes["payload"]
        # The workers read the payload themselves (a file in the image or the mounted ConfigMap); the target is the
        # ClusterIP of the Service made above, the one address written into the load Pods.
        # A probe of spec.search Adaptive runs the pattern compressed and stops sooner once flat.
        time_scale = search.probe_time_scale(self.spec.search, self.pattern.duration_seconds) if probe else 1.0
        settings = RunSettings(flat_levels=search.PROBE_FLAT_LEVELS) if probe else RunSettings()
        config = LoadTestConfig(
            LoadTarget(target, b"", payload.get("contentType", "text/csv"), payload_path=kplan.payload_path(payload),
                       loopback_only=False),
            self.pattern, self.spec.stopping_conditions or StoppingConditions(), settings, time_scale=time_scale,
            job_duration_s=None if remaining is None else remaining / time_scale)
        shape = LoadShape(self.pattern, time_scale=time_scale, job_duration_s=config.job_duration_s)
        load_deadline = int(config.settings.wall_cap_s(shape) + LOAD_DEADLINE_GRACE_S)
        config_json = config.to_json()
        objects = dict(job_name=self.job_name, index=index, owner=self.owner, settings=self.settings,
                       image=self.image, workers=self.workers, config_json=config_json,
                       payload=payload, deadline_seconds=load_deadline)
        for body in kplan.load_objects(master_address=None, **objects):
            self._create(body)
        master_address = self.core.read_namespaced_service(object_names.load, namespace).spec.cluster_ip
        for body in kplan.load_objects(master_address=master_address, **objects)[2:]:
            self._create(body)
        invocation_start = _utc_now()
        samples: list[kplan.StatsSample] = []
        server_pods = [pod.name for pod in pods]
        next_stats = 0.0
        master_selector = self._selector(index, kplan.LOAD_MASTER)
        load_began, seen_master = time.monotonic(), time.monotonic()
        while True:
            self._check(deadline, allow_running_past=True)
            if time.monotonic() >= next_stats:
                samples.extend(self._stats(nodes, server_pods))
                next_stats = time.monotonic() + STATS_EVERY_S
            masters = self._pods(master_selector)
            finished = kplan.load_finished([kplan.pod_view(p) for p in masters])
            if finished is not None:
                break
            if masters:
                seen_master = time.monotonic()
            elif time.monotonic() - seen_master > MASTER_GONE_S:
                # Deleted by someone else (its Job, or the namespace's objects): nothing will report a result.
                return ConfigurationOutcome(planned, None, f"the load generator's Pod disappeared for "
                                                           f"{MASTER_GONE_S:.0f} s before reporting a result", None)
            if time.monotonic() - load_began > load_deadline + LOAD_DEADLINE_GRACE_S:
                return ConfigurationOutcome(planned, None, f"the load test reported no result within "
                                                           f"{load_deadline + LOAD_DEADLINE_GRACE_S} s", None)
            self._progress(planned, f"{'probe' if probe else 'load test'} running with {self.workers} Locust "
                                    f"worker{'' if self.workers == 1 else 's'}")
            time.sleep(POLL_S)
        invocation_end = _utc_now()
        message, terminated = finished
        result = _decode(message, terminated)
        if result.stop_reason is StopReason.JOB_DURATION:
            raise _Stopped()  # cut short, its maximum is only what the first users reached
        started, ended = _window(result, terminated, invocation_start)
        samples.extend(self._samples_past(nodes, server_pods, samples, ended or invocation_end))
        # 3. the numbers
        node = self.core.read_node(nodes[0]) if nodes else None
        labels = (node.metadata.labels or {}) if node else {}
        allocatable = (node.status.allocatable or {}) if node else {}
        instance_type = kplan.node_instance_type(candidate, labels)
        notes: list[str] = [f"on node{'' if len(nodes) == 1 else 's'} {', '.join(nodes)}"]
        price = None
        if instance_type is None:
            notes.append("no instance type known (no node.kubernetes.io/instance-type): no cost")
        else:
            quote = kplan.node_price(instance_type, self.settings)
            share = kplan.node_share(candidate, allocatable)
            if quote.price is not None and share is not None:
                price = quote.price * share
                notes.append(f"{instance_type} at {quote.price:g}/h ({quote.source}) x {share:.3f} of the node "
                             f"per Pod")
            else:
                notes.append(f"no cost: {quote.source if quote.price is None else 'no CPU or memory request'}")
        usage = kplan.usage_over(samples, started, ended) if started and ended else None
        return kplan.measured_outcome(planned, kplan.Measured(
            result=result, setup_seconds=setup, usage=usage, replicas=candidate.replicas,
            price_per_pod_hour=price, memory_capacity_bytes=kplan.memory_capacity(candidate, allocatable),
            placement=kplan.placement_of(candidate),
            notes=tuple(notes), invocation_start=invocation_start, invocation_end=invocation_end),
            self.spec.stopping_conditions)

    # -- API calls ---------------------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while True:
            try:
                self._create_once(body)
                return
            except ApiException as error:
                # Ours from an interrupted attempt, still going away: wait until it is gone, then create it.
                if error.status != 409 or time.monotonic() >= deadline:
                    raise
            time.sleep(POLL_S)

    def _create_once(self, body: dict[str, Any]) -> None:
        namespace = self.owner.namespace
        body = kplan.with_run(body, self.run_id)
        if body["kind"] == "Deployment":
            self.apps.create_namespaced_deployment(namespace, body)
        elif body["kind"] == "Service":
            self.core.create_namespaced_service(namespace, body)
        elif body["kind"] == "Job":
            self.batch.create_namespaced_job(namespace, body)
        else:
            raise ValueError(f"no rule for creating a {body['kind']}")

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(self.owner.namespace, label_selector=selector,
                                                 _preload_content=False)
        pods: list[dict[str, Any]] = json.loads(response.data)["items"]
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def _samples_past(self, nodes: list[str], pods: list[str], samples: list[kplan.StatsSample],
                      end: datetime.datetime) -> list[kplan.StatsSample]:
        """Samples until every server Pod has one on each side of the load's end, for at most STATS_SETTLE_S."""
        more: list[kplan.StatsSample] = []
        deadline = time.monotonic() + STATS_SETTLE_S
        while True:
            more.extend(self._stats(nodes, pods))
            if kplan.samples_span_load([*samples, *more], pods, end) or time.monotonic() >= deadline \
                    or self._stop.is_set():
                return more
            time.sleep(POLL_S)

    def _stats(self, nodes: list[str], pods: list[str]) -> list[kplan.StatsSample]:
        samples: list[kplan.StatsSample] = []
        for node in nodes:
            try:
                response = self.core.connect_get_node_proxy_with_path(node, "stats/summary", _preload_content=False)
                samples.extend(kplan.stats_samples(json.loads(response.data), self.owner.namespace, pods))
            except (ApiException, ValueError) as error:  # no utilisation then, the measurement still counts
                log.warning("%s: no kubelet stats from node %s: %s", self.job_name, node, kube.api_message(error))
        return samples

    def _delete_objects(self, selector: str) -> None:
        namespace = self.owner.namespace
        # Background propagation: a Job deleted through the API orphans its Pods by default (batch/v1).
        options = client.V1DeleteOptions(propagation_policy="Background")
        try:
            for job in self.batch.list_namespaced_job(namespace, label_selector=selector).items:
                with _gone_is_fine():
                    self.batch.delete_namespaced_job(job.metadata.name, namespace, body=options)
            for deployment in self.apps.list_namespaced_deployment(namespace, label_selector=selector).items:
                with _gone_is_fine():
                    self.apps.delete_namespaced_deployment(deployment.metadata.name, namespace, body=options)
            for service in self.core.list_namespaced_service(namespace, label_selector=selector).items:
                with _gone_is_fine():
                    self.core.delete_namespaced_service(service.metadata.name, namespace, body=options)
        except ApiException as error:  # the owner references still remove them with the RightsizeJob
            log.warning("%s: deleting %s: %s", self.job_name, selector, kube.api_message(error))

    def _wait_pods_gone(self, selector: str) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if not self.core.list_namespaced_pod(self.owner.namespace, label_selector=selector).items:
                    return
            except ApiException:
                return
            time.sleep(POLL_S)
        log.warning("%s: Pods of %s still there after %.0f s", self.job_name, selector, GONE_TIMEOUT_S)

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _selector(self, index: int | None = None, role: str | None = None) -> str:
        parts = [f"{kplan.JOB_LABEL}={self.job_name}"]
        if index is not None:
            parts.append(f"{kplan.CONFIGURATION_LABEL}={index}")
        if role is not None:
            parts.append(f"{kplan.ROLE_LABEL}={role}")
        return ",".join(parts)

    def _ended(self, deadline: float | None) -> bool:
        return self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    def _check(self, deadline: float | None, allow_running_past: bool = False) -> None:
        # A running load test has the job's remaining time as its own duration: it ends itself at the deadline.
        if self._stop.is_set() or (not allow_running_past and deadline is not None and time.monotonic() >= deadline):
            raise _Stopped()

    def _record(self, outcomes: dict[str, ConfigurationOutcome], outcome: ConfigurationOutcome) -> None:
        outcomes[outcome.planned.recommendation_id] = outcome
        self._finished = len(outcomes)
        if outcome.failure_reason:
            log.info("%s: %s failed: %s", self.job_name, outcome.planned.label, outcome.failure_reason)
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the benchmarks
                log.exception("%s: the outcome callback failed", self.job_name)
        self._report()

    def _progress(self, planned: kplan.PlannedConfiguration, text: str) -> None:
        with self._lock:
            self._current[planned.index] = f"{planned.label}: {text}"
        self._report()

    def _report(self) -> None:
        if self._on_progress is None:
            return
        with self._lock:
            current = "; ".join(self._current[index] for index in sorted(self._current)) or None
        self._on_progress(_Progress(current[:PROGRESS_TEXT_MAX] if current else None))


class _Progress:
    __slots__ = ("current",)

    def __init__(self, current: str | None):
        self.current = current


def _decode(message: str, terminated: Mapping[str, Any] | None) -> LoadResult:
    if terminated is None:  # the Pod never started
        return LoadResult.without_measurements(StopReason.GENERATOR_ERROR, message)
    try:
        return distributed.decode_result(message)
    except (ValueError, KeyError, TypeError):
        return LoadResult.without_measurements(
            StopReason.GENERATOR_ERROR, f"the load generator ended with exit code {terminated.get('exitCode')} "
                                        f"({terminated.get('reason') or 'no reason'}) and no result: "
                                        f"{message.strip()[-400:] or 'no message'}")


def _window(result: LoadResult, terminated: Mapping[str, Any] | None,
            fallback_start: datetime.datetime) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The load test's window of maximum invocations in wall-clock time: the run began duration_s before the
    master's container finished (it exits right after writing its result)."""
    finished = kplan.parse_time((terminated or {}).get("finishedAt"))
    run_start = (finished - datetime.timedelta(seconds=result.duration_s)) if finished else fallback_start
    window = result.max_invocations_window_s or (0.0, result.duration_s)
    return (run_start + datetime.timedelta(seconds=window[0]), run_start + datetime.timedelta(seconds=window[1]))


@contextlib.contextmanager
def _gone_is_fine() -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        if error.status != 404:
            raise


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


__all__ = ["KubernetesExperiment"]
