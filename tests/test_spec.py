"""spec.py as plain functions: the semantic rules (exact messages), soft warnings, job-type inference, schema
defaults, candidates and grids, and the samples. No API server."""

from __future__ import annotations

import copy

import pytest

from rightsizer import schema
from rightsizer import spec as spec_module
from rightsizer.backends import registry
from rightsizer.backends.sagemaker import policy as sagemaker_policy
from rightsizer.spec import InvalidSpec


def parse(raw: dict) -> spec_module.RightsizeJobSpec:
    """What the operator does with a spec: the backend-neutral rules and the chosen backend's, reported at once."""
    return registry.validate(raw).spec


def soft_warnings(parsed: spec_module.RightsizeJobSpec) -> list[str]:
    return registry.policy(parsed.backend).warnings(parsed)
from conftest import load_samples


ARN = "arn:aws:sagemaker:us-east-1:111122223333:model-package/fraud/1"
ROLE = "arn:aws:iam::111122223333:role/IR"
SAGEMAKER = {"backend": "sagemaker", "model": {"modelPackageVersionArn": ARN}, "sagemaker": {"roleArn": ROLE}}
LOCAL = {
    "backend": "local",
    "model": {"local": {"framework": "xgboost", "modelUri": "file:///models/fraud/model.ubj",
                        "payload": {"path": "/models/fraud/payload.csv"}}},
    "instanceTypes": ["local-1cpu"],
}
P95_100 = {"maxInvocations": 1000, "modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]}


def sagemaker(**fields) -> dict:
    return {**copy.deepcopy(SAGEMAKER), **fields}


def local(**fields) -> dict:
    return {**copy.deepcopy(LOCAL), **fields}


def phase(users: int, rate: int, seconds: int) -> dict:
    return {"initialNumberOfUsers": users, "spawnRate": rate, "durationInSeconds": seconds}


def phases(*items: dict) -> dict:
    return {"trafficType": "PHASES", "phases": list(items)}


def stairs(seconds: int, steps: int, users: int = 1) -> dict:
    return {"trafficType": "STAIRS", "stairs": {"durationInSeconds": seconds, "numberOfSteps": steps,
                                                "usersPerStep": users}}


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(InvalidSpec) as caught:
        parse(raw)
    return caught.value.errors


def advanced(**fields) -> dict:
    """An Advanced SageMaker spec that draws no warning, to which a test adds one deviation."""
    base = dict(instanceTypes=["ml.m5.large"], trafficPattern=phases(phase(1, 1, 120)), stoppingConditions=P95_100)
    return sagemaker(**{**base, **fields})


# --- Hard rules: parse raises InvalidSpec with every violation ---------------------------------------------------

def test_phases_longer_than_job_duration():
    raw = sagemaker(trafficPattern=phases(phase(1, 0, 200), phase(1, 0, 150)), jobDurationInSeconds=300)
    assert errors_of(raw) == ["spec.trafficPattern.phases last 350 s in total, longer than "
                              "spec.jobDurationInSeconds (300 s)"]


def test_stairs_longer_than_job_duration():
    # durationInSeconds is each step's (botocore: "how long each traffic step should be"): 5 x 140 s = 700 s.
    raw = sagemaker(trafficPattern=stairs(140, 5), jobDurationInSeconds=600)
    assert errors_of(raw) == ["spec.trafficPattern.stairs last 5 steps x 140 s = 700 s in total, longer than "
                              "spec.jobDurationInSeconds (600 s)"]


def test_stairs_whose_step_fits_the_job_but_whose_steps_do_not_are_refused():
    # The old reading (durationInSeconds = the whole pattern) let this through: 600 s <= 600 s.
    assert errors_of(sagemaker(trafficPattern=stairs(600, 5), jobDurationInSeconds=600)) == [
        "spec.trafficPattern.stairs last 5 steps x 600 s = 3000 s in total, longer than "
        "spec.jobDurationInSeconds (600 s)"]


def test_traffic_exactly_as_long_as_the_job_is_valid():
    assert parse(sagemaker(trafficPattern=phases(phase(1, 0, 200), phase(1, 0, 100)),
                           jobDurationInSeconds=300)).traffic_pattern.duration_seconds == 300
    assert parse(sagemaker(trafficPattern=stairs(120, 5), jobDurationInSeconds=600)).traffic_pattern.duration_seconds \
        == 600


def test_without_job_duration_any_traffic_length_is_accepted():
    assert parse(sagemaker(trafficPattern=phases(phase(1, 0, 3600), phase(1, 0, 3600)))).job_duration_seconds is None


def test_job_duration_rule_applies_to_the_local_backend_too():
    raw = local(trafficPattern=phases(phase(1, 0, 30), phase(1, 0, 31)), jobDurationInSeconds=60)
    assert errors_of(raw) == ["spec.trafficPattern.phases last 61 s in total, longer than "
                              "spec.jobDurationInSeconds (60 s)"]


def test_stairs_last_steps_times_the_duration_of_each():
    # More steps than seconds in durationInSeconds is fine: every step lasts that long.
    parsed = parse(sagemaker(trafficPattern=stairs(150, 151)))
    assert (parsed.traffic_pattern.stairs.total_seconds, parsed.traffic_pattern.duration_seconds) == (22650, 22650)


@pytest.mark.parametrize("first, expected_final", [
    (phase(1, 1, 150), 3),   # 1 + floor(1 * 150 / 60) = 1 + floor(2.5)
    (phase(2, 2, 120), 6),   # the seed's first phase
    (phase(3, 0, 600), 3),
    (phase(1, 3, 59), 3),    # 1 + floor(2.95)
])
def test_phase_final_users_is_initial_plus_floor_of_spawned(first, expected_final):
    parsed = parse(sagemaker(trafficPattern=phases(first)))
    assert parsed.traffic_pattern.phases[0].final_users == expected_final


@pytest.mark.parametrize("next_users", [3, 4, 5, 6])
def test_phase_continuity_allows_a_jump_of_three(next_users):
    # Phase 0 ends with 1 + floor(1 * 150 / 60) = 3 users; 6 is a jump of exactly 3.
    parsed = parse(sagemaker(trafficPattern=phases(phase(1, 1, 150), phase(next_users, 0, 120))))
    assert [p.initial_users for p in parsed.traffic_pattern.phases] == [1, next_users]


def test_phase_continuity_rejects_a_jump_of_four_upwards():
    raw = sagemaker(trafficPattern=phases(phase(1, 1, 150), phase(7, 0, 120)))
    assert errors_of(raw) == [
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 7 but phase 0 ends with 3 users "
        "(1 + 1/min x 150 s); SageMaker allows a jump of at most 3"]


def test_phase_continuity_rejects_a_drop_of_more_than_three_and_names_each_pair():
    raw = sagemaker(trafficPattern=phases(phase(2, 3, 120), phase(1, 0, 120), phase(1, 0, 120), phase(5, 0, 120)))
    assert errors_of(raw) == [
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 1 but phase 0 ends with 8 users "
        "(2 + 3/min x 120 s); SageMaker allows a jump of at most 3",
        "spec.trafficPattern.phases[3].initialNumberOfUsers is 5 but phase 2 ends with 1 users "
        "(1 + 0/min x 120 s); SageMaker allows a jump of at most 3",
    ]


def test_phase_continuity_is_not_checked_on_the_local_backend():
    parsed = parse(local(trafficPattern=phases(phase(1, 0, 30), phase(20, 0, 30))))
    assert parsed.backend == "local"
    assert [p.initial_users for p in parsed.traffic_pattern.phases] == [1, 20]


def test_unknown_instance_type():
    assert errors_of(sagemaker(instanceTypes=["ml.m5.large", "ml.m5.huge"])) == [
        "spec.instanceTypes[1]: ml.m5.huge is not a SageMaker real-time hosting instance type"]


def test_instance_types_come_from_botocores_enum():
    known = sagemaker_policy.instance_types()
    assert {"ml.m5.large", "ml.m5.4xlarge", "ml.c5.large", "ml.t2.medium"} <= known
    assert "ml.m5.huge" not in known and "local-1cpu" not in known
    # Same object every call: the service model is loaded once.
    assert sagemaker_policy.instance_types() is known


@pytest.mark.parametrize("burstable", ["ml.t2.medium", "ml.t2.large", "ml.t2.xlarge", "ml.t2.2xlarge"])
def test_ml_t2_is_rejected_although_botocore_lists_it(burstable):
    assert burstable in sagemaker_policy.instance_types()
    assert errors_of(sagemaker(instanceTypes=[burstable])) == [
        f"spec.instanceTypes[0]: Inference Recommender rejects burstable {burstable}"]


def test_endpoint_configuration_errors_name_the_endpoint_configurations_field():
    raw = sagemaker(endpointConfigurations=[
        {"instanceType": "ml.m5.large"}, {"instanceType": "ml.t2.medium"}, {"instanceType": "ml.m5.huge"},
        {"serverlessConfig": {"memorySizeInMB": 2048, "maxConcurrency": 5}}])
    assert errors_of(raw) == [
        "spec.endpointConfigurations[1]: Inference Recommender rejects burstable ml.t2.medium",
        "spec.endpointConfigurations[2]: ml.m5.huge is not a SageMaker real-time hosting instance type"]


def test_endpoint_configurations_without_serverless_entries_still_name_their_field():
    raw = sagemaker(endpointConfigurations=[{"instanceType": "ml.t2.medium",
                                             "environmentParameterRanges": {"OMP_NUM_THREADS": ["1"]}}])
    assert errors_of(raw) == ["spec.endpointConfigurations[0]: Inference Recommender rejects burstable ml.t2.medium"]


@pytest.mark.parametrize("candidates, field", [
    ({"instanceTypes": ["ml.m5.large"]}, "spec.instanceTypes"),
    ({"endpointConfigurations": [{"instanceType": "ml.m5.large"}]}, "spec.endpointConfigurations"),
])
def test_supported_instance_types_with_candidates_is_refused_naming_both(candidates, field):
    # Today's request would send one list and silently drop the other.
    raw = sagemaker(containerConfig={"supportedInstanceTypes": ["ml.c5.large"]}, **candidates)
    assert errors_of(raw) == [f"spec.containerConfig.supportedInstanceTypes and {field} both name the instance "
                              "types to benchmark: give only one"]


def test_supported_instance_types_alone_are_valid():
    parsed = parse(sagemaker(containerConfig={"supportedInstanceTypes": ["ml.c5.large", "ml.m5.large"]}))
    assert (parsed.job_type, parsed.candidates) == ("Default", ())


def test_unknown_supported_instance_type():
    raw = sagemaker(containerConfig={"supportedInstanceTypes": ["ml.m5.large", "ml.bogus.large", "ml.c5.xlarge"]})
    assert errors_of(raw) == ["spec.containerConfig.supportedInstanceTypes[1]: ml.bogus.large is not a SageMaker "
                              "real-time hosting instance type"]


def test_instance_types_are_not_checked_on_the_local_backend():
    parsed = parse(local(instanceTypes=["local-1cpu", "ml.m5.huge", "ml.t2.medium"]))
    assert [c.instance_type for c in parsed.candidates] == ["local-1cpu", "ml.m5.huge", "ml.t2.medium"]


def test_every_error_is_reported_at_once():
    raw = sagemaker(
        instanceTypes=["ml.m5.huge", "ml.t2.medium"],
        containerConfig={"supportedInstanceTypes": ["ml.nope.large"]},
        trafficPattern=phases(phase(1, 0, 120), phase(9, 0, 120)),
        jobDurationInSeconds=200,
    )
    with pytest.raises(InvalidSpec) as caught:
        parse(raw)
    expected = [
        "spec.trafficPattern.phases last 240 s in total, longer than spec.jobDurationInSeconds (200 s)",
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 9 but phase 0 ends with 1 users "
        "(1 + 0/min x 120 s); SageMaker allows a jump of at most 3",
        "spec.instanceTypes[0]: ml.m5.huge is not a SageMaker real-time hosting instance type",
        "spec.instanceTypes[1]: Inference Recommender rejects burstable ml.t2.medium",
        "spec.containerConfig.supportedInstanceTypes[0]: ml.nope.large is not a SageMaker real-time hosting "
        "instance type",
        "spec.containerConfig.supportedInstanceTypes and spec.instanceTypes both name the instance types to "
        "benchmark: give only one",
    ]
    assert caught.value.errors == expected
    assert str(caught.value) == "; ".join(expected)
    assert isinstance(caught.value, ValueError)


def test_stairs_errors_are_reported_with_the_others():
    assert errors_of(sagemaker(trafficPattern=stairs(100, 101), jobDurationInSeconds=50,
                               instanceTypes=["ml.m5.huge"])) == [
        "spec.trafficPattern.stairs last 101 steps x 100 s = 10100 s in total, longer than "
        "spec.jobDurationInSeconds (50 s)",
        "spec.instanceTypes[0]: ml.m5.huge is not a SageMaker real-time hosting instance type",
    ]


# --- Soft warnings -----------------------------------------------------------------------------------------------

def warnings_of(raw: dict) -> list[str]:
    return soft_warnings(parse(raw))


def test_the_clean_advanced_baseline_has_no_warning():
    assert warnings_of(advanced()) == []


@pytest.mark.parametrize("users", [1, 2, 3])
def test_documented_initial_users_draw_no_warning(users):
    assert warnings_of(advanced(trafficPattern=phases(phase(users, 0, 120)))) == []


def test_initial_users_above_three_warn():
    assert warnings_of(advanced(trafficPattern=phases(phase(1, 0, 120), phase(4, 0, 120)))) == [
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 4; SageMaker documents 1-3"]


def test_spawn_rate_above_three_warns():
    assert warnings_of(advanced(trafficPattern=phases(phase(1, 3, 120)))) == []
    assert warnings_of(advanced(trafficPattern=phases(phase(1, 0, 120), phase(1, 4, 120)))) == [
        "spec.trafficPattern.phases[1].spawnRate is 4; SageMaker documents 0-3 users per minute"]


@pytest.mark.parametrize("seconds, warns", [(119, True), (120, False), (3600, False), (3601, True)])
def test_phase_duration_outside_120_3600_warns(seconds, warns):
    expected = [f"spec.trafficPattern.phases[0].durationInSeconds is {seconds}; SageMaker documents 120-3600 s"]
    assert warnings_of(advanced(trafficPattern=phases(phase(1, 0, seconds)))) == (expected if warns else [])


@pytest.mark.parametrize("seconds, warns", [(60, True), (120, False), (3600, False), (4000, True)])
def test_stairs_duration_outside_120_3600_warns(seconds, warns):
    expected = [f"spec.trafficPattern.stairs.durationInSeconds is {seconds}; SageMaker documents 120-3600 s"]
    assert warnings_of(advanced(trafficPattern=stairs(seconds, 4))) == (expected if warns else [])


def test_one_phase_can_draw_three_warnings_in_field_order():
    assert warnings_of(advanced(trafficPattern=phases(phase(5, 4, 60)))) == [
        "spec.trafficPattern.phases[0].initialNumberOfUsers is 5; SageMaker documents 1-3",
        "spec.trafficPattern.phases[0].spawnRate is 4; SageMaker documents 0-3 users per minute",
        "spec.trafficPattern.phases[0].durationInSeconds is 60; SageMaker documents 120-3600 s",
    ]


def test_p99_threshold_on_an_advanced_job_warns():
    p99 = {"modelLatencyThresholds": [{"percentile": "P99", "valueInMilliseconds": 100}]}
    assert warnings_of(advanced(stoppingConditions=p99)) == [
        "spec.stoppingConditions.modelLatencyThresholds[0].percentile is P99; for custom load tests (Advanced jobs) "
        "SageMaker says to specify P95"]


def test_p99_threshold_on_the_local_backend_does_not_warn():
    p99 = {"modelLatencyThresholds": [{"percentile": "P99", "valueInMilliseconds": 100}]}
    # Priced: a local profile without a price warns under the default cost objective (tested below).
    assert warnings_of(local(stoppingConditions=p99, local={"pricePerHour": {"local-1cpu": 0.05}})) == []


@pytest.mark.parametrize("objective", ["CostPerInference", "CostPerHour"])
def test_a_cost_objective_without_a_price_warns_on_the_local_backend(objective):
    spec = local(instanceTypes=["local-1cpu", "ml.m5.large", "local-2cpu"], selection={"objective": objective})
    assert warnings_of(spec) == [
        f"no price known for local-1cpu, local-2cpu: spec.selection.objective {objective} cannot rank them; set "
        f"spec.local.pricePerHour or choose objective ModelLatency or MaxInvocations"]
    priced = {**spec, "local": {"pricePerHour": {"local-1cpu": 0.05, "local-2cpu": 0.1}}}
    assert warnings_of(priced) == []  # ml.m5.large has its catalog price


@pytest.mark.parametrize("objective", ["ModelLatency", "MaxInvocations"])
def test_an_objective_that_needs_no_price_does_not_warn(objective):
    assert warnings_of(local(selection={"objective": objective})) == []


def test_max_invocations_above_30000_warns():
    assert warnings_of(advanced(stoppingConditions={**P95_100, "maxInvocations": 30000})) == []
    assert warnings_of(advanced(stoppingConditions={**P95_100, "maxInvocations": 30001})) == [
        "spec.stoppingConditions.maxInvocations is 30001; SageMaker documents 1-30000 per minute"]


def test_resource_limits_above_ten_warn():
    assert warnings_of(advanced(resourceLimit={"maxNumberOfTests": 10, "maxParallelOfTests": 10})) == []
    assert warnings_of(advanced(resourceLimit={"maxNumberOfTests": 11, "maxParallelOfTests": 12})) == [
        "spec.resourceLimit.maxNumberOfTests is 11; SageMaker documents 1-10",
        "spec.resourceLimit.maxParallelOfTests is 12; SageMaker documents 1-10",
    ]


def test_grid_larger_than_max_number_of_tests_warns():
    raw = advanced(instanceTypes=["ml.m5.large", "ml.m5.xlarge"],
                   environmentParameterRanges={"OMP_NUM_THREADS": ["1", "2", "3"], "WORKERS": ["1", "2"]},
                   resourceLimit={"maxNumberOfTests": 11})
    assert spec_module.configuration_count(parse(raw)) == 12
    assert warnings_of(raw) == ["spec.resourceLimit.maxNumberOfTests is 11; SageMaker documents 1-10",
                                "the candidates make 12 configurations but spec.resourceLimit.maxNumberOfTests "
                                "is 11: not every configuration will be tested"]


def test_grid_equal_to_max_number_of_tests_does_not_warn():
    raw = advanced(instanceTypes=["ml.m5.large", "ml.m5.xlarge"],
                   environmentParameterRanges={"OMP_NUM_THREADS": ["1", "2", "3"]},
                   resourceLimit={"maxNumberOfTests": 6})
    assert warnings_of(raw) == []


def test_undocumented_container_config_values_warn():
    raw = advanced(containerConfig={"domain": "FINANCE", "task": "CLASSIFICATION", "framework": "MXNET",
                                    "nearestModelName": "gpt2"})
    assert warnings_of(raw) == [
        "spec.containerConfig.domain 'FINANCE' is not a documented value "
        "(COMPUTER_VISION, NATURAL_LANGUAGE_PROCESSING, MACHINE_LEARNING)",
        "spec.containerConfig.framework 'MXNET' is not a documented value "
        "(TENSORFLOW, PYTORCH, XGBOOST, SAGEMAKER-SCIKIT-LEARN)",
        "spec.containerConfig.nearestModelName 'gpt2' is not a documented value (efficientnetb7, unet, xgboost, "
        "faster-rcnn-resnet101, nasnetlarge, vgg16, inception-v3, mask-rcnn, sagemaker-scikit-learn, "
        "densenet201-gluon, resnet18v2-gluon, xception, densenet201, yolov4, resnet152, bert-base-cased, "
        "xceptionV1-keras, resnet50, retinanet)",
    ]


def test_documented_container_config_values_do_not_warn():
    raw = advanced(containerConfig={"domain": "MACHINE_LEARNING", "task": "OTHER", "framework": "XGBOOST",
                                    "nearestModelName": "xgboost", "frameworkVersion": "1.7-1"})
    assert warnings_of(raw) == []


def test_container_config_warnings_fit_the_status_warning_item_limit():
    """status.warnings items are maxLength 1024 in the CRD; the longest field value the CRD admits is 256."""
    limit = schema.openapi_schema()["properties"]["status"]["properties"]["warnings"]["items"]["maxLength"]
    raw = advanced(containerConfig={field: "X" * 256 for field in sagemaker_policy.DOCUMENTED_CONTAINER_VALUES})
    found = warnings_of(raw)
    assert len(found) == 4
    assert max(len(w) for w in found) <= limit


@pytest.mark.parametrize("missing, fields, message", [
    ("both", {"trafficPattern": None, "stoppingConditions": None},
     "an Advanced job without spec.trafficPattern and stoppingConditions runs with SageMaker's defaults"),
    ("traffic", {"trafficPattern": None},
     "an Advanced job without spec.trafficPattern runs with SageMaker's defaults"),
    ("stopping", {"stoppingConditions": None},
     "an Advanced job without spec.stoppingConditions runs with SageMaker's defaults"),
])
def test_advanced_without_traffic_or_stopping_conditions_warns(missing, fields, message):
    raw = advanced()
    for name in fields:
        del raw[name]
    if missing == "both":
        raw["resourceLimit"] = {"maxNumberOfTests": 2}   # keeps the inferred type Advanced
    parsed = parse(raw)
    assert parsed.job_type == "Advanced"
    assert soft_warnings(parsed) == [message]


def test_explicit_advanced_with_nothing_else_warns_about_both():
    assert warnings_of(sagemaker(jobType="Advanced", instanceTypes=["ml.m5.large"])) == [
        "an Advanced job without spec.trafficPattern and stoppingConditions runs with SageMaker's defaults"]


def test_advanced_on_an_existing_endpoint_needs_no_traffic_pattern():
    raw = sagemaker(jobType="Advanced", model={"endpointName": "fraud-staging"})
    assert warnings_of(raw) == []


def test_default_jobs_do_not_draw_the_advanced_warning():
    assert warnings_of(sagemaker(instanceTypes=["ml.m5.large"])) == []


def test_the_local_backend_draws_no_sagemaker_guidance_warning():
    raw = local(trafficPattern=phases(phase(5, 10, 30), phase(7, 10, 5000)),
                stoppingConditions={"maxInvocations": 90000},
                resourceLimit={"maxNumberOfTests": 1, "maxParallelOfTests": 50},
                environmentParameterRanges={"OMP_NUM_THREADS": ["1", "2"]},
                containerConfig={"domain": "FINANCE"},
                local={"pricePerHour": {"local-1cpu": 0.05}})  # unpriced, it would warn (a local pitfall)
    parsed = parse(raw)
    assert spec_module.configuration_count(parsed) == 2
    assert soft_warnings(parsed) == []


# --- Job type inference, as the SageMaker SDK's right_size --------------------------------------------------------

ADVANCED_SWITCHES = {
    "trafficPattern": phases(phase(1, 0, 120)),
    "stoppingConditions": {"maxInvocations": 100},
    "resourceLimit": {"maxNumberOfTests": 2},
    "environmentParameterRanges": {"OMP_NUM_THREADS": ["1"]},
    "endpointConfigurations": [{"instanceType": "ml.m5.large"}],
}


@pytest.mark.parametrize("field", sorted(ADVANCED_SWITCHES))
def test_each_load_test_field_alone_infers_advanced(field):
    assert spec_module.infer_job_type({field: ADVANCED_SWITCHES[field]}) == ("Advanced", True)


@pytest.mark.parametrize("raw", [
    {},
    {"jobDurationInSeconds": 7200},
    {"instanceTypes": ["ml.m5.large", "ml.m5.xlarge"]},
    {"containerConfig": {"supportedInstanceTypes": ["ml.m5.large"]}},
    {"model": {"modelPackageVersionArn": ARN}, "jobDescription": "x", "selection": {"objective": "CostPerHour"}},
    {"resourceLimit": {}, "stoppingConditions": {}, "trafficPattern": None},   # empty counts as absent, as in the SDK
], ids=["nothing", "job-duration", "instance-types", "supported-instance-types", "other-fields", "empty-values"])
def test_other_fields_infer_default(raw):
    assert spec_module.infer_job_type(raw) == ("Default", True)


@pytest.mark.parametrize("explicit", ["Default", "Advanced"])
def test_explicit_job_type_wins(explicit):
    assert spec_module.infer_job_type({"jobType": explicit}) == (explicit, False)
    assert spec_module.infer_job_type({"jobType": explicit, **ADVANCED_SWITCHES}) == (explicit, False)


def test_parse_records_the_inferred_job_type():
    assert (parse(sagemaker(jobDurationInSeconds=7200)).job_type,
            parse(sagemaker(jobDurationInSeconds=7200)).job_type_inferred) == ("Default", True)
    parsed = parse(sagemaker(instanceTypes=["ml.m5.large"], environmentParameterRanges={"A": ["1"]}))
    assert (parsed.job_type, parsed.job_type_inferred) == ("Advanced", True)
    parsed = parse(sagemaker(jobType="Default", instanceTypes=["ml.m5.large"]))
    assert (parsed.job_type, parsed.job_type_inferred) == ("Default", False)


# --- Schema defaults ---------------------------------------------------------------------------------------------

def test_with_defaults_fills_the_crd_defaults_without_mutating_the_input():
    raw = {
        "model": {"local": {"framework": "xgboost", "modelUri": "/m", "payload": {"path": "/p.csv"}}},
        "selection": {"constraints": {"maxModelLatencyMs": 100}},
        "promotion": {"target": {"apiVersion": "v1", "kind": "Thing", "name": "x"}},
    }
    before = copy.deepcopy(raw)
    filled = schema.with_defaults(raw)
    assert raw == before
    assert filled is not raw and filled["model"] is not raw["model"]
    assert filled["backend"] == "sagemaker"
    assert filled["deletionPolicy"] == "Stop"
    assert filled["selection"] == {"objective": "CostPerInference", "constraints": {"maxModelLatencyMs": 100}}
    assert filled["model"]["local"]["payload"] == {"path": "/p.csv", "contentType": "text/csv"}
    assert filled["promotion"]["mode"] == "Manual"
    # Objects that are absent stay absent: defaults apply only inside what the user wrote.
    assert "local" not in filled and "sagemaker" not in filled and "jobType" not in filled


def test_with_defaults_keeps_given_values():
    raw = {"backend": "local", "deletionPolicy": "Retain", "selection": {"objective": "ModelLatency"},
           "model": {"local": {"server": {"command": ["serve"]}, "payload": {"path": "/p", "contentType": "x/y"}}},
           "promotion": {"target": {}, "mode": "DryRun"}}
    filled = schema.with_defaults(raw)
    assert (filled["backend"], filled["deletionPolicy"], filled["selection"]["objective"],
            filled["model"]["local"]["payload"]["contentType"], filled["promotion"]["mode"]) == \
        ("local", "Retain", "ModelLatency", "x/y", "DryRun")
    assert filled["model"]["local"]["server"] == {"command": ["serve"], "readyPath": "/ping",
                                                  "invokePath": "/invocations", "portEnv": "SAGEMAKER_BIND_TO_PORT"}


def test_parse_applies_defaults_and_leaves_its_input_alone():
    raw = {"model": {"modelPackageVersionArn": ARN}, "sagemaker": {"roleArn": ROLE}}
    before = copy.deepcopy(raw)
    parsed = parse(raw)
    assert raw == before
    assert parsed.backend == "sagemaker"
    assert parsed.deletion_policy == "Stop"
    assert parsed.selection.objective == "CostPerInference"
    assert parsed.promotion is None
    assert parsed.candidates == ()
    assert parsed.traffic_pattern is None and parsed.stopping_conditions is None


def test_parse_reads_selection_and_stopping_conditions():
    parsed = parse(advanced(selection={"objective": "CostPerHour",
                                       "constraints": {"maxModelLatencyMs": 50, "minInvocationsPerMinute": 100,
                                                       "maxCostPerHour": 1.5}},
                            stoppingConditions={**P95_100, "flatInvocations": "Continue"},
                            promotion={"target": {"apiVersion": "serving.kserve.io/v1beta1",
                                                  "kind": "InferenceService", "name": "fraud"}}))
    assert parsed.selection == spec_module.Selection("CostPerHour", 50, 100, 1.5)
    assert parsed.stopping_conditions == spec_module.StoppingConditions(
        1000, spec_module.LatencyThreshold(spec_module.Percentile.parse("P95"), 100), "Continue")
    assert parsed.stopping_conditions.latency_threshold.percentile.value == 95.0
    assert parsed.promotion.mode == "Manual"


def test_parse_reads_the_promotion_with_the_crds_defaults():
    target = {"apiVersion": "serving.example.com/v1", "kind": "ModelDeployment", "name": "fraud"}
    parsed = parse(advanced(promotion={"target": {**target, "variantName": "Canary"},
                                       "fieldPaths": {"instanceCount": "spec.replicas"}}))
    assert parsed.promotion == spec_module.Promotion(
        target=spec_module.TargetRef("serving.example.com/v1", "ModelDeployment", "fraud"),
        mode=spec_module.PromotionMode.MANUAL, force_conflicts=False, progress_deadline_seconds=3600,
        field_paths=spec_module.FieldPaths(instance_count="spec.replicas"), variant_name="Canary")
    parsed = parse(advanced(promotion={"target": target, "mode": "DryRun", "forceConflicts": True,
                                       "progressDeadlineSeconds": 600}))
    assert (parsed.promotion.mode, parsed.promotion.force_conflicts, parsed.promotion.progress_deadline_seconds,
            parsed.promotion.field_paths) == (spec_module.PromotionMode.DRY_RUN, True, 600, None)


def test_parse_reads_autoscaling_with_sagemakers_default_cpu_target():
    parsed = parse(advanced(autoscaling={"minInvocationsPerMinute": 1000, "maxInvocationsPerMinute": 30000}))
    assert parsed.autoscaling == spec_module.Autoscaling(target_cpu_utilization_per_core=50,
                                                         min_invocations_per_minute=1000,
                                                         max_invocations_per_minute=30000)
    assert parsed.autoscaling.describe() == "1000-30000 invocations/min at 50 % CPU per core"
    assert parse(advanced()).autoscaling is None


def test_an_autoscaling_minimum_above_its_maximum_is_refused_naming_both():
    # The CRD's rule; a file read without the API server (rightsizer run, validate) meets it here.
    assert errors_of(advanced(autoscaling={"minInvocationsPerMinute": 5000, "maxInvocationsPerMinute": 4000})) == [
        "spec.autoscaling.minInvocationsPerMinute (5000) must not exceed spec.autoscaling.maxInvocationsPerMinute "
        "(4000)"]


def test_an_autoscaling_edit_keeps_the_job():
    plain = advanced()
    scaled = advanced(autoscaling={"targetCpuUtilizationPerCore": 70, "minInvocationsPerMinute": 0,
                                   "maxInvocationsPerMinute": 30000})
    assert dict(parse(scaled).job_definition) == dict(parse(plain).job_definition)  # what the job's name hashes


def test_parse_reads_the_replica_field_paths():
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"}
    parsed = parse(advanced(promotion={"target": target, "fieldPaths": {"minReplicas": "spec.minReplicas",
                                                                        "maxReplicas": "spec.maxReplicas"}}))
    assert parsed.promotion.field_paths == spec_module.FieldPaths(min_replicas="spec.minReplicas",
                                                                  max_replicas="spec.maxReplicas")


# --- Candidates and grids ----------------------------------------------------------------------------------------

def test_shorthand_gives_every_instance_type_the_shared_grid():
    parsed = parse(sagemaker(instanceTypes=["ml.m5.large", "ml.c5.xlarge"],
                             environmentParameterRanges={"OMP_NUM_THREADS": ["1", "2"], "WORKERS": ["1", "2", "4"]}))
    ranges = (("OMP_NUM_THREADS", ("1", "2")), ("WORKERS", ("1", "2", "4")))
    assert parsed.candidates == (spec_module.Candidate("ml.m5.large", ranges), spec_module.Candidate("ml.c5.xlarge", ranges))
    assert [c.grid_size for c in parsed.candidates] == [6, 6]
    assert spec_module.configuration_count(parsed) == 12
    assert parsed.candidates_field == "spec.instanceTypes"


def test_endpoint_configurations_give_each_entry_its_own_grid_and_serverless_has_no_instance_type():
    serverless = {"memorySizeInMB": 2048, "maxConcurrency": 5}
    parsed = parse(sagemaker(endpointConfigurations=[
        {"instanceType": "ml.m5.large", "environmentParameterRanges": {"OMP_NUM_THREADS": ["1", "2", "3"]}},
        {"serverlessConfig": serverless},
        {"instanceType": "ml.c5.xlarge", "inferenceSpecificationName": "cpu-spec"},
    ]))
    assert parsed.candidates == (
        spec_module.Candidate("ml.m5.large", (("OMP_NUM_THREADS", ("1", "2", "3")),)),
        spec_module.Candidate(None, (), serverless),
        spec_module.Candidate("ml.c5.xlarge", (), None, "cpu-spec"),
    )
    assert [c.grid_size for c in parsed.candidates] == [3, 1, 1]
    assert spec_module.configuration_count(parsed) == 5
    assert parsed.job_type == "Advanced"
    assert parsed.candidates_field == "spec.endpointConfigurations"


def test_parameter_values_are_strings():
    parsed = parse(sagemaker(instanceTypes=["ml.m5.large"], environmentParameterRanges={"OMP_NUM_THREADS": [1, 2]}))
    assert parsed.candidates[0].parameter_ranges == (("OMP_NUM_THREADS", ("1", "2")),)


def test_parameter_grid_order_is_the_cartesian_product_in_declaration_order():
    candidate = spec_module.Candidate("ml.m5.large", (("B", ("1", "2")), ("A", ("x", "y", "z"))))
    grid = spec_module.parameter_grid(candidate)
    assert grid == [{"B": "1", "A": "x"}, {"B": "1", "A": "y"}, {"B": "1", "A": "z"},
                    {"B": "2", "A": "x"}, {"B": "2", "A": "y"}, {"B": "2", "A": "z"}]
    assert len(grid) == candidate.grid_size == 6
    assert [list(env) for env in grid] == [["B", "A"]] * 6
    assert spec_module.parameter_grid(candidate) == grid   # stable


def test_parameter_grid_without_ranges_is_one_empty_environment():
    assert spec_module.parameter_grid(spec_module.Candidate("ml.m5.large")) == [{}]
    assert spec_module.Candidate("ml.m5.large").grid_size == 1


def test_configuration_count_of_no_candidates_is_zero():
    assert spec_module.configuration_count(parse(sagemaker())) == 0


def test_traffic_pattern_parsing():
    parsed = parse(sagemaker(trafficPattern=phases(phase(1, 2, 120), phase(5, 0, 180))))
    assert parsed.traffic_pattern == spec_module.TrafficPattern(
        "PHASES", (spec_module.Phase(1, 2, 120), spec_module.Phase(5, 0, 180)))
    assert parsed.traffic_pattern.duration_seconds == 300
    parsed = parse(sagemaker(trafficPattern=stairs(120, 5, 3)))
    assert parsed.traffic_pattern == spec_module.TrafficPattern("STAIRS", (), spec_module.Stairs(120, 5, 3))
    assert parsed.traffic_pattern.duration_seconds == 600  # 5 steps of 120 s each


# --- The typed values: what the CRD refuses, they refuse too ----------------------------------------------------

def test_a_percentile_is_parsed_once_into_its_value_and_keeps_its_name():
    p95 = spec_module.Percentile.parse("P95")
    assert (p95.value, p95.name) == (95.0, "P95")
    assert spec_module.Percentile.parse("P99.9").value == 99.9
    assert p95 == "P95"  # SageMaker's request and JSON carry it as written


@pytest.mark.parametrize("text", ["median", "P0", "P100", "p95", "P95.0", "P05", "95", ""])
def test_a_percentile_that_does_not_look_like_p95_is_refused(text):
    with pytest.raises(ValueError, match="must look like P95"):
        spec_module.Percentile.parse(text)


def test_parse_names_the_field_of_a_bad_percentile():
    raw = advanced(stoppingConditions={"modelLatencyThresholds": [{"percentile": "median",
                                                                    "valueInMilliseconds": 5}]})
    assert errors_of(raw) == ["spec.stoppingConditions.modelLatencyThresholds[0].percentile: a latency percentile "
                              "must look like P95 (above 0, below 100), got 'median'"]


TP, P = spec_module.TrafficPattern, spec_module.Phase


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TP("RAMP"), "trafficType must be PHASES or STAIRS"),
    (lambda: TP("PHASES", ()), "phases must be a non-empty list"),
    (lambda: TP("PHASES", (P(1, 1, 10),), spec_module.Stairs(10, 1, 1)), "stairs is not allowed"),
    (lambda: TP("PHASES", (P(0, 1, 10),)), r"phases\[0\].initialNumberOfUsers must be an integer >= 1"),
    (lambda: TP("PHASES", (P(1, -1, 10),)), r"phases\[0\].spawnRate must be an integer >= 0"),
    (lambda: TP("PHASES", (P(1, 1, 10), P(1, 1, 0))), r"phases\[1\].durationInSeconds must be an integer >= 1"),
    (lambda: TP("PHASES", (P(True, 1, 10),)), "initialNumberOfUsers must be an integer"),
    (lambda: TP("STAIRS"), "stairs must be an object"),
    (lambda: TP("STAIRS", (), spec_module.Stairs(10, 0, 1)), "stairs.numberOfSteps must be an integer >= 1"),
])
def test_invalid_patterns_are_refused_with_the_field_at_fault(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: spec_module.StoppingConditions(flat_invocations="Sometimes"), "flatInvocations must be Stop or Continue"),
    (lambda: spec_module.StoppingConditions(max_invocations=0), "maxInvocations must be an integer >= 1"),
    (lambda: spec_module.LatencyThreshold(spec_module.Percentile.parse("P95"), 0), "valueInMilliseconds"),
    (lambda: spec_module.LatencyThreshold("P95", 100), "must be a Percentile"),
])
def test_invalid_stopping_conditions_are_refused_with_the_field_at_fault(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_flat_invocations_stop_unless_told_to_continue():
    assert spec_module.StoppingConditions().stops_when_flat
    assert spec_module.StoppingConditions(flat_invocations="Stop").stops_when_flat
    assert not spec_module.StoppingConditions(flat_invocations="Continue").stops_when_flat


def test_parse_names_the_field_of_a_pattern_the_crd_would_refuse():
    assert errors_of(sagemaker(trafficPattern=phases(phase(0, 1, 120)))) == [
        "spec.trafficPattern.phases[0].initialNumberOfUsers must be an integer >= 1, got 0"]


# --- The samples -------------------------------------------------------------------------------------------------

def load_sample_specs() -> dict[str, dict]:
    return {document["metadata"]["name"]: document["spec"] for document in load_samples()}


SAMPLE_EXPECTATIONS = {
    # name: (backend, job type, inferred, configurations, warnings)
    "fraud-default": ("sagemaker", "Default", True, 5, []),
    "fraud-advanced": ("sagemaker", "Advanced", False, 3,
                       ["spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3"]),
    "fraud-existing-endpoint": ("sagemaker", "Default", False, 0, []),
    "fraud-existing-endpoint-package": ("sagemaker", "Default", False, 0, []),
    "fraud-local": ("local", "Advanced", True, 8, []),
    "fraud-kubernetes": ("kubernetes", "Advanced", True, 2, []),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECTATIONS))
def test_sample(name):
    raw = load_sample_specs()[name]
    parsed = parse(raw)
    backend, job_type, inferred, configurations, warnings = SAMPLE_EXPECTATIONS[name]
    assert (parsed.backend, parsed.job_type, parsed.job_type_inferred) == (backend, job_type, inferred)
    assert spec_module.configuration_count(parsed) == configurations
    assert soft_warnings(parsed) == warnings


def test_every_sample_parses():
    specs = load_sample_specs()
    assert set(SAMPLE_EXPECTATIONS) <= set(specs)
    for name, raw in specs.items():
        parse(raw)   # raises InvalidSpec naming the rule if a sample breaks one


def test_advanced_sample_matches_the_seed_request():
    parsed = parse(load_sample_specs()["fraud-advanced"])
    assert [(c.instance_type, spec_module.parameter_grid(c)) for c in parsed.candidates] == [
        ("ml.m5.4xlarge", [{"OMP_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "4"}, {"OMP_NUM_THREADS": "5"}])]
    first, second = parsed.traffic_pattern.phases
    assert first.final_users == 6 and second.initial_users == 6   # continuous, so no error
    assert parsed.stopping_conditions.max_invocations == 30000
    assert parsed.resource_limit == {"maxNumberOfTests": 10, "maxParallelOfTests": 3}


def test_the_seeds_boto3_variant_with_spawn_rate_six_warns_twice():
    raw = copy.deepcopy(load_sample_specs()["fraud-advanced"])
    raw["trafficPattern"]["phases"][1]["spawnRate"] = 6
    assert soft_warnings(parse(raw)) == [
        "spec.trafficPattern.phases[1].initialNumberOfUsers is 6; SageMaker documents 1-3",
        "spec.trafficPattern.phases[1].spawnRate is 6; SageMaker documents 0-3 users per minute",
    ]


def test_local_sample_grid():
    parsed = parse(load_sample_specs()["fraud-local"])
    assert [c.instance_type for c in parsed.candidates] == ["local-1cpu", "local-2cpu"]
    assert spec_module.parameter_grid(parsed.candidates[0]) == [
        {"OMP_NUM_THREADS": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
        {"OMP_NUM_THREADS": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        {"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
        {"OMP_NUM_THREADS": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    ]
    assert parsed.model.local["payload"]["contentType"] == "text/csv"


def test_the_local_backend_always_load_tests():
    # Default vs Advanced is SageMaker's question (the SDK's right_size rule): the local policy never asks it.
    parsed = parse(local())
    assert registry.policy(parsed.backend).describe_job(parsed) == "the local load test of 1 configuration(s)"


def test_job_descriptions_for_condition_messages():
    assert registry.policy("sagemaker").describe_job(parse(sagemaker(model={"endpointName": "fraud-live"}))) == \
        "the SageMaker Default job on endpoint fraud-live"
    assert registry.policy("sagemaker").describe_job(parse(sagemaker())) == \
        "the SageMaker Default job (Inference Recommender picks the instance types)"
