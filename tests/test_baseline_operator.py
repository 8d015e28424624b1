"""spec.baseline end to end: the operator (KopfRunner) against the real API server, the ACK stand-in CRDs of
tests/crds/ (the tests play the ACK controller) and Inference Recommender played behind botocore's Stubber: the
promotion target is read before the job, its endpoint is benchmarked in the same job, and
spec.promotion.minSavingsPercent holds the promotion back, then lets it through when lowered."""

from __future__ import annotations

import time

import pytest
from kopf.testing import KopfRunner

from conftest import refusals, wait_for
from sagemaker_sim import SimulatedInferenceRecommender, advanced_recommendations
from test_promotion_operator import (ACK, ack_status, apply_as, install_endpoint, kinds, ours, patch_spec,  # noqa: F401
                                     play_controller, serving_crds, wait_promoted)
from test_rbac import installed, service_account_kubeconfig  # noqa: F401 (fixture)
from test_sagemaker_operator import condition, create, events, operator_args, read, sample

pytestmark = pytest.mark.cluster
# What Inference Recommender measures of the team's endpoint: two ml.m5.4xlarge (1.844 USD/h) at 40,000/min.
PERFORMANCE = [{"EndpointInfo": {"EndpointName": "fraud-endpoint"},
                "Metrics": {"MaxInvocations": 40000, "ModelLatency": 5}}]


def serve_two_large_instances(kinds, namespace: str) -> None:
    """The team's endpoint as deployed: two ml.m5.4xlarge with OMP_NUM_THREADS 3 (install_endpoint's, resized)."""
    install_endpoint(kinds, namespace)
    apply_as(kinds["Model"], {"apiVersion": ACK, "kind": "Model",
                              "metadata": {"namespace": namespace, "name": "fraud-model"},
                              "spec": {"modelName": "fraud-model", "executionRoleARN": "arn:aws:iam::111122223333:role/sm",
                                       "primaryContainer": {"image": "xgboost:1.5-1", "modelDataURL": "s3://b/m.tar.gz",
                                                            "environment": {"SAGEMAKER_PROGRAM": "serve",
                                                                            "OMP_NUM_THREADS": "3"}}}}, "kubectl")
    apply_as(kinds["EndpointConfig"], {
        "apiVersion": ACK, "kind": "EndpointConfig", "metadata": {"namespace": namespace, "name": "fraud-config"},
        "spec": {"endpointConfigName": "fraud-config", "productionVariants": [
            {"variantName": "AllTraffic", "modelName": "fraud-model", "instanceType": "ml.m5.4xlarge",
             "initialInstanceCount": 2, "initialVariantWeight": 1}]}}, "kubectl")


def with_baseline(minimum: int) -> dict:
    body = sample("fraud-advanced")
    body["spec"]["baseline"] = {"source": "PromotionTarget"}
    body["spec"]["promotion"].update(mode="Automatic", minSavingsPercent=minimum)
    return body


def test_the_endpoint_is_measured_in_the_same_job_and_the_savings_gate_holds_then_lets_the_promotion_go(
        api, installed, kinds, namespace, tmp_path, monkeypatch):
    """As the operator's ServiceAccount: reading the target for the baseline needs no permission beyond promotion's."""
    simulator = SimulatedInferenceRecommender(results=advanced_recommendations, endpoint_performances=PERFORMANCE)
    simulator.install()
    serve_two_large_instances(kinds, namespace)
    monkeypatch.setenv("KUBECONFIG", str(service_account_kubeconfig(api, tmp_path / "operator.kubeconfig")))
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, with_baseline(60))
        held = wait_promoted(api, namespace, "fraud-advanced", "False", "InsufficientSavings")
        status = held["status"]
        # The job benchmarked the endpoint beside the candidates, in one request.
        (create_call,) = [params for name, params in simulator.calls if name == "CreateInferenceRecommendationsJob"]
        assert create_call["InputConfig"]["Endpoints"] == [{"EndpointName": "fraud-endpoint"}]
        assert create_call["JobName"] == status["jobName"]
        baseline = status["baseline"]
        assert (baseline["instanceType"], baseline["initialInstanceCount"], baseline["environment"],
                baseline["endpointName"]) == ("ml.m5.4xlarge", 2, {"OMP_NUM_THREADS": "3"}, "fraud-endpoint")
        assert baseline["metrics"]["costPerHour"] == pytest.approx(1.844) and baseline["meetsSLA"] is True
        savings = status["best"]["savings"]
        assert savings["costPerHourPercent"] == 50.0 and 53 < savings["costPerInferencePercent"] < 54
        message = condition(held, "Promoted")["message"]
        assert "saves 53.1 % per inference" in message and "below spec.promotion.minSavingsPercent 60" in message
        assert condition(held, "Ready")["status"] == "True" and condition(held, "Ready")["reason"] == \
            "InsufficientSavings"
        time.sleep(1)
        assert ours(kinds, "EndpointConfig", namespace) == [] and ours(kinds, "Model", namespace) == []
        wait_for(lambda: ("Normal", "InsufficientSavings") in events(api, namespace, "fraud-advanced"))

        # A lower bar is a promotion edit: the same job's results, and the promotion starts.
        patch_spec(api, namespace, "fraud-advanced", {"promotion": {"minSavingsPercent": 50}})
        configs = wait_for(lambda: ours(kinds, "EndpointConfig", namespace))
        assert configs[0]["spec"]["productionVariants"][0]["instanceType"] == "ml.m5.2xlarge"
        assert simulator.count("CreateInferenceRecommendationsJob") == 1
        assert read(api, namespace, "fraud-advanced")["status"]["jobName"] == status["jobName"]
    assert runner.exception is None, runner.output
    assert refusals(runner.output) == [], runner.output


def test_a_missing_target_submits_no_job_until_it_exists(api, crd_installed, kinds, namespace):
    simulator = SimulatedInferenceRecommender(results=advanced_recommendations, endpoint_performances=PERFORMANCE)
    simulator.install()
    with KopfRunner(operator_args(namespace)) as runner:
        create(api, namespace, with_baseline(10))
        body = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                        and condition(b, "Ready").get("reason") == "BaselineUnreadable" and b)
        ready = condition(body, "Ready")
        assert ready["status"] == "False"
        assert "cannot read what Endpoint/fraud-endpoint serves now for spec.baseline: Endpoint/fraud-endpoint does " \
               f"not exist in namespace {namespace}" in ready["message"]
        assert "jobName" not in body["status"] and simulator.count("CreateInferenceRecommendationsJob") == 0
        wait_for(lambda: ("Warning", "BaselineUnreadable") in events(api, namespace, "fraud-advanced"))

        serve_two_large_instances(kinds, namespace)  # read again every 2 minutes (compressed here)
        done = wait_for(lambda: (b := read(api, namespace, "fraud-advanced"))
                        and (b.get("status") or {}).get("baseline", {}).get("metrics") and b)
        assert done["status"]["baseline"]["instanceType"] == "ml.m5.4xlarge"
        assert simulator.count("CreateInferenceRecommendationsJob") == 1
    assert runner.exception is None, runner.output
