"""Promotion end to end: the operator (KopfRunner) against the real API server, with minimal CRDs of the ACK
SageMaker controller, KServe and a generic serving kind installed from tests/crds/. The tests play those
controllers by writing the status they would write; Inference Recommender is played behind botocore's Stubber."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client, dynamic
from kubernetes.dynamic import exceptions as dynamic_errors

from conftest import refusals, wait_for
from rightsizer.promotion import targets
from sagemaker_sim import SimulatedInferenceRecommender, advanced_recommendations
from test_rbac import installed, service_account_kubeconfig  # noqa: F401 (fixture)
from test_sagemaker_operator import condition, create, events, objects, operator_args, read, sample
from rightsizer import schema

pytestmark = pytest.mark.cluster
CRDS = Path(__file__).parent / "crds"
ACK = "sagemaker.services.k8s.aws/v1alpha1"
KSERVE = "serving.kserve.io/v1beta1"
GENERIC = "serving.example.com/v1"
AAS = "applicationautoscaling.services.k8s.aws/v1alpha1"
BEST_ID_SUFFIX = "/00000001"  # the advanced seed job's winner: ml.m5.2xlarge x2, OMP_NUM_THREADS=4


@pytest.fixture(scope="module")
def serving_crds(api, crd_installed):
    extensions = client.ApiextensionsV1Api(api)
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            try:
                extensions.create_custom_resource_definition(crd)
            except client.ApiException as error:
                if error.status != 409:
                    raise
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in
                                 extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions
                                 or []))
    return True


@pytest.fixture
def kinds(api, serving_crds):
    applier = dynamic.DynamicClient(api)
    return {kind: applier.resources.get(api_version=version, kind=kind) for version, kind in
            [(ACK, "Model"), (ACK, "EndpointConfig"), (ACK, "Endpoint"), (KSERVE, "InferenceService"),
             (GENERIC, "ModelDeployment"), (AAS, "ScalableTarget"), (AAS, "ScalingPolicy")]}


def apply_as(resource, body: dict, manager: str, force: bool = True) -> dict:
    """Server-side apply as another field manager (a person's kubectl, Argo CD)."""
    return resource.server_side_apply(body=body, name=body["metadata"]["name"], namespace=body["metadata"]["namespace"],
                                      field_manager=manager, force_conflicts=force).to_dict()


def get(resource, namespace: str, name: str) -> dict | None:
    try:
        return resource.get(name=name, namespace=namespace).to_dict()
    except dynamic_errors.NotFoundError:
        return None


def play_controller(resource, namespace: str, name: str, status: dict, annotations: dict | None = None) -> None:
    """Write what the ACK or KServe controller would write: status, then ACK's bookkeeping annotation."""
    resource.status.patch(name=name, namespace=namespace, body={"status": status},
                          content_type="application/merge-patch+json")
    if annotations:
        resource.patch(name=name, namespace=namespace, body={"metadata": {"annotations": annotations}},
                       content_type="application/merge-patch+json")


def ack_status(synced: bool = True, terminal: str | None = None, **fields) -> dict:
    conditions = [{"type": "ACK.ResourceSynced", "status": "True" if synced else "False"}]
    if terminal:
        conditions.append({"type": "ACK.Terminal", "status": "True", "message": terminal})
    return {**fields, "conditions": conditions}


def install_endpoint(kinds, namespace: str) -> None:
    """What a team deployed with `kubectl apply --server-side` before rightsizing: Model, EndpointConfig, Endpoint."""
    metadata = {"namespace": namespace}
    apply_as(kinds["Model"], {"apiVersion": ACK, "kind": "Model", "metadata": {**metadata, "name": "fraud-model"},
                              "spec": {"modelName": "fraud-model", "executionRoleARN": "arn:aws:iam::111122223333:role/sm",
                                       "primaryContainer": {"image": "xgboost:1.5-1", "modelDataURL": "s3://b/m.tar.gz",
                                                            "environment": {"SAGEMAKER_PROGRAM": "serve"}}}}, "kubectl")
    apply_as(kinds["EndpointConfig"], {
        "apiVersion": ACK, "kind": "EndpointConfig", "metadata": {**metadata, "name": "fraud-config"},
        "spec": {"endpointConfigName": "fraud-config", "productionVariants": [
            {"variantName": "AllTraffic", "modelName": "fraud-model", "instanceType": "ml.m5.large",
             "initialInstanceCount": 1, "initialVariantWeight": 1}]}}, "kubectl")
    apply_as(kinds["Endpoint"], {"apiVersion": ACK, "kind": "Endpoint", "metadata": {**metadata, "name": "fraud-endpoint"},
                                 "spec": {"endpointName": "fraud-endpoint", "endpointConfigName": "fraud-config"}},
             "kubectl")
    for kind, name in (("Model", "fraud-model"), ("EndpointConfig", "fraud-config")):
        play_controller(kinds[kind], namespace, name, ack_status())
    play_controller(kinds["Endpoint"], namespace, "fraud-endpoint", ack_status(endpointStatus="InService"))


def ours(kinds, kind: str, namespace: str) -> list[dict]:
    return [item.to_dict() for item in kinds[kind].get(
        namespace=namespace, label_selector="app.kubernetes.io/managed-by=rightsizer").items]


def wait_promoted(api, namespace: str, name: str, status: str, reason: str, timeout: float = 40.0) -> dict:
    def check():
        body = read(api, namespace, name) or {}
        promoted = condition(body, "Promoted")
        return body if (promoted.get("status"), promoted.get("reason")) == (status, reason) else None
    return wait_for(check, timeout)


def annotate(api, namespace: str, name: str, annotations: dict) -> None:
    objects(api).patch_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, name,
                                                {"metadata": {"annotations": annotations}})


def patch_spec(api, namespace: str, name: str, spec: dict) -> None:
    objects(api).patch_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, name,
                                                {"spec": spec})


def managers_of(body: dict, field: str) -> set[str]:
    return {entry["manager"] for entry in body["metadata"].get("managedFields") or []
            if f'"f:{field}"' in str(entry.get("fieldsV1")) or f"'f:{field}'" in str(entry.get("fieldsV1"))}


def test_manual_ack_promotion_waits_for_approval_reports_a_conflict_then_rolls_out_step_by_step(
        api, installed, kinds, namespace, tmp_path, monkeypatch):
    """As the operator's ServiceAccount, so the ClusterRole's promotion rules are proved sufficient."""
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    install_endpoint(kinds, namespace)
    endpoint_before = get(kinds["Endpoint"], namespace, "fraud-endpoint")
    monkeypatch.setenv("KUBECONFIG", str(service_account_kubeconfig(api, tmp_path / "operator.kubeconfig")))
    manual = sample("fraud-advanced")
    manual["spec"]["promotion"]["forceConflicts"] = False
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, manual)
        body = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                        and condition(b, "AwaitingApproval").get("status") == "True" and b)
        best_id = body["status"]["best"]["recommendationId"]
        assert best_id.endswith(BEST_ID_SUFFIX) and body["status"]["promotion"]["state"] == "AwaitingApproval"
        assert best_id in condition(body, "AwaitingApproval")["message"]
        assert condition(body, "Ready")["status"] == "True"  # the job's answer is ready; the rollout waits
        time.sleep(1)
        assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["metadata"]["resourceVersion"] == \
            endpoint_before["metadata"]["resourceVersion"]
        assert ours(kinds, "EndpointConfig", namespace) == []

        # Approved, but spec.endpointConfigName belongs to the person's kubectl: reported, nothing created.
        annotate(api, namespace, "fraud-advanced", {"rightsizer.io/approve": best_id})
        body = wait_promoted(api, namespace, "fraud-advanced", "False", "FieldConflict")
        assert 'conflict with "kubectl"' in condition(body, "Promoted")["message"]
        assert condition(body, "Ready")["reason"] == "FieldConflict"
        assert ours(kinds, "EndpointConfig", namespace) == [] and ours(kinds, "Model", namespace) == []

        # The owner lets rightsizer take the field over: the copies are created, the endpoint is not yet touched.
        patch_spec(api, namespace, "fraud-advanced", {"promotion": {"forceConflicts": True}})
        configs = wait_for(lambda: ours(kinds, "EndpointConfig", namespace))
        models = wait_for(lambda: ours(kinds, "Model", namespace))
        new = configs[0]["metadata"]["name"]
        assert models[0]["metadata"]["name"] == new
        assert models[0]["spec"]["primaryContainer"]["environment"] == {"SAGEMAKER_PROGRAM": "serve",
                                                                        "OMP_NUM_THREADS": "4"}
        assert configs[0]["spec"]["productionVariants"] == [
            {"variantName": "AllTraffic-c2", "modelName": new, "instanceType": "ml.m5.2xlarge",
             "initialInstanceCount": 2, "initialVariantWeight": 1}]
        time.sleep(1.5)  # several promotion polls: still waiting for ACK
        assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == "fraud-config"

        for kind in ("Model", "EndpointConfig"):
            play_controller(kinds[kind], namespace, new, ack_status())
        endpoint = wait_for(lambda: (e := get(kinds["Endpoint"], namespace, "fraud-endpoint"))
                            and e["spec"]["endpointConfigName"] == new and e)
        assert "rightsizer" in managers_of(endpoint, "endpointConfigName")
        body = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                        and b["status"]["promotion"]["state"] == "WaitingForTarget" and b)
        assert condition(body, "Promoted")["status"] == "Unknown"

        # ACK sends the update; SageMaker takes a while; the old objects stay until the endpoint is InService.
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint", ack_status(False, endpointStatus="Updating"),
                        {targets.ACK_LAST_UPDATE_ANNOTATION: new})
        time.sleep(1)
        assert condition(read(api, namespace, "fraud-advanced"), "Promoted")["status"] == "Unknown"
        assert get(kinds["EndpointConfig"], namespace, "fraud-config") is not None
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint", ack_status(endpointStatus="InService"))
        body = wait_promoted(api, namespace, "fraud-advanced", "True", "Promoted")
        promotion = body["status"]["promotion"]
        assert (promotion["state"], promotion["appliedRecommendationId"]) == ("Succeeded", best_id)
        assert promotion["current"]["endpointConfigName"] == new
        assert promotion["previous"]["endpointConfigName"] == "fraud-config"
        assert body["status"]["phase"] == "Promoted" and condition(body, "Ready")["reason"] == "Promoted"
        assert get(kinds["EndpointConfig"], namespace, "fraud-config") is not None  # the team's own: never deleted
        wait_for(lambda: ("Normal", "Promoted") in events(api, namespace, "fraud-advanced"))
    assert runner.exception is None, runner.output
    assert refusals(runner.output) == [], runner.output


def test_a_failed_endpoint_update_is_reported_and_rollback_restores_the_previous_config(api, crd_installed, kinds,
                                                                                        namespace):
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    install_endpoint(kinds, namespace)
    body = sample("fraud-advanced")
    body["spec"]["promotion"]["mode"] = "Automatic"
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, body)
        configs = wait_for(lambda: ours(kinds, "EndpointConfig", namespace))
        new = configs[0]["metadata"]["name"]
        for kind in ("Model", "EndpointConfig"):
            play_controller(kinds[kind], namespace, new, ack_status())
        wait_for(lambda: get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == new)
        # SageMaker rolls the update back; ACK marks the endpoint terminal for this config name.
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint",
                        ack_status(False, terminal="EndpointUpdateError: unable to update endpoint. Check FailureReason",
                                   endpointStatus="InService",
                                   failureReason="Insufficient capacity for ml.m5.2xlarge in us-east-1a"),
                        {targets.ACK_LAST_UPDATE_ANNOTATION: new})
        failed = wait_promoted(api, namespace, "fraud-advanced", "False", "EndpointUpdateFailed")
        assert "EndpointUpdateError" in condition(failed, "Promoted")["message"]
        assert condition(failed, "Ready")["reason"] == "EndpointUpdateFailed"
        wait_for(lambda: ("Warning", "EndpointUpdateFailed") in events(api, namespace, "fraud-advanced"))
        assert failed["status"]["promotion"]["state"] == "Failed"

        annotate(api, namespace, "fraud-advanced", {"rightsizer.io/rollback": "true"})
        wait_for(lambda: get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] ==
                 "fraud-config")
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint",
                        ack_status(endpointStatus="InService", failureReason=None),
                        {targets.ACK_LAST_UPDATE_ANNOTATION: "fraud-config"})
        body = wait_promoted(api, namespace, "fraud-advanced", "True", "RolledBack")
        assert body["status"]["promotion"]["current"]["endpointConfigName"] == "fraud-config"
        assert body["status"]["promotion"]["state"] == "RolledBack"
    assert runner.exception is None, runner.output


def test_dry_run_plans_and_automatic_refuses_without_the_sla_touching_nothing(api, crd_installed, kinds, namespace):
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    install_endpoint(kinds, namespace)
    endpoint_version = get(kinds["Endpoint"], namespace, "fraud-endpoint")["metadata"]["resourceVersion"]
    dry = sample("fraud-advanced")
    dry["spec"]["promotion"].update(mode="DryRun", forceConflicts=False)
    strict = copy.deepcopy(sample("fraud-advanced"))
    strict["metadata"]["name"] = "fraud-strict"
    strict["spec"]["promotion"]["mode"] = "Automatic"
    strict["spec"]["selection"] = {"constraints": {"minInvocationsPerMinute": 1000000}}
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, dry)
        create(api, namespace, strict)
        planned = wait_promoted(api, namespace, "fraud-advanced", "False", "DryRun")
        refused = wait_promoted(api, namespace, "fraud-strict", "False", "SLANotMet")
        time.sleep(1)
    assert runner.exception is None, runner.output
    documents = planned["status"]["promotion"]["plannedPatch"]["objects"]
    assert [d["kind"] for d in documents] == ["Model", "EndpointConfig", "Endpoint"]
    assert documents[1]["spec"]["productionVariants"][0]["instanceType"] == "ml.m5.2xlarge"
    assert 'conflict with "kubectl"' in condition(planned, "Promoted")["message"]  # said ahead of time
    assert condition(refused, "SLASatisfied")["status"] == "False"
    assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["metadata"]["resourceVersion"] == endpoint_version
    assert ours(kinds, "EndpointConfig", namespace) == [] and ours(kinds, "Model", namespace) == []


def test_kserve_promotion_respects_other_managers_then_takes_over_when_told(api, crd_installed, kinds, namespace):
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    isvc = {"apiVersion": KSERVE, "kind": "InferenceService", "metadata": {"name": "fraud", "namespace": namespace},
            "spec": {"predictor": {"minReplicas": 1, "model": {
                "modelFormat": {"name": "xgboost"}, "storageUri": "s3://b/model",
                "env": [{"name": "LOG_LEVEL", "value": "info"}]}}}}
    apply_as(kinds["InferenceService"], isvc, "argocd-controller")
    body = sample("fraud-advanced")
    body["spec"]["promotion"] = {"mode": "Automatic",
                                 "target": {"apiVersion": KSERVE, "kind": "InferenceService", "name": "fraud"}}
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, body)
        conflict = wait_promoted(api, namespace, "fraud-advanced", "False", "FieldConflict")
        assert '"argocd-controller"' in condition(conflict, "Promoted")["message"]
        assert "minReplicas" in condition(conflict, "Promoted")["message"]
        assert get(kinds["InferenceService"], namespace, "fraud")["spec"]["predictor"]["minReplicas"] == 1

        patch_spec(api, namespace, "fraud-advanced", {"promotion": {"forceConflicts": True}})
        live = wait_for(lambda: (i := get(kinds["InferenceService"], namespace, "fraud"))
                        and i["spec"]["predictor"].get("minReplicas") == 2 and i)
        predictor = live["spec"]["predictor"]
        assert predictor["nodeSelector"] == {"node.kubernetes.io/instance-type": "m5.2xlarge"}
        assert predictor["model"]["env"] == [{"name": "LOG_LEVEL", "value": "info"},
                                             {"name": "OMP_NUM_THREADS", "value": "4"}]
        assert predictor["model"]["resources"] == {"requests": {"cpu": "7750m", "memory": "27852Mi"},
                                                   "limits": {"memory": "27852Mi"}}
        assert predictor["model"]["storageUri"] == "s3://b/model"  # other fields untouched
        waiting = read(api, namespace, "fraud-advanced")
        assert condition(waiting, "Promoted")["status"] == "Unknown"  # until KServe reports the revision Ready
        # The attempt's start, kept by the schema, is what spec.promotion.progressDeadlineSeconds counts from.
        assert waiting["status"]["promotion"]["startedAt"]
        assert waiting["spec"]["promotion"]["progressDeadlineSeconds"] == 3600
        play_controller(kinds["InferenceService"], namespace, "fraud",
                        {"observedGeneration": live["metadata"]["generation"],
                         "conditions": [{"type": "Ready", "status": "True"}]})
        body = wait_promoted(api, namespace, "fraud-advanced", "True", "Promoted")
        assert "startedAt" not in body["status"]["promotion"]  # the attempt is over
        previous = body["status"]["promotion"]["previous"]["patch"]
        assert previous["spec"]["predictor"]["minReplicas"] == 1
    assert runner.exception is None, runner.output


def test_kserve_promotion_carries_sagemakers_scaling_recommendation_asked_once(api, crd_installed, kinds, namespace):
    sim = SimulatedInferenceRecommender(results=advanced_recommendations)
    sim.install()
    isvc = {"apiVersion": KSERVE, "kind": "InferenceService", "metadata": {"name": "fraud", "namespace": namespace},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "storageUri": "s3://b/model"}}}}
    apply_as(kinds["InferenceService"], isvc, "kubectl")
    body = sample("fraud-advanced")
    body["spec"]["autoscaling"] = {"targetCpuUtilizationPerCore": 60, "minInvocationsPerMinute": 1000,
                                   "maxInvocationsPerMinute": 60000}
    body["spec"]["promotion"] = {"mode": "Automatic",
                                 "target": {"apiVersion": KSERVE, "kind": "InferenceService", "name": "fraud"}}
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, body)
        live = wait_for(lambda: (i := get(kinds["InferenceService"], namespace, "fraud"))
                        and i["spec"]["predictor"].get("maxReplicas") and i)
        # The simulated service: the winner's 42604/min over 2 instances, 60 % of 21302 = 12781/min per instance.
        predictor = live["spec"]["predictor"]
        assert {k: predictor[k] for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")} == {
            "minReplicas": 1, "maxReplicas": 5, "scaleMetric": "rps", "scaleTarget": 213}
        scaling = read(api, namespace, "fraud-advanced")["status"]["best"]["scaling"]
        assert (scaling["source"], scaling["minCapacity"], scaling["maxCapacity"]) == ("SageMaker", 1, 5)
        assert scaling["objective"] == body["spec"]["autoscaling"]
        play_controller(kinds["InferenceService"], namespace, "fraud",
                        {"observedGeneration": live["metadata"]["generation"],
                         "conditions": [{"type": "Ready", "status": "True"}]})
        promoted = wait_promoted(api, namespace, "fraud-advanced", "True", "Promoted")
        assert condition(promoted, "ScalingRecommended")["status"] == "True"
        assert ("Normal", "ScalingRecommended") in events(api, namespace, "fraud-advanced")
    assert runner.exception is None, runner.output
    asked = [params for operation, params in sim.calls if operation == "GetScalingConfigurationRecommendation"]
    assert [p["RecommendationId"] for p in asked] == [promoted["status"]["best"]["recommendationId"]]
    # A restarted operator finds the answer in status and asks nothing again.
    with KopfRunner(operator_args(namespace)) as restarted:
        time.sleep(3)
    assert restarted.exception is None, restarted.output
    assert sim.count("GetScalingConfigurationRecommendation") == 1


def test_generic_targets_missing_or_unknown_are_reported_and_promoted_once_they_exist(api, crd_installed, kinds,
                                                                                      namespace):
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    generic = sample("fraud-advanced")
    # The fleets list is atomic and owned by whoever created the object: taking it over is asked for.
    generic["spec"]["promotion"] = {
        "mode": "Automatic", "forceConflicts": True,
        "target": {"apiVersion": GENERIC, "kind": "ModelDeployment", "name": "fraud"},
        "fieldPaths": {"instanceType": "spec.fleets[0].machineType", "instanceCount": "spec.fleets[0].replicas",
                       "environment": "spec.fleets[0].env"}}
    unknown = copy.deepcopy(generic)
    unknown["metadata"]["name"] = "fraud-widget"
    unknown["spec"]["promotion"]["target"] = {"apiVersion": "widgets.example.com/v1", "kind": "Widget", "name": "w"}
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, generic)
        create(api, namespace, unknown)
        missing = wait_promoted(api, namespace, "fraud-advanced", "False", "TargetNotFound")
        assert "ModelDeployment/fraud does not exist" in condition(missing, "Promoted")["message"]
        unserved = wait_promoted(api, namespace, "fraud-widget", "False", "TargetKindNotServed")
        assert "does not serve Widget in widgets.example.com/v1" in condition(unserved, "Promoted")["message"]
        kinds["ModelDeployment"].create(namespace=namespace, body={
            "apiVersion": GENERIC, "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": namespace},
            "spec": {"fleets": [{"machineType": "ml.m5.large", "replicas": 1}, {"machineType": "ml.c5.large",
                                                                                "replicas": 1}]}})
        wait_promoted(api, namespace, "fraud-advanced", "True", "Promoted")
    assert runner.exception is None, runner.output
    fleets = get(kinds["ModelDeployment"], namespace, "fraud")["spec"]["fleets"]
    assert fleets == [{"machineType": "ml.m5.2xlarge", "replicas": 2, "env": {"OMP_NUM_THREADS": "4"}},
                      {"machineType": "ml.c5.large", "replicas": 1}]



ACK_FINALIZER = "finalizers.applicationautoscaling.services.k8s.aws/{}"  # ACK keeps an object until AWS let it go
AUTOSCALING = {"targetCpuUtilizationPerCore": 60, "minInvocationsPerMinute": 1000, "maxInvocationsPerMinute": 60000}


def register_as(kinds, namespace: str, name: str, labels: dict, kind: str = "ScalableTarget") -> dict:
    """A registration of AllTraffic as ACK holds it: with ACK's finalizer, synced."""
    spec = {"serviceNamespace": "sagemaker", "resourceID": "endpoint/fraud-endpoint/variant/AllTraffic",
            "scalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    spec.update({"minCapacity": 1, "maxCapacity": 2} if kind == "ScalableTarget" else {
        "policyName": name, "policyType": "TargetTrackingScaling", "targetTrackingScalingPolicyConfiguration": {
            "targetValue": 500.0, "predefinedMetricSpecification": {
                "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}})
    body = kinds[kind].create(namespace=namespace, body={
        "apiVersion": AAS, "kind": kind, "metadata": {"name": name, "namespace": namespace, "labels": labels,
                                                      "finalizers": [ACK_FINALIZER.format(kind)]},
        "spec": spec}).to_dict()
    play_controller(kinds[kind], namespace, name, ack_status())
    return body


def release(kinds, kind: str, namespace: str, name: str) -> None:
    """ACK, having deregistered it from Application Auto Scaling, removes its finalizer."""
    kinds[kind].patch(name=name, namespace=namespace, body={"metadata": {"finalizers": None}},
                      content_type="application/merge-patch+json")


def test_an_autoscaled_endpoint_is_deregistered_updated_and_registered_again_in_that_order(
        api, installed, kinds, namespace, tmp_path, monkeypatch):
    """An instance-type change (ml.m5.large -> ml.m5.2xlarge) of a variant an earlier promotion autoscaled, with a
    count change (1 -> 2): as the operator's ServiceAccount, so the ClusterRole's new rules are proved sufficient."""
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    install_endpoint(kinds, namespace)
    monkeypatch.setenv("KUBECONFIG", str(service_account_kubeconfig(api, tmp_path / "operator.kubeconfig")))
    body = sample("fraud-advanced")
    body["spec"]["autoscaling"] = AUTOSCALING
    body["spec"]["promotion"].update(mode="Manual", forceConflicts=True)
    with KopfRunner(operator_args(namespace)) as runner:
        created = create(api, namespace, body)
        job = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                       and condition(b, "AwaitingApproval").get("status") == "True" and b)
        assert job["status"]["best"]["scaling"]["minCapacity"] == 1
        # What an earlier promotion of this job registered for AllTraffic (its name and label).
        name = targets.scaling_name("fraud-endpoint", created["metadata"]["uid"])
        labels = {"app.kubernetes.io/managed-by": "rightsizer", "rightsizer.io/rightsizejob": "fraud-advanced"}
        old_target = register_as(kinds, namespace, name, labels)
        old_policy = register_as(kinds, namespace, f"{name}-p0", labels, "ScalingPolicy")
        annotate(api, namespace, "fraud-advanced", {"rightsizer.io/approve": "best"})

        configs = wait_for(lambda: ours(kinds, "EndpointConfig", namespace))
        new = configs[0]["metadata"]["name"]
        # The count changes, but the autoscaled variant keeps its name: the registration's variant stays.
        assert [v["variantName"] for v in configs[0]["spec"]["productionVariants"]] == ["AllTraffic"]
        for kind in ("Model", "EndpointConfig"):
            play_controller(kinds[kind], namespace, new, ack_status())

        # 1. Deregister: both deleted, and the Endpoint is not touched while ACK holds them.
        for kind, old in (("ScalableTarget", old_target), ("ScalingPolicy", old_policy)):
            wait_for(lambda: (get(kinds[kind], namespace, old["metadata"]["name"]) or {}).get(
                "metadata", {}).get("deletionTimestamp"))
        state = read(api, namespace, "fraud-advanced")["status"]["promotion"]["state"]
        assert state == "DeregisteringScaling"
        time.sleep(1.5)
        assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == "fraud-config"
        release(kinds, "ScalingPolicy", namespace, f"{name}-p0")
        time.sleep(1)
        assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == "fraud-config"
        release(kinds, "ScalableTarget", namespace, name)

        # 2. Update: the Endpoint is pointed at the copy; nothing is registered while SageMaker updates it.
        wait_for(lambda: get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == new)
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint", ack_status(False, endpointStatus="Updating"),
                        {targets.ACK_LAST_UPDATE_ANNOTATION: new})
        time.sleep(1.5)
        assert get(kinds["ScalableTarget"], namespace, name) is None
        assert get(kinds["ScalingPolicy"], namespace, f"{name}-p0") is None
        play_controller(kinds["Endpoint"], namespace, "fraud-endpoint", ack_status(endpointStatus="InService"))

        # 3. Register: the same names again, new objects, with the scaling's capacities and policy.
        target = wait_for(lambda: get(kinds["ScalableTarget"], namespace, name))
        policy = wait_for(lambda: get(kinds["ScalingPolicy"], namespace, f"{name}-p0"))
        assert target["metadata"]["uid"] != old_target["metadata"]["uid"]
        assert policy["metadata"]["uid"] != old_policy["metadata"]["uid"]
        scaling = read(api, namespace, "fraud-advanced")["status"]["best"]["scaling"]
        assert (target["spec"]["minCapacity"], target["spec"]["maxCapacity"]) == (scaling["minCapacity"],
                                                                                  scaling["maxCapacity"])
        configuration = policy["spec"]["targetTrackingScalingPolicyConfiguration"]
        assert configuration["predefinedMetricSpecification"] == {
            "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
        assert configuration["targetValue"] == scaling["policies"][0]["targetValue"]
        assert "rightsizer" in managers_of(target, "minCapacity")
        assert read(api, namespace, "fraud-advanced")["status"]["promotion"]["state"] == "RegisteringScaling"
        for kind, registered in (("ScalableTarget", name), ("ScalingPolicy", f"{name}-p0")):
            play_controller(kinds[kind], namespace, registered, ack_status())
        promoted = wait_promoted(api, namespace, "fraud-advanced", "True", "Promoted")
        assert promoted["status"]["promotion"]["current"]["scaling"]["minCapacity"] == scaling["minCapacity"]
        wait_for(lambda: ("Normal", "PromotionDeregisteredScaling") in events(api, namespace, "fraud-advanced"))

        # No registration is left pointing at a variant the endpoint no longer has.
        config = get(kinds["EndpointConfig"], namespace, new)
        variants = {f"endpoint/fraud-endpoint/variant/{v['variantName']}"
                    for v in config["spec"]["productionVariants"]}
        registrations = [o.to_dict() for kind in ("ScalableTarget", "ScalingPolicy")
                         for o in kinds[kind].get(namespace=namespace).items]
        assert len(registrations) == 2 and all(o["spec"]["resourceID"] in variants for o in registrations)
    assert runner.exception is None, runner.output
    assert refusals(runner.output) == [], runner.output


def test_a_teams_own_scalable_target_stops_an_instance_type_change_untouched(api, crd_installed, kinds, namespace):
    SimulatedInferenceRecommender(results=advanced_recommendations).install()
    install_endpoint(kinds, namespace)
    theirs = register_as(kinds, namespace, "team-scaling", {})
    body = sample("fraud-advanced")
    body["spec"]["promotion"]["mode"] = "Automatic"
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, body)
        blocked = wait_promoted(api, namespace, "fraud-advanced", "False", "ForeignScalableTarget")
        message = condition(blocked, "Promoted")["message"]
        assert "team-scaling" in message and "endpoint/fraud-endpoint/variant/AllTraffic" in message
        time.sleep(1)
        assert ours(kinds, "EndpointConfig", namespace) == []
        assert get(kinds["ScalableTarget"], namespace, "team-scaling")["metadata"]["uid"] == theirs["metadata"]["uid"]
        assert get(kinds["Endpoint"], namespace, "fraud-endpoint")["spec"]["endpointConfigName"] == "fraud-config"
        # The team deregisters theirs: the promotion goes ahead.
        release(kinds, "ScalableTarget", namespace, "team-scaling")
        kinds["ScalableTarget"].delete(name="team-scaling", namespace=namespace)
        wait_for(lambda: ours(kinds, "EndpointConfig", namespace), timeout=60)
    assert runner.exception is None, runner.output
