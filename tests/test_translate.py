"""Spec -> create_inference_recommendations_job request: the samples against the seed's requests, job names,
Default vs Advanced, the camelCase -> PascalCase mapping, and the checks botocore's client leaves out.

Every request is also sent through botocore's Stubber on a real SageMaker client, so botocore's service model
(not this module) is what judges its shape.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
import yaml
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from rightsizer import cli, schema, spec as spec_module
from rightsizer.backends import registry
from rightsizer.backends.base import JobPlan, Submitted
from rightsizer.model import Owner
from rightsizer import naming
from rightsizer.backends.sagemaker import translate
from rightsizer.backends.sagemaker.client import RateLimiter, SageMakerBackend, use_client_factory

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"
RENDER_UID = "00000000-0000-0000-0000-000000000000"  # `rightsizer render`'s default --uid
ROLE = "arn:aws:iam::111122223333:role/SageMakerInferenceRecommender"
PACKAGE = "arn:aws:sagemaker:us-east-1:111122223333:model-package/credit-card-fraud/1"
JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,63}")  # RecommendationJobName in botocore's model
M5 = ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge"]

# The seed's Advanced request, SDK variant (spawn rate 2 in phase 2), with OMP_NUM_THREADS 3/4/5 as the sample has.
SEED_ADVANCED = {
    "JobType": "Advanced",
    "RoleArn": ROLE,
    "InputConfig": {
        "ModelPackageVersionArn": PACKAGE,
        "JobDurationInSeconds": 7200,
        "TrafficPattern": {"TrafficType": "PHASES", "Phases": [
            {"InitialNumberOfUsers": 2, "SpawnRate": 2, "DurationInSeconds": 120},
            {"InitialNumberOfUsers": 6, "SpawnRate": 2, "DurationInSeconds": 120}]},
        "ResourceLimit": {"MaxNumberOfTests": 10, "MaxParallelOfTests": 3},
        "EndpointConfigurations": [{"InstanceType": "ml.m5.4xlarge",
                                    "EnvironmentParameterRanges": {"CategoricalParameterRanges": [
                                        {"Name": "OMP_NUM_THREADS", "Value": ["3", "4", "5"]}]}}],
    },
    "StoppingConditions": {"MaxInvocations": 30000,
                           "ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 100}]},
}
SEED_DEFAULT = {"JobType": "Default", "RoleArn": ROLE, "InputConfig": {"ModelPackageVersionArn": PACKAGE}}


def owner_tags(namespace: str, name: str, uid: str = RENDER_UID) -> list[dict[str, str]]:
    return [{"Key": "rightsizer.io/namespace", "Value": namespace},
            {"Key": "rightsizer.io/name", "Value": name},
            {"Key": "rightsizer.io/uid", "Value": uid}]


def sample(name: str) -> dict:
    documents = schema.rightsize_jobs((SAMPLES / name).read_text())
    assert len(documents) == 1
    return documents[0]


def sample_spec(name: str, **changes) -> dict:
    raw = copy.deepcopy(sample(name)["spec"])
    raw.update(changes)
    return raw


def owner_of(document: dict, uid: str = RENDER_UID) -> Owner:
    return Owner(document["metadata"]["namespace"], document["metadata"]["name"], uid)


def render(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["render", str(path)])
    return code, out.getvalue(), err.getvalue()


def expected_name(request: dict, owner: Owner, generation: int = 1) -> str:
    """The name the request should carry: the owner's name, the hash of the rest of the request, the generation."""
    definition = {key: value for key, value in request.items() if key != "JobName"}
    return f"{owner.name}-{naming.definition_hash(definition, owner)}-g{generation}"


@pytest.fixture
def sagemaker():
    """A real SageMaker client under botocore's Stubber, injected as the backend's client."""
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.activate()
    use_client_factory(lambda region: client)
    yield client, stubber
    use_client_factory(None)
    stubber.deactivate()


def input_shape():
    return translate.service_model().operation_model("CreateInferenceRecommendationsJob").input_shape


def send(sagemaker, request: dict, owner: Owner) -> None:
    """Submit through the backend, with botocore's Stubber checking the request against the service model."""
    client, stubber = sagemaker
    arn = f"arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/{request['JobName']}"
    stubber.add_response("create_inference_recommendations_job", {"JobArn": arn}, expected_params=request)
    backend = SageMakerBackend("us-east-1", rate_limiter=RateLimiter(1000, 1000))
    spec = spec_module.parse({"backend": "sagemaker", "model": {"modelName": "m"}})  # the client reads only the request
    assert backend.submit(JobPlan(request["JobName"], spec, request), owner) == Submitted(arn)
    stubber.assert_no_pending_responses()


# -- the samples, rendered ---------------------------------------------------------------------------------------

def test_render_advanced_sample_is_the_seed_advanced_request(sagemaker):
    code, out, err = render(SAMPLES / "fraud-advanced.yaml")
    assert (code, err) == (0, "")
    request = json.loads(out)
    owner = Owner("ml", "fraud-advanced", RENDER_UID)
    assert request == {
        **SEED_ADVANCED,
        "JobName": expected_name(request, owner),
        "JobDescription": "rightsizer: RightsizeJob ml/fraud-advanced",
        "Tags": [{"Key": "team", "Value": "fraud"}] + owner_tags("ml", "fraud-advanced"),
    }
    assert re.fullmatch(r"fraud-advanced-[0-9a-f]{8}-g1", request["JobName"])
    validate_parameters(request, input_shape())
    assert translate.model_violations(request) == []
    send(sagemaker, request, owner)


def test_render_default_sample_is_the_seed_default_request_limited_to_the_five_m5_types(sagemaker):
    code, out, err = render(SAMPLES / "fraud-default.yaml")
    assert (code, err) == (0, "")
    request = json.loads(out)
    owner = Owner("ml", "fraud-default", RENDER_UID)
    assert request == {
        **SEED_DEFAULT,
        "JobName": expected_name(request, owner),
        "InputConfig": {"ModelPackageVersionArn": PACKAGE, "ContainerConfig": {"SupportedInstanceTypes": M5}},
        "JobDescription": "rightsizer: RightsizeJob ml/fraud-default",
        "Tags": owner_tags("ml", "fraud-default"),
    }
    validate_parameters(request, input_shape())
    assert translate.model_violations(request) == []
    send(sagemaker, request, owner)


@pytest.mark.parametrize("name, input_config", [
    ("fraud-existing-endpoint", {"Endpoints": [{"EndpointName": "fraud-staging"}]}),
    # With the package behind the endpoint, which supplies the sample payload and framework: both are sent.
    ("fraud-existing-endpoint-package", {"ModelPackageVersionArn": PACKAGE,
                                         "Endpoints": [{"EndpointName": "fraud-staging"}]}),
], ids=["endpoint", "endpoint-and-package"])
def test_render_existing_endpoint_samples_benchmark_the_endpoint(sagemaker, name, input_config):
    code, out, err = render(SAMPLES / f"{name}.yaml")
    assert (code, err) == (0, "")
    request = json.loads(out)
    owner = Owner("ml", name, RENDER_UID)
    assert request == {
        "JobName": expected_name(request, owner),
        "JobType": "Default",
        "RoleArn": ROLE,
        "InputConfig": input_config,
        "JobDescription": f"rightsizer: RightsizeJob ml/{name}",
        "Tags": owner_tags("ml", name),
    }
    validate_parameters(request, input_shape())
    assert translate.model_violations(request) == []
    send(sagemaker, request, owner)


def test_an_existing_endpoint_with_a_model_name_sends_both_and_the_container_config(sagemaker):
    raw = sample_spec("fraud-existing-endpoint.yaml", model={"endpointName": "fraud-staging", "modelName": "fraud-xgb"},
                      containerConfig={"domain": "MACHINE_LEARNING", "framework": "XGBOOST"})
    owner = Owner("ml", "fraud-existing-endpoint", RENDER_UID)
    request = translate.build_request(spec_module.parse(raw), owner, 1)
    assert request["InputConfig"] == {"ModelName": "fraud-xgb", "Endpoints": [{"EndpointName": "fraud-staging"}],
                                      "ContainerConfig": {"Domain": "MACHINE_LEARNING", "Framework": "XGBOOST"}}
    send(sagemaker, request, owner)


def test_render_local_sample_sends_no_sagemaker_request():
    code, out, err = render(SAMPLES / "fraud-local.yaml")
    assert code == 0
    assert err == f"{SAMPLES / 'fraud-local.yaml'}: fraud-local: backend local sends no SageMaker request\n"
    assert json.loads(out) == []


def test_render_as_a_module_with_a_uid():
    uid = "6f1b8a52-3c1e-4d2a-9f0e-0a1b2c3d4e5f"
    result = subprocess.run(
        [sys.executable, "-m", "rightsizer.cli", "render", str(SAMPLES / "fraud-default.yaml"), "--uid", uid],
        capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    request = json.loads(result.stdout)
    owner = Owner("ml", "fraud-default", uid)
    assert request["Tags"] == owner_tags("ml", "fraud-default", uid)
    assert request["JobName"] == expected_name(request, owner)
    _, default_out, _ = render(SAMPLES / "fraud-default.yaml")
    assert json.loads(default_out)["JobName"] != request["JobName"]


def test_render_reports_an_invalid_request_and_fails(tmp_path):
    document = sample("fraud-default.yaml")
    document["spec"]["sagemaker"]["tags"] = {"team": "fraud;ops"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out, err = render(path)
    assert code == 1
    assert out == ""
    # A file has met no API server: the CRD's own schema speaks first, naming the spec's field (the request's
    # service-model check, which would refuse the same tag, is tested on build_request above).
    assert err == (f"{path}: fraud-default: error: spec.sagemaker.tags.team: 'fraud;ops' does not match the "
                   r"pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$" + "\n")


# -- job names ----------------------------------------------------------------------------------------------------

OWNER = Owner("ml", "fraud-advanced", "3b9f0c55-2d7e-4c51-8a3e-1f2e3d4c5b6a")


def advanced(**changes) -> spec_module.RightsizeJobSpec:
    return spec_module.parse(sample_spec("fraud-advanced.yaml", **changes))


def test_job_name_is_deterministic_for_the_same_owner_and_definition():
    first = translate.build_request(advanced(), OWNER, 4)
    second = translate.build_request(advanced(), OWNER, 4)
    assert first == second
    assert first["JobName"] == expected_name(first, OWNER, 4)


def test_job_name_differs_by_uid():
    other = dataclasses.replace(OWNER, uid="9c0d4e1f-aaaa-bbbb-cccc-000000000001")
    mine, theirs = translate.build_request(advanced(), OWNER, 1), translate.build_request(advanced(), other, 1)
    assert naming.name_digest(mine["JobName"]) != naming.name_digest(theirs["JobName"])
    assert mine["JobName"].startswith("fraud-advanced-") and theirs["JobName"].startswith("fraud-advanced-")
    assert {k: v for k, v in mine.items() if k not in ("JobName", "Tags")} == \
        {k: v for k, v in theirs.items() if k not in ("JobName", "Tags")}


@pytest.mark.parametrize("edit", [
    {"selection": {"objective": "ModelLatency", "constraints": {"maxCostPerHour": 2.0}}},
    {"promotion": {"target": {"apiVersion": "sagemaker.services.k8s.aws/v1alpha1", "kind": "Endpoint",
                              "name": "fraud-endpoint-2"}, "mode": "Automatic"}},
    {"deletionPolicy": "Retain"},
], ids=["selection", "promotion", "deletionPolicy"])
def test_an_edit_that_does_not_define_the_job_keeps_the_current_name(edit):
    current = translate.build_request(advanced(), OWNER, 1)
    edited = translate.build_request(advanced(**edit), OWNER, 2, current_name=current["JobName"])
    assert edited == current
    assert edited["JobName"].endswith("-g1")
    # Without the current name the digest is the same; only the generation suffix would differ.
    fresh = translate.build_request(advanced(**edit), OWNER, 2)
    assert fresh["JobName"] == current["JobName"][: -len("-g1")] + "-g2"


@pytest.mark.parametrize("edit", [
    {"environmentParameterRanges": {"OMP_NUM_THREADS": ["3", "4", "6"]}},  # the seed's SDK variant
    {"sagemaker": {"region": "us-east-1", "roleArn": ROLE, "tags": {"team": "fraud", "cost-center": "42"}}},
    {"jobDurationInSeconds": 3600},
], ids=["omp-values", "tag", "duration"])
def test_a_job_defining_edit_yields_a_new_name_with_the_new_generation(edit):
    current = translate.build_request(advanced(), OWNER, 1)
    edited = translate.build_request(advanced(**edit), OWNER, 3, current_name=current["JobName"])
    assert edited["JobName"] != current["JobName"]
    assert edited["JobName"] == expected_name(edited, OWNER, 3)
    assert naming.name_digest(edited["JobName"]) != naming.name_digest(current["JobName"])


def test_job_name_of_a_253_character_dotted_kubernetes_name_fits_sagemaker():
    name = ".".join(["a" * 62] * 4) + ".b"
    assert len(name) == 253
    owner = Owner("ml", name, OWNER.uid)
    for generation in (1, 987654321):
        request = translate.build_request(advanced(), owner, generation)
        job = request["JobName"]
        assert len(job) <= naming.MAX_JOB_NAME == 63
        assert JOB_NAME_PATTERN.fullmatch(job)
        assert job.startswith("a" * 40) and "." not in job
        assert job.endswith(f"-g{generation}")
        assert naming.name_digest(job) == naming.definition_hash(
            {k: v for k, v in request.items() if k != "JobName"}, owner)
        assert {"Key": "rightsizer.io/name", "Value": name} in request["Tags"]


def test_job_name_of_a_name_with_nothing_usable():
    assert naming.job_name(Owner("ml", "...", "u"), "0123abcd", 2) == "rsj-0123abcd-g2"


def test_name_digest_round_trips():
    for owner_name in ("fraud-default", "a.b.c", "x" * 200):
        name = naming.job_name(Owner("ml", owner_name, "u"), "0a1b2c3d", 12)
        assert naming.name_digest(name) == "0a1b2c3d"
    assert naming.name_digest(None) is None
    assert naming.name_digest("credit-card-fraud-default-job") is None
    assert naming.name_digest("fraud-0A1B2C3D-g1") is None  # not a digest this module makes
    assert naming.name_digest("fraud-0a1b2c3d-g") is None


# -- Default vs Advanced, and the field mapping ---------------------------------------------------------------------

ADVANCED_ONLY_INPUT = ("TrafficPattern", "ResourceLimit", "EndpointConfigurations")


def test_advanced_only_fields_never_appear_in_a_default_request(sagemaker):
    spec = dataclasses.replace(advanced(), job_type="Default")  # the load-test fields are all still set
    request = translate.build_request(spec, OWNER, 1)
    assert "StoppingConditions" not in request
    assert not set(ADVANCED_ONLY_INPUT) & set(request["InputConfig"])
    assert request["InputConfig"] == {
        "ModelPackageVersionArn": PACKAGE,
        "JobDurationInSeconds": 7200,
        "ContainerConfig": {"SupportedInstanceTypes": ["ml.m5.4xlarge"]},
    }
    assert request["JobType"] == "Default"
    send(sagemaker, request, OWNER)


def test_a_default_job_sends_more_than_ten_instance_types_as_supported_instance_types(sagemaker):
    # The 10-entry cap is EndpointConfigurations'; botocore's model sets none on SupportedInstanceTypes.
    types = [f"ml.c5.{size}" for size in ("large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge")] + \
        [f"ml.m5.{size}" for size in ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge")]
    owner = owner_of(sample("fraud-default.yaml"))
    request = translate.build_request(spec_module.parse(sample_spec("fraud-default.yaml", instanceTypes=types)),
                                      owner, 1)
    assert request["JobType"] == "Default"
    assert request["InputConfig"]["ContainerConfig"] == {"SupportedInstanceTypes": types}
    assert "EndpointConfigurations" not in request["InputConfig"]
    send(sagemaker, request, owner)


def test_job_duration_is_sent_for_a_default_job_too():
    spec = spec_module.parse(sample_spec("fraud-default.yaml", jobDurationInSeconds=3600))
    assert spec.job_type == "Default" and spec.job_type_inferred
    request = translate.build_request(spec, OWNER, 1)
    assert request["InputConfig"]["JobDurationInSeconds"] == 3600
    assert "StoppingConditions" not in request
    assert translate.build_request(advanced(), OWNER, 1)["InputConfig"]["JobDurationInSeconds"] == 7200


def full_form_spec() -> dict:
    raw = sample_spec("fraud-advanced.yaml")
    del raw["instanceTypes"], raw["environmentParameterRanges"], raw["jobType"]
    raw["endpointConfigurations"] = [
        {"instanceType": "ml.c5.xlarge", "environmentParameterRanges": {
            "OMP_NUM_THREADS": ["1", "2"], "SAGEMAKER_MODEL_SERVER_WORKERS": ["1", "2", "4"]}},
        {"serverlessConfig": {"memorySizeInMB": 2048, "maxConcurrency": 5, "provisionedConcurrency": 1}},
        {"instanceType": "ml.g5.xlarge", "inferenceSpecificationName": "fraud-gpu"},
    ]
    raw["trafficPattern"] = {"trafficType": "STAIRS",
                             "stairs": {"durationInSeconds": 600, "numberOfSteps": 5, "usersPerStep": 2}}
    raw["stoppingConditions"] = {"maxInvocations": 30000, "flatInvocations": "Continue",
                                 "modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]}
    return raw


def test_endpoint_configurations_full_form_with_serverless_config(sagemaker):
    spec = spec_module.parse(full_form_spec())
    assert (spec.job_type, spec.job_type_inferred) == ("Advanced", True)
    request = translate.build_request(spec, OWNER, 1)
    assert request["InputConfig"]["EndpointConfigurations"] == [
        {"InstanceType": "ml.c5.xlarge", "EnvironmentParameterRanges": {"CategoricalParameterRanges": [
            {"Name": "OMP_NUM_THREADS", "Value": ["1", "2"]},
            {"Name": "SAGEMAKER_MODEL_SERVER_WORKERS", "Value": ["1", "2", "4"]}]}},
        {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5, "ProvisionedConcurrency": 1}},
        {"InstanceType": "ml.g5.xlarge", "InferenceSpecificationName": "fraud-gpu"},
    ]
    assert request["InputConfig"]["TrafficPattern"] == {
        "TrafficType": "STAIRS", "Stairs": {"DurationInSeconds": 600, "NumberOfSteps": 5, "UsersPerStep": 2}}
    assert request["StoppingConditions"] == {
        "MaxInvocations": 30000, "FlatInvocations": "Continue",
        "ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 100}]}
    assert "ContainerConfig" not in request["InputConfig"]  # instance types go to SupportedInstanceTypes only for Default
    validate_parameters(request, input_shape())
    send(sagemaker, request, OWNER)


CONTAINER_CONFIG = {
    "domain": "MACHINE_LEARNING", "task": "CLASSIFICATION", "framework": "XGBOOST", "frameworkVersion": "1.7-1",
    "nearestModelName": "xgboost", "supportedInstanceTypes": ["ml.m5.large", "ml.c5.xlarge"],
    "supportedEndpointType": "RealTime", "dataInputConfig": '{"data": [1, 30]}',
    "supportedResponseMIMETypes": ["text/csv", "application/json"],
    "payloadConfig": {"samplePayloadUrl": "s3://fraud-bucket/payload/payload.tar.gz",
                      "supportedContentTypes": ["text/csv"]},
}


def test_container_config_camel_case_to_pascal_case_with_payload_config(sagemaker):
    raw = sample_spec("fraud-default.yaml", containerConfig=copy.deepcopy(CONTAINER_CONFIG))
    raw["model"] = {"modelName": "credit-card-fraud"}
    # With the shorthand beside them, one list would silently win: the spec is refused instead.
    with pytest.raises(spec_module.InvalidSpec, match="supportedInstanceTypes and spec.instanceTypes both name"):
        registry.validate({**raw, "instanceTypes": ["ml.m5.xlarge"]})
    del raw["instanceTypes"]
    request = translate.build_request(registry.validate(raw).spec, OWNER, 1)
    assert request["JobType"] == "Default"
    assert request["InputConfig"] == {
        "ModelName": "credit-card-fraud",
        "ContainerConfig": {
            "Domain": "MACHINE_LEARNING", "Task": "CLASSIFICATION", "Framework": "XGBOOST",
            "FrameworkVersion": "1.7-1", "NearestModelName": "xgboost",
            "SupportedInstanceTypes": ["ml.m5.large", "ml.c5.xlarge"], "SupportedEndpointType": "RealTime",
            "DataInputConfig": '{"data": [1, 30]}', "SupportedResponseMIMETypes": ["text/csv", "application/json"],
            "PayloadConfig": {"SamplePayloadUrl": "s3://fraud-bucket/payload/payload.tar.gz",
                              "SupportedContentTypes": ["text/csv"]},
        },
    }
    validate_parameters(request, input_shape())
    send(sagemaker, request, OWNER)


def test_vpc_config_and_kms_keys(sagemaker):
    raw = sample_spec("fraud-default.yaml")
    raw["sagemaker"] = {
        "region": "us-east-1", "roleArn": ROLE,
        "volumeKmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "outputKmsKeyId": "alias/fraud-output",
        "vpcConfig": {"securityGroupIds": ["sg-0123456789abcdef0"], "subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]},
    }
    request = translate.build_request(spec_module.parse(raw), OWNER, 1)
    assert request["InputConfig"]["VolumeKmsKeyId"] == \
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert request["InputConfig"]["VpcConfig"] == {"SecurityGroupIds": ["sg-0123456789abcdef0"],
                                                   "Subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]}
    assert request["OutputConfig"] == {"KmsKeyId": "alias/fraud-output"}
    assert "VolumeKmsKeyId" not in request and "OutputKmsKeyId" not in request["InputConfig"]
    validate_parameters(request, input_shape())
    send(sagemaker, request, OWNER)


@pytest.mark.parametrize("kms", [None, "alias/fraud-output"])
def test_neo_compiled_output_goes_to_output_config(sagemaker, kms):
    raw = sample_spec("fraud-default.yaml")
    raw["sagemaker"] = {"region": "us-east-1", "roleArn": ROLE,
                        "compiledOutputConfig": {"s3OutputUri": "s3://fraud-bucket/neo/"},
                        **({"outputKmsKeyId": kms} if kms else {})}
    request = translate.build_request(spec_module.parse(raw), OWNER, 1)
    assert request["OutputConfig"] == {**({"KmsKeyId": kms} if kms else {}),
                                       "CompiledOutputConfig": {"S3OutputUri": "s3://fraud-bucket/neo/"}}
    validate_parameters(request, input_shape())
    assert translate.model_violations(request) == []
    send(sagemaker, request, OWNER)


def test_without_kms_key_or_compiled_output_there_is_no_output_config():
    assert "OutputConfig" not in translate.build_request(spec_module.parse(sample_spec("fraud-default.yaml")), OWNER, 1)


def test_job_description_from_the_spec_or_truncated_default():
    request = translate.build_request(advanced(jobDescription="Fraud model, Q3 sizing"), OWNER, 1)
    assert request["JobDescription"] == "Fraud model, Q3 sizing"
    long_owner = Owner("n" * 63, "m" * 200, OWNER.uid)
    description = translate.build_request(advanced(), long_owner, 1)["JobDescription"]
    assert len(description) == 128
    assert description.startswith("rightsizer: RightsizeJob " + "n" * 63 + "/mmm")


# -- what botocore's client does not check --------------------------------------------------------------------------

def _advanced_request() -> dict:
    return translate.build_request(advanced(), OWNER, 1)


def _mutate(path_and_value):
    def make():
        request = copy.deepcopy(_advanced_request())
        path, value = path_and_value
        target = request
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
        return request
    return make


INSTANCE_TYPES = len(translate.service_model().shape_for("ProductionVariantInstanceType").enum)
P = "CreateInferenceRecommendationsJob"
VIOLATIONS = {
    "80-char-JobName": (_mutate((["JobName"], "j" * 80)), [
        f"{P}.JobName: 80 characters is above the service's maximum of 64",
        f"{P}.JobName: '{'j' * 80}' does not match the service's pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){{0,63}}"]),
    "JobType-DEFAULT": (_mutate((["JobType"], "DEFAULT")), [
        f"{P}.JobType: 'DEFAULT' is not one of the 2 values the service accepts"]),
    "11-EndpointConfigurations": (
        _mutate((["InputConfig", "EndpointConfigurations"], lambda configs: configs * 11)), [
            f"{P}.InputConfig.EndpointConfigurations: 11 items is above the service's maximum of 10"]),
    "bogus-InstanceType": (
        _mutate((["InputConfig", "EndpointConfigurations", 0, "InstanceType"], "ml.m5.huge")), [
            f"{P}.InputConfig.EndpointConfigurations[0].InstanceType: 'ml.m5.huge' is not one of the "
            f"{INSTANCE_TYPES} values the service accepts"]),
    "UsersPerStep-10": (
        _mutate((["InputConfig", "TrafficPattern"],
                 {"TrafficType": "STAIRS", "Stairs": {"DurationInSeconds": 600, "NumberOfSteps": 5, "UsersPerStep": 10}})),
        [f"{P}.InputConfig.TrafficPattern.Stairs.UsersPerStep: 10 is above the service's maximum of 3"]),
    "tag-value-forbidden-character": (_mutate((["Tags", 0, "Value"], "fraud#1")), [
        f"{P}.Tags[0].Value: 'fraud#1' does not match the service's pattern ([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)"]),
}


@pytest.mark.parametrize("make, expected", VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_model_violations_catch_what_botocores_client_does_not(sagemaker, make, expected):
    request = make()
    assert translate.model_violations(request) == expected
    # botocore's client accepts the same request: only the service would refuse it.
    validate_parameters(request, input_shape())
    client, stubber = sagemaker
    stubber.add_response("create_inference_recommendations_job",
                         {"JobArn": "arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/x"},
                         expected_params=request)
    client.create_inference_recommendations_job(**request)
    stubber.assert_no_pending_responses()


def test_a_misspelt_key_is_reported_by_botocores_own_validator():
    request = _advanced_request()
    request["InputConfig"]["ResourceLimits"] = request["InputConfig"].pop("ResourceLimit")
    errors = translate.model_violations(request)
    assert len(errors) == 1
    assert errors[0].startswith('Unknown parameter in InputConfig: "ResourceLimits", must be one of: ')
    assert "ResourceLimit," in errors[0]
    with pytest.raises(botocore.exceptions.ParamValidationError, match='Unknown parameter in InputConfig: "ResourceLimits"'):
        validate_parameters(request, input_shape())


def test_model_violations_keep_every_botocore_error_alongside_its_own():
    request = _advanced_request()
    del request["RoleArn"]
    request["InputConfig"]["JobDurationInSeconds"] = 0
    request["JobType"] = "DEFAULT"
    assert translate.model_violations(request) == [
        'Missing required parameter in input: "RoleArn"',
        "Invalid value for parameter InputConfig.JobDurationInSeconds, value: 0, valid min value: 1",
        f"{P}.JobType: 'DEFAULT' is not one of the 2 values the service accepts",
    ]


def test_build_request_raises_when_a_tag_makes_the_request_invalid():
    spec = advanced(sagemaker={"region": "us-east-1", "roleArn": ROLE, "tags": {"team": "fraud", "owner": "a<b>"}})
    with pytest.raises(translate.RequestInvalid) as raised:
        translate.build_request(spec, OWNER, 1)
    # Tags are sorted by key: owner comes before team.
    assert raised.value.errors == [
        f"{P}.Tags[0].Value: 'a<b>' does not match the service's pattern ([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)"]


def test_build_request_raises_on_a_botocore_only_error():
    spec = dataclasses.replace(advanced(), sagemaker={"region": "us-east-1"})  # parse passed; no roleArn now
    with pytest.raises(translate.RequestInvalid) as raised:
        translate.build_request(spec, OWNER, 1)
    assert raised.value.errors == [
        "Invalid type for parameter RoleArn, value: None, type: <class 'NoneType'>, valid types: <class 'str'>"]


def test_build_request_raises_on_an_enum_error_after_replace():
    spec = dataclasses.replace(advanced(), job_type="ADVANCED")
    with pytest.raises(translate.RequestInvalid) as raised:
        translate.build_request(spec, OWNER, 1)
    assert raised.value.errors == [f"{P}.JobType: 'ADVANCED' is not one of the 2 values the service accepts"]
    assert str(raised.value) == raised.value.errors[0]
