"""Spec -> the exact keyword arguments of `create_inference_recommendations_job` (and of
`get_scaling_configuration_recommendation` for the best configuration). Pure: no I/O.

The request is checked against botocore's SageMaker service model twice over: botocore's own validator
(required members, types, unknown keys, minimums) and `model_violations`, which adds what botocore's client
skips — patterns, enums and maximums — so nothing the service would refuse leaves the operator.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Mapping

import regex

from rightsizer.model import CurrentConfiguration, Owner, Recommendation
from rightsizer.naming import job_name_for
from rightsizer.spec import Autoscaling, RightsizeJobSpec

OPERATION = "CreateInferenceRecommendationsJob"
OWNER_TAG_KEYS = ("rightsizer.io/namespace", "rightsizer.io/name", "rightsizer.io/uid")

CONTAINER_CONFIG_KEYS = {
    "domain": "Domain", "task": "Task", "framework": "Framework", "frameworkVersion": "FrameworkVersion",
    "nearestModelName": "NearestModelName", "supportedInstanceTypes": "SupportedInstanceTypes",
    "supportedEndpointType": "SupportedEndpointType", "dataInputConfig": "DataInputConfig",
    "supportedResponseMIMETypes": "SupportedResponseMIMETypes",
}
SERVERLESS_KEYS = {"memorySizeInMB": "MemorySizeInMB", "maxConcurrency": "MaxConcurrency",
                   "provisionedConcurrency": "ProvisionedConcurrency"}


class RequestInvalid(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


# One botocore session for the process, used under this lock: its loader parses SageMaker's large service model
# once, for validation and for the clients alike (each new session would parse it again, ~25 MiB each).
BOTOCORE_LOCK = threading.Lock()


@functools.cache
def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def botocore_session() -> Any:
    with BOTOCORE_LOCK:
        return _botocore_session()


@functools.cache
def _load_service_model() -> Any:
    return _botocore_session().get_service_model("sagemaker")


def service_model() -> Any:
    # Loaded once: the first visits run on several worker threads at once, and each would parse the large model.
    with BOTOCORE_LOCK:
        return _load_service_model()


def _container_config(spec: RightsizeJobSpec) -> dict[str, Any] | None:
    raw = dict(spec.container_config or {})
    config: dict[str, Any] = {CONTAINER_CONFIG_KEYS[key]: value for key, value in raw.items()
                              if key in CONTAINER_CONFIG_KEYS}
    payload = raw.get("payloadConfig")
    if payload:
        config["PayloadConfig"] = {name: payload[key] for key, name in (
            ("samplePayloadUrl", "SamplePayloadUrl"), ("supportedContentTypes", "SupportedContentTypes"))
            if key in payload}
    if spec.job_type == "Default" and spec.candidates and "SupportedInstanceTypes" not in config:
        # A Default job chooses instance types itself; the shorthand list limits its search space.
        config["SupportedInstanceTypes"] = [c.instance_type for c in spec.candidates]
    return config or None


def _endpoint_configurations(spec: RightsizeJobSpec) -> list[dict[str, Any]]:
    configurations = []
    for candidate in spec.candidates:
        entry: dict[str, Any] = {}
        if candidate.instance_type:
            entry["InstanceType"] = candidate.instance_type
        if candidate.serverless:
            entry["ServerlessConfig"] = {SERVERLESS_KEYS[k]: v for k, v in candidate.serverless.items()}
        if candidate.inference_specification_name:
            entry["InferenceSpecificationName"] = candidate.inference_specification_name
        if candidate.parameter_ranges:
            entry["EnvironmentParameterRanges"] = {"CategoricalParameterRanges": [
                {"Name": name, "Value": list(values)} for name, values in candidate.parameter_ranges]}
        configurations.append(entry)
    return configurations


def _tags(spec: RightsizeJobSpec, owner: Owner) -> list[dict[str, str]]:
    tags = [{"Key": key, "Value": str(value)} for key, value in sorted((spec.sagemaker.get("tags") or {}).items())]
    return tags + [{"Key": key, "Value": value}
                   for key, value in zip(OWNER_TAG_KEYS, (owner.namespace, owner.name, owner.uid))]


def job_definition(spec: RightsizeJobSpec, owner: Owner, baseline: CurrentConfiguration | None = None) -> dict[str, Any]:
    """The request without its name: everything that defines the job. `baseline`: spec.baseline's configuration,
    whose endpoint is benchmarked beside the candidates."""
    settings = spec.sagemaker
    input_config: dict[str, Any] = {}
    if spec.model.model_package_version_arn:
        input_config["ModelPackageVersionArn"] = spec.model.model_package_version_arn
    if spec.model.model_name:
        input_config["ModelName"] = spec.model.model_name
    if spec.model.endpoint_name:
        input_config["Endpoints"] = [{"EndpointName": spec.model.endpoint_name}]
    elif baseline is not None and baseline.endpoint_name:
        # "Inference recommendation jobs run a set of load tests on recommended instance types and an existing
        # endpoint" (docs.aws.amazon.com/sagemaker/latest/dg/inference-recommender-existing-endpoint.html); botocore's
        # RecommendationJobInputConfig.Endpoints stands beside ModelPackageVersionArn and ModelName.
        input_config["Endpoints"] = [{"EndpointName": baseline.endpoint_name}]
    if spec.job_duration_seconds:
        input_config["JobDurationInSeconds"] = spec.job_duration_seconds
    container = _container_config(spec)
    if container:
        input_config["ContainerConfig"] = container
    if settings.get("volumeKmsKeyId"):
        input_config["VolumeKmsKeyId"] = settings["volumeKmsKeyId"]
    if settings.get("vpcConfig"):
        input_config["VpcConfig"] = {"SecurityGroupIds": list(settings["vpcConfig"]["securityGroupIds"]),
                                     "Subnets": list(settings["vpcConfig"]["subnets"])}
    request: dict[str, Any] = {"JobType": spec.job_type, "RoleArn": settings.get("roleArn")}
    if spec.job_type == "Advanced":
        # As the SageMaker SDK does: the load-test fields are sent only with an Advanced job.
        traffic = spec.traffic_pattern
        if traffic:
            pattern: dict[str, Any] = {"TrafficType": traffic.traffic_type}
            if traffic.phases:
                pattern["Phases"] = [{"InitialNumberOfUsers": p.initial_users, "SpawnRate": p.spawn_rate_per_minute,
                                      "DurationInSeconds": p.duration_seconds} for p in traffic.phases]
            if traffic.stairs:
                pattern["Stairs"] = {"DurationInSeconds": traffic.stairs.duration_seconds,
                                     "NumberOfSteps": traffic.stairs.steps,
                                     "UsersPerStep": traffic.stairs.users_per_step}
            input_config["TrafficPattern"] = pattern
        if spec.resource_limit:
            input_config["ResourceLimit"] = {name: spec.resource_limit[key] for key, name in (
                ("maxNumberOfTests", "MaxNumberOfTests"), ("maxParallelOfTests", "MaxParallelOfTests"))
                if key in spec.resource_limit}
        if spec.candidates:
            input_config["EndpointConfigurations"] = _endpoint_configurations(spec)
        stopping = spec.stopping_conditions
        if stopping:
            conditions: dict[str, Any] = {}
            if stopping.max_invocations is not None:
                conditions["MaxInvocations"] = stopping.max_invocations
            if stopping.latency_threshold:
                conditions["ModelLatencyThresholds"] = [{"Percentile": stopping.latency_threshold.percentile.name,
                                                         "ValueInMilliseconds": stopping.latency_threshold.milliseconds}]
            if stopping.flat_invocations:
                conditions["FlatInvocations"] = stopping.flat_invocations
            request["StoppingConditions"] = conditions
    request["InputConfig"] = input_config
    request["JobDescription"] = (spec.job_description or
                                 f"rightsizer: RightsizeJob {owner.namespace}/{owner.name}")[:128]
    output: dict[str, Any] = {}
    if settings.get("outputKmsKeyId"):
        output["KmsKeyId"] = settings["outputKmsKeyId"]
    if settings.get("compiledOutputConfig"):
        output["CompiledOutputConfig"] = {"S3OutputUri": settings["compiledOutputConfig"]["s3OutputUri"]}
    if output:
        request["OutputConfig"] = output
    request["Tags"] = _tags(spec, owner)
    return request


def build_request(spec: RightsizeJobSpec, owner: Owner, generation: int, current_name: str | None = None,
                  baseline: CurrentConfiguration | None = None) -> dict[str, Any]:
    """The full request, named by job_name_for."""
    definition = job_definition(spec, owner, baseline)
    request = {"JobName": job_name_for(definition, owner, generation, current_name), **definition}
    errors = model_violations(request)
    if errors:
        raise RequestInvalid(errors)
    return request


# -- GetScalingConfigurationRecommendation ------------------------------------------------------------------------

SCALING_OPERATION = "GetScalingConfigurationRecommendation"


def scaling_request(job_name: str, best: Recommendation, objective: Autoscaling) -> dict[str, Any]:
    """The request for `best` of job `job_name`: by its RecommendationId when Inference Recommender recommended it
    (or a status from before `recommended` existed says nothing), else by the endpoint it benchmarked (a benchmark
    step has no RecommendationId: its id here is made up). Raises RequestInvalid when the request would break the
    service model, or names neither."""
    request: dict[str, Any] = {"InferenceRecommendationsJobName": job_name}
    if best.recommended is not False and best.recommendation_id:
        request["RecommendationId"] = best.recommendation_id
    elif best.endpoint_name:
        request["EndpointName"] = best.endpoint_name
    else:
        raise RequestInvalid([f"{best.recommendation_id} has neither a RecommendationId of Inference Recommender's "
                              f"nor the name of the endpoint it benchmarked"])
    request["TargetCpuUtilizationPerCore"] = objective.target_cpu_utilization_per_core
    request["ScalingPolicyObjective"] = {"MinInvocationsPerMinute": objective.min_invocations_per_minute,
                                         "MaxInvocationsPerMinute": objective.max_invocations_per_minute}
    errors = model_violations(request, SCALING_OPERATION)
    if errors:
        raise RequestInvalid(errors)
    return request


# -- validation against the service model --------------------------------------------------------------------

def model_violations(request: Mapping[str, Any], operation: str = OPERATION) -> list[str]:
    """Everything the service model forbids in `request`: botocore's checks plus patterns, enums and maximums."""
    from botocore.validate import ParamValidator

    shape = service_model().operation_model(operation).input_shape
    report = ParamValidator().validate(dict(request), shape)
    errors = [line.strip() for line in report.generate_report().splitlines() if line.strip()] \
        if report.has_errors() else []
    _walk(request, shape, operation, errors)
    return errors


def _walk(value: Any, shape, path: str, errors: list[str]) -> None:
    metadata = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        for name, member in shape.members.items():
            if name in value:
                _walk(value[name], member, f"{path}.{name}", errors)
    elif kind == "list" and isinstance(value, list):
        _bounds(len(value), metadata, path, "items", errors)
        for index, item in enumerate(value):
            _walk(item, shape.member, f"{path}[{index}]", errors)
    elif kind == "map" and isinstance(value, Mapping):
        _bounds(len(value), metadata, path, "entries", errors)
        for key, item in value.items():
            _walk(key, shape.key, f"{path} key", errors)
            _walk(item, shape.value, f"{path}.{key}", errors)
    elif kind == "string" and isinstance(value, str):
        _bounds(len(value), metadata, path, "characters", errors)
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            errors.append(f"{path}: {value!r} is not one of the {len(enum)} values the service accepts")
        pattern = metadata.get("pattern")
        if pattern and not _compiled(pattern).fullmatch(value):
            errors.append(f"{path}: {value!r} does not match the service's pattern {pattern}")
    elif kind in ("integer", "long") and isinstance(value, int):
        _bounds(value, metadata, path, "", errors)


def _bounds(measure: int, metadata: Mapping[str, Any], path: str, unit: str, errors: list[str]) -> None:
    # botocore's own validator reports minimums; maximums are what it leaves out.
    unit = f" {unit}" if unit else ""
    if "max" in metadata and measure > metadata["max"]:
        errors.append(f"{path}: {measure}{unit} is above the service's maximum of {metadata['max']}")


@functools.cache
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)
