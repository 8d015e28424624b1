"""The CRD's SageMaker limits are botocore's service model's: the same patterns (anchored), enums, lengths and
counts, field by field, so a botocore upgrade that moves a limit fails here instead of at the service."""

from __future__ import annotations

import botocore.session
import pytest

from rightsizer import schema

REQUEST = botocore.session.get_session().get_service_model("sagemaker") \
    .operation_model("CreateInferenceRecommendationsJob").input_shape


def botocore_shape(path: str):
    shape = REQUEST
    for part in path.split("."):
        if part == "[]":
            shape = shape.member
        elif part == "{}":
            shape = shape.value
        else:
            shape = shape.members[part]
    return shape


def crd_node(path: str) -> dict:
    node = schema.spec_schema()
    for part in path.split("."):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


# (CRD path under spec, botocore path under the request, what must agree)
FIELDS = [
    ("jobType", "JobType", {"enum"}),
    ("jobDescription", "JobDescription", {"max"}),
    ("model.modelName", "InputConfig.ModelName", {"max", "pattern"}),
    ("model.endpointName", "InputConfig.Endpoints.[].EndpointName", {"max", "pattern"}),
    ("containerConfig.frameworkVersion", "InputConfig.ContainerConfig.FrameworkVersion", {"min", "max", "pattern"}),
    ("containerConfig.payloadConfig.samplePayloadUrl", "InputConfig.ContainerConfig.PayloadConfig.SamplePayloadUrl",
     {"max", "pattern"}),
    ("containerConfig.payloadConfig.supportedContentTypes.[]",
     "InputConfig.ContainerConfig.PayloadConfig.SupportedContentTypes.[]", {"max"}),
    ("containerConfig.supportedEndpointType", "InputConfig.ContainerConfig.SupportedEndpointType", {"enum"}),
    ("containerConfig.dataInputConfig", "InputConfig.ContainerConfig.DataInputConfig", {"min", "max"}),
    ("containerConfig.supportedResponseMIMETypes.[]", "InputConfig.ContainerConfig.SupportedResponseMIMETypes.[]",
     {"max", "pattern"}),
    ("endpointConfigurations", "InputConfig.EndpointConfigurations", {"min", "max"}),
    ("instanceTypes", "InputConfig.EndpointConfigurations", {"min"}),  # max: test_instance_types_cap_*
    ("endpointConfigurations.[].serverlessConfig.memorySizeInMB",
     "InputConfig.EndpointConfigurations.[].ServerlessConfig.MemorySizeInMB", {"min", "max"}),
    ("endpointConfigurations.[].serverlessConfig.maxConcurrency",
     "InputConfig.EndpointConfigurations.[].ServerlessConfig.MaxConcurrency", {"min", "max"}),
    ("endpointConfigurations.[].serverlessConfig.provisionedConcurrency",
     "InputConfig.EndpointConfigurations.[].ServerlessConfig.ProvisionedConcurrency", {"min", "max"}),
    ("endpointConfigurations.[].inferenceSpecificationName",
     "InputConfig.EndpointConfigurations.[].InferenceSpecificationName", {"min", "max", "pattern"}),
    ("environmentParameterRanges",
     "InputConfig.EndpointConfigurations.[].EnvironmentParameterRanges.CategoricalParameterRanges", {"min", "max"}),
    ("environmentParameterRanges.{}",
     "InputConfig.EndpointConfigurations.[].EnvironmentParameterRanges.CategoricalParameterRanges.[].Value",
     {"min", "max"}),
    ("environmentParameterRanges.{}.[]",
     "InputConfig.EndpointConfigurations.[].EnvironmentParameterRanges.CategoricalParameterRanges.[].Value.[]",
     {"max"}),
    ("trafficPattern.trafficType", "InputConfig.TrafficPattern.TrafficType", {"enum"}),
    ("trafficPattern.phases", "InputConfig.TrafficPattern.Phases", {"min"}),
    ("trafficPattern.phases.[].initialNumberOfUsers", "InputConfig.TrafficPattern.Phases.[].InitialNumberOfUsers",
     {"min"}),
    ("trafficPattern.phases.[].spawnRate", "InputConfig.TrafficPattern.Phases.[].SpawnRate", {"min"}),
    ("trafficPattern.phases.[].durationInSeconds", "InputConfig.TrafficPattern.Phases.[].DurationInSeconds", {"min"}),
    ("trafficPattern.stairs.durationInSeconds", "InputConfig.TrafficPattern.Stairs.DurationInSeconds", {"min"}),
    ("trafficPattern.stairs.numberOfSteps", "InputConfig.TrafficPattern.Stairs.NumberOfSteps", {"min"}),
    ("trafficPattern.stairs.usersPerStep", "InputConfig.TrafficPattern.Stairs.UsersPerStep", {"min", "max"}),
    ("resourceLimit.maxNumberOfTests", "InputConfig.ResourceLimit.MaxNumberOfTests", {"min"}),
    ("resourceLimit.maxParallelOfTests", "InputConfig.ResourceLimit.MaxParallelOfTests", {"min"}),
    ("stoppingConditions.modelLatencyThresholds", "StoppingConditions.ModelLatencyThresholds", {"min", "max"}),
    ("stoppingConditions.flatInvocations", "StoppingConditions.FlatInvocations", {"enum"}),
    ("jobDurationInSeconds", "InputConfig.JobDurationInSeconds", {"min"}),
    ("sagemaker.roleArn", "RoleArn", {"min", "max", "pattern"}),
    ("sagemaker.volumeKmsKeyId", "InputConfig.VolumeKmsKeyId", {"max", "pattern"}),
    ("sagemaker.outputKmsKeyId", "OutputConfig.KmsKeyId", {"max", "pattern"}),
    ("sagemaker.compiledOutputConfig.s3OutputUri", "OutputConfig.CompiledOutputConfig.S3OutputUri", {"max", "pattern"}),
    ("sagemaker.vpcConfig.securityGroupIds", "InputConfig.VpcConfig.SecurityGroupIds", {"min", "max"}),
    ("sagemaker.vpcConfig.securityGroupIds.[]", "InputConfig.VpcConfig.SecurityGroupIds.[]", {"max", "pattern"}),
    ("sagemaker.vpcConfig.subnets", "InputConfig.VpcConfig.Subnets", {"min", "max"}),
    ("sagemaker.vpcConfig.subnets.[]", "InputConfig.VpcConfig.Subnets.[]", {"max", "pattern"}),
    ("sagemaker.tags.{}", "Tags.[].Value", {"max", "pattern"}),
]

CRD_KEYS = {
    "string": {"min": "minLength", "max": "maxLength"},
    "integer": {"min": "minimum", "max": "maximum"},
    "array": {"min": "minItems", "max": "maxItems"},
    "object": {"min": "minProperties", "max": "maxProperties"},
}


@pytest.mark.parametrize("crd_path,botocore_path,aspects", FIELDS, ids=[f[0] for f in FIELDS])
def test_crd_limit_equals_botocore(crd_path, botocore_path, aspects):
    node, shape = crd_node(crd_path), botocore_shape(botocore_path)
    keys = CRD_KEYS[node.get("type")]
    for aspect in sorted(aspects):
        if aspect == "enum":
            assert node["enum"] == shape.enum
        elif aspect == "pattern":
            assert node["pattern"] == f"^{shape.metadata['pattern']}$"
        else:
            expected = shape.metadata[aspect]
            if aspect == "min" and expected == 0 and keys[aspect] in ("minLength", "minItems"):
                assert node.get(keys[aspect], 0) == 0
            else:
                assert node[keys[aspect]] == expected, f"{crd_path} {keys[aspect]}"


def test_model_package_arn_pattern_matches_botocore_within_re2_limits():
    # RE2 (the API server's regexp engine) caps repeat counts at 1000, so botocore's `[\S]{1,2048}` becomes
    # `[\S]+` plus maxLength 2048 on the whole value: the same language for values of legal length.
    node = crd_node("model.modelPackageVersionArn")
    shape = botocore_shape("InputConfig.ModelPackageVersionArn")
    assert shape.metadata["pattern"].endswith("[\\S]{1,2048}")
    assert node["pattern"] == "^" + shape.metadata["pattern"].replace("[\\S]{1,2048}", "[\\S]+") + "$"
    assert (node["minLength"], node["maxLength"]) == (shape.metadata["min"], shape.metadata["max"])


def test_tags_leave_room_for_the_ownership_tags():
    ownership_tags = 3  # namespace, name and uid of the RightsizeJob
    assert crd_node("sagemaker.tags")["maxProperties"] + ownership_tags == botocore_shape("Tags").metadata["max"]


def test_job_duration_maximum_is_the_documented_one():
    documentation = botocore_shape("InputConfig.JobDurationInSeconds")
    assert crd_node("jobDurationInSeconds")["maximum"] == 18000
    assert "18,000" in (documentation.documentation or "") or "18000" in (
        botocore_shape("InputConfig").members["JobDurationInSeconds"].documentation or "")


def test_latency_percentiles_are_the_documented_ones():
    documentation = botocore_shape("StoppingConditions.ModelLatencyThresholds.[]").members["Percentile"].documentation
    for percentile in crd_node("stoppingConditions.modelLatencyThresholds.[].percentile")["enum"]:
        assert percentile in documentation


def test_instance_types_cap_is_endpoint_configurations_for_a_load_test_only():
    # A load test makes one EndpointConfigurations entry per instance type; a Default job sends them as
    # ContainerConfig.SupportedInstanceTypes, which the service model leaves unbounded.
    maximum = botocore_shape("InputConfig.EndpointConfigurations").metadata["max"]
    assert "max" not in botocore_shape("InputConfig.ContainerConfig.SupportedInstanceTypes").metadata
    rules = [r["rule"] for r in schema.spec_schema()["x-kubernetes-validations"] if r.get("fieldPath") == ".instanceTypes"]
    assert [r for r in rules if f"self.instanceTypes.size() <= {maximum} ||" in r]


def test_instance_type_lists_hold_every_real_time_instance_type():
    # The CRD's bound exists for the API server's cost estimates; it must not refuse what the service accepts.
    real_time = botocore_shape("InputConfig.EndpointConfigurations.[].InstanceType").enum
    supported = crd_node("containerConfig.supportedInstanceTypes")
    assert supported["maxItems"] >= len(set(real_time))
    assert crd_node("instanceTypes")["maxItems"] == supported["maxItems"]



def test_autoscaling_limits_are_get_scaling_configuration_recommendations():
    request = botocore.session.get_session().get_service_model("sagemaker") \
        .operation_model("GetScalingConfigurationRecommendation").input_shape
    target = request.members["TargetCpuUtilizationPerCore"]
    node = crd_node("autoscaling.targetCpuUtilizationPerCore")
    assert (node["minimum"], node["maximum"]) == (target.metadata["min"], target.metadata["max"]) == (1, 100)
    assert "default value is 50" in target.documentation and node["default"] == 50
    # The service model bounds neither rate; the CRD asks for a peak of at least one invocation a minute.
    objective = request.members["ScalingPolicyObjective"].members
    assert set(objective) == {"MinInvocationsPerMinute", "MaxInvocationsPerMinute"}
    assert all("min" not in member.metadata for member in objective.values())
    assert crd_node("autoscaling")["required"] == ["minInvocationsPerMinute", "maxInvocationsPerMinute"]
