"""The SageMaker backend against botocore's Stubber: every request and canned response is checked against
botocore's service model. No call leaves the process."""

from __future__ import annotations

import datetime
import json
import math
import re
import sys
import threading

import boto3
import botocore.awsrequest
import botocore.config
import botocore.exceptions
import botocore.session
import pytest
from botocore.stub import Stubber

from rightsizer import selection
from rightsizer import spec as spec_module
from rightsizer import model
from rightsizer.backends import base
from rightsizer.backends.sagemaker import client as sm
from rightsizer.backends.sagemaker import translate
from rightsizer.backends.sagemaker.client import RateLimiter, SageMakerBackend, use_client_factory
from conftest import load_samples
from seed import seed_step

REGION = "us-east-1"
JOB = "fraud-default-457a9d84-g1"
ARN = f"arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/{JOB}"
ROLE = "arn:aws:iam::111122223333:role/SageMakerInferenceRecommender"
PACKAGE = "arn:aws:sagemaker:us-east-1:111122223333:model-package/credit-card-fraud/1"
OWNER = model.Owner("ml", "fraud-default", "6f1b8a52-3c1e-4d2a-9f0e-0a1b2c3d4e5f")
CREATED = datetime.datetime(2024, 5, 31, 9, 0, tzinfo=datetime.timezone.utc)
MODIFIED = datetime.datetime(2024, 5, 31, 9, 40, tzinfo=datetime.timezone.utc)
STEPS_PARAMS = {"JobName": JOB, "MaxResults": 100}
REQUEST = {
    "JobName": JOB, "JobType": "Default", "RoleArn": ROLE,
    "InputConfig": {"ModelPackageVersionArn": PACKAGE,
                    "ContainerConfig": {"SupportedInstanceTypes": ["ml.m5.large", "ml.m5.xlarge"]}},
    "JobDescription": "rightsizer: RightsizeJob ml/fraud-default",
    "Tags": [{"Key": "rightsizer.io/namespace", "Value": OWNER.namespace},
             {"Key": "rightsizer.io/name", "Value": OWNER.name},
             {"Key": "rightsizer.io/uid", "Value": OWNER.uid}],
}
# The SageMaker client sends the plan's request; the spec it was planned from is the sample's.
PLAN = base.JobPlan(JOB, spec_module.parse(next(d for d in load_samples()
                                                if d["metadata"]["name"] == "fraud-default")["spec"]), REQUEST)


@pytest.fixture
def stubber():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.activate()
    regions = []

    def factory(region):
        regions.append(region)
        return client

    use_client_factory(factory)
    stub.regions = regions
    yield stub
    use_client_factory(None)
    stub.deactivate()


@pytest.fixture
def backend(stubber):
    return SageMakerBackend(REGION, rate_limiter=RateLimiter(1000, 1000))


def describe_response(status="IN_PROGRESS", **extra):
    return {"JobName": JOB, "JobType": "Default", "JobArn": ARN, "RoleArn": ROLE, "Status": status,
            "CreationTime": CREATED, "LastModifiedTime": MODIFIED,
            "InputConfig": {"ModelPackageVersionArn": PACKAGE}, **extra}


def environment_parameters(**values):
    return [{"Key": key, "ValueType": "String", "Value": value} for key, value in values.items()]


SEED_STEP = seed_step(JOB)


def expect_describe(stubber, response, steps_pages=({"Steps": [SEED_STEP]},)):
    stubber.add_response("describe_inference_recommendations_job", response, {"JobName": JOB})
    token = None
    for page in steps_pages:
        stubber.add_response("list_inference_recommendations_job_steps", page,
                             {**STEPS_PARAMS, **({"NextToken": token} if token else {})})
        token = page.get("NextToken")


# -- submit ---------------------------------------------------------------------------------------------------------

def test_submit(stubber, backend):
    stubber.add_response("create_inference_recommendations_job", {"JobArn": ARN}, expected_params=REQUEST)
    assert backend.submit(PLAN, OWNER) == base.Submitted(ARN)
    stubber.assert_no_pending_responses()
    assert stubber.regions == [REGION]


def _name_in_use(stubber, tags):
    stubber.add_client_error("create_inference_recommendations_job", "ResourceInUse",
                             f"Job {JOB} already exists", 400, expected_params=REQUEST)
    expect_describe(stubber, describe_response())
    stubber.add_response("list_tags", {"Tags": tags}, {"ResourceArn": ARN, "MaxResults": 100})


def test_submit_adopts_a_job_whose_tags_name_the_owner(stubber, backend):
    _name_in_use(stubber, [{"Key": "team", "Value": "fraud"}] + REQUEST["Tags"])
    result = backend.submit(PLAN, OWNER)
    assert isinstance(result, base.Adopted)
    assert (result.snapshot.job_name, result.snapshot.job_arn, result.snapshot.status) == (JOB, ARN, "IN_PROGRESS")
    assert result.snapshot.creation_time == CREATED
    assert result.snapshot.steps == model.StepSummary(1, {"COMPLETED": 1}, ())
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("tags", [
    [{"Key": "rightsizer.io/namespace", "Value": "ml"}, {"Key": "rightsizer.io/name", "Value": "fraud-default"},
     {"Key": "rightsizer.io/uid", "Value": "11111111-2222-3333-4444-555555555555"}],
    [{"Key": "rightsizer.io/namespace", "Value": "ml"}, {"Key": "rightsizer.io/name", "Value": "fraud-default"}],
    [],
], ids=["another-uid", "no-uid", "untagged"])
def test_submit_reports_a_name_taken_by_a_job_that_is_not_ours(stubber, backend, tags):
    _name_in_use(stubber, tags)
    result = backend.submit(PLAN, OWNER)
    assert isinstance(result, base.NameTaken)
    assert JOB in result.message and OWNER.uid in result.message
    stubber.assert_no_pending_responses()


def test_submit_name_in_use_but_not_yet_describable_is_transient(stubber, backend):
    stubber.add_client_error("create_inference_recommendations_job", "ResourceInUse", "in use", 400,
                             expected_params=REQUEST)
    stubber.add_client_error("describe_inference_recommendations_job", "ResourceNotFound", "not found", 400,
                             expected_params={"JobName": JOB})
    with pytest.raises(base.TransientBackendError, match=f"{JOB} is in use but cannot be described yet"):
        backend.submit(PLAN, OWNER)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("code, status, message, throttled", [
    ("ThrottlingException", 400, "Rate exceeded", True),
    ("", 500, "", False),
    ("InternalFailure", 500, "We encountered an internal error. Please try again.", False),
    ("ServiceUnavailable", 503, "Service unavailable", False),
    ("TooManyRequestsException", 429, "Too many requests", True),
], ids=["throttling", "500", "internal-failure", "503", "429"])
def test_submit_transient_errors(stubber, backend, code, status, message, throttled):
    stubber.add_client_error("create_inference_recommendations_job", code, message, status, expected_params=REQUEST)
    with pytest.raises(base.TransientBackendError) as raised:
        backend.submit(PLAN, OWNER)
    assert raised.value.throttled is throttled
    assert isinstance(raised.value.__cause__, botocore.exceptions.ClientError)
    if throttled:
        assert str(raised.value).startswith(f"SageMaker throttled the request ({code})")
    else:
        assert str(raised.value).startswith(f"SageMaker failed ({code or status})")
    stubber.assert_no_pending_responses()


ROLE_MESSAGE = ("Could not assume role arn:aws:iam::111122223333:role/SageMakerInferenceRecommender. Please ensure "
                "that the role exists and allows principal 'sagemaker.amazonaws.com' to assume the role.")
DENIED = ("User: arn:aws:sts::111122223333:assumed-role/rightsizer/irsa is not authorized to perform: "
          "sagemaker:CreateInferenceRecommendationsJob")


@pytest.mark.parametrize("code, message, expected", [
    ("AccessDeniedException", DENIED, base.Rejected("AccessDenied", f"AccessDeniedException: {DENIED}", True)),
    ("ValidationException", ROLE_MESSAGE,
     base.Rejected("RoleNotAssumable", f"SageMaker cannot assume spec.sagemaker.roleArn: {ROLE_MESSAGE}", True)),
    ("ValidationException", "Invalid instance type ml.t2.medium for Inference Recommender",
     base.Rejected("ValidationFailed", "Invalid instance type ml.t2.medium for Inference Recommender", False)),
    ("ResourceLimitExceeded", "The account-level service limit for inference recommendations jobs is 5",
     base.Rejected("ResourceLimitExceeded", "The account-level service limit for inference recommendations jobs is 5",
                   True)),
], ids=["access-denied", "role-not-assumable", "validation", "resource-limit"])
def test_submit_rejections(stubber, backend, code, message, expected):
    stubber.add_client_error("create_inference_recommendations_job", code, message, 400, expected_params=REQUEST)
    assert backend.submit(PLAN, OWNER) == expected
    stubber.assert_no_pending_responses()


# -- describe -------------------------------------------------------------------------------------------------------

def test_describe_of_a_missing_job_is_none(stubber, backend):
    stubber.add_client_error("describe_inference_recommendations_job", "ResourceNotFound",
                             f"Job {JOB} does not exist", 400, expected_params={"JobName": JOB})
    assert backend.describe(JOB) is None
    stubber.assert_no_pending_responses()


def test_describe_refused_raises_rejected(stubber, backend):
    stubber.add_client_error("describe_inference_recommendations_job", "AccessDeniedException", DENIED, 400,
                             expected_params={"JobName": JOB})
    with pytest.raises(base.RejectedError) as raised:
        backend.describe(JOB)
    assert raised.value.rejected == base.Rejected("AccessDenied", f"AccessDeniedException: {DENIED}", True)
    stubber.assert_no_pending_responses()


def test_describe_throttled_is_transient(stubber, backend):
    stubber.add_client_error("describe_inference_recommendations_job", "ThrottlingException", "Rate exceeded", 400,
                             expected_params={"JobName": JOB})
    with pytest.raises(base.TransientBackendError) as raised:
        backend.describe(JOB)
    assert raised.value.throttled
    stubber.assert_no_pending_responses()


# The seed step's benchmark as a row: IR measured it, whether or not it recommends it.
SEED_BENCHMARK = model.Recommendation(
    f"{JOB}/sm-epc-seed", "ml.c5.9xlarge", 1, {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "OMP_NUM_THREADS": "28"},
    {"costPerHour": 1.8359999656677246, "costPerInference": 1.6814110495033674e-06, "maxInvocations": 18199,
     "modelLatency": 40, "cpuUtilization": 106.06400299072266, "memoryUtilization": 0.3920480012893677},
    endpoint_name="sm-epc-seed", variant_name="sm-epc-seed-v", recommended=False)


def test_describe_counts_the_seed_step_and_keeps_its_benchmark(stubber, backend):
    expect_describe(stubber, describe_response())
    snapshot = backend.describe(JOB)
    assert snapshot == model.JobSnapshot(job_name=JOB, status="IN_PROGRESS", job_arn=ARN, creation_time=CREATED,
                                        steps=model.StepSummary(1, {"COMPLETED": 1}, ()),
                                        recommendations=(SEED_BENCHMARK,))
    stubber.assert_no_pending_responses()


def test_every_benchmark_is_a_row_and_ir_recommendations_are_marked(stubber, backend):
    # IR recommends one configuration and benchmarked two: its pick (the same benchmark endpoint) is one row, marked
    # recommended, with IR's id; the other benchmark is kept beside it, unmarked, for selection to judge.
    pick = {"RecommendationId": f"{JOB}/00000000", "Metrics": {"CostPerHour": 0.461, "MaxInvocations": 32427,
                                                                "ModelLatency": 13},
            "EndpointConfiguration": {"EndpointName": "sm-epc-pick", "VariantName": "v", "InstanceType": "ml.m5.2xlarge",
                                      "InitialInstanceCount": 1},
            "ModelConfiguration": {"EnvironmentParameters": environment_parameters(OMP_NUM_THREADS="2")}}
    pick_step = {"StepType": "BENCHMARK", "JobName": JOB, "Status": "COMPLETED", "InferenceBenchmark": {
        key: pick[key] for key in ("Metrics", "EndpointConfiguration", "ModelConfiguration")}}
    # EndpointConfiguration is optional in an InferenceBenchmark (botocore's model): named by what it measured.
    unnamed = {"StepType": "BENCHMARK", "JobName": JOB, "Status": "COMPLETED", "InferenceBenchmark": {
        "Metrics": {"CostPerHour": 0.23, "MaxInvocations": 15189, "ModelLatency": 18},
        "ModelConfiguration": {"EnvironmentParameters": environment_parameters(OMP_NUM_THREADS="3")}}}
    expect_describe(stubber, describe_response("COMPLETED", InferenceRecommendations=[pick]),
                    ({"Steps": [pick_step, SEED_STEP, unnamed]},))
    snapshot = backend.describe(JOB)
    ids = [(r.recommendation_id, r.instance_type, r.recommended) for r in snapshot.recommendations]
    assert ids[:2] == [(f"{JOB}/00000000", "ml.m5.2xlarge", True), (f"{JOB}/sm-epc-seed", "ml.c5.9xlarge", False)]
    assert re.fullmatch(rf"{JOB}/benchmark-[0-9a-f]{{12}}", ids[2][0]) and ids[2][1:] == (None, False)
    assert snapshot.recommendations[1] == SEED_BENCHMARK
    # The same step always gets the same id: a row keeps its name from one describe to the next.
    expect_describe(stubber, describe_response("COMPLETED", InferenceRecommendations=[pick]),
                    ({"Steps": [unnamed]},))
    assert backend.describe(JOB).recommendations[1].recommendation_id == ids[2][0]
    stubber.assert_no_pending_responses()


def test_describe_pages_through_the_steps_and_keeps_the_failures(stubber, backend):
    failed_seed = {**SEED_STEP, "Status": "FAILED", "InferenceBenchmark": {
        **SEED_STEP["InferenceBenchmark"],
        "FailureReason": "INVALID_INPUT : 1. Model (owned by the customer in the container) returned 4xx or 5xx error code"}}
    in_progress = {"StepType": "BENCHMARK", "JobName": JOB, "Status": "IN_PROGRESS", "InferenceBenchmark": {
        "ModelConfiguration": {"EnvironmentParameters": environment_parameters(OMP_NUM_THREADS="14")}}}
    failed_bare = {"StepType": "BENCHMARK", "JobName": JOB, "Status": "FAILED", "InferenceBenchmark": {
        "EndpointConfiguration": {"EndpointName": "sm-epc-fraud-m5l", "VariantName": "v", "InstanceType": "ml.m5.large"},
        "ModelConfiguration": {}}}
    pages = ({"Steps": [SEED_STEP, in_progress], "NextToken": "page-2-token"},
             {"Steps": [failed_seed, failed_bare]})
    expect_describe(stubber, describe_response(), pages)
    snapshot = backend.describe(JOB)
    assert snapshot.steps == model.StepSummary(
        total=4, by_status={"COMPLETED": 1, "IN_PROGRESS": 1, "FAILED": 2},
        failures=(
            model.StepFailure("ml.c5.9xlarge", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "OMP_NUM_THREADS": "28"},
                             "INVALID_INPUT : 1. Model (owned by the customer in the container) returned 4xx or 5xx "
                             "error code"),
            model.StepFailure("ml.m5.large", {}, "no reason given"),
        ))
    stubber.assert_no_pending_responses()


def test_describe_stops_paging_steps_after_the_page_cap(stubber, backend):
    step = {"StepType": "BENCHMARK", "JobName": JOB, "Status": "COMPLETED",
            "InferenceBenchmark": {"ModelConfiguration": {}}}
    pages = tuple({"Steps": [step], "NextToken": f"token-{index}"} for index in range(sm.MAX_STEP_PAGES))
    expect_describe(stubber, describe_response(), pages)
    snapshot = backend.describe(JOB)
    assert snapshot.steps.total == sm.MAX_STEP_PAGES == 20
    stubber.assert_no_pending_responses()  # and no 21st call was made (Stubber would have refused it)


# The seed's Default results (one instance each): type, OMP_NUM_THREADS, workers, cost/h, invocations, latency, CPU, memory.
SEED_DEFAULT = [
    ("ml.m5.xlarge", "2", "1", 0.23, 15189, 18, 108.864, 1.62012),
    ("ml.m5.4xlarge", "3", "3", 0.922, 32628, 9, 220.57001, 0.69791),
    ("ml.m5.large", "2", "1", 0.115, 13793, 19, 106.34, 3.24398),
    ("ml.m5.12xlarge", "4", "7", 2.765, 32016, 4, 215.32401, 0.44658),
    ("ml.m5.2xlarge", "2", "3", 0.461, 32427, 13, 248.673, 1.43109),
]


def seed_recommendation(index, instance_type, omp, workers, cost, invocations, latency, cpu, memory):
    return {
        "RecommendationId": f"{JOB}/Rc{index:06d}",
        "Metrics": {"CostPerHour": cost, "CostPerInference": cost / (invocations * 60), "MaxInvocations": invocations,
                    "ModelLatency": latency, "CpuUtilization": cpu, "MemoryUtilization": memory},
        "EndpointConfiguration": {"EndpointName": f"sm-epc-{JOB}-{index}", "VariantName": f"sm-epc-v-{index}",
                                  "InstanceType": instance_type, "InitialInstanceCount": 1},
        "ModelConfiguration": {"EnvironmentParameters": environment_parameters(
            OMP_NUM_THREADS=omp, SAGEMAKER_MODEL_SERVER_WORKERS=workers)},
        "InvocationStartTime": CREATED + datetime.timedelta(minutes=index),
        "InvocationEndTime": CREATED + datetime.timedelta(minutes=index + 2),
    }


def test_describe_a_completed_job_maps_every_metric(stubber, backend):
    completed = datetime.datetime(2024, 5, 31, 9, 38, tzinfo=datetime.timezone.utc)
    raw = [seed_recommendation(i, *values) for i, values in enumerate(SEED_DEFAULT)]
    expect_describe(stubber, describe_response("COMPLETED", CompletionTime=completed, InferenceRecommendations=raw))
    snapshot = backend.describe(JOB)
    assert (snapshot.status, snapshot.completion_time, snapshot.failure_reason) == ("COMPLETED", completed, None)
    assert snapshot.recommendations == tuple(
        model.Recommendation(
            recommendation_id=f"{JOB}/Rc{i:06d}", instance_type=instance_type, initial_instance_count=1,
            environment={"OMP_NUM_THREADS": omp, "SAGEMAKER_MODEL_SERVER_WORKERS": workers},
            metrics={"costPerHour": cost, "costPerInference": cost / (invocations * 60),
                     "maxInvocations": invocations, "modelLatency": latency, "cpuUtilization": cpu,
                     "memoryUtilization": memory},
            invocation_start=CREATED + datetime.timedelta(minutes=i),
            invocation_end=CREATED + datetime.timedelta(minutes=i + 2),
            endpoint_name=f"sm-epc-{JOB}-{i}", variant_name=f"sm-epc-v-{i}", recommended=True)
        for i, (instance_type, omp, workers, cost, invocations, latency, cpu, memory) in enumerate(SEED_DEFAULT)
    ) + (SEED_BENCHMARK,)  # the one step listed: a benchmark IR did not recommend
    # Mapped, the seed's results select as the write-up's SLA says.
    chosen = selection.select(snapshot.recommendations, "CostPerInference", selection.Constraints(100, 30000))
    assert chosen.best.instance_type == "ml.m5.2xlarge"
    stubber.assert_no_pending_responses()


def test_describe_keeps_the_inference_specification_compilation_job_endpoint_and_variant(stubber, backend):
    raw = seed_recommendation(0, *SEED_DEFAULT[1])
    raw["ModelConfiguration"].update(InferenceSpecificationName="xgboost-neo", CompilationJobName="fraud-neo-c5")
    uncompiled = seed_recommendation(1, *SEED_DEFAULT[0])
    expect_describe(stubber, describe_response("COMPLETED", InferenceRecommendations=[raw, uncompiled]))
    compiled, plain, benchmark = backend.describe(JOB).recommendations
    assert benchmark == SEED_BENCHMARK
    assert (compiled.inference_specification_name, compiled.compilation_job_name, compiled.endpoint_name,
            compiled.variant_name) == ("xgboost-neo", "fraud-neo-c5", f"sm-epc-{JOB}-0", "sm-epc-v-0")
    assert compiled.provenance() == {"inferenceSpecificationName": "xgboost-neo", "compilationJobName": "fraud-neo-c5",
                                     "endpointName": f"sm-epc-{JOB}-0", "variantName": "sm-epc-v-0"}
    assert (plain.inference_specification_name, plain.compilation_job_name) == (None, None)
    assert plain.provenance() == {"endpointName": f"sm-epc-{JOB}-1", "variantName": "sm-epc-v-1"}
    # Read back from a status row, the names survive (re-selection after a restart keeps them).
    row = {"recommendationId": compiled.recommendation_id, **compiled.provenance()}
    assert model.Recommendation.from_status_row(row).provenance() == compiled.provenance()
    stubber.assert_no_pending_responses()


def test_describe_serverless_recommendation_drops_nan_metrics(stubber, backend):
    raw = {"RecommendationId": f"{JOB}/Sv000001",
           "Metrics": {"CostPerHour": 0.0, "CostPerInference": 2.1e-6, "MaxInvocations": 900, "ModelLatency": 35,
                       "CpuUtilization": float("nan"), "MemoryUtilization": float("nan"), "ModelSetupTime": 12},
           "EndpointConfiguration": {"EndpointName": "sm-epc-sls", "VariantName": "sm-epc-sls-v",
                                     "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}},
           "ModelConfiguration": {}}
    expect_describe(stubber, describe_response("COMPLETED", InferenceRecommendations=[raw]), ({"Steps": []},))
    (recommendation,) = backend.describe(JOB).recommendations
    assert recommendation == model.Recommendation(
        recommendation_id=f"{JOB}/Sv000001", instance_type=None, initial_instance_count=None, environment={},
        metrics={"costPerHour": 0.0, "costPerInference": 2.1e-6, "maxInvocations": 900, "modelLatency": 35,
                 "modelSetupTime": 12},
        serverless={"memorySizeInMB": 2048, "maxConcurrency": 5}, endpoint_name="sm-epc-sls",
        variant_name="sm-epc-sls-v", recommended=True)
    assert not any(isinstance(v, float) and math.isnan(v) for v in recommendation.metrics.values())
    stubber.assert_no_pending_responses()


def test_describe_a_failed_job_keeps_its_reason(stubber, backend):
    reason = "ResourceLimitExceeded when calling CreateEndpoint"
    expect_describe(stubber, describe_response("FAILED", FailureReason=reason, CompletionTime=MODIFIED))
    snapshot = backend.describe(JOB)
    # What it measured before failing is kept (listed, never selected from: a failed job has no selection).
    assert (snapshot.status, snapshot.failure_reason, snapshot.recommendations) == ("FAILED", reason,
                                                                                    (SEED_BENCHMARK,))
    stubber.assert_no_pending_responses()


def test_describe_maps_endpoint_performances(stubber, backend):
    response = describe_response("COMPLETED", InputConfig={"Endpoints": [{"EndpointName": "fraud-staging"}]},
                                 EndpointPerformances=[{"Metrics": {"MaxInvocations": 34600, "ModelLatency": 9},
                                                        "EndpointInfo": {"EndpointName": "fraud-staging"}}])
    expect_describe(stubber, response, ({"Steps": []},))
    snapshot = backend.describe(JOB)
    assert snapshot.endpoint_performances == (model.EndpointPerformance("fraud-staging", 34600, 9),)
    assert snapshot.steps == model.StepSummary(0, {}, ())
    stubber.assert_no_pending_responses()


# -- stop -----------------------------------------------------------------------------------------------------------

def test_stop(stubber, backend):
    stubber.add_response("stop_inference_recommendations_job", {}, {"JobName": JOB})
    assert backend.stop(JOB) == base.StopDone()
    stubber.assert_no_pending_responses()


def test_stop_of_a_missing_job(stubber, backend):
    stubber.add_client_error("stop_inference_recommendations_job", "ResourceNotFound", "not found", 400,
                             expected_params={"JobName": JOB})
    assert backend.stop(JOB) == base.StopDone(not_found=True)
    stubber.assert_no_pending_responses()


def test_stop_of_a_finished_job(stubber, backend):
    stubber.add_client_error("stop_inference_recommendations_job", "ValidationException",
                             f"Job {JOB} cannot be stopped because it has already COMPLETED", 400,
                             expected_params={"JobName": JOB})
    assert backend.stop(JOB) == base.StopDone(already_finished=True)
    stubber.assert_no_pending_responses()


def test_stop_errors(stubber, backend):
    stubber.add_client_error("stop_inference_recommendations_job", "ThrottlingException", "Rate exceeded", 400,
                             expected_params={"JobName": JOB})
    stubber.add_client_error("stop_inference_recommendations_job", "AccessDeniedException", DENIED, 400,
                             expected_params={"JobName": JOB})
    with pytest.raises(base.TransientBackendError) as throttled:
        backend.stop(JOB)
    assert throttled.value.throttled
    with pytest.raises(base.RejectedError) as denied:
        backend.stop(JOB)
    assert denied.value.rejected.reason == "AccessDenied"
    stubber.assert_no_pending_responses()


# -- GetScalingConfigurationRecommendation --------------------------------------------------------------------------

OBJECTIVE = spec_module.Autoscaling(target_cpu_utilization_per_core=50, min_invocations_per_minute=1000,
                                    max_invocations_per_minute=60000)
RECOMMENDATION_ID = f"{JOB}/a1b2c3d4"
SCALING_REQUEST = {"InferenceRecommendationsJobName": JOB, "RecommendationId": RECOMMENDATION_ID,
                   "TargetCpuUtilizationPerCore": 50,
                   "ScalingPolicyObjective": {"MinInvocationsPerMinute": 1000, "MaxInvocationsPerMinute": 60000}}
SCALING_CALL = base.ScalingCall(OBJECTIVE, SCALING_REQUEST)


def scaling_response(**dynamic):
    """SageMaker's answer as botocore's model shapes it: the request echoed, the metric, the configuration."""
    return {**SCALING_REQUEST, "Metric": {"InvocationsPerInstance": 16213, "ModelLatency": 13},
            "DynamicScalingConfiguration": {
                "MinCapacity": 1, "MaxCapacity": 8, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
                "ScalingPolicies": [{"TargetTracking": {
                    "MetricSpecification": {"Predefined": {"PredefinedMetricType":
                                                           "SageMakerVariantInvocationsPerInstance"}},
                    "TargetValue": 8106.0}}], **dynamic}}


def test_the_scaling_request_is_the_one_botocore_validates(stubber, backend):
    best = model.Recommendation(RECOMMENDATION_ID, "ml.m5.2xlarge", 1, {}, {}, recommended=True,
                                endpoint_name="sm-epc-4")
    assert translate.scaling_request(JOB, best, OBJECTIVE) == SCALING_REQUEST


def test_recommend_scaling_reads_capacities_cooldowns_policies_and_metric(stubber, backend):
    stubber.add_response("get_scaling_configuration_recommendation", scaling_response(), SCALING_REQUEST)
    scaling = backend.recommend_scaling(SCALING_CALL)
    stubber.assert_no_pending_responses()
    assert scaling == model.Scaling(
        OBJECTIVE, "SageMaker", f"GetScalingConfigurationRecommendation for the recommendation {RECOMMENDATION_ID} "
                                f"of job {JOB}",
        min_capacity=1, max_capacity=8, scale_in_cooldown=300, scale_out_cooldown=60,
        policies=(model.TargetTrackingPolicy(8106.0, "SageMakerVariantInvocationsPerInstance"),),
        invocations_per_instance=16213, model_latency=13)
    assert scaling.target(model.INVOCATIONS_PER_INSTANCE) == 8106.0 and scaling.capacities == (1, 8)


def test_recommend_scaling_keeps_a_customized_metric_and_skips_a_policy_without_a_target(stubber, backend):
    customized = {"TargetTracking": {"MetricSpecification": {"Customized": {
        "MetricName": "ModelLatency", "Namespace": "AWS/SageMaker", "Statistic": "Average"}}, "TargetValue": 50000.0}}
    stubber.add_response("get_scaling_configuration_recommendation",
                         scaling_response(ScalingPolicies=[customized, {"TargetTracking": {}}]), SCALING_REQUEST)
    scaling = backend.recommend_scaling(SCALING_CALL)
    assert scaling.policies == (model.TargetTrackingPolicy(
        50000.0, None, model.CustomizedMetric("ModelLatency", "AWS/SageMaker", "Average")),)
    assert scaling.policies[0].metric == "AWS/SageMaker/ModelLatency"
    assert model.Scaling.from_row(scaling.to_row()) == scaling  # as status.best.scaling keeps it


def test_an_answer_without_capacities_is_a_refusal_not_a_configuration(stubber, backend):
    stubber.add_response("get_scaling_configuration_recommendation",
                         {**SCALING_REQUEST, "DynamicScalingConfiguration": {}}, SCALING_REQUEST)
    scaling = backend.recommend_scaling(SCALING_CALL)
    assert scaling.capacities is None and scaling.refused.reason == "NoRecommendation"
    assert RECOMMENDATION_ID in scaling.refused.message


@pytest.mark.parametrize("code,message,reason", [
    ("ValidationException", f"Inference recommendations job {JOB} is in IN_PROGRESS status, not COMPLETED",
     "JobNotCompleted"),
    ("ValidationException", "The job has not completed yet", "JobNotCompleted"),
    ("ResourceNotFound", f"Recommendation {RECOMMENDATION_ID} not found", "RecommendationNotFound"),
    ("ValidationException", f"RecommendationId {RECOMMENDATION_ID} does not exist in job {JOB}",
     "RecommendationNotFound"),
    ("ValidationException", "1 validation error detected", "ValidationFailed"),
    ("AccessDeniedException", "not authorized to perform: sagemaker:GetScalingConfigurationRecommendation",
     "AccessDenied"),
], ids=["not-completed", "not-completed-worded-otherwise", "unknown-recommendation", "unknown-recommendation-worded",
        "other-validation", "access-denied"])
def test_a_refused_scaling_request_says_what_it_asked_about(stubber, backend, code, message, reason):
    stubber.add_client_error("get_scaling_configuration_recommendation", code, message, 400,
                             expected_params=SCALING_REQUEST)
    with pytest.raises(base.RejectedError) as refused:
        backend.recommend_scaling(SCALING_CALL)
    assert refused.value.rejected.reason == reason
    assert message in refused.value.rejected.message
    assert f"recommendation {RECOMMENDATION_ID} of job {JOB}" in refused.value.rejected.message
    stubber.assert_no_pending_responses()


def test_a_scaling_request_by_benchmark_endpoint_names_the_endpoint_when_refused(stubber, backend):
    request = {**{k: v for k, v in SCALING_REQUEST.items() if k != "RecommendationId"}, "EndpointName": "sm-epc-c5x"}
    stubber.add_client_error("get_scaling_configuration_recommendation", "ResourceNotFound", "no such endpoint", 400,
                             expected_params=request)
    with pytest.raises(base.RejectedError) as refused:
        backend.recommend_scaling(base.ScalingCall(OBJECTIVE, request))
    assert refused.value.rejected.reason == "RecommendationNotFound"
    assert f"benchmark endpoint sm-epc-c5x of job {JOB}" in refused.value.rejected.message


def test_a_throttled_scaling_request_is_transient(stubber, backend):
    stubber.add_client_error("get_scaling_configuration_recommendation", "ThrottlingException", "Rate exceeded", 400,
                             expected_params=SCALING_REQUEST)
    with pytest.raises(base.TransientBackendError) as throttled:
        backend.recommend_scaling(SCALING_CALL)
    assert throttled.value.throttled


class Counting(RateLimiter):
    def __init__(self):
        super().__init__(1000, 1000)
        self.taken = 0

    def acquire(self):
        self.taken += 1
        return super().acquire()


class CannedBody:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def answering_client(answers: list[tuple[int, dict]], **credentials):
    """A real client that signs each request and gets its HTTP answer from `answers` at botocore's before-send
    (after the operator's own hook), so retries and a missing credential behave as they would against AWS."""
    made = boto3.session.Session(**credentials).client(
        "sagemaker", region_name=REGION, config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}))

    def answer(request, **_):
        status, body = answers.pop(0)
        return botocore.awsrequest.AWSResponse(request.url, status, {"content-type": "application/x-amz-json-1.1"},
                                               CannedBody(json.dumps(body, default=str).encode()))
    made.meta.events.register("before-send.sagemaker", answer)
    return made


def test_every_request_sent_takes_a_token_retries_included():
    described = describe_response("COMPLETED", CreationTime=CREATED.timestamp(), LastModifiedTime=MODIFIED.timestamp())
    throttled = {"__type": "ThrottlingException", "message": "Rate exceeded"}
    answers = [(400, throttled), (200, described), (200, {"Steps": []})]
    use_client_factory(lambda region: answering_client(answers, aws_access_key_id="testing",
                                                       aws_secret_access_key="testing"))
    limiter = Counting()
    try:
        snapshot = SageMakerBackend(REGION, rate_limiter=limiter).describe(JOB)
    finally:
        use_client_factory(None)
    assert snapshot.status == "COMPLETED" and answers == []
    assert limiter.taken == 3  # the throttled describe, its retry, the steps: each went over the wire


def test_a_call_that_cannot_be_sent_takes_no_token_and_never_waits(monkeypatch, tmp_path):
    # No credentials anywhere (and no metadata service to ask): botocore refuses before sending. A thousand such
    # jobs must each hear NoCredentials at once, not queue behind the rate limit for a call that never happens.
    without_credentials(monkeypatch, tmp_path)
    never = RateLimiter(per_second=1e-9, burst=0, sleep=lambda seconds: pytest.fail("waited for a token"))
    use_client_factory(lambda region: answering_client([]))
    try:
        with pytest.raises(base.RejectedError) as refused:
            SageMakerBackend(REGION, rate_limiter=never).describe(JOB)
    finally:
        use_client_factory(None)
    assert refused.value.rejected.reason == "NoCredentials"


def without_credentials(monkeypatch, tmp_path) -> None:
    """An empty default chain (and no metadata service to ask), on a session of the test's own: the shared one keeps
    credentials once another test's chain found some."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    session = botocore.session.Session()
    monkeypatch.setattr(translate, "botocore_session", lambda: session)
    use_client_factory(None)


def test_a_backend_without_credentials_says_so_before_any_call_and_notices_credentials_that_appear_later(
        monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    try:
        backend = SageMakerBackend(REGION)
        made_without = sm.client_for(REGION)
        assert backend.unsendable() == sm.classify(botocore.exceptions.NoCredentialsError())
        assert backend.unsendable().reason == "NoCredentials"
        # A thousand refused jobs do not each probe the chain: it is looked at again after CREDENTIALS_RECHECK_S.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        assert backend.unsendable() is not None
        monkeypatch.setattr(sm, "CREDENTIALS_RECHECK_S", 0.0)
        assert backend.unsendable() is None
        # The client made without credentials would still sign with none: it is made again, with them.
        made_again = sm.client_for(REGION)
        assert made_again is not made_without
        assert made_again._request_signer._credentials.access_key == "AKIDEXAMPLE"
        assert sm.client_for(REGION) is made_again
    finally:
        use_client_factory(None)


def test_a_swapped_in_client_carries_its_own_credentials(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    use_client_factory(lambda region: answering_client([]))
    try:
        assert SageMakerBackend(REGION).unsendable() is None
    finally:
        use_client_factory(None)


# -- rate limiter ---------------------------------------------------------------------------------------------------

class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []
        self.lock = threading.Lock()

    def clock(self):
        with self.lock:
            return self.now

    def sleep(self, seconds):
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds
            # A limiter that can never grant a token would loop here forever: fail instead.
            assert len(self.sleeps) < 10_000, f"still waiting after {len(self.sleeps)} sleeps"


def test_rate_limiter_bursts_then_waits_one_interval_per_call():
    fake = FakeTime()
    limiter = RateLimiter(per_second=4, burst=8, clock=fake.clock, sleep=fake.sleep)
    assert [limiter.acquire() for _ in range(8)] == [0.0] * 8
    assert fake.sleeps == []
    assert [limiter.acquire() for _ in range(5)] == [0.25] * 5
    assert fake.sleeps == [0.25] * 5
    assert fake.now == pytest.approx(101.25)


def test_rate_limiter_refills_with_time_up_to_the_burst():
    fake = FakeTime()
    limiter = RateLimiter(per_second=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire()
    fake.now += 1.0  # two tokens back
    assert [limiter.acquire() for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire() == pytest.approx(0.5)
    fake.now += 3600  # idle for an hour: still only a burst's worth
    assert [limiter.acquire() for _ in range(3)] == [0.0] * 3
    assert limiter.acquire() == pytest.approx(0.5)


class Exhausted(Exception):
    pass


def _race_for_tokens(burst: int, threads: int, attempts: int) -> tuple[list[float], list[float]]:
    def no_wait(seconds):
        raise Exhausted(seconds)

    limiter = RateLimiter(per_second=1, burst=burst, clock=lambda: 0.0, sleep=no_wait)
    granted, refused = [], []
    start = threading.Barrier(threads)

    def worker():
        start.wait()
        for _ in range(attempts):
            try:
                granted.append(limiter.acquire())
            except Exhausted as exhausted:
                refused.append(exhausted.args[0])

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in pool)
    return granted, refused


def test_rate_limiter_is_thread_safe():
    """With the clock standing still, exactly `burst` tokens exist: however many threads race for them, no more
    than that are handed out. (A tiny switch interval makes the threads interleave inside acquire: without the
    lock, some rounds hand out more tokens than exist.)"""
    burst, threads, attempts = 200, 8, 50
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(10):
            granted, refused = _race_for_tokens(burst, threads, attempts)
            assert len(granted) == burst
            assert granted == [0.0] * burst
            assert len(refused) == threads * attempts - burst
            assert set(refused) == {1.0}  # each refusal wanted exactly one more token
    finally:
        sys.setswitchinterval(interval)


def test_rate_limiter_paces_threads_that_wait():
    fake = FakeTime()
    # A rate whose interval is a binary fraction keeps the fake clock's arithmetic exact.
    limiter = RateLimiter(per_second=4, burst=5, clock=fake.clock, sleep=fake.sleep)
    results = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            waited = limiter.acquire()
            with lock:
                results.append(waited)

    pool = [threading.Thread(target=worker) for _ in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in pool)
    assert len(results) == 40
    assert results.count(0.0) >= 5  # the burst
    # Never more tokens than the burst plus what the elapsed (fake) time paid for.
    assert 40 <= 5 + 4 * (fake.now - 100.0)


# -- errors, regions ------------------------------------------------------------------------------------------------

def test_classify_connection_errors_as_transient():
    error = botocore.exceptions.EndpointConnectionError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com/")
    classified = sm.classify(error)
    assert isinstance(classified, base.TransientBackendError)
    assert not classified.throttled
    assert str(classified).startswith("cannot reach SageMaker: Could not connect to the endpoint URL")


@pytest.mark.parametrize("error", [
    botocore.exceptions.ConnectionClosedError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com/"),
    botocore.exceptions.ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com/"),
    botocore.exceptions.ConnectTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com/"),
], ids=["reset-mid-call", "read-timeout", "connect-timeout"])
def test_classify_a_connection_lost_mid_call_as_transient(error):
    # A reset after the request left (ConnectionClosedError) is no ConnectionError in botocore's hierarchy: it was
    # raised as an unexpected error, and kopf retried it after its unscaled 15 s backoff.
    classified = sm.classify(error)
    assert isinstance(classified, base.TransientBackendError) and not classified.throttled


def test_classify_missing_credentials():
    assert sm.classify(botocore.exceptions.NoCredentialsError()) == base.Rejected(
        "NoCredentials", "the operator has no AWS credentials (IRSA, EKS Pod Identity or the environment)", True,
        unsent=True)  # refused before any request left the operator


def test_classify_does_not_swallow_other_errors():
    with pytest.raises(KeyError):
        sm.classify(KeyError("JobArn"))


def test_region_unknown(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(base.RejectedError) as raised:
        SageMakerBackend(None, rate_limiter=RateLimiter(1000, 1000))
    assert raised.value.rejected.reason == "RegionUnknown" and raised.value.rejected.unsent
    assert raised.value.rejected.retryable_later is False
    assert "spec.sagemaker.region" in raised.value.rejected.message
    with pytest.raises(base.RejectedError):
        sm.region_for("")


def test_region_from_spec_then_environment(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert sm.region_for(None) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert sm.region_for(None) == "eu-central-1"
    assert sm.region_for("us-west-2") == "us-west-2"


def test_a_result_without_cost_gets_the_catalog_price_in_the_catalog_region_only():
    from rightsizer.backends.sagemaker.client import _recommendation

    raw = {"RecommendationId": "j/1", "Metrics": {"MaxInvocations": 30000, "ModelLatency": 9},
           "EndpointConfiguration": {"EndpointName": "e", "VariantName": "v", "InstanceType": "ml.m5.xlarge",
                                     "InitialInstanceCount": 2}}
    assert _recommendation(raw, "us-east-1").metrics["costPerHour"] == pytest.approx(0.46)  # 2 x 0.23
    assert "costPerHour" not in _recommendation(raw, "eu-west-1").metrics  # us-east-1 prices are not Ireland's
    priced = {**raw, "Metrics": {**raw["Metrics"], "CostPerHour": 0.5}}
    assert _recommendation(priced, "us-east-1").metrics["costPerHour"] == 0.5  # SageMaker's own figure wins
