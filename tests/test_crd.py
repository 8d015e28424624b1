"""The CRD against the real API server: it installs, accepts every sample, rejects each invalid manifest with a
message naming the field, keeps status behind /status, and renders its printer columns."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import load_samples
from rightsizer import schema

pytestmark = pytest.mark.cluster

SAGEMAKER = {
    "backend": "sagemaker",
    "model": {"modelPackageVersionArn": "arn:aws:sagemaker:us-east-1:111122223333:model-package/fraud/1"},
    "instanceTypes": ["ml.m5.4xlarge"],
    "environmentParameterRanges": {"OMP_NUM_THREADS": ["3", "4", "5"]},
    "trafficPattern": {"trafficType": "PHASES",
                       "phases": [{"initialNumberOfUsers": 2, "spawnRate": 2, "durationInSeconds": 120}]},
    "stoppingConditions": {"maxInvocations": 30000,
                           "modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]},
    "jobDurationInSeconds": 7200,
    "sagemaker": {"roleArn": "arn:aws:iam::111122223333:role/IR", "tags": {"team": "fraud"}},
}
LOCAL = {
    "backend": "local",
    "model": {"local": {"framework": "xgboost", "modelUri": "file:///models/fraud/model.ubj",
                        "payload": {"path": "/models/fraud/payload.csv"}}},
    "instanceTypes": ["local-1cpu"],
    "local": {"pricePerHour": {"local-1cpu": 0.05}},
}
DELETE = object()


KUBERNETES = {
    "backend": "kubernetes",
    "model": {"kubernetes": {"framework": "xgboost", "modelUri": "file:///opt/rightsizer/models/fraud/model.ubj",
                             "payload": {"path": "/opt/rightsizer/models/fraud/payload.csv"}}},
    "kubernetes": {"candidates": [{"name": "half-cpu", "resources": {"requests": {"cpu": "500m"}}}]},
}


def merged(base: dict, patch: dict) -> dict:
    """`base` with `patch` merged in; DELETE removes a key; lists and scalars replace."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def phases(count: int) -> list[dict]:
    return [{"initialNumberOfUsers": 1, "spawnRate": 0, "durationInSeconds": 120}] * count


ARN = SAGEMAKER["model"]["modelPackageVersionArn"]
ACK_TARGET = {"apiVersion": "sagemaker.services.k8s.aws/v1alpha1", "kind": "Endpoint", "name": "fraud"}
KSERVE_TARGET = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "fraud"}
ENDPOINT_ONLY_BASE = merged(SAGEMAKER, {"model": {"endpointName": "fraud-live"}, "instanceTypes": DELETE,
                                        "environmentParameterRanges": DELETE, "trafficPattern": DELETE,
                                        "stoppingConditions": DELETE, "jobType": "Default"})

# (case, base spec, patch, the field the API server's message must name)
INVALID = [
    ("backend-unknown", SAGEMAKER, {"backend": "azure"}, "spec.backend"),
    ("kubernetes-without-candidates", KUBERNETES, {"kubernetes": DELETE}, "spec.kubernetes"),
    ("kubernetes-with-instance-types", KUBERNETES, {"instanceTypes": ["ml.m5.large"]}, "spec.kubernetes.candidates"),
    ("kubernetes-settings-on-local", LOCAL, {"kubernetes": KUBERNETES["kubernetes"]}, "spec.kubernetes"),
    ("kubernetes-model-on-sagemaker", SAGEMAKER, {"model": {"modelPackageVersionArn": DELETE,
                                                            "kubernetes": KUBERNETES["model"]["kubernetes"]}},
     "spec.model.kubernetes"),
    ("kubernetes-model-framework-and-server", KUBERNETES,
     {"model": {"kubernetes": {"server": {"image": "example.com/server:1"}}}}, "spec.model.kubernetes"),
    ("kubernetes-payload-path-and-configmap", KUBERNETES,
     {"model": {"kubernetes": {"payload": {"configMapKeyRef": {"name": "p", "key": "k"}}}}},
     "spec.model.kubernetes.payload"),
    ("kubernetes-candidate-without-cpu-request", KUBERNETES,
     {"kubernetes": {"candidates": [{"name": "x", "resources": {"limits": {"cpu": "1"}}}]}},
     "spec.kubernetes.candidates[0].resources.requests"),
    ("kubernetes-candidate-name-pattern", KUBERNETES,
     {"kubernetes": {"candidates": [{"name": "Half_CPU", "resources": {"requests": {"cpu": "1"}}}]}},
     "spec.kubernetes.candidates[0].name"),
    ("kubernetes-candidate-duplicate", KUBERNETES,
     {"kubernetes": {"candidates": [{"name": "a", "resources": {"requests": {"cpu": "1"}}},
                                    {"name": "a", "resources": {"requests": {"cpu": "2"}}}]}},
     "spec.kubernetes.candidates[1]"),
    ("kubernetes-quantity", KUBERNETES,
     {"kubernetes": {"candidates": [{"name": "a", "resources": {"requests": {"cpu": "one"}}}]}},
     "spec.kubernetes.candidates[0].resources.requests.cpu"),
    ("jobtype-case", SAGEMAKER, {"jobType": "DEFAULT"}, "spec.jobType"),
    ("model-two-sources", SAGEMAKER, {"model": {"modelName": "fraud"}}, "spec.model"),
    ("model-no-source", SAGEMAKER, {"model": {"modelPackageVersionArn": DELETE}}, "spec.model"),
    ("model-package-arn-pattern", SAGEMAKER, {"model": {"modelPackageVersionArn": "arn:aws:s3:::bucket/model"}},
     "spec.model.modelPackageVersionArn"),
    ("model-name-pattern", SAGEMAKER, {"model": {"modelPackageVersionArn": DELETE, "modelName": "fraud_xgb"},
                                       "containerConfig": {"framework": "XGBOOST"}}, "spec.model.modelName"),
    ("model-name-too-long", SAGEMAKER, {"model": {"modelPackageVersionArn": DELETE, "modelName": "m" * 64},
                                        "containerConfig": {"framework": "XGBOOST"}}, "spec.model.modelName"),
    ("model-name-needs-container-config", SAGEMAKER,
     {"model": {"modelPackageVersionArn": DELETE, "modelName": "fraud"}}, "spec.containerConfig"),
    ("endpoint-name-pattern", SAGEMAKER,
     {"model": {"modelPackageVersionArn": DELETE, "endpointName": "-fraud"}, "instanceTypes": DELETE,
      "environmentParameterRanges": DELETE}, "spec.model.endpointName"),
    ("endpoint-with-package-and-model-name", SAGEMAKER,
     {"model": {"endpointName": "fraud-live", "modelName": "fraud"}, "instanceTypes": DELETE,
      "environmentParameterRanges": DELETE, "containerConfig": {"framework": "XGBOOST"}}, "spec.model"),
    ("endpoint-with-local-model", LOCAL, {"model": {"endpointName": "fraud-live"}}, "spec.model"),
    ("endpoint-with-instance-types", SAGEMAKER,
     {"model": {"modelPackageVersionArn": DELETE, "endpointName": "fraud-live"}}, "spec.model.endpointName"),
    ("instance-types-too-many", SAGEMAKER, {"instanceTypes": [f"ml.m5.{n}xlarge" for n in range(2, 13)]},
     "spec.instanceTypes"),
    ("instance-types-too-many-explicit-advanced", SAGEMAKER,
     {"jobType": "Advanced", "trafficPattern": DELETE, "stoppingConditions": DELETE, "environmentParameterRanges": DELETE,
      "instanceTypes": [f"ml.m5.{n}xlarge" for n in range(2, 13)]}, "spec.instanceTypes"),
    ("instance-types-too-many-local", LOCAL, {"instanceTypes": [f"local-{n}cpu" for n in range(1, 12)]},
     "spec.instanceTypes"),
    ("supported-instance-types-with-instance-types", SAGEMAKER,
     {"containerConfig": {"supportedInstanceTypes": ["ml.c5.large"]}}, "spec.containerConfig.supportedInstanceTypes"),
    ("supported-instance-types-with-endpoint-configurations", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"instanceType": "ml.m5.large"}],
      "containerConfig": {"supportedInstanceTypes": ["ml.c5.large"]}}, "spec.containerConfig.supportedInstanceTypes"),
    ("instance-types-duplicate", SAGEMAKER, {"instanceTypes": ["ml.m5.large", "ml.m5.large"]}, "spec.instanceTypes[1]"),
    ("instance-type-pattern", SAGEMAKER, {"instanceTypes": ["m5.large"]}, "spec.instanceTypes[0]"),
    ("local-profile-on-sagemaker", SAGEMAKER, {"instanceTypes": ["local-2cpu"]}, "spec.instanceTypes"),
    ("parameter-names-too-many", SAGEMAKER,
     {"environmentParameterRanges": {f"P{n}": ["1"] for n in range(6)}}, "spec.environmentParameterRanges"),
    ("parameter-values-too-many", SAGEMAKER, {"environmentParameterRanges": {"OMP_NUM_THREADS": ["1", "2", "3", "4"]}},
     "spec.environmentParameterRanges.OMP_NUM_THREADS"),
    ("parameter-values-empty", SAGEMAKER, {"environmentParameterRanges": {"OMP_NUM_THREADS": []}},
     "spec.environmentParameterRanges.OMP_NUM_THREADS"),
    ("parameter-name-invalid", SAGEMAKER, {"environmentParameterRanges": {"1-THREADS": ["1"]}},
     "spec.environmentParameterRanges"),
    ("parameter-value-too-long", SAGEMAKER, {"environmentParameterRanges": {"OMP_NUM_THREADS": ["1" * 129]}},
     "spec.environmentParameterRanges.OMP_NUM_THREADS[0]"),
    ("parameter-ranges-without-instance-types", SAGEMAKER, {"instanceTypes": DELETE},
     "spec.environmentParameterRanges"),
    ("endpoint-configurations-with-shorthand", SAGEMAKER,
     {"endpointConfigurations": [{"instanceType": "ml.m5.large"}]}, "spec.endpointConfigurations"),
    ("endpoint-configurations-too-many", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"instanceType": f"ml.m5.{n}xlarge"} for n in range(2, 13)]},
     "spec.endpointConfigurations"),
    ("endpoint-configuration-both-kinds", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"instanceType": "ml.m5.large",
                                  "serverlessConfig": {"memorySizeInMB": 2048, "maxConcurrency": 5}}]},
     "spec.endpointConfigurations[0]"),
    ("serverless-memory-too-small", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"serverlessConfig": {"memorySizeInMB": 512, "maxConcurrency": 5}}]},
     "spec.endpointConfigurations[0].serverlessConfig.memorySizeInMB"),
    ("serverless-provisioned-above-max", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"serverlessConfig": {"memorySizeInMB": 2048, "maxConcurrency": 5,
                                                       "provisionedConcurrency": 6}}]},
     "spec.endpointConfigurations[0].serverlessConfig.provisionedConcurrency"),
    ("inference-specification-name-pattern", SAGEMAKER,
     {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
      "endpointConfigurations": [{"instanceType": "ml.m5.large", "inferenceSpecificationName": "a_b"}]},
     "spec.endpointConfigurations[0].inferenceSpecificationName"),
    ("traffic-type-unknown", SAGEMAKER, {"trafficPattern": {"trafficType": "RAMP"}},
     "spec.trafficPattern.trafficType"),
    ("phases-missing", SAGEMAKER, {"trafficPattern": {"phases": DELETE}}, "spec.trafficPattern.phases"),
    ("stairs-missing", SAGEMAKER, {"trafficPattern": {"trafficType": "STAIRS", "phases": DELETE}},
     "spec.trafficPattern.stairs"),
    ("phases-and-stairs", SAGEMAKER,
     {"trafficPattern": {"stairs": {"durationInSeconds": 600, "numberOfSteps": 5, "usersPerStep": 1}}},
     "spec.trafficPattern.phases"),
    ("phase-zero-users", SAGEMAKER, {"trafficPattern": {"phases": [
        {"initialNumberOfUsers": 0, "spawnRate": 1, "durationInSeconds": 120}]}},
     "spec.trafficPattern.phases[0].initialNumberOfUsers"),
    ("phase-negative-spawn-rate", SAGEMAKER, {"trafficPattern": {"phases": [
        {"initialNumberOfUsers": 1, "spawnRate": -1, "durationInSeconds": 120}]}},
     "spec.trafficPattern.phases[0].spawnRate"),
    ("phase-zero-duration", SAGEMAKER, {"trafficPattern": {"phases": [
        {"initialNumberOfUsers": 1, "spawnRate": 1, "durationInSeconds": 0}]}},
     "spec.trafficPattern.phases[0].durationInSeconds"),
    ("phases-too-many", SAGEMAKER, {"trafficPattern": {"phases": phases(21)}}, "spec.trafficPattern.phases"),
    ("stairs-users-per-step", SAGEMAKER, {"trafficPattern": {"trafficType": "STAIRS", "phases": DELETE, "stairs": {
        "durationInSeconds": 600, "numberOfSteps": 5, "usersPerStep": 4}}}, "spec.trafficPattern.stairs.usersPerStep"),
    ("latency-thresholds-two", SAGEMAKER, {"stoppingConditions": {"modelLatencyThresholds": [
        {"percentile": "P95", "valueInMilliseconds": 100}, {"percentile": "P99", "valueInMilliseconds": 200}]}},
     "spec.stoppingConditions.modelLatencyThresholds"),
    ("latency-thresholds-none", SAGEMAKER, {"stoppingConditions": {"modelLatencyThresholds": []}},
     "spec.stoppingConditions.modelLatencyThresholds"),
    ("latency-percentile", SAGEMAKER, {"stoppingConditions": {"modelLatencyThresholds": [
        {"percentile": "P50", "valueInMilliseconds": 100}]}},
     "spec.stoppingConditions.modelLatencyThresholds[0].percentile"),
    ("flat-invocations", SAGEMAKER, {"stoppingConditions": {"flatInvocations": "Pause"}},
     "spec.stoppingConditions.flatInvocations"),
    ("max-invocations-zero", SAGEMAKER, {"stoppingConditions": {"maxInvocations": 0}},
     "spec.stoppingConditions.maxInvocations"),
    ("job-duration-above-max", SAGEMAKER, {"jobDurationInSeconds": 18001}, "spec.jobDurationInSeconds"),
    ("job-duration-zero", SAGEMAKER, {"jobDurationInSeconds": 0}, "spec.jobDurationInSeconds"),
    ("max-tests-zero", SAGEMAKER, {"resourceLimit": {"maxNumberOfTests": 0}}, "spec.resourceLimit.maxNumberOfTests"),
    ("job-description-too-long", SAGEMAKER, {"jobDescription": "d" * 129}, "spec.jobDescription"),
    ("role-missing", SAGEMAKER, {"sagemaker": {"roleArn": DELETE}}, "spec.sagemaker"),
    ("role-arn-pattern", SAGEMAKER, {"sagemaker": {"roleArn": "arn:aws:iam::1234:user/someone-else"}},
     "spec.sagemaker.roleArn"),
    ("region-pattern", SAGEMAKER, {"sagemaker": {"region": "US-EAST-1"}}, "spec.sagemaker.region"),
    ("kms-key-pattern", SAGEMAKER, {"sagemaker": {"volumeKmsKeyId": "key with spaces"}},
     "spec.sagemaker.volumeKmsKeyId"),
    ("compiled-output-uri-scheme", SAGEMAKER, {"sagemaker": {"compiledOutputConfig": {"s3OutputUri": "gs://b/neo"}}},
     "spec.sagemaker.compiledOutputConfig.s3OutputUri"),
    ("vpc-security-groups-too-many", SAGEMAKER, {"sagemaker": {"vpcConfig": {
        "securityGroupIds": [f"sg-{n}" for n in range(6)], "subnets": ["subnet-1"]}}},
     "spec.sagemaker.vpcConfig.securityGroupIds"),
    ("vpc-subnets-missing", SAGEMAKER, {"sagemaker": {"vpcConfig": {"securityGroupIds": ["sg-1"]}}},
     "spec.sagemaker.vpcConfig.subnets"),
    ("tag-reserved-prefix", SAGEMAKER, {"sagemaker": {"tags": {"aws:team": "x"}}}, "spec.sagemaker.tags"),
    ("tag-value-too-long", SAGEMAKER, {"sagemaker": {"tags": {"team": "x" * 257}}}, "spec.sagemaker.tags.team"),
    ("tags-too-many", SAGEMAKER, {"sagemaker": {"tags": {f"k{n}": "v" for n in range(48)}}}, "spec.sagemaker.tags"),
    ("jobtype-default-with-load-test", SAGEMAKER, {"jobType": "Default"}, "spec.jobType"),
    ("framework-version-pattern", SAGEMAKER, {"containerConfig": {"frameworkVersion": "v1.5"}},
     "spec.containerConfig.frameworkVersion"),
    ("sample-payload-url-scheme", SAGEMAKER,
     {"containerConfig": {"payloadConfig": {"samplePayloadUrl": "ftp://bucket/payload.tar.gz"}}},
     "spec.containerConfig.payloadConfig.samplePayloadUrl"),
    ("supported-endpoint-type", SAGEMAKER, {"containerConfig": {"supportedEndpointType": "Batch"}},
     "spec.containerConfig.supportedEndpointType"),
    ("selection-objective", SAGEMAKER, {"selection": {"objective": "Cheapest"}}, "spec.selection.objective"),
    ("selection-max-cost-zero", SAGEMAKER, {"selection": {"constraints": {"maxCostPerHour": 0}}},
     "spec.selection.constraints.maxCostPerHour"),
    ("promotion-without-target", SAGEMAKER, {"promotion": {"mode": "Manual"}}, "spec.promotion.target"),
    ("promotion-mode", SAGEMAKER, {"promotion": {"mode": "Auto", "target": {
        "apiVersion": "sagemaker.services.k8s.aws/v1alpha1", "kind": "Endpoint", "name": "fraud"}}},
     "spec.promotion.mode"),
    ("promotion-generic-needs-field-paths", SAGEMAKER, {"promotion": {"target": {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"}}}, "spec.promotion.fieldPaths"),
    ("promotion-target-name", SAGEMAKER, {"promotion": {"target": {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "Fraud_Model"}}},
     "spec.promotion.target.name"),
    ("promotion-field-path", SAGEMAKER, {"promotion": {"target": {
        "apiVersion": "example.com/v1", "kind": "Server", "name": "fraud"},
        "fieldPaths": {"instanceType": "spec..instanceType"}}}, "spec.promotion.fieldPaths.instanceType"),
    ("deletion-policy", SAGEMAKER, {"deletionPolicy": "Delete"}, "spec.deletionPolicy"),
    ("local-settings-on-sagemaker", SAGEMAKER, {"local": {"loadGeneratorCpus": [1]}}, "spec.local"),
    ("local-model-on-sagemaker", SAGEMAKER, {"model": {"modelPackageVersionArn": DELETE,
                                                       "local": LOCAL["model"]["local"]}}, "spec.model.local"),
    ("local-without-local-model", LOCAL, {"model": {"local": DELETE, "modelName": "fraud"}}, "spec.model"),
    ("local-framework-and-server", LOCAL, {"model": {"local": {"server": {"command": ["mlserver", "start"]}}}},
     "spec.model.local"),
    ("local-framework-without-model-uri", LOCAL, {"model": {"local": {"modelUri": DELETE}}},
     "spec.model.local.modelUri"),
    ("local-server-empty-command", LOCAL, {"model": {"local": {"framework": DELETE, "modelUri": DELETE,
                                                               "server": {"command": []}}}},
     "spec.model.local.server.command"),
    ("local-with-job-type", LOCAL, {"jobType": "Advanced"}, "spec.jobType"),
    ("local-without-instance-types", LOCAL, {"instanceTypes": DELETE}, "spec.instanceTypes"),
    ("local-with-endpoint-configurations", LOCAL,
     {"instanceTypes": DELETE, "endpointConfigurations": [{"instanceType": "ml.m5.large"}]},
     "spec.endpointConfigurations"),
    ("local-price-negative", LOCAL, {"local": {"pricePerHour": {"local-1cpu": -1}}},
     "spec.local.pricePerHour.local-1cpu"),
    ("local-profile-pattern", LOCAL, {"instanceTypes": ["local-0cpu"]}, "spec.instanceTypes[0]"),
    ("autoscaling-min-above-max", SAGEMAKER, {"autoscaling": {"minInvocationsPerMinute": 5000,
                                                              "maxInvocationsPerMinute": 4000}},
     "spec.autoscaling.minInvocationsPerMinute"),
    ("autoscaling-without-max", SAGEMAKER, {"autoscaling": {"minInvocationsPerMinute": 5000}},
     "spec.autoscaling.maxInvocationsPerMinute"),
    ("autoscaling-cpu-target-above-100", SAGEMAKER, {"autoscaling": {
        "targetCpuUtilizationPerCore": 101, "minInvocationsPerMinute": 0, "maxInvocationsPerMinute": 1}},
     "spec.autoscaling.targetCpuUtilizationPerCore"),
    ("autoscaling-cpu-target-zero", SAGEMAKER, {"autoscaling": {
        "targetCpuUtilizationPerCore": 0, "minInvocationsPerMinute": 0, "maxInvocationsPerMinute": 1}},
     "spec.autoscaling.targetCpuUtilizationPerCore"),
    ("promotion-max-replicas-path", SAGEMAKER, {"promotion": {"target": {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"},
        "fieldPaths": {"maxReplicas": "spec.max replicas"}}}, "spec.promotion.fieldPaths.maxReplicas"),
    # spec.baseline and spec.promotion.minSavingsPercent
    ("baseline-without-promotion", SAGEMAKER, {"baseline": {}}, "spec.baseline"),
    ("baseline-source-unknown", SAGEMAKER, {"baseline": {"source": "Git"}, "promotion": {"target": ACK_TARGET}},
     "spec.baseline.source"),
    ("min-savings-without-baseline", SAGEMAKER, {"promotion": {"target": ACK_TARGET, "minSavingsPercent": 10}},
     "spec.promotion.minSavingsPercent"),
    ("min-savings-above-100", SAGEMAKER,
     {"baseline": {}, "promotion": {"target": ACK_TARGET, "minSavingsPercent": 101}},
     "spec.promotion.minSavingsPercent"),
    ("min-savings-negative", SAGEMAKER,
     {"baseline": {}, "promotion": {"target": ACK_TARGET, "minSavingsPercent": -5}},
     "spec.promotion.minSavingsPercent"),
    ("baseline-on-kubernetes", KUBERNETES, {"baseline": {}, "promotion": {"target": KSERVE_TARGET}}, "spec.baseline"),
    ("baseline-sagemaker-needs-an-ack-endpoint", SAGEMAKER, {"baseline": {}, "promotion": {"target": KSERVE_TARGET}},
     "spec.baseline"),
    ("baseline-with-endpoint-name", ENDPOINT_ONLY_BASE,
     {"baseline": {}, "promotion": {"target": ACK_TARGET}}, "spec.baseline"),
    # spec.search
    ("adaptive-search-on-sagemaker", SAGEMAKER, {"search": {"strategy": "Adaptive"}}, "spec.search.strategy"),
    ("search-strategy-unknown", LOCAL, {"search": {"strategy": "Random"}}, "spec.search.strategy"),
    ("search-reduction-factor-one", LOCAL, {"search": {"strategy": "Adaptive", "reductionFactor": 1}},
     "spec.search.reductionFactor"),
]


def manifest(name: str, spec: dict) -> dict:
    return {"apiVersion": f"{schema.GROUP}/{schema.VERSION}", "kind": schema.KIND, "metadata": {"name": name},
            "spec": spec}


def test_crd_is_established(api, crd_installed):
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("rightsizejobs.rightsizer.io")
    assert {(c.type, c.status) for c in crd.status.conditions} >= {("Established", "True"), ("NamesAccepted", "True")}
    assert crd.spec.names.short_names == ["rsj"] and crd.spec.names.categories == ["rightsizer"]


def test_every_sample_is_accepted(api, crd_installed, namespace):
    objects = client.CustomObjectsApi(api)
    samples = load_samples()
    assert {s["spec"].get("backend") for s in samples} == {"sagemaker", "local", "kubernetes"}
    for sample in samples:
        sample["metadata"]["namespace"] = namespace
        created = objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, sample)
        assert created["spec"]["deletionPolicy"] == "Stop"  # defaulted by the API server from the schema


def test_every_key_of_the_schema_is_a_name():
    # A YAML flow mapping splits an unquoted description at its comma, the rest becoming a key of the schema, which
    # create accepts and kubectl's strict decoding and server-side apply refuse.
    def keys(node):
        if isinstance(node, dict):
            yield from node
            for value in node.values():
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    crd = yaml.safe_load((Path(__file__).resolve().parents[1] / "crds" / "rightsizejobs.yaml").read_text())
    schemas = [version["schema"] for version in crd["spec"]["versions"]]
    assert [key for key in keys(schemas) if not re.fullmatch(r"[A-Za-z$][A-Za-z0-9_.$-]*", str(key))] == []


def test_invalid_table_is_large_enough():
    assert len(INVALID) >= 30
    assert len({case for case, *_ in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case,base,patch,field", INVALID, ids=[case for case, *_ in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(api, crd_installed, case, base, patch, field):
    objects = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, "default", schema.PLURAL,
                                                manifest(case, merged(base, patch)), dry_run="All")
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body)["message"]
    assert field + ":" in message or field + " " in message, f"{field!r} not named in: {message}"


def test_the_valid_bases_are_accepted(api, crd_installed):
    objects = client.CustomObjectsApi(api)
    scaled = merged(SAGEMAKER, {"autoscaling": {"minInvocationsPerMinute": 30000, "maxInvocationsPerMinute": 30000},
                                "promotion": {"target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"},
                                              "fieldPaths": {"minReplicas": "spec.template.metadata.annotations.min",
                                                             "maxReplicas": "spec.replicas"}}})
    for name, base in (("sagemaker-base", SAGEMAKER), ("local-base", LOCAL), ("kubernetes-base", KUBERNETES),
                       ("autoscaling-min-equals-max", scaled),
                       ("sagemaker-grid", merged(SAGEMAKER, {"search": {"strategy": "Grid"}}))):
        objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, "default", schema.PLURAL,
                                                manifest(name, base), dry_run="All")


@pytest.mark.parametrize("base", [LOCAL, KUBERNETES], ids=["local", "kubernetes"])
def test_an_adaptive_search_is_accepted_where_the_backend_runs_the_load_and_defaulted(api, crd_installed, base):
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        schema.GROUP, schema.VERSION, "default", schema.PLURAL,
        manifest("adaptive", merged(base, {"search": {"strategy": "Adaptive"}})), dry_run="All")
    assert created["spec"]["search"] == {"strategy": "Adaptive", "reductionFactor": 3}


@pytest.mark.parametrize("base,patch", [
    (SAGEMAKER, {"baseline": {}, "promotion": {"target": ACK_TARGET, "minSavingsPercent": 20}}),
    (LOCAL, {"baseline": {"source": "PromotionTarget"}, "promotion": {"target": KSERVE_TARGET}}),
], ids=["sagemaker-ack", "local-kserve"])
def test_a_baseline_with_its_target_is_accepted_and_its_source_defaulted(api, crd_installed, base, patch):
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        schema.GROUP, schema.VERSION, "default", schema.PLURAL, manifest("with-baseline", merged(base, patch)),
        dry_run="All")
    assert created["spec"]["baseline"] == {"source": "PromotionTarget"}


def real_time_instance_types() -> list[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInstanceType").enum)


DEFAULT_JOB = merged(SAGEMAKER, {"environmentParameterRanges": DELETE, "trafficPattern": DELETE,
                                 "stoppingConditions": DELETE})


@pytest.mark.parametrize("patch", [
    {"instanceTypes": [f"ml.m5.{n}xlarge" for n in range(2, 13)]},  # inferred Default
    {"jobType": "Default", "instanceTypes": [f"ml.c5.{n}xlarge" for n in range(2, 20)]},
    {"instanceTypes": DELETE, "containerConfig": {"supportedInstanceTypes": "every real-time type"}},
], ids=["inferred-default", "explicit-default", "supported-instance-types"])
def test_a_default_job_may_name_more_than_ten_instance_types(api, crd_installed, patch):
    # They become ContainerConfig.SupportedInstanceTypes, for which botocore's service model sets no maximum.
    if "containerConfig" in patch:
        patch = {**patch, "containerConfig": {"supportedInstanceTypes": real_time_instance_types()}}
    spec = merged(DEFAULT_JOB, patch)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        schema.GROUP, schema.VERSION, "default", schema.PLURAL, manifest("many-types", spec), dry_run="All")


ENDPOINT_ONLY = merged(SAGEMAKER, {"instanceTypes": DELETE, "environmentParameterRanges": DELETE,
                                   "trafficPattern": DELETE, "stoppingConditions": DELETE, "jobType": "Default"})


@pytest.mark.parametrize("model", [
    {"modelPackageVersionArn": DELETE, "endpointName": "fraud-live"},
    {"endpointName": "fraud-live"},  # with the base's model package
    {"modelPackageVersionArn": DELETE, "endpointName": "fraud-live", "modelName": "fraud"},
], ids=["endpoint-alone", "endpoint-with-package", "endpoint-with-model-name"])
def test_an_endpoint_is_accepted_alone_or_with_the_model_behind_it(api, crd_installed, model):
    spec = merged(ENDPOINT_ONLY, {"model": model, **({"containerConfig": {"framework": "XGBOOST"}}
                                                     if "modelName" in model else {})})
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        schema.GROUP, schema.VERSION, "default", schema.PLURAL, manifest("endpoint-model", spec), dry_run="All")
    assert created["spec"]["model"] == {k: v for k, v in {**SAGEMAKER["model"], **model}.items() if v is not DELETE}


def test_spec_is_required(api, crd_installed):
    with pytest.raises(ApiException) as rejected:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            schema.GROUP, schema.VERSION, "default", schema.PLURAL,
            {"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob", "metadata": {"name": "empty"}},
            dry_run="All")
    assert rejected.value.status == 422 and "spec: Required value" in rejected.value.body


def test_status_is_written_only_through_the_status_subresource(api, crd_installed, namespace):
    objects = client.CustomObjectsApi(api)
    body = manifest("status-owner", SAGEMAKER)
    body["status"] = {"phase": "Completed"}
    created = objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, body)
    assert "status" not in created or "phase" not in created["status"]

    through_main = objects.patch_namespaced_custom_object(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "status-owner", {"status": {"phase": "Completed"}})
    assert (through_main.get("status") or {}).get("phase") is None
    assert through_main["metadata"]["generation"] == 1

    through_status = objects.patch_namespaced_custom_object_status(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "status-owner",
        {"status": {"phase": "InProgress", "undeclared": "pruned"}})
    assert through_status["status"] == {"phase": "InProgress"}  # undeclared fields are pruned
    assert through_status["metadata"]["generation"] == 1  # status writes never bump the generation

    with pytest.raises(ApiException) as rejected:
        objects.patch_namespaced_custom_object_status(
            schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "status-owner",
            {"status": {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "x", "message": "",
                                        "lastTransitionTime": "2026-11-29T00:00:00Z"}]}})
    assert "status.conditions[0].status" in rejected.value.body


def test_printer_columns_render(api, crd_installed, namespace):
    objects = client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL,
                                            manifest("printed", SAGEMAKER))
    objects.patch_namespaced_custom_object_status(
        schema.GROUP, schema.VERSION, namespace, schema.PLURAL, "printed", {"status": {
            "phase": "Completed",
            # Ready is not the last condition: the column must select it by type, not position.
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "BestSelected", "message": "ok",
                 "lastTransitionTime": "2026-11-29T00:00:00Z"},
                {"type": "Succeeded", "status": "True", "reason": "JobCompleted", "message": "ok",
                 "lastTransitionTime": "2026-11-29T00:00:00Z"}],
            "jobName": "printed-job",
            "best": {"instanceType": "ml.m5.4xlarge", "initialInstanceCount": 1,
                     "metrics": {"modelLatency": 9, "maxInvocations": 32628, "costPerHour": 0.922}}}})
    response = api.call_api(
        f"/apis/{schema.GROUP}/{schema.VERSION}/namespaces/{namespace}/{schema.PLURAL}", "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        query_params=[("includeObject", "None")],
        response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True)
    headers = [column["name"] for column in response["columnDefinitions"]]
    wide = {column["name"] for column in response["columnDefinitions"] if column["priority"] > 0}
    assert headers == ["Name", "Ready", "Reason", "Phase", "Backend", "Best", "Count", "Latency(ms)", "Inv/min",
                       "Cost/h", "Job", "Age"]
    assert wide == {"Reason", "Count", "Job"}
    row = dict(zip(headers, response["rows"][0]["cells"]))
    assert row["Ready"] == "True" and row["Reason"] == "BestSelected"
    assert (row["Phase"], row["Backend"], row["Best"]) == ("Completed", "sagemaker", "ml.m5.4xlarge")
    assert (row["Latency(ms)"], row["Inv/min"], row["Cost/h"], row["Job"]) == (9, 32628, 0.922, "printed-job")
