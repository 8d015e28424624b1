"""What each kind of target needs changed to serve a configuration.

Patch-in-place targets (a KServe InferenceService, any custom resource named by spec.promotion.fieldPaths) get
one server-side apply of the fields that carry the configuration. An ACK SageMaker Endpoint cannot be patched in
place: endpoint configs are immutable and the environment lives on the Model's container, so the ACK target
builds copies of the live Model and EndpointConfig with the new values, and the Endpoint is pointed at them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
from typing import Any, Mapping, Sequence

from rightsizer import pricing
from rightsizer.model import INVOCATIONS_PER_INSTANCE, CurrentConfiguration, PodPlacement, Scaling
from rightsizer.promotion import paths
from rightsizer.promotion.objects import (JOB_LABEL, MANAGED_BY_LABEL, KindRef, ObjectRef, ReadWorld, World,
                                          condition, condition_is)
from rightsizer.promotion.paths import MISSING, Keyed, Path
from rightsizer.promotion.reasons import Reason
from rightsizer.spec import FieldPaths, TargetRef

ACK_GROUP = "sagemaker.services.k8s.aws"
KSERVE_GROUP = "serving.kserve.io"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# ACK records each endpoint config name it has sent to UpdateEndpoint here (sagemaker-controller#92).
ACK_LAST_UPDATE_ANNOTATION = "sagemaker.services.k8s.aws/last-endpoint-config-for-update"
ACK_SYNCED, ACK_TERMINAL = "ACK.ResourceSynced", "ACK.Terminal"
# KServe predictor keys that hold the serving container (ModelSpec, or a legacy framework key).
KSERVE_CONTAINER_KEYS = ("model", "xgboost", "sklearn", "lightgbm", "pytorch", "tensorflow", "onnx", "triton",
                         "huggingface", "pmml", "paddle")
# A serving pod that owns the node leaves room for the kubelet, the system and daemonsets.
NODE_CPU_RESERVE_MILLIS = 250
NODE_MEMORY_SHARE = 0.85
_LOCAL_PROFILE = re.compile(r"^local-([1-9][0-9]*)cpu(?:-([1-9][0-9]*)gi)?$")
LOCAL_PROFILE_DEFAULT_GIB_PER_CPU = 2
# KServe's predictor autoscaling (ComponentExtensionSpec in pkg/apis/serving/v1beta1/component.go): the Knative Pod
# Autoscaler tracks `rps` (requests per second per replica); in raw (Standard) mode the HPA takes only cpu or memory,
# as a utilisation of the container's request.
KSERVE_DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KSERVE_RAW_MODES = ("RawDeployment", "Standard")


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One configuration as the target should serve it."""

    recommendation_id: str | None
    instance_type: str | None
    instance_count: int
    environment: Mapping[str, str]
    # The Neo compilation job whose artifacts were measured (status.best.compilationJobName); None: uncompiled.
    compilation_job_name: str | None = None
    # The kubernetes backend's node selector and resources the configuration was measured with.
    placement: PodPlacement | None = None
    # status.best.scaling, when spec.autoscaling asked for it and it has capacities (not a refusal).
    scaling: Scaling | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Configuration":
        """From status.best or a status.promotion entry."""
        count = row.get("initialInstanceCount", row.get("instanceCount"))
        scaling = Scaling.from_row(row["scaling"]) if row.get("scaling") else None
        return cls(row.get("recommendationId"), row.get("instanceType"), int(count or 1),
                   dict(row.get("environment") or {}), row.get("compilationJobName"),
                   PodPlacement.from_row(row.get("placement")),
                   scaling if scaling is not None and scaling.capacities is not None else None)

    def describe(self) -> str:
        if self.recommendation_id is None and self.instance_type is None and not self.environment:
            return "the configuration it had before"
        environment = ", ".join(f"{k}={v}" for k, v in sorted(self.environment.items()))
        what = f"{self.instance_type or 'unchanged instance type'} x{self.instance_count}"
        return f"{what} ({environment})" if environment else what

    def as_status(self) -> dict[str, Any]:
        row: dict[str, Any] = {"instanceCount": self.instance_count, "environment": dict(self.environment)}
        if self.recommendation_id:
            row["recommendationId"] = self.recommendation_id
        if self.instance_type:
            row["instanceType"] = self.instance_type
        return row


class TargetProblem(Exception):
    """The target cannot take this configuration; the message says why in the user's terms."""

    def __init__(self, reason: Reason, message: str, retry: bool = True):
        super().__init__(message)
        self.reason, self.message, self.retry = reason, message, retry


def kind_of(target: TargetRef) -> str:
    group = target.api_version.split("/")[0] if "/" in target.api_version else ""
    if group == ACK_GROUP and target.kind == "Endpoint":
        return "ack"
    if group == KSERVE_GROUP and target.kind == "InferenceService":
        return "kserve"
    return "generic"


# -- patch in place: KServe and generic -------------------------------------------------------------------------

def instance_resources(instance_type: str) -> tuple[int, int] | None:
    """(CPU millicores, memory bytes) a serving pod of this instance type requests, or None if unknown."""
    profile = _LOCAL_PROFILE.match(instance_type)
    if profile:
        cpus = int(profile.group(1))
        gib = int(profile.group(2) or cpus * LOCAL_PROFILE_DEFAULT_GIB_PER_CPU)
        return cpus * 1000, gib * 2**30
    size = pricing.instance_size(instance_type)
    if size is None:
        return None
    memory = int(size.memory_gib * 2**30 * NODE_MEMORY_SHARE) // 2**20 * 2**20
    return int(size.vcpus * 1000 - NODE_CPU_RESERVE_MILLIS), memory


def _quantities(instance_type: str) -> dict[str, Any] | None:
    resources = instance_resources(instance_type)
    if resources is None:
        return None
    millis, memory = resources
    cpu = f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"
    return {"cpu": cpu, "memory": f"{memory // 2**20}Mi"}


def kserve_container_path(live: Mapping[str, Any]) -> Path:
    """Where the predictor's serving container is: spec.predictor.model, a framework key, or the first of
    spec.predictor.containers."""
    predictor = (live.get("spec") or {}).get("predictor") or {}
    key = next((k for k in KSERVE_CONTAINER_KEYS if isinstance(predictor.get(k), Mapping)), None)
    if key is not None:
        return ("spec", "predictor", key)
    if predictor.get("containers"):
        return ("spec", "predictor", "containers", Keyed("name", predictor["containers"][0]["name"]))
    raise TargetProblem(Reason.UNSUPPORTED_TARGET, "InferenceService has no predictor container to configure "
                        "(spec.predictor.model, a framework key or spec.predictor.containers)", retry=False)


def kserve_assignments(live: Mapping[str, Any], configuration: Configuration) -> list[tuple[Path, Any]]:
    container_path = kserve_container_path(live)
    assignments = kserve_replicas(live, configuration)
    placement = configuration.placement
    if placement is not None:
        # Measured on the cluster's own nodes: the predictor gets exactly the Pods' place and size.
        for label, value in sorted(placement.node_selector.items()):
            assignments.append((("spec", "predictor", "nodeSelector", label), value))
        for side, quantities in (("requests", placement.requests), ("limits", placement.limits)):
            for resource, quantity in sorted(quantities.items()):
                assignments.append(((*container_path, "resources", side, resource), quantity))
    elif configuration.instance_type:
        if configuration.instance_type.startswith("ml."):
            # EC2 nodes carry the instance type without SageMaker's "ml." prefix.
            assignments.append((("spec", "predictor", "nodeSelector", INSTANCE_TYPE_LABEL),
                                configuration.instance_type[3:]))
        quantities = _quantities(configuration.instance_type)
        if quantities is None:
            raise TargetProblem(Reason.UNSUPPORTED_CONFIGURATION, f"no CPU and memory figures for instance type "
                                f"{configuration.instance_type}: cannot size the predictor", retry=False)
        for side in ("requests", "limits"):
            for resource, quantity in quantities.items():
                if side == "limits" and resource == "cpu":
                    continue  # a CPU limit only throttles a server that owns its node
                assignments.append(((*container_path, "resources", side, resource), quantity))
    for name, value in sorted(configuration.environment.items()):
        assignments.append(((*container_path, "env", Keyed("name", name), "value"), value))
    return assignments


def kserve_replicas(live: Mapping[str, Any], configuration: Configuration) -> list[tuple[Path, Any]]:
    """The predictor's replicas: the count measured, or with status.best.scaling its capacities and what the
    predictor's autoscaler tracks (KServe's scaleMetric and scaleTarget)."""
    predictor: Path = ("spec", "predictor")
    scaling = configuration.scaling
    capacities = scaling.capacities if scaling else None
    if scaling is None or capacities is None:
        return [((*predictor, "minReplicas"), configuration.instance_count)]
    assignments: list[tuple[Path, Any]] = [((*predictor, "minReplicas"), capacities[0]),
                                           ((*predictor, "maxReplicas"), capacities[1])]
    metadata, status = live.get("metadata") or {}, live.get("status") or {}
    mode = (metadata.get("annotations") or {}).get(KSERVE_DEPLOYMENT_MODE_ANNOTATION) or status.get("deploymentMode")
    if mode in KSERVE_RAW_MODES:
        # The HPA's CPU utilisation is of the request, which promotion sets to the measured instance's cores.
        return assignments + [((*predictor, "scaleMetric"), "cpu"),
                              ((*predictor, "scaleTarget"), scaling.objective.target_cpu_utilization_per_core)]
    per_minute = scaling.target(INVOCATIONS_PER_INSTANCE)
    if per_minute is None:
        return assignments  # nothing KServe's autoscaler can track: its own defaults stay
    # Invocations per minute per instance -> requests per second per replica, rounded down (scale out earlier).
    return assignments + [((*predictor, "scaleMetric"), "rps"),
                          ((*predictor, "scaleTarget"), max(1, math.floor(per_minute / 60)))]


def compiled_artifact_problem(kind: str, field_paths: FieldPaths | None, configuration: Configuration) -> str | None:
    """Why the target cannot be given the compiled model `configuration` was measured with, or None if it can (or
    nothing was compiled). The operator knows only the compilation job's name, not its artifact or image."""
    job = configuration.compilation_job_name
    if not job or (kind == "generic" and field_paths is not None and field_paths.compilation_job_name):
        return None
    keeps = {"ack": "an ACK Endpoint promotion copies the live Model, whose image and modelDataURL are the "
                    "uncompiled model's",
             "kserve": "a KServe promotion keeps the predictor's storageUri, the uncompiled model",
             "generic": "spec.promotion.fieldPaths has no compilationJobName to carry it"}[kind]
    return (f"{configuration.describe()} was measured on the model SageMaker Neo compiled in compilation job {job}, "
            f"and {keeps}: promoting it would serve a model other than the one measured. Deploy that job's "
            f"artifacts yourself, or use a generic target with spec.promotion.fieldPaths.compilationJobName")


def generic_assignments(field_paths: FieldPaths, configuration: Configuration) -> list[tuple[Path, Any]]:
    assignments: list[tuple[Path, Any]] = []
    if field_paths.instance_type and configuration.instance_type:
        assignments.append((paths.parse(field_paths.instance_type), configuration.instance_type))
    if field_paths.compilation_job_name and configuration.compilation_job_name:
        assignments.append((paths.parse(field_paths.compilation_job_name), configuration.compilation_job_name))
    if field_paths.instance_count:
        assignments.append((paths.parse(field_paths.instance_count), configuration.instance_count))
    capacities = configuration.scaling.capacities if configuration.scaling else None
    for where, value in ((field_paths.min_replicas, capacities[0] if capacities else None),
                         (field_paths.max_replicas, capacities[1] if capacities else None)):
        if where and value is not None:
            assignments.append((paths.parse(where), value))
    if field_paths.environment:
        base = paths.parse(field_paths.environment)
        assignments.extend(((*base, name), value) for name, value in sorted(configuration.environment.items()))
    return assignments


def restoring(live: Mapping[str, Any], assignments: Sequence[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """The same fields at their live values (MISSING where absent): applying them puts the target back."""
    return [(path, paths.get(live, path)) for path, _ in assignments]


def differences(live: Mapping[str, Any], assignments: Sequence[tuple[Path, Any]]) -> list[str]:
    out = []
    for path, value in assignments:
        current = paths.get(live, path)
        if current is MISSING or str(current) != str(value):
            out.append(f"{paths.render(path)}: {'unset' if current is MISSING else current} -> {value}")
    return out


def read_target(ref: ObjectRef, world: World, probed: bool = False) -> Mapping[str, Any]:
    """The target as `world` holds it, or the TargetProblem that the read ran into. `probed`: the read also
    dry-ran a patch of the target (World does not say which call failed, so the message names them all)."""
    what = ref.describe()
    ack = kind_of(TargetRef(ref.api_version, ref.kind, ref.name)) == "ack"
    if world.forbidden:
        if ack:
            raise TargetProblem(Reason.FORBIDDEN, f"the operator may not read or patch {what}: {world.error}; "
                                f"its ClusterRole must grant get and patch on Endpoints, and list, create, patch and "
                                f"delete on EndpointConfigs and Models, in {ref.api_version}, and list, create, patch and delete on "
                                f"ScalableTargets and ScalingPolicies in {AAS_API_VERSION}")
        raise TargetProblem(Reason.FORBIDDEN, f"the operator may not read {what}: {world.error}; grant its "
                            f"ServiceAccount get (and patch) on {ref.kind} in {ref.api_version}")
    if world.error:
        doing = (f"reading {what} and its ACK objects{', or the dry run of its patch,' if probed else ''}" if ack
                 else f"reading {what}")
        raise TargetProblem(Reason.TARGET_ERROR, f"{doing} failed: {world.error}")
    if (ref.api_version, ref.kind) in world.unserved:
        raise TargetProblem(Reason.TARGET_KIND_NOT_SERVED, f"the API server does not serve {ref.kind} in "
                            f"{ref.api_version} (is its CRD or controller installed?)")
    live = world.objects.get(ref)
    if live is None:
        raise TargetProblem(Reason.TARGET_NOT_FOUND, f"{what} does not exist in namespace {ref.namespace}")
    return live


def apply_document(target: ObjectRef, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": target.api_version, "kind": target.kind,
            "metadata": {"name": target.name, "namespace": target.namespace}, **body}


# -- ACK SageMaker Endpoint -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AckLive:
    """The Endpoint and the ACK objects behind its live configuration."""

    endpoint: Mapping[str, Any]
    config: Mapping[str, Any] | None
    variant: Mapping[str, Any] | None
    model: Mapping[str, Any] | None

    @property
    def config_name(self) -> str:
        return (self.endpoint.get("spec") or {}).get("endpointConfigName", "")

    def environment(self) -> dict[str, str]:
        container = _model_container(self.model) if self.model else None
        return dict((container or {}).get("environment") or {})

    def configuration(self, recommendation_id: str | None) -> dict[str, Any]:
        variant = self.variant or {}
        return {**({"recommendationId": recommendation_id} if recommendation_id else {}),
                "instanceType": variant.get("instanceType"), "instanceCount": int(variant.get("initialInstanceCount") or 1),
                "environment": self.environment(), "endpointConfigName": self.config_name,
                "modelName": variant.get("modelName"), "variantName": variant.get("variantName")}

    def realises(self, configuration: Configuration) -> bool:
        variant = self.variant or {}
        environment = self.environment()
        return (variant.get("instanceType") == configuration.instance_type
                and int(variant.get("initialInstanceCount") or 1) == configuration.instance_count
                and all(environment.get(k) == v for k, v in configuration.environment.items()))


def ack_reads(target: ObjectRef) -> tuple[tuple[ObjectRef, ...], tuple[KindRef, ...]]:
    return ((target,), (KindRef(target.api_version, "EndpointConfig", target.namespace),
                        KindRef(target.api_version, "Model", target.namespace)))


def by_sagemaker_name(objects: Sequence[Mapping[str, Any]], field: str, name: str | None) -> Mapping[str, Any] | None:
    """ACK objects name each other by their SageMaker names (spec.<kind>Name), not by metadata.name."""
    if not name:
        return None
    return next((o for o in objects if (o.get("spec") or {}).get(field) == name), None)


def ack_live(endpoint: Mapping[str, Any], configs: Sequence[Mapping[str, Any]], models: Sequence[Mapping[str, Any]],
             variant_hint: Sequence[str | None]) -> AckLive:
    """`variant_hint`: variant names in order of preference; each matches its own name, then the name a promotion
    gave it for a new instance count (variant_name_for). Without a match, the first variant."""
    config = by_sagemaker_name(configs, "endpointConfigName", (endpoint.get("spec") or {}).get("endpointConfigName"))
    variants = list(((config or {}).get("spec") or {}).get("productionVariants") or [])
    variant = next((v for hint in variant_hint if hint
                    for renamed in (False, True) for v in variants
                    if (_variant_base(v.get("variantName") or "") if renamed else v.get("variantName")) == hint),
                   variants[0] if variants else None)
    model = by_sagemaker_name(models, "modelName", (variant or {}).get("modelName"))
    return AckLive(endpoint, config, variant, model)


def object_name(target_name: str, owner_uid: str, attempt: int) -> str:
    """A Kubernetes name that is also a valid SageMaker name (<= 63, alphanumerics and hyphens), new for every
    attempt so that a name SageMaker or ACK refused is never tried again."""
    return f"{_name_base(target_name, owner_uid)}-{attempt}"


def _name_base(target_name: str, owner_uid: str) -> str:
    """<target>-rs<owner uid hash>: what every object rightsizer creates for one target and job starts with."""
    base = re.sub(r"[^a-z0-9-]", "-", target_name.lower()).strip("-")[:44].rstrip("-") or "endpoint"
    return f"{base}-rs{hashlib.sha256(owner_uid.encode()).hexdigest()[:5]}"


def _variant_base(name: str) -> str:
    return re.sub(r"-c[0-9]+$", "", name)


def variant_name_for(current: str, count: int) -> str:
    """ACK updates endpoints with RetainAllVariantProperties, which keeps a same-named variant's instance count:
    a new count needs a new variant name."""
    return f"{_variant_base(current)[:57]}-c{count}"


def _model_container(model: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    spec = (model or {}).get("spec") or {}
    if isinstance(spec.get("primaryContainer"), Mapping):
        return spec["primaryContainer"]
    containers = spec.get("containers") or []
    return containers[0] if containers else None


def _labels(job_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1], JOB_LABEL: job_name}


def model_copy(live: AckLive, name: str, environment: Mapping[str, str], job_name: str) -> dict[str, Any]:
    spec = copy.deepcopy(dict(live.model["spec"]))
    spec["modelName"] = name
    container_key = "primaryContainer" if isinstance(spec.get("primaryContainer"), Mapping) else "containers"
    container = spec[container_key] if container_key == "primaryContainer" else spec["containers"][0]
    container["environment"] = {**(container.get("environment") or {}), **environment}
    return {"apiVersion": live.model["apiVersion"], "kind": "Model",
            "metadata": {"name": name, "namespace": live.model["metadata"]["namespace"], "labels": _labels(job_name)},
            "spec": spec}


def config_copy(live: AckLive, name: str, configuration: Configuration, model_name: str | None,
                variant_name: str | None, job_name: str) -> dict[str, Any]:
    spec = copy.deepcopy(dict(live.config["spec"]))
    spec["endpointConfigName"] = name
    for variant in spec["productionVariants"]:
        if variant.get("variantName") == live.variant.get("variantName"):
            variant.update(variantName=variant_name, modelName=model_name,
                           instanceType=configuration.instance_type,
                           initialInstanceCount=configuration.instance_count)
    return {"apiVersion": live.config["apiVersion"], "kind": "EndpointConfig",
            "metadata": {"name": name, "namespace": live.config["metadata"]["namespace"], "labels": _labels(job_name)},
            "spec": spec}


def endpoint_patch(target: ObjectRef, config_name: str) -> dict[str, Any]:
    return apply_document(target, {"spec": {"endpointConfigName": config_name}})


def ack_serves(endpoint: Mapping[str, Any], config_name: str) -> bool:
    """SageMaker serves `config_name`, as ACK reports it. The Endpoint's spec naming it is not enough: after a
    failed update the spec keeps the refused name while SageMaker goes on serving the configuration before it.
    It is served once ACK's update to it is done, or when ACK created the Endpoint with it and never updated it
    (ACK writes its last-update annotation only when it sends an update) and the Endpoint is in service."""
    if ack_endpoint_verdict(endpoint, config_name)[0] == "done":
        return True
    status = endpoint.get("status") or {}
    annotations = (endpoint.get("metadata") or {}).get("annotations") or {}
    return (ACK_LAST_UPDATE_ANNOTATION not in annotations and not status.get("latestEndpointConfigName")
            and (endpoint.get("spec") or {}).get("endpointConfigName") == config_name
            and status.get("endpointStatus") == "InService" and not status.get("failureReason")
            and not condition_is(endpoint, ACK_TERMINAL, "True"))


def ack_endpoint_verdict(endpoint: Mapping[str, Any], config_name: str) -> tuple[str, str]:
    """('done' | 'failed' | 'waiting', what ACK and SageMaker say) for an Endpoint pointed at `config_name`."""
    status = endpoint.get("status") or {}
    annotations = (endpoint.get("metadata") or {}).get("annotations") or {}
    endpoint_status, failure = status.get("endpointStatus", "unknown"), status.get("failureReason")
    terminal = condition(endpoint, ACK_TERMINAL)
    terminal = terminal if terminal and terminal.get("status") == "True" else None
    sent = annotations.get(ACK_LAST_UPDATE_ANNOTATION) == config_name or status.get("latestEndpointConfigName") == config_name
    if not sent:
        # Until ACK has sent this config to UpdateEndpoint, a terminal condition or failure is the previous
        # update's (ACK keeps it until its next reconcile): shown, not judged.
        ack_says = f"; ACK reports: {terminal.get('message') or 'terminal'}" if terminal else ""
        return "waiting", f"waiting for ACK to send the update (endpointStatus {endpoint_status}{ack_says})"
    if terminal:
        return "failed", terminal.get("message") or failure or "ACK marked the Endpoint terminal"
    if endpoint_status in ("Failed", "UpdateRollbackFailed"):
        return "failed", failure or f"endpointStatus {endpoint_status}"
    if endpoint_status == "InService" and failure:
        # SageMaker rolls a failed update back and returns the endpoint to InService with the reason.
        return "failed", failure
    if endpoint_status == "InService" and condition_is(endpoint, ACK_SYNCED, "True"):
        return "done", "InService"
    return "waiting", f"endpointStatus {endpoint_status}"


# -- what the target serves now (spec.baseline) ------------------------------------------------------------------

def baseline_reads(ref: ObjectRef) -> ReadWorld:
    """What reading the target's current configuration takes: an ACK Endpoint with the EndpointConfigs and Models
    behind it, any other target alone."""
    if kind_of(TargetRef(ref.api_version, ref.kind, ref.name)) == "ack":
        return ReadWorld(*ack_reads(ref))
    return ReadWorld((ref,))


def current_configuration(ref: ObjectRef, world: World, field_paths: FieldPaths | None, variant_name: str | None,
                          variables: Sequence[str]) -> CurrentConfiguration:
    """What the target serves now, with the environment cut to `variables` (the ones the experiment varies), or
    the TargetProblem that keeps it from being read."""
    live = read_target(ref, world)
    kind = kind_of(TargetRef(ref.api_version, ref.kind, ref.name))
    if kind == "ack":
        return _ack_current(ref, world, live, variant_name, variables)
    if kind == "kserve":
        return _kserve_current(live, variables)
    return _generic_current(ref, live, field_paths or FieldPaths(), variables)


def _only(environment: Mapping[str, Any], variables: Sequence[str]) -> dict[str, str]:
    return {name: str(environment[name]) for name in variables if environment.get(name) is not None}


def _ack_current(ref: ObjectRef, world: World, endpoint: Mapping[str, Any], variant_name: str | None,
                 variables: Sequence[str]) -> CurrentConfiguration:
    what = ref.describe()
    configs = world.listings.get(KindRef(ref.api_version, "EndpointConfig", ref.namespace), ())
    models = world.listings.get(KindRef(ref.api_version, "Model", ref.namespace), ())
    live = ack_live(endpoint, configs, models, [variant_name])
    status = endpoint.get("status") or {}
    if not ack_serves(endpoint, live.config_name):
        failure = f": {status['failureReason']}" if status.get("failureReason") else ""
        raise TargetProblem(Reason.TARGET_ERROR, f"{what} is not steadily serving EndpointConfig "
                            f"{live.config_name or '(none)'} (endpointStatus {status.get('endpointStatus', 'unknown')}"
                            f"{failure}); what it serves is read once it is InService with it")
    if live.config is None:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"EndpointConfig {live.config_name}, which {what} serves, is not "
                            f"an ACK resource in namespace {ref.namespace}: its instance type and count cannot be read")
    variants = ((live.config.get("spec") or {}).get("productionVariants") or [])
    if len(variants) != 1 or live.variant is None:
        # Inference Recommender benchmarks endpoints of one variant only, and several are not one configuration.
        raise TargetProblem(Reason.UNSUPPORTED_TARGET, f"EndpointConfig {live.config_name}, which {what} serves, has "
                            f"{len(variants)} production variants; a baseline is an endpoint of exactly one")
    if live.model is None and variables:
        raise TargetProblem(Reason.SOURCE_NOT_FOUND, f"Model {live.variant.get('modelName')}, which {what} serves, is "
                            f"not an ACK resource in namespace {ref.namespace}: the environment the experiment varies "
                            f"({', '.join(variables)}) cannot be read")
    # What SageMaker runs now (status), else what the config asked for: ACK keeps a variant's count on updates.
    summary = next((v for v in status.get("productionVariants") or ()
                    if isinstance(v, Mapping) and v.get("variantName") == live.variant.get("variantName")), {})
    count = summary.get("currentInstanceCount") or live.variant.get("initialInstanceCount") or 1
    metadata = status.get("ackResourceMetadata") or {}
    arn_parts = str(metadata.get("arn") or "").split(":")
    region = metadata.get("region") or (arn_parts[3] if len(arn_parts) > 3 and arn_parts[3] else None)
    return CurrentConfiguration(live.variant.get("instanceType"), int(count), _only(live.environment(), variables),
                                endpoint_name=(endpoint.get("spec") or {}).get("endpointName"), region=region)


def _kserve_current(live: Mapping[str, Any], variables: Sequence[str]) -> CurrentConfiguration:
    predictor = (live.get("spec") or {}).get("predictor") or {}
    container = paths.get(live, kserve_container_path(live))
    environment = {e["name"]: e.get("value") for e in (container or {}).get("env") or ()
                   if isinstance(e, Mapping) and e.get("name")}
    label = (predictor.get("nodeSelector") or {}).get(INSTANCE_TYPE_LABEL)
    # Promotion writes an ml.* type's EC2 name into the node selector; read back, it is the SageMaker type again.
    instance_type = f"ml.{label}" if label and pricing.instance_size(f"ml.{label}") else label
    return CurrentConfiguration(instance_type, int(predictor.get("minReplicas") or 1), _only(environment, variables))


def _generic_current(ref: ObjectRef, live: Mapping[str, Any], field_paths: FieldPaths,
                     variables: Sequence[str]) -> CurrentConfiguration:
    def at(dotted: str | None) -> Any:
        value = paths.get(live, paths.parse(dotted)) if dotted else MISSING
        return None if value is MISSING else value

    instance_type, count, environment = (at(field_paths.instance_type), at(field_paths.instance_count),
                                         at(field_paths.environment))
    if instance_type is not None and not isinstance(instance_type, str):
        raise TargetProblem(Reason.UNSUPPORTED_TARGET, f"{ref.describe()} has {instance_type!r} at "
                            f"spec.promotion.fieldPaths.instanceType {field_paths.instance_type}, not an instance type")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise TargetProblem(Reason.UNSUPPORTED_TARGET, f"{ref.describe()} has {count!r} at "
                            f"spec.promotion.fieldPaths.instanceCount {field_paths.instance_count}, not a count")
    if environment is not None and not isinstance(environment, Mapping):
        raise TargetProblem(Reason.UNSUPPORTED_TARGET, f"{ref.describe()} has {environment!r} at "
                            f"spec.promotion.fieldPaths.environment {field_paths.environment}, not a string map")
    return CurrentConfiguration(instance_type, count or 1, _only(environment or {}, variables))


# -- ACK Application Auto Scaling (status.best.scaling on an ACK Endpoint) ---------------------------------------
# The ACK applicationautoscaling-controller's ScalableTarget and ScalingPolicy
# (https://aws-controllers-k8s.github.io/community/reference/applicationautoscaling/v1alpha1/scalabletarget/ and
# .../scalingpolicy/); a SageMaker variant is registered as described in
# https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-code-define.html. The operator calls no
# Application Auto Scaling API itself: ACK does, with its own IAM role.

AAS_API_VERSION = "applicationautoscaling.services.k8s.aws/v1alpha1"
SAGEMAKER_SERVICE_NAMESPACE = "sagemaker"
VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def scaling_kinds(namespace: str) -> tuple[KindRef, KindRef]:
    return (KindRef(AAS_API_VERSION, "ScalableTarget", namespace), KindRef(AAS_API_VERSION, "ScalingPolicy", namespace))


def variant_resource_id(endpoint: Mapping[str, Any], variant_name: str | None) -> str:
    """Application Auto Scaling's ResourceId of a SageMaker variant: endpoint/<endpoint-name>/variant/<variant>."""
    return f"endpoint/{(endpoint.get('spec') or {}).get('endpointName')}/variant/{variant_name}"


def scaling_name(target_name: str, owner_uid: str) -> str:
    """The ScalableTarget rightsizer keeps for one target (its ScalingPolicies are <name>-p<i>). One name per target,
    not per attempt: Application Auto Scaling holds one scalable target per variant, so two objects would fight."""
    return f"{_name_base(target_name, owner_uid)}-scaling"


def registers(obj: Mapping[str, Any], resource_id: str) -> bool:
    spec = obj.get("spec") or {}
    return (spec.get("serviceNamespace") == SAGEMAKER_SERVICE_NAMESPACE and spec.get("resourceID") == resource_id
            and spec.get("scalableDimension", VARIANT_DIMENSION) == VARIANT_DIMENSION)


def ours(obj: Mapping[str, Any], name: str) -> bool:
    """A ScalableTarget or ScalingPolicy rightsizer created for this target: its name and our label."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    own = metadata.get("name") == name or str(metadata.get("name", "")).startswith(f"{name}-p")
    return own and labels.get(MANAGED_BY_LABEL[0]) == MANAGED_BY_LABEL[1]


def scaling_bodies(namespace: str, name: str, resource_id: str, endpoint_name: str, variant_name: str,
                   scaling: Scaling, job_name: str) -> list[dict[str, Any]]:
    """The ScalableTarget, then one target-tracking ScalingPolicy per policy of `scaling`."""
    capacities = scaling.capacities or (1, 1)
    key = {"serviceNamespace": SAGEMAKER_SERVICE_NAMESPACE, "resourceID": resource_id,
           "scalableDimension": VARIANT_DIMENSION}
    metadata = {"namespace": namespace, "labels": _labels(job_name)}
    bodies: list[dict[str, Any]] = [{"apiVersion": AAS_API_VERSION, "kind": "ScalableTarget",
                                     "metadata": {"name": name, **metadata},
                                     "spec": {**key, "minCapacity": capacities[0], "maxCapacity": capacities[1]}}]
    for index, policy in enumerate(scaling.policies):
        configuration: dict[str, Any] = {"targetValue": policy.target_value}
        if policy.predefined_metric_type:
            configuration["predefinedMetricSpecification"] = {"predefinedMetricType": policy.predefined_metric_type}
        elif policy.customized_metric is not None:
            custom = policy.customized_metric
            configuration["customizedMetricSpecification"] = {
                **{k: v for k, v in (("metricName", custom.metric_name), ("namespace", custom.namespace),
                                     ("statistic", custom.statistic)) if v is not None},
                "dimensions": [{"name": "EndpointName", "value": endpoint_name},
                               {"name": "VariantName", "value": variant_name}]}
        else:
            continue
        for field, value in (("scaleInCooldown", scaling.scale_in_cooldown),
                             ("scaleOutCooldown", scaling.scale_out_cooldown)):
            if value is not None:
                configuration[field] = value
        bodies.append({"apiVersion": AAS_API_VERSION, "kind": "ScalingPolicy",
                       "metadata": {"name": f"{name}-p{index}", **metadata},
                       "spec": {**key, "policyName": f"{name}-p{index}", "policyType": "TargetTrackingScaling",
                                "targetTrackingScalingPolicyConfiguration": configuration}})
    return bodies
