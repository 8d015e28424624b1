"""Promotion as pure functions: the gate, the per-target plans, the attempt state machine and its memory
(status.promotion), driven with made-up API-server contents. tests/test_promotion_operator.py runs the same flow
through the operator against the real API server."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
import regex

from rightsizer import schema, spec
from rightsizer import status as st
from rightsizer.promotion import flow, paths, targets
from rightsizer.promotion.memory import PromotionMemory, State
from rightsizer.promotion.objects import (ApplyObjects, ApplyResult, DeleteObjects, DeleteResult, KindRef, ObjectRef,
                                          ReadWorld, World)
from rightsizer.promotion.paths import MISSING, Keyed
from rightsizer.promotion.targets import Configuration

NOW = datetime.datetime(2026, 11, 29, 9, 0, tzinfo=datetime.timezone.utc)
ACK = "sagemaker.services.k8s.aws/v1alpha1"
NS, UID = "ml", "5f0c7a52-0000-4000-8000-000000000001"
SAGEMAKER_NAME = regex.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
DNS_LABEL = regex.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
BEST = {"recommendationId": "job/00000001", "instanceType": "ml.m5.2xlarge", "initialInstanceCount": 2,
        "environment": {"OMP_NUM_THREADS": "4"}}
ENDPOINT_REF = ObjectRef(ACK, "Endpoint", NS, "fraud-endpoint")
CONFIGS, MODELS = KindRef(ACK, "EndpointConfig", NS), KindRef(ACK, "Model", NS)
SCALABLE_TARGETS, SCALING_POLICIES = targets.scaling_kinds(NS)


# -- made-up API server contents --------------------------------------------------------------------------------

def ack_conditions(synced: bool = True, terminal: str | None = None) -> list[dict]:
    conditions = [{"type": "ACK.ResourceSynced", "status": "True" if synced else "False"}]
    if terminal:
        conditions.append({"type": "ACK.Terminal", "status": "True", "message": terminal})
    return conditions


def model(name: str, environment: dict, synced: bool = True, terminal: str | None = None) -> dict:
    return {"apiVersion": ACK, "kind": "Model", "metadata": {"name": name, "namespace": NS},
            "spec": {"modelName": name, "executionRoleARN": "arn:aws:iam::111122223333:role/sm",
                     "primaryContainer": {"image": "xgboost:1.5-1", "modelDataURL": "s3://b/model.tar.gz",
                                          "environment": environment}},
            "status": {"conditions": ack_conditions(synced, terminal)}}


def endpoint_config(name: str, model_name: str, instance_type: str = "ml.m5.large", count: int = 1,
                    variant: str = "AllTraffic", synced: bool = True, terminal: str | None = None) -> dict:
    return {"apiVersion": ACK, "kind": "EndpointConfig", "metadata": {"name": name, "namespace": NS},
            "spec": {"endpointConfigName": name, "kmsKeyID": "alias/sm",
                     "productionVariants": [{"variantName": variant, "modelName": model_name,
                                             "instanceType": instance_type, "initialInstanceCount": count,
                                             "initialVariantWeight": 1}]},
            "status": {"conditions": ack_conditions(synced, terminal)}}


def endpoint(config_name: str, endpoint_status: str = "InService", sent: str | None = None, synced: bool = True,
             failure: str | None = None, terminal: str | None = None) -> dict:
    body = {"apiVersion": ACK, "kind": "Endpoint",
            "metadata": {"name": "fraud-endpoint", "namespace": NS, "annotations": {}},
            "spec": {"endpointName": "fraud-endpoint", "endpointConfigName": config_name},
            "status": {"endpointStatus": endpoint_status, "conditions": ack_conditions(synced, terminal)}}
    if sent:
        body["metadata"]["annotations"][targets.ACK_LAST_UPDATE_ANNOTATION] = sent
    if failure:
        body["status"]["failureReason"] = failure
    return body


ORIGINAL_MODEL = model("fraud-model", {"SAGEMAKER_PROGRAM": "serve", "OMP_NUM_THREADS": "1"})
ORIGINAL_CONFIG = endpoint_config("fraud-config", "fraud-model")


def ack_world(the_endpoint: dict, configs=(ORIGINAL_CONFIG,), models=(ORIGINAL_MODEL,), conflict=None) -> World:
    return World({ENDPOINT_REF: the_endpoint}, {CONFIGS: tuple(configs), MODELS: tuple(models)}, conflict=conflict)


def context(memory=None, *, mode="Automatic", best=BEST, annotations=None, world=None, applied=None, deleted=None,
            target=None, generation=1, sla=st.TRUE, now=NOW, **promotion) -> flow.Context:
    """`memory`: a step's, or status.promotion as stored; `promotion`: more of spec.promotion (CRD defaults apply)."""
    raw = {"target": target or {"apiVersion": ACK, "kind": "Endpoint", "name": "fraud-endpoint"}, "mode": mode,
           "forceConflicts": False, **promotion}
    if not isinstance(memory, PromotionMemory):
        memory = PromotionMemory.from_storage(memory)
    return flow.Context(promotion=spec.Promotion.from_spec(schema.with_defaults({"promotion": raw})["promotion"]),
                        namespace=NS, job_name="fraud", owner_uid=UID, generation=generation, best=best,
                        sla_satisfied=sla, annotations=annotations or {}, memory=memory, now=now, world=world,
                        applied=applied, deleted=deleted)


def name(attempt: int) -> str:
    return targets.object_name("fraud-endpoint", UID, attempt)


# -- paths ------------------------------------------------------------------------------------------------------

def test_paths_parse_and_render():
    assert paths.parse("spec.fleets[0].machineType") == ("spec", "fleets", 0, "machineType")
    assert paths.render(("spec", "env", Keyed("name", "A"), "value")) == "spec.env[name=A].value"


def test_an_apply_body_names_keyed_list_elements_and_copies_atomic_lists():
    live = {"spec": {"env": [{"name": "KEEP", "value": "1"}], "fleets": [{"machineType": "a", "replicas": 1},
                                                                         {"machineType": "b", "replicas": 1}]}}
    body = paths.apply_body(live, [(("spec", "env", Keyed("name", "OMP"), "value"), "4"),
                                   (("spec", "fleets", 1, "machineType"), "c"),
                                   (("spec", "gone"), MISSING)])
    # Keyed: only our element (server-side apply merges it with KEEP). Atomic: the whole list, one element changed.
    assert body == {"spec": {"env": [{"name": "OMP", "value": "4"}],
                             "fleets": [{"machineType": "a", "replicas": 1}, {"machineType": "c", "replicas": 1}]}}
    assert live["spec"]["fleets"][1]["machineType"] == "b"  # the live object is not modified
    assert paths.get(live, ("spec", "env", Keyed("name", "KEEP"), "value")) == "1"
    assert paths.get(live, ("spec", "env", Keyed("name", "NOPE"), "value")) is MISSING
    assert paths.get(live, ("spec", "fleets", 5)) is MISSING


# -- naming ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target_name", ["fraud-endpoint", "a" * 253, "fraud.endpoint.v2", "x"])
def test_object_names_are_valid_for_kubernetes_and_sagemaker_and_new_per_attempt(target_name):
    names = {targets.object_name(target_name, UID, attempt) for attempt in range(1, 30)}
    assert len(names) == 29
    assert all(len(n) <= 63 and SAGEMAKER_NAME.match(n) and DNS_LABEL.match(n) for n in names), names
    assert targets.object_name(target_name, UID, 3) == targets.object_name(target_name, UID, 3)
    assert targets.object_name(target_name, UID, 3) != targets.object_name(target_name, UID.replace("1", "2"), 3)


def test_a_new_instance_count_gets_a_new_variant_name():
    assert targets.variant_name_for("AllTraffic", 2) == "AllTraffic-c2"
    assert targets.variant_name_for("AllTraffic-c2", 3) == "AllTraffic-c3"
    assert SAGEMAKER_NAME.match(targets.variant_name_for("v" * 63, 12))


# -- KServe and generic plans ------------------------------------------------------------------------------------

def test_kserve_gets_node_type_resources_replicas_and_env():
    live = {"spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "env": [{"name": "A", "value": "1"}]}}}}
    body = paths.apply_body(live, targets.kserve_assignments(live, Configuration.from_row(BEST)))
    # ml.m5.2xlarge: 8 vCPUs, 32 GiB; the pod leaves 0.25 CPU and 15 % of memory to the node.
    assert body == {"spec": {"predictor": {
        "minReplicas": 2, "nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"},
        "model": {"resources": {"requests": {"cpu": "7750m", "memory": "27852Mi"}, "limits": {"memory": "27852Mi"}},
                  "env": [{"name": "OMP_NUM_THREADS", "value": "4"}]}}}}


def test_kserve_local_profiles_size_the_pod_without_a_node_type_and_custom_containers_are_keyed():
    live = {"spec": {"predictor": {"containers": [{"name": "server", "image": "x"}]}}}
    configuration = Configuration("r", "local-2cpu-4gi", 1, {})
    body = paths.apply_body(live, targets.kserve_assignments(live, configuration))
    assert body == {"spec": {"predictor": {"minReplicas": 1, "containers": [
        {"name": "server", "resources": {"requests": {"cpu": "2", "memory": "4096Mi"},
                                         "limits": {"memory": "4096Mi"}}}]}}}


def test_kserve_gets_the_node_selector_and_resources_a_kubernetes_winner_was_measured_with():
    live = {"spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}}}}}
    row = {"recommendationId": "job-g1/00000001", "instanceType": "c6i-1cpu", "initialInstanceCount": 3,
           "environment": {"OMP_NUM_THREADS": "1"},
           "placement": {"nodeSelector": {"node.kubernetes.io/instance-type": "c6i.xlarge"},
                         "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1"}}}}
    body = paths.apply_body(live, targets.kserve_assignments(live, Configuration.from_row(row)))
    # The candidate's name is no instance type to size by: the measured Pod's own place and size go over.
    assert body == {"spec": {"predictor": {
        "minReplicas": 3, "nodeSelector": {"node.kubernetes.io/instance-type": "c6i.xlarge"},
        "model": {"resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1"}},
                  "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]}}}}


SCALING = {"source": "SageMaker", "objective": {"targetCpuUtilizationPerCore": 60, "minInvocationsPerMinute": 1000,
                                                "maxInvocationsPerMinute": 60000},
           "minCapacity": 1, "maxCapacity": 4, "scaleInCooldown": 300, "scaleOutCooldown": 60,
           "policies": [{"targetValue": 16213.0, "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}]}
SCALED_BEST = {**BEST, "scaling": SCALING}
KSERVE_LIVE = {"spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}}}}}


def replicas_of(live: dict, best: dict) -> dict:
    body = paths.apply_body(live, targets.kserve_assignments(live, Configuration.from_row(best)))
    return {k: v for k, v in body["spec"]["predictor"].items() if k in ("minReplicas", "maxReplicas", "scaleMetric",
                                                                       "scaleTarget")}


def test_kserve_gets_the_scalings_capacities_and_requests_per_second_for_knative():
    # 16213 invocations/min per instance is 270.2 requests/s per replica: rounded down, to scale out earlier.
    assert replicas_of(KSERVE_LIVE, SCALED_BEST) == {"minReplicas": 1, "maxReplicas": 4, "scaleMetric": "rps",
                                                     "scaleTarget": 270}


@pytest.mark.parametrize("where", [
    {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}}},
    {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "Standard"}}},
    {"status": {"deploymentMode": "RawDeployment"}},
], ids=["annotation-raw", "annotation-standard", "status"])
def test_kserve_in_raw_mode_tracks_cpu_because_its_hpa_takes_no_requests_per_second(where):
    assert replicas_of({**KSERVE_LIVE, **where}, SCALED_BEST) == {"minReplicas": 1, "maxReplicas": 4,
                                                                  "scaleMetric": "cpu", "scaleTarget": 60}


def test_kserve_keeps_its_own_autoscaler_settings_when_the_scaling_tracks_nothing_it_knows():
    custom = {**SCALING, "policies": [{"targetValue": 20.0, "customizedMetric": {
        "metricName": "ModelLatency", "namespace": "AWS/SageMaker", "statistic": "Average"}}]}
    assert replicas_of(KSERVE_LIVE, {**BEST, "scaling": custom}) == {"minReplicas": 1, "maxReplicas": 4}


@pytest.mark.parametrize("scaling", [None, {"source": "SageMaker", "objective": SCALING["objective"],
                                            "refused": {"reason": "AccessDenied", "message": "denied"}}],
                         ids=["no-autoscaling", "refused"])
def test_kserve_without_a_scaling_gets_the_measured_count_as_before(scaling):
    best = {**BEST, "scaling": scaling} if scaling else BEST
    assert replicas_of(KSERVE_LIVE, best) == {"minReplicas": 2}


def test_generic_replica_field_paths_take_the_capacities_and_only_when_there_are_some():
    field_paths = spec.FieldPaths(instance_count="spec.replicas", min_replicas="spec.autoscale.min",
                                  max_replicas="spec.autoscale.max")
    assert targets.generic_assignments(field_paths, Configuration.from_row(SCALED_BEST)) == [
        (("spec", "replicas"), 2), (("spec", "autoscale", "min"), 1), (("spec", "autoscale", "max"), 4)]
    assert targets.generic_assignments(field_paths, Configuration.from_row(BEST)) == [(("spec", "replicas"), 2)]


def test_an_apply_retried_after_a_failure_keeps_the_scaling_it_recorded():
    target = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "fraud"}
    ref = ObjectRef(target["apiVersion"], "InferenceService", NS, "fraud")
    step = flow.advance(context(target=target, best=SCALED_BEST, world=World({ref: KSERVE_LIVE})))
    first = step.effect.bodies
    assert first[0]["spec"]["predictor"]["maxReplicas"] == 4
    step = flow.advance(context(step.memory, target=target, best=SCALED_BEST,
                                applied=ApplyResult((), error="the webhook timed out")))
    assert step.promoted[:2] == (st.FALSE, "TargetError")
    # Carried on from status.promotion.pending, whose record keeps no scaling: the recorded body is applied again,
    # not one rebuilt without maxReplicas (which would take the field away).
    again = flow.advance(context(step.memory, target=target, best=SCALED_BEST, world=World({ref: KSERVE_LIVE})))
    assert again.effect.bodies == first


def test_kserve_without_a_container_is_unsupported():
    with pytest.raises(targets.TargetProblem) as problem:
        targets.kserve_assignments({"spec": {"predictor": {}}}, Configuration.from_row(BEST))
    assert problem.value.reason == "UnsupportedTarget" and not problem.value.retry


def test_generic_field_paths_expand_the_environment_per_variable():
    assignments = targets.generic_assignments(spec.FieldPaths(instance_type="spec.fleets[0].machineType",
                                                              environment="spec.fleets[0].env"),
                                              Configuration.from_row(BEST))
    assert assignments == [(("spec", "fleets", 0, "machineType"), "ml.m5.2xlarge"),
                           (("spec", "fleets", 0, "env", "OMP_NUM_THREADS"), "4")]


# -- the gate --------------------------------------------------------------------------------------------------

def test_manual_waits_for_approval_and_touches_nothing():
    step = flow.advance(context(mode="Manual"))
    assert step.effect is None and step.memory.state == "AwaitingApproval"
    assert step.awaiting[:2] == (st.TRUE, "ApprovalRequired")
    assert "rightsizer.io/approve=job/00000001" in step.awaiting[2]


def test_an_approval_of_another_configuration_is_stale():
    step = flow.advance(context(mode="Manual", annotations={"rightsizer.io/approve": "job/00000007"}))
    assert step.effect is None and step.awaiting[:2] == (st.TRUE, "ApprovalStale")


@pytest.mark.parametrize("approval", ["best", "job/00000001"])
def test_an_approval_of_the_best_starts_the_promotion(approval):
    step = flow.advance(context(mode="Manual", annotations={"rightsizer.io/approve": approval}))
    assert isinstance(step.effect, ReadWorld) and step.awaiting[:2] == (st.FALSE, "Approved")


def test_automatic_refuses_when_the_sla_is_not_met():
    step = flow.advance(context(best=None, sla=st.FALSE))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, "SLANotMet")


def test_a_local_profile_cannot_go_to_a_sagemaker_endpoint():
    step = flow.advance(context(best={**BEST, "instanceType": "local-2cpu"}))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, "UnsupportedConfiguration")


COMPILED = {**BEST, "compilationJobName": "fraud-neo-m5"}
KSERVE = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "fraud"}


@pytest.mark.parametrize("mode", ["Automatic", "Manual", "DryRun"])
@pytest.mark.parametrize("target, field_paths, keeps", [
    (None, None, "an ACK Endpoint promotion copies the live Model, whose image and modelDataURL are the uncompiled "
                 "model's"),
    (KSERVE, None, "a KServe promotion keeps the predictor's storageUri, the uncompiled model"),
    ({"apiVersion": "serving.example.com/v1", "kind": "ModelDeployment", "name": "fraud"},
     {"instanceType": "spec.machineType"}, "spec.promotion.fieldPaths has no compilationJobName to carry it"),
], ids=["ack", "kserve", "generic-without-path"])
def test_a_winner_measured_on_a_compiled_model_is_not_promoted_uncompiled(mode, target, field_paths, keeps):
    extra = {"fieldPaths": field_paths} if field_paths else {}
    step = flow.advance(context(mode=mode, best=COMPILED, target=target,
                                annotations={"rightsizer.io/approve": "best"}, **extra))
    message = (f"ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) was measured on the model SageMaker Neo compiled in "
               f"compilation job fraud-neo-m5, and {keeps}: promoting it would serve a model other than the one "
               f"measured. Deploy that job's artifacts yourself, or use a generic target with "
               f"spec.promotion.fieldPaths.compilationJobName")
    assert step.effect is None
    assert step.promoted == (st.FALSE, "UnsupportedConfiguration", message)
    assert step.ready == (st.FALSE, "UnsupportedConfiguration", message)


def test_a_generic_target_with_a_compilation_job_path_gets_the_compiled_model():
    field_paths = {"instanceType": "spec.machineType", "compilationJobName": "spec.neo.compilationJob"}
    generic = {"apiVersion": "serving.example.com/v1", "kind": "ModelDeployment", "name": "fraud"}
    live = {"apiVersion": generic["apiVersion"], "kind": "ModelDeployment", "metadata": {"name": "fraud"},
            "spec": {"machineType": "ml.m5.large"}}
    step = flow.advance(context(best=COMPILED, target=generic, fieldPaths=field_paths,
                                world=World({ObjectRef(generic["apiVersion"], "ModelDeployment", NS, "fraud"): live})))
    assert step.effect.bodies[0]["spec"] == {"machineType": "ml.m5.2xlarge", "neo": {"compilationJob": "fraud-neo-m5"}}
    assert targets.generic_assignments(spec.FieldPaths(compilation_job_name="spec.neo.compilationJob"),
                                       Configuration.from_row(BEST)) == []  # uncompiled: the field is left alone


def test_an_uncompiled_winner_has_no_compiled_artifact_problem_on_any_target():
    for kind in ("ack", "kserve", "generic"):
        assert targets.compiled_artifact_problem(kind, None, Configuration.from_row(BEST)) is None


PARTIAL = {**BEST, "partial": "the job was stopped with 3 benchmark(s) unfinished"}


def test_automatic_waits_for_an_approval_of_a_winner_from_partial_results():
    step = flow.advance(context(best=PARTIAL))
    assert step.effect is None
    assert step.awaiting == (st.TRUE, "PartialResults",
                             "the selection is from partial results (the job was stopped with 3 benchmark(s) "
                             "unfinished); annotate the RightsizeJob with rightsizer.io/approve=job/00000001 (or "
                             "rightsizer.io/approve=best) to promote ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) to "
                             "Endpoint/fraud-endpoint, or set spec.promotion.allowPartialResults to true")
    assert step.promoted[:2] == (st.FALSE, "AwaitingApproval") and step.memory.state == "AwaitingApproval"


@pytest.mark.parametrize("how", ["approved", "allowed"])
def test_a_partial_winner_is_promoted_once_approved_or_allowed(how):
    extra = {"annotations": {"rightsizer.io/approve": "best"}} if how == "approved" else {"allowPartialResults": True}
    step = flow.advance(context(best=PARTIAL, **extra))
    assert isinstance(step.effect, ReadWorld)
    assert step.awaiting[:2] == ((st.FALSE, "Approved") if how == "approved" else (st.FALSE, "NotRequired"))


def test_a_complete_selection_needs_no_approval_in_automatic_mode():
    step = flow.advance(context(best=BEST))
    assert isinstance(step.effect, ReadWorld) and step.awaiting[:2] == (st.FALSE, "NotRequired")


# -- ACK: the whole way, one step at a time ---------------------------------------------------------------------

def test_ack_promotion_creates_copies_waits_for_sync_patches_then_waits_for_in_service():
    step = flow.advance(context())
    assert step.effect.objects == (ENDPOINT_REF,)
    assert step.effect.listings == (CONFIGS, MODELS, SCALABLE_TARGETS, SCALING_POLICIES)
    assert step.effect.probes == (targets.endpoint_patch(ENDPOINT_REF, name(1)),)  # the conflict check

    step = flow.advance(context(world=ack_world(endpoint("fraud-config"))))
    new = name(1)
    assert step.memory.state == "CreatingResources" and step.memory.attempt == 1
    assert step.memory.pending.for_storage() == {**Configuration.from_row(BEST).as_status(),
                                                 "endpointConfigName": new, "modelName": new,
                                                 "variantName": "AllTraffic-c2"}
    assert step.memory.previous.for_storage() == {"instanceType": "ml.m5.large", "instanceCount": 1,
                                                  "environment": {"SAGEMAKER_PROGRAM": "serve", "OMP_NUM_THREADS": "1"},
                                                  "endpointConfigName": "fraud-config", "modelName": "fraud-model",
                                                  "variantName": "AllTraffic"}
    assert step.memory.created_objects == (f"Model/{new}", f"EndpointConfig/{new}")
    new_model, new_config = step.effect.bodies
    assert new_model["spec"]["modelName"] == new
    assert new_model["spec"]["primaryContainer"] == {"image": "xgboost:1.5-1", "modelDataURL": "s3://b/model.tar.gz",
                                                     "environment": {"SAGEMAKER_PROGRAM": "serve",
                                                                     "OMP_NUM_THREADS": "4"}}
    assert new_config["spec"] == {"endpointConfigName": new, "kmsKeyID": "alias/sm", "productionVariants": [
        {"variantName": "AllTraffic-c2", "modelName": new, "instanceType": "ml.m5.2xlarge", "initialInstanceCount": 2,
         "initialVariantWeight": 1}]}
    assert new_config["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "rightsizer",
                                                "rightsizer.io/rightsizejob": "fraud"}
    assert step.effect.force_conflicts is False
    memory = step.memory

    step = flow.advance(context(memory, applied=ApplyResult(step.effect.refs())))
    assert step.effect is None and step.poll_after == "poll" and step.promoted[:2] == (st.UNKNOWN, "Promoting")

    # ACK has not synced the new objects yet: the endpoint is not touched.
    created = [model(new, {"OMP_NUM_THREADS": "4"}, synced=False), endpoint_config(new, new, synced=False)]
    step = flow.advance(context(memory, world=ack_world(endpoint("fraud-config"), [ORIGINAL_CONFIG, created[1]],
                                                        [ORIGINAL_MODEL, created[0]])))
    assert step.effect is None and "waiting for ACK to create" in step.promoted[2]

    synced = [model(new, {"OMP_NUM_THREADS": "4"}), endpoint_config(new, new, "ml.m5.2xlarge", 2, "AllTraffic-c2")]
    world = ack_world(endpoint("fraud-config"), [ORIGINAL_CONFIG, synced[1]], [ORIGINAL_MODEL, synced[0]])
    step = flow.advance(context(memory, world=world))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, new),), force_conflicts=False)
    memory = step.memory
    step = flow.advance(context(memory, applied=ApplyResult(step.effect.refs())))
    assert step.memory.state == "WaitingForTarget" and step.poll_after == "poll"
    memory = step.memory

    # Pointed at the new config, but still reporting the old InService: not done until ACK has sent the update.
    for stale in (endpoint(new), endpoint(new, "Updating", sent=new, synced=False)):
        step = flow.advance(context(memory, world=ack_world(stale, [ORIGINAL_CONFIG, synced[1]],
                                                            [ORIGINAL_MODEL, synced[0]])))
        assert step.effect is None and step.promoted[:2] == (st.UNKNOWN, "Promoting"), step.promoted

    step = flow.advance(context(memory, world=ack_world(endpoint(new, sent=new), [ORIGINAL_CONFIG, synced[1]],
                                                        [ORIGINAL_MODEL, synced[0]])))
    assert step.promoted == (st.TRUE, "Promoted",
                             "ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) is promoted to Endpoint/fraud-endpoint")
    assert step.ready == step.promoted and step.phase == "Promoted"
    assert step.memory.state == "Succeeded" and step.memory.applied_recommendation_id == "job/00000001"
    assert step.memory.current.endpoint_config_name == new and step.memory.pending is None
    assert step.memory.previous.endpoint_config_name == "fraud-config"
    assert step.effect is None  # the user's own objects are never collected; ours are still in use
    assert ("Normal", "Promoted") in [e[:2] for e in step.events]

    # Converged: no further reads or writes while nothing changes.
    assert flow.advance(context(step.memory)).effect is None


def test_a_conflict_stops_the_attempt_before_anything_is_created():
    world = ack_world(endpoint("fraud-config"), conflict='Apply failed with 1 conflict: conflict with "argocd-controller"'
                                                         ': .spec.endpointConfigName')
    step = flow.advance(context(world=world))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, "FieldConflict")
    assert "argocd-controller" in step.promoted[2] and "spec.promotion.forceConflicts" in step.promoted[2]
    assert step.poll_after == "retry" and step.memory.pending is None


def pending_memory(state="CreatingResources") -> dict:
    new = name(1)
    return {"attempt": 1, "state": state, "pendingGeneration": 1, "rollback": False,
            "pending": {**Configuration.from_row(BEST).as_status(), "endpointConfigName": new, "modelName": new,
                        "variantName": "AllTraffic-c2"},
            "previous": {"endpointConfigName": "fraud-config", "modelName": "fraud-model", "instanceType": "ml.m5.large",
                         "instanceCount": 1, "environment": {}},
            "pendingObjects": [f"Model/{new}", f"EndpointConfig/{new}"],
            "createdObjects": [f"Model/{new}", f"EndpointConfig/{new}"]}


def test_a_restart_between_recording_and_creating_creates_the_recorded_names():
    step = flow.advance(context(pending_memory(), world=ack_world(endpoint("fraud-config"))))
    assert [b["metadata"]["name"] for b in step.effect.bodies] == [name(1), name(1)]
    assert step.memory.attempt == 1 and "after a restart" in step.promoted[2]


def test_a_rejected_object_fails_the_attempt_and_only_a_spec_edit_starts_another():
    new = name(1)
    rejected = endpoint_config(new, new, synced=False, terminal="InvalidParameterValue: ml.m5.2xlarge not allowed")
    world = ack_world(endpoint("fraud-config"), [ORIGINAL_CONFIG, rejected],
                      [ORIGINAL_MODEL, model(new, {"OMP_NUM_THREADS": "4"})])
    step = flow.advance(context(pending_memory(), world=world))
    assert step.memory.state == "Failed" and step.promoted[:2] == (st.FALSE, "ResourceRejected")
    assert "InvalidParameterValue" in step.promoted[2] and step.poll_after is None
    failed = step.memory
    assert flow.advance(context(failed)).effect is None  # not retried for the same generation
    step = flow.advance(context(failed, generation=2, world=world))
    assert step.memory.attempt == 2 and step.memory.pending.endpoint_config_name == name(2)
    assert [b["metadata"]["name"] for b in step.effect.bodies] == [name(2), name(2)]


def synced_world(the_endpoint: dict) -> World:
    new = name(1)
    return ack_world(the_endpoint, [ORIGINAL_CONFIG, endpoint_config(new, new, "ml.m5.2xlarge", 2, "AllTraffic-c2")],
                     [ORIGINAL_MODEL, model(new, {"OMP_NUM_THREADS": "4"})])


@pytest.mark.parametrize("the_endpoint,detail", [
    (endpoint(name(1), sent=name(1), failure="Instance type ml.m5.2xlarge is not available"), "not available"),
    (endpoint(name(1), sent=name(1), synced=False, terminal="EndpointUpdateError: unable to update"), "EndpointUpdateError"),
    (endpoint(name(1), "Failed", sent=name(1), failure="boom"), "boom"),
])
def test_a_failed_endpoint_update_is_reported_with_ack_and_sagemaker_words(the_endpoint, detail):
    step = flow.advance(context(pending_memory("WaitingForTarget"), world=synced_world(the_endpoint)))
    assert step.promoted[:2] == (st.FALSE, "EndpointUpdateFailed") and detail in step.promoted[2]
    assert step.ready[:2] == (st.FALSE, "EndpointUpdateFailed") and step.memory.state == "Failed"
    assert "rightsizer.io/rollback=true" in step.promoted[2]


def test_someone_else_repointing_the_endpoint_mid_promotion_fails_it():
    step = flow.advance(context(pending_memory("WaitingForTarget"), world=synced_world(endpoint("other-config"))))
    assert step.promoted[:2] == (st.FALSE, "EndpointUpdateFailed") and "another writer" in step.promoted[2]


def test_dry_run_plans_the_objects_and_changes_nothing():
    step = flow.advance(context(mode="DryRun", world=ack_world(endpoint("fraud-config"))))
    assert step.effect is None and step.memory.state == "Planned"
    assert [(o["kind"], o["metadata"]["name"]) for o in step.memory.planned_objects] == [
        ("Model", name(1)), ("EndpointConfig", name(1)), ("Endpoint", "fraud-endpoint")]
    assert step.promoted[:2] == (st.FALSE, "DryRun") and "nothing was changed" in step.promoted[2]
    assert step.memory.pending is None and step.memory.attempt is None


def promoted_memory() -> dict:
    new = name(1)
    return {"state": "Succeeded", "attempt": 1, "appliedRecommendationId": "job/00000001",
            "current": {**Configuration.from_row(BEST).as_status(), "endpointConfigName": new, "modelName": new,
                        "variantName": "AllTraffic-c2"},
            "previous": {"instanceType": "ml.m5.large", "instanceCount": 1, "environment": {},
                         "endpointConfigName": "fraud-config", "modelName": "fraud-model", "variantName": "AllTraffic"},
            "createdObjects": [f"Model/{new}", f"EndpointConfig/{new}"]}


def test_rollback_points_the_endpoint_back_and_then_holds():
    rollback = {"rightsizer.io/rollback": "true"}
    step = flow.advance(context(promoted_memory(), annotations=rollback, world=synced_world(endpoint(name(1), sent=name(1)))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, "fraud-config"),))
    assert step.memory.rollback is True and step.memory.pending.endpoint_config_name == "fraud-config"
    assert step.memory.previous.endpoint_config_name == name(1)
    memory = flow.advance(context(step.memory, annotations=rollback, applied=ApplyResult(step.effect.refs()))).memory
    step = flow.advance(context(memory, annotations=rollback,
                                world=synced_world(endpoint("fraud-config", sent="fraud-config"))))
    assert step.promoted[:2] == (st.TRUE, "RolledBack") and step.memory.state == "RolledBack"
    assert step.memory.current.endpoint_config_name == "fraud-config"
    assert step.effect is None  # what we rolled back from is kept: it is now `previous`
    held = flow.advance(context(step.memory, annotations=rollback))
    assert held.effect is None and held.promoted[:2] == (st.TRUE, "RolledBack")
    # Removing the annotation promotes the best again, reusing the objects kept for it.
    step = flow.advance(context(step.memory, world=synced_world(endpoint("fraud-config", sent="fraud-config"))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, name(1)),))


def test_rollback_with_nothing_promoted_says_so():
    step = flow.advance(context(annotations={"rightsizer.io/rollback": "true"}))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, "NothingToRollBack")


def test_objects_no_configuration_uses_are_collected_after_a_later_promotion():
    memory = promoted_memory()
    memory["createdObjects"] = ["Model/old-1", "EndpointConfig/old-1", *memory["createdObjects"]]
    step = flow.advance(context(memory))
    assert step.effect == DeleteObjects((ObjectRef(ACK, "Model", NS, "old-1"), ObjectRef(ACK, "EndpointConfig", NS, "old-1")))
    step = flow.advance(context(step.memory, deleted=DeleteResult(step.effect.refs)))
    assert step.memory.created_objects == tuple(promoted_memory()["createdObjects"])
    assert step.events[0][:2] == ("Normal", "PromotionCleanedUp")


def test_a_failed_cleanup_is_retried_later():
    memory = promoted_memory()
    memory["createdObjects"] = ["Model/old-1", *memory["createdObjects"]]
    step = flow.advance(context(memory, deleted=DeleteResult((), error="Model/old-1: forbidden")))
    assert step.memory.created_objects[0] == "Model/old-1" and step.poll_after == "retry"
    assert step.events[0][:2] == ("Warning", "PromotionCleanupFailed")


# -- patch in place --------------------------------------------------------------------------------------------

GENERIC = {"apiVersion": "serving.example.com/v1", "kind": "ModelDeployment", "name": "fraud"}
GENERIC_REF = ObjectRef("serving.example.com/v1", "ModelDeployment", NS, "fraud")
FIELD_PATHS = {"instanceType": "spec.fleets[0].machineType", "instanceCount": "spec.fleets[0].replicas",
               "environment": "spec.fleets[0].env"}


def test_a_generic_target_is_applied_once_and_remembers_how_to_restore_it():
    live = {"apiVersion": GENERIC["apiVersion"], "kind": "ModelDeployment", "metadata": {"name": "fraud"},
            "spec": {"fleets": [{"machineType": "ml.m5.large", "replicas": 1, "env": {"KEEP": "1"}},
                                {"machineType": "ml.c5.large", "replicas": 3}]}}
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS, world=World({GENERIC_REF: live})))
    document = step.effect.bodies[0]
    assert document["spec"]["fleets"] == [{"machineType": "ml.m5.2xlarge", "replicas": 2,
                                           "env": {"KEEP": "1", "OMP_NUM_THREADS": "4"}},
                                          {"machineType": "ml.c5.large", "replicas": 3}]
    assert step.memory.previous.patch["spec"]["fleets"][0] == {"machineType": "ml.m5.large", "replicas": 1,
                                                                     "env": {"KEEP": "1"}}
    step = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                applied=ApplyResult(step.effect.refs())))
    assert step.promoted[:2] == (st.TRUE, "Promoted") and step.memory.state == "Succeeded"


@pytest.mark.parametrize("world,reason", [
    (World({GENERIC_REF: None}), "TargetNotFound"),
    (World({GENERIC_REF: None}, unserved=frozenset({(GENERIC["apiVersion"], "ModelDeployment")})), "TargetKindNotServed"),
    (World({}, error="modeldeployments is forbidden", forbidden=True), "Forbidden"),
])
def test_an_unreadable_target_is_reported_and_retried(world, reason):
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS, world=world))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, reason) and step.poll_after == "retry"
    assert step.ready[:2] == (st.FALSE, reason)


def test_a_conflicting_apply_is_reported_not_forced():
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS,
                                world=World({GENERIC_REF: {"spec": {"fleets": [{}]}}})))
    step = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                applied=ApplyResult((), conflict='conflict with "helm": .spec.fleets')))
    assert step.promoted[:2] == (st.FALSE, "FieldConflict") and '"helm"' in step.promoted[2]
    assert step.poll_after == "retry"


def test_final_reasons_are_the_ones_argo_cd_treats_as_terminal():
    from test_argocd_health import TERMINAL
    assert set(flow.FINAL_REASONS) <= set(TERMINAL)


def test_a_terminal_condition_left_from_the_previous_update_is_shown_not_judged():
    # The endpoint now names our config, but ACK has not sent it yet: its Terminal condition is the last update's.
    stale = endpoint(name(1), sent="an-older-config", synced=False, terminal="EndpointUpdateError: older",
                     failure="the older update failed")
    step = flow.advance(context(pending_memory("WaitingForTarget"), world=synced_world(stale)))
    assert step.promoted[:2] == (st.UNKNOWN, "Promoting") and "ACK reports: EndpointUpdateError: older" in step.promoted[2]
    assert step.memory.state == "WaitingForTarget"


def test_a_generic_rollback_applies_the_recorded_restoring_patch_and_keeps_the_promotion_as_previous():
    live = {"spec": {"fleets": [{"machineType": "ml.m5.large", "replicas": 1}]}}
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS, world=World({GENERIC_REF: live})))
    promoted = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                    applied=ApplyResult(step.effect.refs()))).memory
    after = {"spec": {"fleets": [{"machineType": "ml.m5.2xlarge", "replicas": 2, "env": {"OMP_NUM_THREADS": "4"}}]}}
    rollback = {"rightsizer.io/rollback": "true"}
    step = flow.advance(context(promoted, target=GENERIC, fieldPaths=FIELD_PATHS, annotations=rollback,
                                world=World({GENERIC_REF: after})))
    assert step.effect.bodies[0]["spec"] == {"fleets": [{"machineType": "ml.m5.large", "replicas": 1}]}
    assert step.memory.previous.recommendation_id == "job/00000001"  # the promotion, to re-apply later
    step = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS, annotations=rollback,
                                applied=ApplyResult(step.effect.refs())))
    assert step.promoted == (st.TRUE, "RolledBack", "rolled back to the configuration it had before on "
                                                    "ModelDeployment/fraud")
    assert step.memory.state == "RolledBack" and step.memory.applied_recommendation_id is None


# -- progress deadline ------------------------------------------------------------------------------------------

def test_an_attempt_records_when_it_started_and_forgets_it_on_success():
    step = flow.advance(context(world=ack_world(endpoint("fraud-config"))))
    assert step.memory.for_storage()["startedAt"] == st.timestamp(NOW)
    done = flow.advance(context({**pending_memory("WaitingForTarget"), "startedAt": st.timestamp(NOW)},
                                world=synced_world(endpoint(name(1), sent=name(1)))))
    assert done.promoted[:2] == (st.TRUE, "Promoted") and done.memory.started_at is None


@pytest.mark.parametrize("state,the_endpoint,unsynced", [
    ("WaitingForTarget", endpoint(name(1), "Updating", sent=name(1), synced=False), False),
    ("CreatingResources", endpoint("fraud-config"), True),
])
def test_a_controller_that_stalls_past_the_deadline_is_reported_and_still_watched(state, the_endpoint, unsynced):
    memory = {**pending_memory(state), "startedAt": st.timestamp(NOW)}
    new = name(1)
    world = (ack_world(the_endpoint, [ORIGINAL_CONFIG, endpoint_config(new, new, synced=False)],
                       [ORIGINAL_MODEL, model(new, {}, synced=False)]) if unsynced else synced_world(the_endpoint))
    in_time = flow.advance(context(memory, world=world, now=NOW + datetime.timedelta(seconds=3600)))
    assert in_time.promoted[:2] == (st.UNKNOWN, "Promoting") and in_time.poll_after == "poll"

    late = NOW + datetime.timedelta(minutes=61)
    step = flow.advance(context(memory, world=world, now=late))
    assert step.promoted[:2] == step.ready[:2] == (st.FALSE, "ProgressDeadlineExceeded")
    assert "no outcome 1 h 1 min after the attempt started (spec.promotion.progressDeadlineSeconds is 3600); " \
           "still watching: waiting for" in step.promoted[2]
    assert step.poll_after == "retry" and step.memory.state == state  # not given up: the attempt goes on

    served = flow.advance(context({**pending_memory("WaitingForTarget"), "startedAt": st.timestamp(NOW)},
                                  world=synced_world(endpoint(new, sent=new)), now=late + datetime.timedelta(hours=2)))
    assert served.promoted[:2] == (st.TRUE, "Promoted")  # a late success still counts


def test_the_deadline_is_the_specs_and_an_attempt_without_a_start_time_has_none():
    world = synced_world(endpoint(name(1), "Updating", sent=name(1), synced=False))
    memory = {**pending_memory("WaitingForTarget"), "startedAt": st.timestamp(NOW)}
    step = flow.advance(context(memory, world=world, now=NOW + datetime.timedelta(seconds=301),
                                progressDeadlineSeconds=300))
    assert step.promoted[:2] == (st.FALSE, "ProgressDeadlineExceeded") and "is 300)" in step.promoted[2]
    # Recorded by a version that did not write startedAt: no deadline rather than a made-up one.
    step = flow.advance(context(pending_memory("WaitingForTarget"), world=world, now=NOW + datetime.timedelta(days=3)))
    assert step.promoted[:2] == (st.UNKNOWN, "Promoting")


def test_a_kserve_service_that_never_gets_ready_passes_the_deadline():
    target = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "fraud"}
    ref = ObjectRef(target["apiVersion"], "InferenceService", NS, "fraud")
    live = {"metadata": {"name": "fraud", "generation": 1},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}}}}}
    step = flow.advance(context(target=target, world=World({ref: live})))
    assert step.memory.for_storage()["startedAt"] == st.timestamp(NOW)
    step = flow.advance(context(step.memory, target=target, applied=ApplyResult(step.effect.refs())))
    assert step.memory.state == "WaitingForTarget"
    pending_pod = {**live, "metadata": {"name": "fraud", "generation": 2},
                   "status": {"observedGeneration": 2, "conditions": [
                       {"type": "Ready", "status": "False", "message": "0/3 nodes are available: Insufficient cpu"}]}}
    step = flow.advance(context(step.memory, target=target, world=World({ref: pending_pod}),
                                now=NOW + datetime.timedelta(minutes=90), progressDeadlineSeconds=1800))
    assert step.promoted[:2] == (st.FALSE, "ProgressDeadlineExceeded")
    assert "Insufficient cpu" in step.promoted[2] and "1 h 30 min" in step.promoted[2]


# -- retries, withdrawals and the memory they leave ---------------------------------------------------------------

BEST_2 = {"recommendationId": "job/00000002", "instanceType": "ml.c5.xlarge", "initialInstanceCount": 2,
          "environment": {"OMP_NUM_THREADS": "4"}}
REFUSED = "Instance type ml.m5.2xlarge is not available"


def failed_update_memory() -> PromotionMemory:
    """SageMaker refused attempt 1's copy: the Endpoint's spec names it, SageMaker serves fraud-config."""
    step = flow.advance(context(pending_memory("WaitingForTarget"),
                                world=synced_world(endpoint(name(1), sent=name(1), failure=REFUSED))))
    assert step.memory.state == "Failed" and step.promoted[:2] == (st.FALSE, "EndpointUpdateFailed")
    return step.memory


def test_a_spec_edit_after_a_failed_update_tries_again_under_a_new_name():
    failed = failed_update_memory()
    step = flow.advance(context(failed, generation=2))
    assert step.effect.probes == (targets.endpoint_patch(ENDPOINT_REF, name(2)),)  # a new attempt: the conflict check
    # The endpoint's spec names a copy with the desired values, but SageMaker does not serve it: not a success.
    step = flow.advance(context(failed, generation=2,
                                world=synced_world(endpoint(name(1), sent=name(1), failure=REFUSED))))
    assert step.promoted[:2] == (st.UNKNOWN, "Promoting") and step.memory.applied_recommendation_id is None
    assert step.memory.state == "CreatingResources" and step.memory.attempt == 2
    assert step.memory.pending_generation == 2 and step.memory.pending.endpoint_config_name == name(2)
    assert [(b["kind"], b["metadata"]["name"]) for b in step.effect.bodies] == [("EndpointConfig", name(2))]
    assert step.effect.bodies[0]["spec"]["productionVariants"][0] == {
        "variantName": "AllTraffic-c2", "modelName": name(1), "instanceType": "ml.m5.2xlarge",
        "initialInstanceCount": 2, "initialVariantWeight": 1}
    assert step.memory.previous.endpoint_config_name == "fraud-config"  # what SageMaker still serves


def test_a_failed_update_that_sagemaker_serves_after_all_is_a_success():
    # Confirmed by ACK (sent, InService, synced, no failure reason): nothing is left to do.
    step = flow.advance(context(failed_update_memory(), generation=2,
                                world=synced_world(endpoint(name(1), sent=name(1)))))
    assert step.promoted[:2] == (st.TRUE, "Promoted") and step.effect is None
    assert step.memory.state == "Succeeded" and step.memory.current.endpoint_config_name == name(1)
    assert step.memory.previous.endpoint_config_name == "fraud-config" and step.memory.pending is None


def failed_rollback_memory(the_endpoint: dict) -> PromotionMemory:
    rollback = {"rightsizer.io/rollback": "true"}
    step = flow.advance(context(promoted_memory(), annotations=rollback,
                                world=synced_world(endpoint(name(1), sent=name(1)))))
    memory = flow.advance(context(step.memory, annotations=rollback, applied=ApplyResult(step.effect.refs()))).memory
    step = flow.advance(context(memory, annotations=rollback, world=synced_world(the_endpoint)))
    assert step.memory.state == "Failed" and step.promoted[:2] == (st.FALSE, "EndpointUpdateFailed")
    return step.memory


def test_retrying_a_failed_rollback_points_the_endpoint_at_the_rollback_target():
    # Another writer repointed the endpoint during the rollback; a spec edit retries it.
    failed = failed_rollback_memory(endpoint("other-config"))
    step = flow.advance(context(failed, annotations={"rightsizer.io/rollback": "true"}, generation=2,
                                world=synced_world(endpoint("other-config"))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, "fraud-config"),))
    assert step.memory.rollback is True and step.memory.state == "UpdatingTarget"
    assert step.memory.pending.endpoint_config_name == "fraud-config"
    assert step.memory.previous.endpoint_config_name == name(1)  # the promotion, to re-apply later


def test_retrying_a_rollback_sagemaker_refused_copies_the_rollback_target_under_a_new_name():
    refused = endpoint("fraud-config", sent="fraud-config", failure="capacity")
    failed = failed_rollback_memory(refused)
    rollback = {"rightsizer.io/rollback": "true"}
    # ACK never re-sends a config name whose update failed: pointing at fraud-config again would change nothing.
    step = flow.advance(context(failed, annotations=rollback, generation=2, world=synced_world(refused)))
    assert [(b["kind"], b["metadata"]["name"]) for b in step.effect.bodies] == [("EndpointConfig", name(2))]
    assert step.effect.bodies[0]["spec"]["productionVariants"][0] == {
        "variantName": "AllTraffic", "modelName": "fraud-model", "instanceType": "ml.m5.large",
        "initialInstanceCount": 1, "initialVariantWeight": 1}
    memory = step.memory
    assert memory.rollback is True and memory.attempt == 2 and memory.state == "CreatingResources"
    assert memory.pending.endpoint_config_name == name(2) and memory.previous.endpoint_config_name == name(1)

    restored_copy = endpoint_config(name(2), "fraud-model")
    world = ack_world(endpoint("fraud-config", sent="fraud-config", failure="capacity"),
                      [ORIGINAL_CONFIG, endpoint_config(name(1), name(1), "ml.m5.2xlarge", 2, "AllTraffic-c2"),
                       restored_copy],
                      [ORIGINAL_MODEL, model(name(1), {"OMP_NUM_THREADS": "4"})])
    step = flow.advance(context(memory, annotations=rollback, generation=2, world=world))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, name(2)),))
    memory = flow.advance(context(step.memory, annotations=rollback, generation=2,
                                  applied=ApplyResult(step.effect.refs()))).memory
    served = ack_world(endpoint(name(2), sent=name(2)), world.listings[CONFIGS], world.listings[MODELS])
    step = flow.advance(context(memory, annotations=rollback, generation=2, world=served))
    assert step.promoted[:2] == (st.TRUE, "RolledBack") and step.memory.current.endpoint_config_name == name(2)


@pytest.mark.parametrize("best,annotations", [
    (BEST, {}),  # the approval was removed
    (BEST_2, {"rightsizer.io/approve": "job/00000001"}),  # a new best makes the approval stale
])
def test_an_attempt_under_way_is_carried_to_its_end_when_the_approval_lapses(best, annotations):
    manual = dict(mode="Manual", best=best, annotations=annotations)
    step = flow.advance(context(pending_memory(), **manual))
    assert step.effect == ReadWorld((ENDPOINT_REF,), (CONFIGS, MODELS, SCALABLE_TARGETS, SCALING_POLICIES))  # the same attempt: no conflict probe
    assert step.memory.state == "CreatingResources" and step.memory.pending.for_storage() == pending_memory()["pending"]
    rejected = endpoint_config(name(1), name(1), synced=False, terminal="InvalidParameterValue")
    world = ack_world(endpoint("fraud-config"), [ORIGINAL_CONFIG, rejected], [ORIGINAL_MODEL, model(name(1), {})])
    step = flow.advance(context(pending_memory(), world=world, **manual))
    assert step.memory.state == "Failed" and step.promoted[:2] == (st.FALSE, "ResourceRejected")
    # Between attempts the gate applies again; the failed attempt stays failed (not resumed by a new approval).
    waiting = flow.advance(context(step.memory, **manual))
    assert waiting.effect is None and waiting.awaiting[0] == st.TRUE and waiting.memory.state == "Failed"
    approved = flow.advance(context(waiting.memory, mode="Manual", annotations={"rightsizer.io/approve": "best"}))
    assert approved.effect is None and approved.memory.state == "Failed"


def test_an_attempt_whose_state_an_older_version_overwrote_is_checked_from_the_start():
    legacy = {**pending_memory("CreatingResources"), "state": "AwaitingApproval"}
    rejected = endpoint_config(name(1), name(1), synced=False, terminal="InvalidParameterValue")
    world = ack_world(endpoint("fraud-config"), [ORIGINAL_CONFIG, rejected], [ORIGINAL_MODEL, model(name(1), {})])
    step = flow.advance(context(legacy, mode="Manual", annotations={"rightsizer.io/approve": "best"}, world=world))
    assert step.effect is None and step.promoted[:2] == (st.FALSE, "ResourceRejected")


def test_a_rollback_over_an_attempt_under_way_probes_for_conflicts_first():
    step = flow.advance(context(pending_memory(), annotations={"rightsizer.io/rollback": "true"}))
    assert step.effect.probes and step.effect.probes[0]["kind"] == "Endpoint"


def test_an_attempt_after_a_failed_one_keeps_the_last_known_good_configuration_as_previous():
    step = flow.advance(context(failed_update_memory(), best=BEST_2,
                                world=synced_world(endpoint(name(1), sent=name(1), failure=REFUSED))))
    assert step.memory.state == "CreatingResources" and step.memory.pending.instance_type == "ml.c5.xlarge"
    assert step.memory.previous.for_storage() == pending_memory()["previous"]  # not the refused copy the endpoint names
    # So a rollback restores what SageMaker served before the failure.
    step = flow.advance(context(step.memory, annotations={"rightsizer.io/rollback": "true"},
                                world=synced_world(endpoint(name(1), sent=name(1), failure=REFUSED))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, "fraud-config"),))


def old_objects(count: int) -> tuple[list[str], list[dict], list[dict]]:
    names = [f"old-{i}" for i in range(count)]
    entries = [f"{kind}/{n}" for n in names for kind in ("Model", "EndpointConfig")]
    return entries, [endpoint_config(n, n) for n in names], [model(n, {}) for n in names]


def test_a_full_object_list_is_collected_before_a_new_attempt_not_truncated():
    entries, configs, models = old_objects(4)
    memory = promoted_memory()
    memory["createdObjects"] = [*entries, *memory["createdObjects"]]
    assert len(memory["createdObjects"]) == flow.MAX_CREATED_OBJECTS
    promoted_config = endpoint_config(name(1), name(1), "ml.m5.2xlarge", 2, "AllTraffic-c2")
    world = ack_world(endpoint(name(1), sent=name(1)), [ORIGINAL_CONFIG, promoted_config, *configs],
                      [ORIGINAL_MODEL, model(name(1), {"OMP_NUM_THREADS": "4"}), *models])
    step = flow.advance(context(memory, best=BEST_2, world=world))
    assert step.effect == DeleteObjects(tuple(ObjectRef(ACK, e.split("/")[0], NS, e.split("/")[1]) for e in entries))
    assert step.memory.pending is None and step.memory.attempt == 1  # nothing started before there is room
    step = flow.advance(context(step.memory, best=BEST_2, deleted=DeleteResult(step.effect.refs)))
    assert step.memory.created_objects == tuple(promoted_memory()["createdObjects"])
    assert step.events[0][:2] == ("Normal", "PromotionCleanedUp") and isinstance(step.effect, ReadWorld)
    step = flow.advance(context(step.memory, best=BEST_2, world=world))
    assert step.memory.state == "CreatingResources" and step.memory.attempt == 2
    assert step.memory.created_objects == (*promoted_memory()["createdObjects"], f"EndpointConfig/{name(2)}")


def test_a_full_object_list_that_is_all_in_use_stops_the_attempt_and_says_what_to_delete(monkeypatch):
    monkeypatch.setattr(flow, "MAX_CREATED_OBJECTS", 4)
    entries, configs, models = old_objects(1)
    memory = promoted_memory()
    memory["previous"] = {**memory["previous"], "endpointConfigName": "old-0", "modelName": "old-0"}
    memory["createdObjects"] = [*entries, *memory["createdObjects"]]
    world = ack_world(endpoint(name(1), sent=name(1)),
                      [endpoint_config(name(1), name(1), "ml.m5.2xlarge", 2, "AllTraffic-c2"), *configs],
                      [model(name(1), {"OMP_NUM_THREADS": "4"}), *models])
    step = flow.advance(context(memory, best=BEST_2, world=world))
    assert step.effect is None and step.promoted[:2] == step.ready[:2] == (st.FALSE, "TooManyObjects")
    assert all(entry in step.promoted[2] for entry in memory["createdObjects"]) and step.poll_after == "retry"
    assert step.memory.created_objects == tuple(memory["createdObjects"]) and step.memory.pending is None
    # Objects deleted by hand are forgotten, which makes the room.
    gone = ack_world(endpoint(name(1), sent=name(1)), [endpoint_config(name(1), name(1), "ml.m5.2xlarge", 2,
                                                                       "AllTraffic-c2")],
                     [model(name(1), {"OMP_NUM_THREADS": "4"})])
    step = flow.advance(context(memory, best=BEST_2, world=gone))
    assert step.memory.state == "CreatingResources"
    assert step.memory.created_objects == (*promoted_memory()["createdObjects"], f"EndpointConfig/{name(2)}")


def test_the_specs_variant_name_wins_over_the_one_promoted_last():
    two_variants = endpoint_config("fraud-config", "fraud-model")
    two_variants["spec"]["productionVariants"].append({"variantName": "Canary", "modelName": "fraud-model",
                                                       "instanceType": "ml.m5.large", "initialInstanceCount": 1})
    memory = {"state": "Succeeded", "attempt": 0, "current": {
        "recommendationId": "job/00000000", "instanceType": "ml.m5.large", "instanceCount": 1, "environment": {},
        "endpointConfigName": "fraud-config", "modelName": "fraud-model", "variantName": "AllTraffic"}}
    target = {"apiVersion": ACK, "kind": "Endpoint", "name": "fraud-endpoint", "variantName": "Canary"}
    step = flow.advance(context(memory, target=target,
                                world=ack_world(endpoint("fraud-config", sent="fraud-config"), [two_variants])))
    assert step.memory.pending.variant_name == "Canary-c2"
    variants = step.effect.bodies[1]["spec"]["productionVariants"]
    assert [(v["variantName"], v["instanceType"], v["initialInstanceCount"]) for v in variants] == [
        ("AllTraffic", "ml.m5.large", 1), ("Canary-c2", "ml.m5.2xlarge", 2)]
    # After a promotion renamed it for a new count, the spec's name still finds it, before the last promoted one.
    renamed = endpoint_config("x", "m", variant="Canary-c3")
    renamed["spec"]["productionVariants"].insert(0, {"variantName": "AllTraffic-c2", "modelName": "m"})
    live = targets.ack_live(endpoint("x"), [renamed], [], ["Canary", "AllTraffic-c2"])
    assert live.variant["variantName"] == "Canary-c3"


def test_an_endpoint_that_already_serves_the_best_is_promoted_without_a_copy():
    serving = model("fraud-model", {"SAGEMAKER_PROGRAM": "serve", "OMP_NUM_THREADS": "4"})
    config = endpoint_config("fraud-config", "fraud-model", "ml.m5.2xlarge", 2)
    memory = flow.advance(context()).memory
    # Created with that config and never updated by ACK (no last-update annotation), in service.
    step = flow.advance(context(memory, world=ack_world(endpoint("fraud-config"), [config], [serving])))
    assert step.effect is None and step.promoted[:2] == (st.TRUE, "Promoted")
    assert step.memory.current.endpoint_config_name == "fraud-config" and not step.memory.created_objects
    # The same values on an endpoint whose last update failed are not served: a copy retries them.
    failed = endpoint("fraud-config", sent="fraud-config", failure="capacity")
    step = flow.advance(context(memory, world=ack_world(failed, [config], [serving])))
    assert step.memory.state == "CreatingResources" and step.memory.pending.endpoint_config_name == name(1)


def test_a_team_model_with_sagemakers_maximum_environment_fits_in_status():
    from test_reconcile import assert_admissible
    environment = {f"VARIABLE_{i}": "v" * 1024 for i in range(99)} | {"OMP_NUM_THREADS": "1"}
    world = ack_world(endpoint("fraud-config"), models=(model("fraud-model", environment),))
    step = flow.advance(context(world=world))
    assert len(step.memory.previous.environment) == 100 and len(step.memory.pending.environment) == 1
    # The status schema holds what the team's Model may hold.
    assert_admissible({"promotion": step.memory.for_storage()})


# -- what the user sees when promotion cannot go on (README: Promotion, the table) ---------------------------------

def no_variants_config() -> dict:
    config = endpoint_config("fraud-config", "fraud-model")
    config["spec"]["productionVariants"] = []
    return config


@pytest.mark.parametrize("world,detail", [
    # The Endpoint names an EndpointConfig made outside Kubernetes (or in another namespace): nothing to copy.
    (ack_world(endpoint("console-made-config")),
     "EndpointConfig console-made-config, which Endpoint/fraud-endpoint uses, is not an ACK resource in namespace ml"),
    (ack_world(endpoint("fraud-config"), [no_variants_config()]),
     "EndpointConfig fraud-config has no production variants"),
])
def test_an_endpoint_config_that_cannot_be_copied_is_source_not_found_and_retried(world, detail):
    step = flow.advance(context(world=world))
    assert step.promoted[:2] == step.ready[:2] == (st.FALSE, "SourceNotFound") and detail in step.promoted[2]
    assert step.effect is None and step.poll_after == "retry"
    assert not {"pending", "attempt", "previous", "createdObjects", "startedAt"} & set(step.memory.for_storage())
    # Nothing was started: the next look is a fresh attempt, with its conflict probe, under the first name.
    again = flow.advance(context(step.memory))
    assert again.effect.probes == (targets.endpoint_patch(ENDPOINT_REF, name(1)),)


@pytest.mark.parametrize("target,world,message", [
    (GENERIC, World({}, error="etcdserver: request timed out"),
     "reading ModelDeployment/fraud failed: etcdserver: request timed out"),
    # An ACK read also lists the ACK objects and dry-runs the Endpoint's patch: the message does not pretend to know
    # which of them failed.
    (None, World({}, error="Internal error occurred: failed calling webhook"),
     "reading Endpoint/fraud-endpoint and its ACK objects, or the dry run of its patch, failed: Internal error "
     "occurred: failed calling webhook"),
])
def test_a_read_that_fails_for_another_reason_is_a_target_error_and_retried(target, world, message):
    step = flow.advance(context(target=target, fieldPaths=FIELD_PATHS, world=world))
    assert step.promoted == (st.FALSE, "TargetError", message) and step.ready == step.promoted
    assert step.effect is None and step.poll_after == "retry"
    assert step.memory.pending is None and step.memory.attempt is None


def generic_attempt() -> flow.Step:
    live = {"spec": {"fleets": [{"machineType": "ml.m5.large", "replicas": 1}]}}
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS, world=World({GENERIC_REF: live})))
    assert step.memory.state == "UpdatingTarget" and isinstance(step.effect, ApplyObjects)
    return step


def test_an_apply_that_fails_is_a_target_error_and_the_attempt_is_applied_again():
    step = generic_attempt()
    memory = step.memory
    step = flow.advance(context(memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                applied=ApplyResult((), error='admission webhook "fleets.example.com" denied')))
    assert step.promoted == step.ready == (st.FALSE, "TargetError", 'server-side apply to ModelDeployment/fraud '
                                                                     'failed: admission webhook "fleets.example.com" denied')
    assert step.effect is None and step.poll_after == "retry"
    assert step.memory.state == "UpdatingTarget" and step.memory.pending == memory.pending
    assert step.memory.attempt == 1 and step.memory.current is None
    # The attempt is under way: the next visit reads the target (no probe) and applies the same document again.
    assert flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS)).effect == ReadWorld((GENERIC_REF,))
    again = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                 world=World({GENERIC_REF: {"spec": {"fleets": [{"machineType": "ml.m5.large",
                                                                                 "replicas": 1}]}}})))
    assert again.effect.bodies == generic_attempt().effect.bodies and again.memory.attempt == 1


def test_an_ack_apply_that_fails_names_the_object_that_failed_not_the_ones_before_it():
    new = name(1)
    step = flow.advance(context(pending_memory(), applied=ApplyResult((ObjectRef(ACK, "Model", NS, new),),
                                                                      error="the server is currently unable to "
                                                                            "handle the request")))
    assert step.promoted[:2] == (st.FALSE, "TargetError") and step.poll_after == "retry"
    assert step.promoted[2] == (f"server-side apply of EndpointConfig/{new} (after Model/{new}) failed: the server "
                                f"is currently unable to handle the request")
    assert step.memory.state == "CreatingResources" and step.memory.pending.for_storage() == pending_memory()["pending"]
    # Refused outright: the hint names what a server-side apply that creates an object needs.
    step = flow.advance(context(pending_memory(), applied=ApplyResult((), error="models is forbidden",
                                                                      forbidden=True)))
    assert step.promoted[:2] == (st.FALSE, "Forbidden")
    assert step.promoted[2] == (f"server-side apply of Model/{new} was refused: models is forbidden; grant the "
                                f"operator's ServiceAccount create and patch on Model in {ACK}")


def test_a_refused_apply_to_a_generic_target_says_patch_was_refused_and_what_to_grant():
    step = generic_attempt()
    refusal = ('modeldeployments.serving.example.com "fraud" is forbidden: User "system:serviceaccount:rightsizer:'
               'rightsizer" cannot patch resource "modeldeployments"')
    step = flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                applied=ApplyResult((), error=refusal, forbidden=True)))
    assert step.promoted == step.ready == (
        st.FALSE, "Forbidden", f"server-side apply to ModelDeployment/fraud was refused: {refusal}; grant the "
                               f"operator's ServiceAccount patch on ModelDeployment in serving.example.com/v1")
    assert step.effect is None and step.poll_after == "retry"
    assert step.memory.state == "UpdatingTarget" and step.memory.current is None  # nothing counts as promoted


def test_rollback_to_an_endpoint_config_deleted_since_is_nothing_to_roll_back_and_not_retried():
    rollback = {"rightsizer.io/rollback": "true"}
    assert isinstance(flow.advance(context(promoted_memory(), annotations=rollback)).effect, ReadWorld)
    # The promotion succeeded; someone deleted fraud-config (which `previous` names) since.
    world = ack_world(endpoint(name(1), sent=name(1)), [endpoint_config(name(1), name(1), "ml.m5.2xlarge", 2,
                                                                        "AllTraffic-c2")],
                      [ORIGINAL_MODEL, model(name(1), {"OMP_NUM_THREADS": "4"})])
    step = flow.advance(context(promoted_memory(), annotations=rollback, world=world))
    assert step.promoted == step.ready == (
        st.FALSE, "NothingToRollBack", "EndpointConfig fraud-config, which Endpoint/fraud-endpoint used before, no "
                                       "longer exists in namespace ml")
    assert "NothingToRollBack" in flow.FINAL_REASONS
    assert step.effect is None and step.poll_after is None  # waits for a person: nothing applied, no retry
    assert step.memory.state == "Succeeded" and step.memory.pending is None
    assert "rollback" not in step.memory.for_storage()
    assert step.memory.current.for_storage() == promoted_memory()["current"] and step.memory.attempt == 1


def test_force_conflicts_forces_the_probe_and_every_write_to_the_endpoint_but_not_the_copies():
    force = dict(forceConflicts=True)
    step = flow.advance(context(**force))
    # Forced, the dry run takes the field over instead of reporting a conflict, as the real patch will.
    assert step.effect.probes == (targets.endpoint_patch(ENDPOINT_REF, name(1)),) and step.effect.force_conflicts
    step = flow.advance(context(world=ack_world(endpoint("fraud-config")), **force))
    assert step.memory.state == "CreatingResources"
    # The copies are new objects under names no other manager has used: there is nothing to take over.
    assert step.effect.force_conflicts is False
    step = flow.advance(context(pending_memory(), world=synced_world(endpoint("fraud-config")), **force))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, name(1)),), force_conflicts=True)
    # A rollback's patch is forced too, and so is its probe.
    rollback = {"rightsizer.io/rollback": "true"}
    assert flow.advance(context(promoted_memory(), annotations=rollback, **force)).effect.force_conflicts
    step = flow.advance(context(promoted_memory(), annotations=rollback,
                                world=synced_world(endpoint(name(1), sent=name(1))), **force))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, "fraud-config"),), force_conflicts=True)
    # A later read of an attempt under way sends no probe: nothing to force.
    assert flow.advance(context(pending_memory(), **force)).effect == ReadWorld((ENDPOINT_REF,), (CONFIGS, MODELS, SCALABLE_TARGETS, SCALING_POLICIES))


def test_force_conflicts_forces_the_apply_to_a_generic_target():
    live = {"spec": {"fleets": [{"machineType": "ml.m5.large", "replicas": 1}]}}
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS, world=World({GENERIC_REF: live}),
                                forceConflicts=True))
    assert step.effect.force_conflicts is True and step.effect.bodies == generic_attempt().effect.bodies


def test_a_refused_ack_read_or_probe_says_read_or_patch_and_what_the_cluster_role_grants():
    # World cannot tell a refused get or list from a refused dry-run patch (the conflict probe): say both.
    refusal = ('endpoints.sagemaker.services.k8s.aws "fraud-endpoint" is forbidden: User "system:serviceaccount:'
               'rightsizer:rightsizer" cannot patch resource "endpoints"')
    world = World({ENDPOINT_REF: endpoint("fraud-config")}, {CONFIGS: (ORIGINAL_CONFIG,), MODELS: (ORIGINAL_MODEL,)},
                  error=refusal, forbidden=True)
    step = flow.advance(context(world=world))
    assert step.promoted == step.ready == (
        st.FALSE, "Forbidden", f"the operator may not read or patch Endpoint/fraud-endpoint: {refusal}; its "
                               f"ClusterRole must grant get and patch on Endpoints, and list, create, patch and "
                               f"delete on EndpointConfigs and Models, in {ACK}, and list, create, patch and "
                               f"delete on ScalableTargets and ScalingPolicies in {targets.AAS_API_VERSION}")
    assert step.effect is None and step.poll_after == "retry" and step.memory.pending is None
    # A generic target's read is a get and nothing else: there it says read.
    step = flow.advance(context(target=GENERIC, fieldPaths=FIELD_PATHS,
                                world=World({}, error="modeldeployments is forbidden", forbidden=True)))
    assert step.promoted[2].startswith("the operator may not read ModelDeployment/fraud: modeldeployments is "
                                       "forbidden; grant its ServiceAccount get (and patch) on ModelDeployment")


# -- status.promotion as stored ------------------------------------------------------------------------------------

def stored_after(first: flow.Context, *then: flow.Context) -> dict:
    """status.promotion as the flow writes it after these visits (each visit's memory feeds the next)."""
    memory = flow.advance(first).memory
    for ctx in then:
        memory = flow.advance(dataclasses.replace(ctx, memory=memory)).memory
    return memory.for_storage()


def generic_promoted() -> dict:
    step = generic_attempt()
    return flow.advance(context(step.memory, target=GENERIC, fieldPaths=FIELD_PATHS,
                                applied=ApplyResult(step.effect.refs()))).memory.for_storage()


def all_collected() -> dict:
    memory = {**promoted_memory(), "createdObjects": ["Model/old-1"],
              "current": {**promoted_memory()["current"], "endpointConfigName": "c", "modelName": "m"},
              "previous": {**promoted_memory()["previous"], "endpointConfigName": "c", "modelName": "m"}}
    deleted = DeleteResult((ObjectRef(ACK, "Model", NS, "old-1"),))
    return stored_after(context(memory, deleted=deleted))


STORED_SHAPES = {
    # Written by hand in the tests above, in the shape older versions wrote.
    "pending": pending_memory,
    "waiting with a start time": lambda: {**pending_memory("WaitingForTarget"), "startedAt": st.timestamp(NOW)},
    "promoted": promoted_memory,
    "no attempt counted": lambda: {"state": "Succeeded", "attempt": 0, "current": {
        "recommendationId": "job/00000000", "instanceType": "ml.m5.large", "instanceCount": 1, "environment": {},
        "endpointConfigName": "fraud-config", "modelName": "fraud-model", "variantName": "AllTraffic"}},
    # Written by the flow.
    "awaiting approval": lambda: stored_after(context(mode="Manual")),
    "ack dry run": lambda: stored_after(context(mode="DryRun", world=ack_world(endpoint("fraud-config")))),
    "ack dry run with nothing to apply": lambda: stored_after(context(
        mode="DryRun", world=ack_world(endpoint("fraud-config", sent="fraud-config"),
                                       [endpoint_config("fraud-config", "fraud-model", "ml.m5.2xlarge", 2)],
                                       [model("fraud-model", {"OMP_NUM_THREADS": "4"})]))),
    "ack creating": lambda: stored_after(context(world=ack_world(endpoint("fraud-config")))),
    "ack waiting for the target": lambda: stored_after(
        context(pending_memory(), world=synced_world(endpoint("fraud-config"))),
        context(applied=ApplyResult((ENDPOINT_REF,)))),
    "ack promoted": lambda: stored_after(context({**pending_memory("WaitingForTarget"), "startedAt": st.timestamp(NOW)},
                                                 world=synced_world(endpoint(name(1), sent=name(1))))),
    "ack update failed": lambda: failed_update_memory().for_storage(),
    "ack rollback failed": lambda: failed_rollback_memory(endpoint("other-config")).for_storage(),
    "ack rolled back": lambda: stored_after(
        context(promoted_memory(), annotations={"rightsizer.io/rollback": "true"},
                world=synced_world(endpoint(name(1), sent=name(1)))),
        context(annotations={"rightsizer.io/rollback": "true"}, applied=ApplyResult((ENDPOINT_REF,))),
        context(annotations={"rightsizer.io/rollback": "true"},
                world=synced_world(endpoint("fraud-config", sent="fraud-config")))),
    "every created object collected": all_collected,
    "ack deregistering scaling": lambda: autoscaled_walk()["deregistering"].for_storage(),
    "ack registering scaling": lambda: autoscaled_walk()["registering"].for_storage(),
    "generic attempt": lambda: generic_attempt().memory.for_storage(),
    "generic promoted": generic_promoted,
    "generic dry run": lambda: stored_after(context(mode="DryRun", target=GENERIC, fieldPaths=FIELD_PATHS,
                                                    world=World({GENERIC_REF: {"spec": {"fleets": [{}]}}}))),
}


@pytest.mark.parametrize("shape", STORED_SHAPES.values(), ids=STORED_SHAPES.keys())
def test_the_memory_reads_and_writes_status_promotion_unchanged(shape):
    from test_reconcile import assert_admissible
    stored = shape()
    assert PromotionMemory.from_storage(stored).for_storage() == stored
    assert_admissible({"promotion": stored})


def test_the_shapes_cover_every_state_and_field_the_flow_writes():
    shapes = [shape() for shape in STORED_SHAPES.values()]
    assert {shape.get("state") for shape in shapes} == set(State)
    fields = set(schema.openapi_schema()["properties"]["status"]["properties"]["promotion"]["properties"])
    assert set().union(*shapes) == fields
    assert [] in [shape.get("createdObjects") for shape in shapes]  # kept, not dropped, once every object is gone



# -- ACK Application Auto Scaling ---------------------------------------------------------------------------------

AAS = targets.AAS_API_VERSION
SCALING_NAME = targets.scaling_name("fraud-endpoint", UID)
OURS = {"app.kubernetes.io/managed-by": "rightsizer", "rightsizer.io/rightsizejob": "fraud"}
LIVE_ID = "endpoint/fraud-endpoint/variant/AllTraffic"


def scalable_target(name=SCALING_NAME, resource_id=LIVE_ID, labels=OURS, low=1, high=2, synced=True, terminal=None,
                    deleting=False) -> dict:
    metadata = {"name": name, "namespace": NS, "labels": dict(labels or {})}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T09:00:00Z"
    return {"apiVersion": AAS, "kind": "ScalableTarget", "metadata": metadata,
            "spec": {"serviceNamespace": "sagemaker", "resourceID": resource_id,
                     "scalableDimension": "sagemaker:variant:DesiredInstanceCount", "minCapacity": low,
                     "maxCapacity": high},
            "status": {"conditions": ack_conditions(synced, terminal)}}


def scaling_policy(name=f"{SCALING_NAME}-p0", resource_id=LIVE_ID, deleting=False, synced=True) -> dict:
    body = scalable_target(name, resource_id, deleting=deleting, synced=synced)
    body["kind"] = "ScalingPolicy"
    return body


def aas_world(world: World, scalable=(), policies=(), unserved=frozenset()) -> World:
    return dataclasses.replace(world, listings={**world.listings, SCALABLE_TARGETS: tuple(scalable),
                                                SCALING_POLICIES: tuple(policies)}, unserved=unserved)


def scaled_synced(the_endpoint: dict, instance_type="ml.m5.2xlarge") -> World:
    new = name(1)
    return ack_world(the_endpoint, [ORIGINAL_CONFIG, endpoint_config(new, new, instance_type, 2, "AllTraffic")],
                     [ORIGINAL_MODEL, model(new, {"OMP_NUM_THREADS": "4"})])


def aas_refs(*entries: str) -> tuple[ObjectRef, ...]:
    return tuple(ObjectRef(AAS, entry.split("/")[0], NS, entry.split("/")[1]) for entry in entries)


def autoscaled_walk() -> dict:
    """An instance-type change of an autoscaled variant, visit by visit; the memory after each named step."""
    memories = {}
    registered = [scalable_target()], [scaling_policy()]
    step = flow.advance(context(best=SCALED_BEST, world=aas_world(ack_world(endpoint("fraud-config")), *registered)))
    assert step.memory.state == "CreatingResources"
    # The count changes (1 -> 2) but the variant keeps its name: Application Auto Scaling owns the count.
    assert step.memory.pending.variant_name == "AllTraffic" and step.memory.pending.scaling == SCALING
    memory = flow.advance(context(step.memory, best=SCALED_BEST, applied=ApplyResult(step.effect.refs()))).memory

    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(scaled_synced(endpoint("fraud-config")),
                                                                          *registered)))
    assert step.memory.state == "DeregisteringScaling"
    assert step.effect == DeleteObjects(aas_refs(f"ScalingPolicy/{SCALING_NAME}-p0", f"ScalableTarget/{SCALING_NAME}"))
    memories["deregistering"] = memory = step.memory
    step = flow.advance(context(memory, best=SCALED_BEST, deleted=DeleteResult(step.effect.refs)))
    assert isinstance(step.effect, ReadWorld) and ("Normal", "PromotionDeregisteredScaling") in [
        e[:2] for e in step.events]
    memory = step.memory
    # ACK's finalizer keeps them until it has deregistered: wait, and the endpoint is not touched.
    deleting = [scalable_target(deleting=True)], [scaling_policy(deleting=True)]
    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(scaled_synced(endpoint("fraud-config")),
                                                                          *deleting)))
    assert step.effect is None and "waiting for ACK to deregister" in step.promoted[2]
    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(scaled_synced(endpoint("fraud-config")))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, name(1)),), force_conflicts=False)
    assert step.memory.state == "UpdatingTarget"
    memory = flow.advance(context(step.memory, best=SCALED_BEST, applied=ApplyResult((ENDPOINT_REF,)))).memory
    assert memory.state == "WaitingForTarget"

    updated = aas_world(scaled_synced(endpoint(name(1), sent=name(1))))
    step = flow.advance(context(memory, best=SCALED_BEST, world=updated))
    assert step.memory.state == "RegisteringScaling" and step.promoted[:2] == (st.UNKNOWN, "Promoting")
    memories["registering"] = memory = step.memory
    memories["bodies"] = step.effect.bodies
    return memories


def test_an_autoscaled_variant_is_deregistered_updated_then_registered_again():
    walk = autoscaled_walk()
    target, policy = walk["bodies"]
    assert target == {"apiVersion": AAS, "kind": "ScalableTarget",
                      "metadata": {"name": SCALING_NAME, "namespace": NS, "labels": OURS},
                      "spec": {"serviceNamespace": "sagemaker", "resourceID": LIVE_ID,
                               "scalableDimension": "sagemaker:variant:DesiredInstanceCount",
                               "minCapacity": 1, "maxCapacity": 4}}
    assert policy["spec"] == {
        "serviceNamespace": "sagemaker", "resourceID": LIVE_ID,
        "scalableDimension": "sagemaker:variant:DesiredInstanceCount", "policyName": f"{SCALING_NAME}-p0",
        "policyType": "TargetTrackingScaling",
        "targetTrackingScalingPolicyConfiguration": {
            "targetValue": 16213.0, "scaleInCooldown": 300, "scaleOutCooldown": 60,
            "predefinedMetricSpecification": {"predefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}}
    memory = walk["registering"]
    step = flow.advance(context(memory, best=SCALED_BEST, applied=ApplyResult(ApplyObjects(walk["bodies"]).refs())))
    assert step.effect is None and "waiting for ACK to register" in step.promoted[2]
    world = scaled_synced(endpoint(name(1), sent=name(1)))
    applied = [scalable_target(low=1, high=4, synced=False)], [scaling_policy()]
    applied[0][0]["spec"] = target["spec"]
    applied[1][0]["spec"] = policy["spec"]
    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(world, *applied)))
    assert step.effect is None and f"ScalableTarget/{SCALING_NAME}" in step.promoted[2]
    applied[0][0]["status"]["conditions"] = ack_conditions(True)
    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(world, *applied)))
    assert step.memory.state == "Succeeded" and step.promoted[:2] == (st.TRUE, "Promoted")
    assert step.memory.current.scaling == SCALING and step.effect is None


def test_a_restart_in_either_scaling_step_repeats_it_under_the_same_names():
    walk = autoscaled_walk()
    # Restarted while deregistering, before the delete went out: the same delete again, nothing else.
    step = flow.advance(context(walk["deregistering"], best=SCALED_BEST,
                                world=aas_world(scaled_synced(endpoint("fraud-config")), [scalable_target()],
                                                [scaling_policy()])))
    assert isinstance(step.effect, DeleteObjects) and step.memory.attempt == 1
    # Restarted while registering, before the apply went out: the same bodies again (server-side apply: no duplicate).
    step = flow.advance(context(walk["registering"], best=SCALED_BEST,
                                world=aas_world(scaled_synced(endpoint(name(1), sent=name(1))))))
    assert step.effect.bodies == walk["bodies"] and step.memory.attempt == 1


def test_a_count_change_of_an_autoscaled_variant_keeps_its_name_and_re_registers_in_place():
    same_type = {**SCALED_BEST, "instanceType": "ml.m5.large"}
    registered = [scalable_target()], [scaling_policy()]
    step = flow.advance(context(best=same_type, world=aas_world(ack_world(endpoint("fraud-config")), *registered)))
    assert step.memory.pending.variant_name == "AllTraffic"
    memory = flow.advance(context(step.memory, best=same_type, applied=ApplyResult(step.effect.refs()))).memory
    # No instance-type change: AWS needs no deregistration, and the endpoint is pointed at once.
    step = flow.advance(context(memory, best=same_type, world=aas_world(
        scaled_synced(endpoint("fraud-config"), "ml.m5.large"), *registered)))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, name(1)),), force_conflicts=False)
    memory = flow.advance(context(step.memory, best=same_type, applied=ApplyResult((ENDPOINT_REF,)))).memory
    step = flow.advance(context(memory, best=same_type, world=aas_world(
        scaled_synced(endpoint(name(1), sent=name(1)), "ml.m5.large"), *registered)))
    target = step.effect.bodies[0]
    assert target["metadata"]["name"] == SCALING_NAME and target["spec"]["resourceID"] == LIVE_ID
    assert (target["spec"]["minCapacity"], target["spec"]["maxCapacity"]) == (1, 4)


def test_without_a_scaling_a_registered_variant_keeps_its_name_on_a_count_change():
    # A team's own ScalableTarget on AllTraffic: renaming the variant would leave it registering one that is gone.
    foreign = [scalable_target("team-scaling", labels={})]
    same_type = {**BEST, "instanceType": "ml.m5.large"}
    step = flow.advance(context(best=same_type, world=aas_world(ack_world(endpoint("fraud-config")), foreign)))
    assert step.memory.pending.variant_name == "AllTraffic" and step.memory.pending.scaling is None
    # Nothing registered: today's behaviour, a new name for a new count.
    step = flow.advance(context(best=same_type, world=aas_world(ack_world(endpoint("fraud-config")))))
    assert step.memory.pending.variant_name == "AllTraffic-c2"


@pytest.mark.parametrize("best", [BEST, SCALED_BEST, {**SCALED_BEST, "instanceType": "ml.m5.large"}])
def test_a_foreign_scalable_target_stops_the_attempt_before_anything_is_created(best):
    foreign = [scalable_target("team-scaling", labels={})]
    step = flow.advance(context(best=best, world=aas_world(ack_world(endpoint("fraud-config")), foreign)))
    assert step.promoted[:2] == (st.FALSE, "ForeignScalableTarget") and step.effect is None
    assert "team-scaling" in step.promoted[2] and LIVE_ID in step.promoted[2] and step.poll_after == "retry"
    assert step.memory.pending is None


def test_a_foreign_scalable_target_appearing_mid_attempt_stops_it_before_the_update():
    memory = autoscaled_walk()["deregistering"]
    foreign = [scalable_target("team-scaling", labels={})]
    step = flow.advance(context(memory, best=SCALED_BEST, world=aas_world(scaled_synced(endpoint("fraud-config")),
                                                                          foreign)))
    assert step.promoted[:2] == (st.FALSE, "ForeignScalableTarget") and step.effect is None
    assert step.memory.pending is not None  # carried on once the team has deleted theirs


def test_a_scaling_without_the_ack_autoscaling_crds_is_refused_before_anything_is_created():
    unserved = frozenset({(AAS, "ScalableTarget"), (AAS, "ScalingPolicy")})
    step = flow.advance(context(best=SCALED_BEST, world=aas_world(ack_world(endpoint("fraud-config")),
                                                                  unserved=unserved)))
    assert step.promoted[:2] == (st.FALSE, "ScalingKindNotServed") and step.effect is None
    assert "ScalableTarget, ScalingPolicy" in step.promoted[2]
    # Without a scaling the CRDs are not needed.
    step = flow.advance(context(world=aas_world(ack_world(endpoint("fraud-config")), unserved=unserved)))
    assert step.memory.state == "CreatingResources"


def test_a_rejected_registration_fails_the_attempt_and_says_the_endpoint_is_not_autoscaled():
    walk = autoscaled_walk()
    target, policy = walk["bodies"]
    rejected = scalable_target(synced=False, terminal="ValidationException: role cannot be assumed")
    rejected["spec"] = target["spec"]
    applied = scaling_policy()
    applied["spec"] = policy["spec"]
    step = flow.advance(context(walk["registering"], best=SCALED_BEST, world=aas_world(
        scaled_synced(endpoint(name(1), sent=name(1))), [rejected], [applied])))
    assert step.memory.state == "Failed" and step.promoted[:2] == (st.FALSE, "ResourceRejected")
    assert "ValidationException" in step.promoted[2] and "without autoscaling" in step.promoted[2]


def test_a_refused_registration_names_the_autoscaling_kind_to_grant():
    walk = autoscaled_walk()
    refused = ApplyResult((), error="scalabletargets is forbidden", forbidden=True)
    step = flow.advance(context(walk["registering"], best=SCALED_BEST, applied=refused))
    assert step.promoted[:2] == (st.FALSE, "Forbidden")
    assert f"ScalableTarget/{SCALING_NAME}" in step.promoted[2] and AAS in step.promoted[2]


def test_a_failed_deregistration_is_retried():
    memory = autoscaled_walk()["deregistering"]
    step = flow.advance(context(memory, best=SCALED_BEST, deleted=DeleteResult((), error="etcd timeout")))
    assert step.poll_after == "retry" and step.memory.state == "DeregisteringScaling"


def test_a_configuration_without_a_scaling_deregisters_what_rightsizer_registered():
    registered = [scalable_target()], [scaling_policy()]
    step = flow.advance(context(world=aas_world(ack_world(endpoint("fraud-config")), *registered)))
    memory = flow.advance(context(step.memory, applied=ApplyResult(step.effect.refs()))).memory
    step = flow.advance(context(memory, world=aas_world(synced_world(endpoint("fraud-config")), *registered)))
    assert isinstance(step.effect, DeleteObjects) and step.memory.state == "DeregisteringScaling"


def test_dry_run_plans_the_registration_too():
    step = flow.advance(context(mode="DryRun", best=SCALED_BEST, world=aas_world(ack_world(endpoint("fraud-config")))))
    kinds = [d["kind"] for d in step.memory.planned_objects]
    assert kinds == ["Model", "EndpointConfig", "Endpoint", "ScalableTarget", "ScalingPolicy"]


def test_a_rollback_of_an_autoscaled_promotion_deregisters_before_pointing_back():
    walk = autoscaled_walk()
    target, policy = walk["bodies"]
    registered = [scalable_target()], [scaling_policy()]
    registered[0][0]["spec"], registered[1][0]["spec"] = target["spec"], policy["spec"]
    promoted = flow.advance(context(walk["registering"], best=SCALED_BEST, world=aas_world(
        scaled_synced(endpoint(name(1), sent=name(1))), *registered))).memory
    assert promoted.state == "Succeeded"
    rollback = {"rightsizer.io/rollback": "true"}
    step = flow.advance(context(promoted, best=SCALED_BEST, annotations=rollback, world=aas_world(
        scaled_synced(endpoint(name(1), sent=name(1))), *registered)))
    assert step.memory.state == "DeregisteringScaling" and step.memory.rollback
    assert step.effect == DeleteObjects(aas_refs(f"ScalingPolicy/{SCALING_NAME}-p0", f"ScalableTarget/{SCALING_NAME}"))
    step = flow.advance(context(step.memory, best=SCALED_BEST, annotations=rollback, world=aas_world(
        scaled_synced(endpoint(name(1), sent=name(1))))))
    assert step.effect == ApplyObjects((targets.endpoint_patch(ENDPOINT_REF, "fraud-config"),), force_conflicts=False)


def test_a_policy_the_new_scaling_no_longer_has_is_deleted_before_the_update():
    same_type = {**SCALED_BEST, "instanceType": "ml.m5.large"}
    registered = [scalable_target()], [scaling_policy(), scaling_policy(f"{SCALING_NAME}-p1")]
    step = flow.advance(context(best=same_type, world=aas_world(ack_world(endpoint("fraud-config")), *registered)))
    memory = flow.advance(context(step.memory, best=same_type, applied=ApplyResult(step.effect.refs()))).memory
    step = flow.advance(context(memory, best=same_type, world=aas_world(
        scaled_synced(endpoint("fraud-config"), "ml.m5.large"), *registered)))
    assert step.effect == DeleteObjects(aas_refs(f"ScalingPolicy/{SCALING_NAME}-p1"))


@pytest.mark.parametrize("target_name", ["fraud-endpoint", "a" * 253, "fraud.endpoint.v2", "x"])
def test_scaling_object_names_are_valid_kubernetes_names_one_per_target_and_job(target_name):
    name = targets.scaling_name(target_name, UID)
    assert DNS_LABEL.match(f"{name}-p9") and len(f"{name}-p9") <= 63
    assert name == targets.scaling_name(target_name, UID) != targets.scaling_name(target_name, UID[::-1])
