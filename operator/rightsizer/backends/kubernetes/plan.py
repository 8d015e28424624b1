"""The kubernetes backend's experiment as pure functions: which configurations a RightsizeJob measures, the objects
each one is made of, how to read what the cluster reports about them, and the SageMaker-shaped metrics of a
finished load test. No API calls, no clock (experiment.py makes the calls).

A configuration is one spec.kubernetes.candidates entry (a node selector, the server Pods' resources, a replica
count) with one environment of the grid. It is made of, in the job's namespace and owned by the RightsizeJob (the
garbage collector removes whatever a crash left behind):
- a Deployment of the model server (`<prefix>-server`) and its ClusterIP Service (`<prefix>-server`);
- the Locust master, a Job of one Pod (`<prefix>-load`), behind a Service (`<prefix>-load`) for its workers;
- the Locust workers, a Job of N Pods (`<prefix>-workers`).
`<prefix>` is `rsz-<hash of the job name>-<index>`: deterministic, so a restarted operator finds what it made.

Results come back in the master Pod's termination message (at most 4096 bytes, kept by the kubelet in the Pod's
status: https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/): bounded, read
through the API the operator already watches, with no pod logs scraped and no extra RBAC for the load Pods.

Metrics:
- maxInvocations and modelLatency are the load test's (every replica together, the latency at the threshold's
  percentile over the window of the maximum); maxInvocationsPerInstance is one replica's share;
- cpuUtilization and memoryUtilization are the server Pods' over the load test, from the kubelet's summary API
  (cumulative CPU time between the samples nearest the window; working set): CPU summed over cores as
  SageMaker's CPUUtilization (150 = 1.5 cores busy), memory as a percent of the Pod's memory limit (else request);
- costPerHour is the node instance type's price (spec.kubernetes.pricePerHour, else the bundled catalog under the
  type's own name or as ml.<type>) times the share of the node one Pod requests (the larger of its CPU and memory
  shares), times the replicas the SLA needs; costPerInference is one replica's hourly cost over its throughput;
- initialInstanceCount is the replicas stoppingConditions.maxInvocations needs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from typing import Any, Iterable, Mapping, Sequence

from kubernetes.utils.quantity import parse_quantity

from rightsizer import pricing
from rightsizer.backends.local.plan import (ConfigurationOutcome, PlannedConfiguration, endpoint_metrics,
                                            reported_percentile, within_run_uncertainty)
from rightsizer.loadtest.load_generator import LoadResult, StopReason
from rightsizer.model import Owner, PodPlacement, Recommendation
from rightsizer.spec import (INSTANCE_TYPE_LABEL, KubernetesCandidate, KubernetesSettings, RightsizeJobSpec,
                             StoppingConditions, TrafficPattern, parameter_grid)

JOB_LABEL = "rightsizer.io/job"
CONFIGURATION_LABEL = "rightsizer.io/configuration"
ROLE_LABEL = "rightsizer.io/role"
# Which run of the job made an object: a run cleans up only its own, never a later run's (an operator that is
# shutting down while its successor has started the same configuration).
RUN_LABEL = "rightsizer.io/run"
SERVER, LOAD_MASTER, LOAD_WORKER = "server", "load-master", "load-worker"
MANAGED_BY = ("app.kubernetes.io/managed-by", "rightsizer")
OWNER_API_VERSION, OWNER_KIND = "rightsizer.io/v1alpha1", "RightsizeJob"
LOCUST_PORT = 5557  # Locust's default master port (docs.locust.io, configuration: --master-bind-port)
LOAD_TEST_ENV = "RIGHTSIZER_LOAD_TEST"
PAYLOAD_MOUNT = "/etc/rightsizer/payload"
REFERENCE_SERVER = ("python", "-m", "rightsizer.reference.model_server")
REFERENCE_PORT = 8080
REFERENCE_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_MAX_WORKERS = 10
# Waiting reasons of a container that will not start by waiting (kubelet's image and config errors).
HOPELESS_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                              "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# A server container that restarted this often while its load test had not begun is crash-looping.
CRASH_RESTARTS = 2


@dataclasses.dataclass(frozen=True)
class Names:
    server: str  # the Deployment and its Service
    load: str  # the Locust master Job and its Service
    workers: str  # the Locust workers Job


def names(job_name: str, index: int) -> Names:
    # A Service name is a DNS-1035 label (63 characters, a letter first): the job name may not fit in one.
    prefix = f"rsz-{hashlib.sha256(job_name.encode()).hexdigest()[:10]}-{index}"
    return Names(f"{prefix}-server", f"{prefix}-load", f"{prefix}-workers")


def plan_experiment(spec: RightsizeJobSpec, job_name: str) -> list[PlannedConfiguration]:
    """Every configuration of the job in a fixed order (candidates in spec order, each one's grid in order);
    those past spec.resourceLimit.maxNumberOfTests are skipped with the reason."""
    max_tests = (spec.resource_limit or {}).get("maxNumberOfTests")
    planned: list[PlannedConfiguration] = []
    for candidate in spec.candidates:
        for environment in parameter_grid(candidate):
            index = len(planned)
            reason = None
            if max_tests is not None and index >= max_tests:
                reason = (f"not tested: spec.resourceLimit.maxNumberOfTests is {max_tests}, and {max_tests} "
                          "configurations come before this one")
            planned.append(PlannedConfiguration(
                index=index, recommendation_id=f"{job_name}/{index:08d}", instance_type=candidate.instance_type or "",
                environment=dict(environment), placement=None, skipped_reason=reason))
    return planned


def settings_of(spec: RightsizeJobSpec) -> KubernetesSettings:
    if spec.kubernetes is None:
        raise ValueError("spec.kubernetes is required with spec.backend: kubernetes")
    return spec.kubernetes


def candidate_of(spec: RightsizeJobSpec, planned: PlannedConfiguration) -> KubernetesCandidate:
    return next(c for c in settings_of(spec).candidates if c.name == planned.instance_type)


def parallel_tests(spec: RightsizeJobSpec) -> int:
    return max(1, int((spec.resource_limit or {}).get("maxParallelOfTests") or 1))


# ---- objects ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerContainer:
    image: str
    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...] | None
    port: int
    ready_path: str
    invoke_path: str
    environment: Mapping[str, str]  # under the configuration's environment


def server_container(model: Mapping[str, Any], project_image: str) -> ServerContainer:
    server = model.get("server")
    if server:
        return ServerContainer(server["image"], tuple(server["command"]) if server.get("command") else None,
                               tuple(server["args"]) if server.get("args") else None, server.get("port", 8080),
                               server.get("readyPath", "/ping"), server.get("invokePath", "/invocations"), {})
    return ServerContainer(project_image, REFERENCE_SERVER, None, REFERENCE_PORT, "/ping", "/invocations",
                           # In a Pod the server is reached at the Pod's address, not loopback.
                           {"RIGHTSIZER_MODEL_URI": model["modelUri"], REFERENCE_PORT_ENV: str(REFERENCE_PORT),
                            "RIGHTSIZER_BIND_HOST": "0.0.0.0"})


def _labels(job_name: str, index: int, role: str) -> dict[str, str]:
    return {JOB_LABEL: job_name, CONFIGURATION_LABEL: str(index), ROLE_LABEL: role, MANAGED_BY[0]: MANAGED_BY[1]}


def with_run(body: dict[str, Any], run_id: str) -> dict[str, Any]:
    """`body` labelled with the run that makes it (on the object only: selectors and Pod templates stay stable)."""
    metadata = {**body["metadata"], "labels": {**body["metadata"]["labels"], RUN_LABEL: run_id}}
    return {**body, "metadata": metadata}


def _metadata(name: str, owner: Owner, labels: Mapping[str, str]) -> dict[str, Any]:
    # Owned by the RightsizeJob: whatever an operator crash leaves, the garbage collector removes with the job.
    return {"name": name, "namespace": owner.namespace, "labels": dict(labels),
            "ownerReferences": [{"apiVersion": OWNER_API_VERSION, "kind": OWNER_KIND, "name": owner.name,
                                 "uid": owner.uid, "controller": True}]}


def _resources(requests: Mapping[str, str], limits: Mapping[str, str]) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = dict(limits)
    return resources


_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def server_objects(*, job_name: str, index: int, owner: Owner, container: ServerContainer,
                   candidate: KubernetesCandidate, environment: Mapping[str, str], pull_policy: str,
                   spread: bool) -> list[dict[str, Any]]:
    """The configuration's Deployment and Service. With `spread`, its Pods stay off the nodes of the job's other
    configurations (required anti-affinity), so that parallel tests do not measure each other."""
    name = names(job_name, index).server
    labels = _labels(job_name, index, SERVER)
    env = [{"name": key, "value": value} for key, value in {**container.environment, **environment}.items()]
    main: dict[str, Any] = {
        "name": "server", "image": container.image, "imagePullPolicy": pull_policy, "env": env,
        "ports": [{"name": "http", "containerPort": container.port}],
        "readinessProbe": {"httpGet": {"path": container.ready_path, "port": container.port},
                           "periodSeconds": 1, "failureThreshold": 3},
        "resources": _resources(candidate.requests, candidate.limits),
        "securityContext": _SECURITY_CONTEXT,
    }
    if container.command:
        main["command"] = list(container.command)
    if container.args:
        main["args"] = list(container.args)
    pod_spec: dict[str, Any] = {"containers": [main], "enableServiceLinks": False,
                                "terminationGracePeriodSeconds": 5}
    if candidate.node_selector:
        pod_spec["nodeSelector"] = dict(candidate.node_selector)
    if spread:
        pod_spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {JOB_LABEL: job_name, ROLE_LABEL: SERVER},
                              "matchExpressions": [{"key": CONFIGURATION_LABEL, "operator": "NotIn",
                                                    "values": [str(index)]}]}}]}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(name, owner, labels),
        "spec": {"replicas": candidate.replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(name, owner, labels),
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "http", "port": container.port, "targetPort": container.port}]}}
    return [deployment, service]


def _load_pod(*, role: str, image: str, pull_policy: str, args: list[str], config_json: str,
              payload: Mapping[str, Any], settings: KubernetesSettings, job_name: str, index: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "locust", "image": image, "imagePullPolicy": pull_policy,
        "command": ["python", "-m", "rightsizer.loadtest.distributed", role], "args": args,
        "env": [{"name": LOAD_TEST_ENV, "value": config_json}],
        "resources": _resources(settings.load_generator.requests, settings.load_generator.limits),
        "securityContext": _SECURITY_CONTEXT, "terminationMessagePolicy": "File",
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "enableServiceLinks": False,
                           "terminationGracePeriodSeconds": 5,
                           # Off the server's nodes where the cluster has room: the generator must not take the
                           # server's CPU.
                           "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                               "weight": 100, "podAffinityTerm": {
                                   "topologyKey": "kubernetes.io/hostname",
                                   "labelSelector": {"matchLabels": {JOB_LABEL: job_name,
                                                                     CONFIGURATION_LABEL: str(index),
                                                                     ROLE_LABEL: SERVER}}}}]}}}
    if settings.load_generator.node_selector:
        pod["nodeSelector"] = dict(settings.load_generator.node_selector)
    reference = payload.get("configMapKeyRef")
    if reference and role == "worker":
        pod["volumes"] = [{"name": "payload", "configMap": {"name": reference["name"],
                                                           "items": [{"key": reference["key"], "path": "payload"}]}}]
        container["volumeMounts"] = [{"name": "payload", "mountPath": PAYLOAD_MOUNT, "readOnly": True}]
    return pod


def payload_path(payload: Mapping[str, Any]) -> str:
    """Where the workers read the request body: the image's file, or the ConfigMap key mounted for them."""
    return f"{PAYLOAD_MOUNT}/payload" if payload.get("configMapKeyRef") else payload["path"]


def load_objects(*, job_name: str, index: int, owner: Owner, settings: KubernetesSettings, image: str,
                 workers: int, config_json: str, payload: Mapping[str, Any], master_address: str | None,
                 deadline_seconds: int) -> list[dict[str, Any]]:
    """The Locust master's Job and Service, and, once the Service has its address (`master_address`), the workers'
    Job. Each Job ends by itself within `deadline_seconds` (activeDeadlineSeconds)."""
    object_names = names(job_name, index)
    master_labels = _labels(job_name, index, LOAD_MASTER)
    common = dict(image=image, pull_policy=settings.image_pull_policy, config_json=config_json, payload=payload,
                  settings=settings, job_name=job_name, index=index)
    master_pod = _load_pod(role="master", args=["--config-env", LOAD_TEST_ENV, "--expect-workers", str(workers),
                                                "--bind-port", str(LOCUST_PORT)], **common)
    master_pod["containers"][0]["ports"] = [{"name": "locust", "containerPort": LOCUST_PORT}]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(object_names.load, owner, master_labels),
         "spec": {"type": "ClusterIP", "selector": master_labels,
                  "ports": [{"name": "locust", "port": LOCUST_PORT, "targetPort": LOCUST_PORT}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(object_names.load, owner, master_labels),
         "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline_seconds,
                  "template": {"metadata": {"labels": master_labels}, "spec": master_pod}}},
    ]
    if master_address is not None:
        worker_labels = _labels(job_name, index, LOAD_WORKER)
        worker_pod = _load_pod(role="worker", args=["--config-env", LOAD_TEST_ENV, "--master-host", master_address,
                                                    "--master-port", str(LOCUST_PORT)], **common)
        objects.append(
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(object_names.workers, owner, worker_labels),
             "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline_seconds, "parallelism": workers,
                      "completions": workers,
                      "template": {"metadata": {"labels": worker_labels}, "spec": worker_pod}}})
    return objects


def worker_count(settings: KubernetesSettings, pattern: TrafficPattern) -> int:
    """spec.kubernetes.loadGenerator.workers, else one worker per usersPerWorker users at the pattern's peak (at
    most DEFAULT_MAX_WORKERS)."""
    if settings.load_generator.workers:
        return settings.load_generator.workers
    peak = (pattern.stairs.steps * pattern.stairs.users_per_step if pattern.stairs
            else max(phase.final_users for phase in pattern.phases))
    return max(1, min(DEFAULT_MAX_WORKERS, math.ceil(peak / settings.load_generator.users_per_worker)))


# ---- what the cluster says -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodView:
    """What of a Pod decides a configuration's fate."""

    name: str
    node: str | None
    phase: str
    ready: bool
    ready_since: datetime.datetime | None
    created: datetime.datetime | None
    started: datetime.datetime | None  # its container's start
    unschedulable: str | None  # the scheduler's message while the Pod cannot be placed
    waiting: tuple[str, str] | None  # (reason, message) of a container that has not started
    terminated: Mapping[str, Any] | None  # the container's last termination (exitCode, reason, message)
    restarts: int


def parse_time(text: str | None) -> datetime.datetime | None:
    """A time as the Kubernetes API writes it (metav1.Time, RFC 3339 in UTC)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """From a Pod as the API serves it (JSON)."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    scheduled = conditions.get("PodScheduled") or {}
    ready = conditions.get("Ready") or {}
    containers = status.get("containerStatuses") or []
    waiting = terminated = None
    started = None
    restarts = 0
    for container in containers:
        restarts += container.get("restartCount", 0)
        state = container.get("state") or {}
        if state.get("waiting") and waiting is None:
            waiting = (state["waiting"].get("reason") or "", state["waiting"].get("message") or "")
        ended = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
        if ended and terminated is None:
            terminated = ended
        if (state.get("running") or {}).get("startedAt"):
            started = parse_time(state["running"]["startedAt"])
    unschedulable = (scheduled.get("message") or "the scheduler cannot place it"
                     if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable" else None)
    return PodView(name=pod["metadata"]["name"], node=(pod.get("spec") or {}).get("nodeName"),
                   phase=status.get("phase") or "Pending", ready=ready.get("status") == "True",
                   ready_since=(parse_time(ready.get("lastTransitionTime")) if ready.get("status") == "True"
                                else None),
                   created=parse_time(pod["metadata"].get("creationTimestamp")), started=started,
                   unschedulable=unschedulable, waiting=waiting, terminated=terminated, restarts=restarts)


@dataclasses.dataclass(frozen=True)
class Verdict:
    state: str  # STARTING, READY or FAILED
    detail: str


STARTING, READY, FAILED = "Starting", "Ready", "Failed"


def _termination_text(terminated: Mapping[str, Any]) -> str:
    text = f"exit code {terminated.get('exitCode')}"
    if terminated.get("reason"):
        text += f" ({terminated['reason']})"
    if terminated.get("message"):
        text += f": {str(terminated['message']).strip()[-400:]}"
    return text


def judge_server(pods: Sequence[PodView], replicas: int, *, waited_seconds: float,
                 timeout_seconds: float) -> Verdict:
    """Whether a configuration's server is Ready (every replica), failed (an image that cannot be pulled, a
    container that cannot be created or keeps crashing, not Ready within the timeout), or still starting."""
    for pod in pods:
        if pod.waiting and pod.waiting[0] in HOPELESS_WAITING:
            return Verdict(FAILED, f"the server Pod {pod.name} cannot start: {pod.waiting[0]}: {pod.waiting[1]}")
        if pod.restarts >= CRASH_RESTARTS and pod.terminated:
            return Verdict(FAILED, f"the server container keeps exiting ({pod.restarts} restarts), last "
                                   f"{_termination_text(pod.terminated)}")
    ready = [pod for pod in pods if pod.ready]
    if len(ready) >= replicas:
        return Verdict(READY, f"{len(ready)} of {replicas} server Pods Ready")
    if waited_seconds < timeout_seconds:
        return Verdict(STARTING, _starting_text(pods, replicas, len(ready)))
    unschedulable = next((pod for pod in pods if pod.unschedulable), None)
    if unschedulable is not None:
        return Verdict(FAILED, f"cannot be scheduled within spec.kubernetes.readyTimeoutSeconds "
                               f"({timeout_seconds:.0f} s): {unschedulable.unschedulable}")
    return Verdict(FAILED, f"not Ready within spec.kubernetes.readyTimeoutSeconds ({timeout_seconds:.0f} s): "
                           f"{_starting_text(pods, replicas, len(ready))}")


def _starting_text(pods: Sequence[PodView], replicas: int, ready: int) -> str:
    if not pods:
        return "no server Pod yet"
    pod = next((p for p in pods if not p.ready), pods[0])
    if pod.unschedulable:
        return f"{ready} of {replicas} server Pods Ready; {pod.name} unschedulable: {pod.unschedulable}"
    if pod.waiting:
        return f"{ready} of {replicas} server Pods Ready; {pod.name} {pod.waiting[0] or 'waiting'}"
    return f"{ready} of {replicas} server Pods Ready"


def setup_seconds(pods: Sequence[PodView]) -> float | None:
    """Container start to Ready, the slowest replica's: ModelSetupTime (image pull and scheduling excluded)."""
    spans = [(pod.ready_since - pod.started).total_seconds() for pod in pods
             if pod.ready_since is not None and pod.started is not None]
    return max(0.0, max(spans)) if spans else None


def load_finished(pods: Sequence[PodView]) -> tuple[str, Mapping[str, Any] | None] | None:
    """The Locust master's end: (message, termination) once its container terminated, None while it runs.
    A Pod that will never start (image, config) ends it too, with the reason as the message."""
    for pod in pods:
        if pod.waiting and pod.waiting[0] in HOPELESS_WAITING:
            return f"the load generator Pod {pod.name} cannot start: {pod.waiting[0]}: {pod.waiting[1]}", None
        if pod.terminated is not None:
            return str(pod.terminated.get("message") or ""), pod.terminated
    return None


# ---- metrics ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StatsSample:
    """One Pod's cumulative CPU time and working set at one time, from the kubelet's summary API."""

    pod: str
    time: datetime.datetime
    cpu_core_nanoseconds: int
    working_set_bytes: int | None


def stats_samples(summary: Mapping[str, Any], namespace: str, pod_names: Iterable[str]) -> list[StatsSample]:
    """The samples of `pod_names` in a /stats/summary response (a Pod's CPU is its containers' sum)."""
    wanted = set(pod_names)
    samples = []
    for pod in summary.get("pods") or ():
        reference = pod.get("podRef") or {}
        if reference.get("namespace") != namespace or reference.get("name") not in wanted:
            continue
        cpu = pod.get("cpu") or {}
        memory = pod.get("memory") or {}
        if cpu.get("usageCoreNanoSeconds") is None or not cpu.get("time"):
            continue
        samples.append(StatsSample(reference["name"], parse_time(cpu["time"]),  # type: ignore[arg-type]
                                   int(cpu["usageCoreNanoSeconds"]), memory.get("workingSetBytes")))
    return samples


@dataclasses.dataclass(frozen=True)
class PodUsage:
    cpu_percent: float  # summed over cores, averaged over the replicas
    memory_bytes: int  # the largest working set seen
    seconds: float  # the span the CPU figure covers


def usage_over(samples: Sequence[StatsSample], start: datetime.datetime, end: datetime.datetime) -> PodUsage | None:
    """Each Pod's CPU between its two samples nearest `start` and `end` (the kubelet refreshes them every 10-15 s,
    so the span may be wider than the window), averaged over the Pods."""
    by_pod: dict[str, list[StatsSample]] = {}
    for sample in samples:
        by_pod.setdefault(sample.pod, []).append(sample)
    rates, spans, memory = [], [], []
    for pod_samples in by_pod.values():
        distinct = sorted({s.time: s for s in pod_samples}.values(), key=lambda s: s.time)
        if len(distinct) < 2:
            continue
        first = min(distinct[:-1], key=lambda s: abs((s.time - start).total_seconds()))
        last = min((s for s in distinct if s.time > first.time), key=lambda s: abs((s.time - end).total_seconds()))
        seconds = (last.time - first.time).total_seconds()
        rates.append((last.cpu_core_nanoseconds - first.cpu_core_nanoseconds) / 1e9 / seconds * 100)
        spans.append(seconds)
        memory.extend(s.working_set_bytes for s in distinct if s.working_set_bytes is not None)
    if not rates:
        return None
    return PodUsage(sum(rates) / len(rates), max(memory) if memory else 0, min(spans))


def samples_span_load(samples: Sequence[StatsSample], pod_names: Iterable[str], end: datetime.datetime) -> bool:
    """Whether every Pod has a sample from before `end` and one from at or after it: a load test shorter than the
    kubelet's refresh can otherwise end between two of them and leave no rate."""
    for pod in pod_names:
        times = {s.time for s in samples if s.pod == pod}
        if not any(t < end for t in times) or not any(t >= end for t in times):
            return False
    return True


def node_share(candidate: KubernetesCandidate, allocatable: Mapping[str, Any]) -> float | None:
    """The fraction of the node one server Pod blocks: the larger of its CPU and memory requests' shares of the
    node's allocatable (what the scheduler keeps others from)."""
    shares = []
    for resource in ("cpu", "memory"):
        requested, available = candidate.requests.get(resource), allocatable.get(resource)
        if requested is not None and available is not None and parse_quantity(available) > 0:
            shares.append(float(parse_quantity(requested) / parse_quantity(available)))
    return min(1.0, max(shares)) if shares else None


def node_price(instance_type: str, settings: KubernetesSettings) -> pricing.PriceQuote:
    """spec.kubernetes.pricePerHour, else the bundled catalog under the type's name or as SageMaker's ml.<type>."""
    overrides = dict(settings.price_per_hour)
    quote = pricing.price_per_hour(instance_type, overrides, override_field="spec.kubernetes.pricePerHour")
    if quote.price is None and not instance_type.startswith("ml."):
        sagemaker = pricing.price_per_hour(f"ml.{instance_type}")
        if sagemaker.price is not None:
            return pricing.PriceQuote(sagemaker.price, f"{sagemaker.source}, as ml.{instance_type}")
    return quote


def node_instance_type(candidate: KubernetesCandidate, node_labels: Mapping[str, str]) -> str | None:
    return candidate.priced_instance_type or node_labels.get(INSTANCE_TYPE_LABEL)


@dataclasses.dataclass(frozen=True)
class Measured:
    """What one configuration's run gave, for `measured_outcome`."""

    result: LoadResult
    setup_seconds: float | None
    usage: PodUsage | None
    replicas: int
    price_per_pod_hour: float | None
    memory_capacity_bytes: float | None
    placement: PodPlacement | None = None
    notes: tuple[str, ...] = ()
    invocation_start: datetime.datetime | None = None
    invocation_end: datetime.datetime | None = None


def measured_outcome(planned: PlannedConfiguration, measured: Measured,
                     stopping: StoppingConditions | None) -> ConfigurationOutcome:
    result = measured.result
    notes = [f"{result.stop_reason}: {result.detail}", *measured.notes]
    if result.cpu_warning:
        notes.append("a Locust worker passed 90 % CPU: the maximum may be the load generator's, not the server's "
                     "(set spec.kubernetes.loadGenerator.workers higher)")
    detail = "; ".join(notes)
    if result.failed or result.stop_reason is StopReason.CANCELLED:
        return ConfigurationOutcome(planned, None, f"the load test failed ({result.stop_reason}): {result.detail}",
                                    result, detail)
    percentile = reported_percentile(stopping.latency_threshold if stopping else None)
    if result.max_invocations_per_minute is not None:
        total, latency_ms = round(result.max_invocations_per_minute), result.window_latency_ms(percentile)
    else:  # even the lightest load broke the threshold: the measurement is the answer (as the local backend's)
        total, latency_ms = 0, result.run_latency_ms(percentile)
    if latency_ms is None:
        return ConfigurationOutcome(planned, None, f"no successful invocation ({result.stop_reason}: "
                                                   f"{result.detail})", result, detail)
    per_replica = total // measured.replicas
    count, scaled = endpoint_metrics(per_replica, stopping.max_invocations if stopping else None,
                                     measured.price_per_pod_hour)
    metrics: dict[str, float | int] = {**scaled, "modelLatency": math.ceil(latency_ms)}
    if measured.setup_seconds is not None:
        metrics["modelSetupTime"] = round(measured.setup_seconds)
    if measured.usage is not None:
        metrics["cpuUtilization"] = round(measured.usage.cpu_percent, 2)
        if measured.memory_capacity_bytes:
            metrics["memoryUtilization"] = round(100.0 * measured.usage.memory_bytes / measured.memory_capacity_bytes,
                                                 2)
    recommendation = Recommendation(
        recommendation_id=planned.recommendation_id, instance_type=planned.instance_type,
        initial_instance_count=count, environment=dict(planned.environment), metrics=metrics,
        invocation_start=measured.invocation_start, invocation_end=measured.invocation_end,
        placement=measured.placement, uncertainty=within_run_uncertainty(result, percentile))
    return ConfigurationOutcome(planned, recommendation, None, result, detail)


def placement_of(candidate: KubernetesCandidate) -> PodPlacement:
    return PodPlacement(dict(candidate.node_selector), dict(candidate.requests), dict(candidate.limits))


def memory_capacity(candidate: KubernetesCandidate, allocatable: Mapping[str, Any]) -> float | None:
    """What memoryUtilization is a percent of: the Pod's limit, else its request, else the node's allocatable."""
    for value in (candidate.limits.get("memory"), candidate.requests.get("memory"), allocatable.get("memory")):
        if value is not None:
            return float(parse_quantity(value))
    return None


__all__ = [
    "FAILED", "READY", "STARTING", "Measured", "Names", "PodUsage", "PodView", "ServerContainer", "StatsSample",
    "Verdict", "judge_server", "load_finished", "load_objects", "measured_outcome", "memory_capacity", "names",
    "node_instance_type", "node_price", "node_share", "parse_time", "placement_of", "plan_experiment", "pod_view", "server_container",
    "server_objects", "setup_seconds", "stats_samples", "usage_over", "worker_count",
]
