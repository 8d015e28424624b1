"""spec.autoscaling -> a scaling configuration, per backend policy: SageMaker plans a GetScalingConfigurationRecommendation
call (or refuses one it cannot make); the local and kubernetes backends derive the same shape from what they
measured (backends/scaling.py). Pure: no call."""

from __future__ import annotations

import pytest

from rightsizer import model
from rightsizer.backends import base, registry
from rightsizer.backends import scaling as scaling_module
from rightsizer.backends.scaling import DEFAULT_COOLDOWN_SECONDS, derive
from rightsizer.model import INVOCATIONS_PER_INSTANCE, JobStatus, PodPlacement, Recommendation
from rightsizer.spec import Autoscaling

OBJECTIVE = Autoscaling(target_cpu_utilization_per_core=50, min_invocations_per_minute=1000,
                        max_invocations_per_minute=30000)
JOB = "fraud-local-0a1b2c3d-g1"


def row(instance_type: str = "local-2cpu", per_instance: int | None = 6000, cpu: float | None = 190.0,
        placement: PodPlacement | None = None, **metrics) -> Recommendation:
    measured = {"maxInvocationsPerInstance": per_instance, "cpuUtilization": cpu, "modelLatency": 42, **metrics}
    return Recommendation(f"{JOB}/00000000", instance_type, 5, {},
                          {key: value for key, value in measured.items() if value is not None}, placement=placement)


# -- derived from measurements ----------------------------------------------------------------------------------

def test_a_cpu_bound_server_scales_where_its_cpu_per_core_reaches_the_target():
    scaling = derive(OBJECTIVE, row(), "the local backend")
    # 190 % over 2 cores = 95 % per core at 6000/min: 50 % per core is reached at 6000 x 50/95 = 3157/min.
    assert scaling.policies == (model.TargetTrackingPolicy(3157.0, INVOCATIONS_PER_INSTANCE),)
    assert scaling.capacities == (1, 5)  # ceil(1000 / 3157); ceil(30000 / 6000): the peak within the SLA
    assert (scaling.scale_in_cooldown, scaling.scale_out_cooldown) == (DEFAULT_COOLDOWN_SECONDS,) * 2
    assert (scaling.invocations_per_instance, scaling.model_latency) == (6000, 42)
    assert (scaling.source, scaling.objective, scaling.refused) == ("the local backend", OBJECTIVE, None)
    assert "95 % per core (190 % over 2 cores) at 6000 invocations/min per instance" in scaling.derivation
    assert "maxCapacity 5 serves 30000/min" in scaling.derivation and len(scaling.derivation) <= 1024


def test_a_server_whose_cpu_never_reaches_the_target_keeps_a_fifth_of_its_capacity():
    scaling = derive(OBJECTIVE, row(cpu=40.0), "the local backend")  # 20 % per core at its maximum
    assert scaling.target(INVOCATIONS_PER_INSTANCE) == 4800.0  # 6000 x MAX_TARGET_SHARE, not 6000 x 50/20
    assert "kept at 80%" in scaling.derivation


def test_without_a_cpu_measurement_the_target_is_aws_starting_safety_factor():
    scaling = derive(OBJECTIVE, row(cpu=None), "the local backend")
    assert scaling.target(INVOCATIONS_PER_INSTANCE) == 3000.0
    assert "no CPU utilisation was measured" in scaling.derivation


def test_unknown_cores_fall_back_to_the_safety_factor_and_say_so():
    scaling = derive(OBJECTIVE, row(instance_type="my-gpu-box"), "the local backend")
    assert scaling.target(INVOCATIONS_PER_INSTANCE) == 3000.0
    assert "the cores of my-gpu-box are unknown" in scaling.derivation


def test_the_minimum_capacity_is_one_at_least_and_never_above_the_maximum():
    quiet = derive(Autoscaling(50, 0, 30000), row(), "x")
    assert quiet.capacities == (1, 5)
    steady = derive(Autoscaling(50, 30000, 30000), row(), "x")  # 30000 / 3157 would want 10
    assert steady.capacities == (5, 5)


def test_the_endpoint_throughput_is_shared_when_no_per_instance_figure_was_kept():
    shared = Recommendation("r", "local-2cpu", 4, {}, {"maxInvocations": 24000, "cpuUtilization": 190.0})
    assert derive(OBJECTIVE, shared, "x").invocations_per_instance == 6000


@pytest.mark.parametrize("per_instance", [0, None])
def test_a_configuration_that_held_no_load_cannot_be_scaled(per_instance):
    scaling = derive(OBJECTIVE, row(per_instance=per_instance), "the local backend")
    assert scaling.capacities is None and scaling.policies == ()
    assert scaling.refused.reason == "NotMeasured" and "local-2cpu sustained no load" in scaling.refused.message


@pytest.mark.parametrize("recommendation,expected", [
    (row(placement=PodPlacement({}, {"cpu": "2"}, {"cpu": "1500m"})), 1.5),  # the limit bounds what the Pod uses
    (row(placement=PodPlacement({}, {"cpu": "500m"}, {})), 0.5),
    (row(placement=PodPlacement({}, {"memory": "1Gi"}, {})), None),
    (row(placement=PodPlacement({}, {"cpu": "lots"}, {})), None),
    (row(instance_type="local-4cpu-8gi"), 4.0),
    (row(instance_type="ml.c5.xlarge"), 4.0),  # a SageMaker type the local backend emulates: its vCPUs
    (row(instance_type="unknown"), None),
], ids=["pod-limit", "pod-request", "pod-without-cpu", "pod-bad-quantity", "local-profile", "catalog", "unknown"])
def test_cores_of_a_measured_instance(recommendation, expected):
    assert scaling_module.cores(recommendation) == expected


def test_the_kubernetes_backend_derives_per_replica_from_its_pod_resources():
    pod = row(instance_type="half-cpu", per_instance=1200, cpu=45.0, placement=PodPlacement({}, {"cpu": "500m"}, {}))
    scaling = registry.policy("kubernetes").scaling(None, OBJECTIVE, JOB, JobStatus.COMPLETED, pod)
    # 45 % of one core on a half-core Pod is 90 % of its CPU: 50 % is reached at 1200 x 50/90 = 666/min.
    assert scaling.target(INVOCATIONS_PER_INSTANCE) == 666.0 and scaling.capacities == (2, 25)
    assert scaling.source == "the kubernetes backend"


def test_the_local_backend_derives_even_from_partial_results():
    scaling = registry.policy("local").scaling(None, OBJECTIVE, JOB, JobStatus.STOPPED, row())
    assert isinstance(scaling, model.Scaling) and scaling.source == "the local backend" and scaling.capacities


# -- SageMaker: a call to plan, or a refusal without one ------------------------------------------------------

SAGEMAKER = registry.policy("sagemaker")
SM_JOB = "fraud-default-457a9d84-g1"


def sagemaker_row(**fields) -> Recommendation:
    return Recommendation(fields.pop("recommendation_id", f"{SM_JOB}/00000004"), "ml.m5.2xlarge", 1, {},
                          {"maxInvocations": 32427}, **fields)


def test_sagemaker_plans_the_call_by_recommendation_id():
    planned = SAGEMAKER.scaling(None, OBJECTIVE, SM_JOB, JobStatus.COMPLETED,
                                sagemaker_row(recommended=True, endpoint_name="sm-epc-4"))
    assert planned == base.ScalingCall(OBJECTIVE, {
        "InferenceRecommendationsJobName": SM_JOB, "RecommendationId": f"{SM_JOB}/00000004",
        "TargetCpuUtilizationPerCore": 50,
        "ScalingPolicyObjective": {"MinInvocationsPerMinute": 1000, "MaxInvocationsPerMinute": 30000}})


def test_a_benchmark_sagemaker_did_not_recommend_is_asked_about_by_its_endpoint():
    planned = SAGEMAKER.scaling(None, OBJECTIVE, SM_JOB, JobStatus.COMPLETED,
                                sagemaker_row(recommendation_id=f"{SM_JOB}/sm-epc-c5x", recommended=False,
                                              endpoint_name="sm-epc-c5x"))
    assert planned.request["EndpointName"] == "sm-epc-c5x" and "RecommendationId" not in planned.request


@pytest.mark.parametrize("status", [JobStatus.STOPPED, None])
def test_sagemaker_refuses_without_a_call_for_a_job_that_did_not_complete(status):
    refused = SAGEMAKER.scaling(None, OBJECTIVE, SM_JOB, status, sagemaker_row(recommended=True))
    assert isinstance(refused, model.Scaling) and refused.refused.reason == "JobNotCompleted"
    assert f"job {SM_JOB} is {status}" in refused.refused.message and refused.source == "SageMaker"


@pytest.mark.parametrize("fields,says", [
    ({"recommended": False}, "has neither a RecommendationId"),
    ({"recommended": False, "endpoint_name": "not_a_valid_name"}, "EndpointName: 'not_a_valid_name' does not match"),
], ids=["nothing-to-name", "endpoint-name-the-service-refuses"])
def test_a_request_the_service_model_refuses_is_not_sent(fields, says):
    refused = SAGEMAKER.scaling(None, OBJECTIVE, SM_JOB, JobStatus.COMPLETED, sagemaker_row(**fields))
    assert refused.refused.reason == "InvalidRequest" and says in refused.refused.message


def test_every_policy_has_the_scaling_hook():
    for name, policy in registry.POLICIES.items():
        assert callable(getattr(policy, "scaling", None)), name


def test_an_in_process_backend_is_never_asked_and_says_so_if_it_is():
    from rightsizer.backends import inprocess
    backend = inprocess.InProcessBackend(lambda *_: None, scheme="local")
    with pytest.raises(TypeError, match="local jobs derive their scaling from their measurements"):
        backend.recommend_scaling(base.ScalingCall(OBJECTIVE, {}))
