"""spec.baseline through the reconcile core, as plain functions (no API server, no kopf): the promotion target is
read before the job is submitted and hashed into its name, each backend measures it its own way, status.baseline
and status.best.savings come from the results, and spec.promotion.minSavingsPercent holds back a promotion not
worth making. Every way this can go wrong ends in a status message and no wrong job or promotion."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from rightsizer import pricing
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import base, registry
from rightsizer.backends.base import Submitted
from rightsizer.backends.local.plan import endpoint_metrics, plan_experiment, restored_outcomes, step_summary
from rightsizer.backends.local.plan import ConfigurationOutcome
from rightsizer.loadtest.placement import HostFacts
from rightsizer.model import (CurrentConfiguration, EndpointPerformance, JobSnapshot, Progress, Recommendation,
                              StepFailure, StepSummary, baseline_recommendation_id)
from rightsizer.promotion import targets
from rightsizer.promotion.objects import ObjectRef, ReadWorld, World
from rightsizer.reconcile import (BaselineRead, DescribeJob, Observation, ReadBaseline, StopJob, SubmitJob,
                                  reconcile)
from rightsizer.spec import FieldPaths
from test_promotion import ACK, CONFIGS, ENDPOINT_REF, MODELS, endpoint, endpoint_config, model
from test_reconcile import (ADVANCED, OWNER, SAGEMAKER, T0, T2, TIMING, advanced_recommendations, apply, arn, at,
                            by_type, run, sample, seconds, snapshot)

KSERVE = "serving.kserve.io/v1beta1"
BASELINE_MODEL = model("fraud-model", {"SAGEMAKER_PROGRAM": "serve", "OMP_NUM_THREADS": "3"})
BASELINE_CONFIG = endpoint_config("fraud-config", "fraud-model", "ml.m5.4xlarge", 2)


def ack(the_endpoint: dict | None = None, configs=(BASELINE_CONFIG,), models=(BASELINE_MODEL,), **world) -> World:
    serving = the_endpoint if the_endpoint is not None else endpoint("fraud-config")
    return World({ENDPOINT_REF: serving}, {CONFIGS: tuple(configs), MODELS: tuple(models)}, **world)


LIVE = ack()
# What LIVE serves, as the core records it: the variables the experiment varies (OMP_NUM_THREADS) only.
CURRENT = CurrentConfiguration("ml.m5.4xlarge", 2, {"OMP_NUM_THREADS": "3"}, endpoint_name="fraud-endpoint")


def with_baseline(spec: dict | None = None, **promotion) -> dict:
    raw = copy.deepcopy(spec if spec is not None else ADVANCED)
    raw["baseline"] = {"source": "PromotionTarget"}
    raw["promotion"] = {**raw["promotion"], **promotion}
    return raw


def read_back(world: World, now=T0, generation: int = 1) -> Observation:
    """The answer to ReadBaseline, as drive feeds it back."""
    return Observation(generation=generation, now=now, owner=OWNER, timing=TIMING, result=BaselineRead(world))


def written_ahead(spec: dict, world: World = LIVE) -> tuple[dict, SubmitJob]:
    first = run(spec, {}, at(T0))
    assert isinstance(first.last.effect, ReadBaseline)
    trace = run(spec, first.status, read_back(world))
    assert isinstance(trace.last.effect, SubmitJob), trace.status["conditions"]
    return trace.status, trace.last.effect


def completed(spec: dict, performances=(EndpointPerformance("fraud-endpoint", 40000, 5),), rows=advanced_recommendations,
              status: str = "COMPLETED") -> tuple[dict, str]:
    ahead, submit = written_ahead(spec)
    name = submit.plan.job_name
    trace = run(spec, ahead, at(T0, submit_result=Submitted(arn(name))))
    due = T0 + seconds(SAGEMAKER.first_poll(TIMING))
    trace = run(spec, trace.status, at(due), at(due, job=snapshot(name, status, completion_time=T2,
                                                                  recommendations=rows(name),
                                                                  endpoint_performances=tuple(performances))))
    return trace.status, name


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {kind: (c["status"], c["reason"]) for kind, c in by_type(status["conditions"]).items()}


# -- the spec ---------------------------------------------------------------------------------------------------

def test_parse_reads_the_baseline_and_the_savings_gate():
    parsed = spec_module.parse(with_baseline(minSavingsPercent=20))
    assert parsed.baseline == spec_module.Baseline(spec_module.BaselineSource.PROMOTION_TARGET)
    assert parsed.promotion.min_savings_percent == 20
    assert spec_module.parse(ADVANCED).baseline is None and spec_module.parse(ADVANCED).promotion.min_savings_percent \
        is None
    # An empty object takes the CRD's default source.
    assert spec_module.parse({**ADVANCED, "baseline": {}}).baseline.source == "PromotionTarget"
    assert spec_module.baseline_variables(parsed) == ("OMP_NUM_THREADS",)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("promotion"), "spec.baseline measures what spec.promotion.target serves now: spec.promotion is "
                                   "required with it"),
    (lambda s: (s.pop("baseline"), s["promotion"].update(minSavingsPercent=10)),
     "spec.promotion.minSavingsPercent compares the winner with what the target serves now: spec.baseline is "
     "required with it"),
    (lambda s: s["promotion"].update(target={"apiVersion": f"{KSERVE}", "kind": "InferenceService", "name": "f"}),
     "spec.baseline with spec.backend: sagemaker benchmarks the target's SageMaker endpoint (InputConfig.Endpoints): "
     "spec.promotion.target must be an ACK SageMaker Endpoint"),
    (lambda s: s["model"].update(endpointName="fraud-live"),
     "spec.baseline and spec.model.endpointName both benchmark an existing endpoint"),
])
def test_what_the_crd_refuses_is_refused_for_files_too_naming_the_field(edit, message):
    raw = with_baseline()
    edit(raw)
    with pytest.raises(spec_module.InvalidSpec) as refused:
        registry.validate_file(raw)
    assert any(error.startswith(message) for error in refused.value.errors), refused.value.errors


def test_the_kubernetes_backend_refuses_a_baseline_and_says_what_to_do_instead():
    raw = copy.deepcopy(sample("fraud-kubernetes"))
    raw["baseline"] = {}
    raw["promotion"] = {"target": {"apiVersion": KSERVE, "kind": "InferenceService", "name": "fraud"}}
    with pytest.raises(spec_module.InvalidSpec) as refused:
        registry.validate(raw)
    assert refused.value.errors == ["spec.baseline is not supported with spec.backend: kubernetes; add the current "
                                    "configuration to spec.kubernetes.candidates to compare with it"]


def test_sagemaker_warns_that_the_baseline_load_tests_a_live_endpoint():
    warnings = registry.validate(with_baseline()).warnings
    assert any("AWS strongly recommends against running Inference Recommender on an endpoint that handles live "
               "traffic" in w for w in warnings)


# -- reading the target before the job ------------------------------------------------------------------------

def test_the_target_is_read_before_the_job_and_its_endpoint_is_benchmarked_beside_the_candidates():
    spec = with_baseline()
    first = run(spec, {}, at(T0))
    read = first.last.effect
    assert read == ReadBaseline(ReadWorld((ENDPOINT_REF,), (CONFIGS, MODELS)))
    assert "jobName" not in first.status  # nothing is named before the baseline is known
    assert by_type(first.status["conditions"])["Ready"]["message"].startswith(
        "reading what Endpoint/fraud-endpoint serves now (spec.baseline) before submitting")

    status, submit = written_ahead(spec)
    request = submit.plan.request
    assert request["InputConfig"]["Endpoints"] == [{"EndpointName": "fraud-endpoint"}]
    assert request["InputConfig"]["ModelPackageVersionArn"] and len(request["InputConfig"]["EndpointConfigurations"]) == 1
    assert submit.plan.baseline == CURRENT
    assert status["jobName"] == submit.plan.job_name  # written ahead, with the baseline it hashes
    assert status["baseline"] == {"target": {"apiVersion": ACK, "kind": "Endpoint", "name": "fraud-endpoint"},
                                  "readAt": st.timestamp(T0), "instanceType": "ml.m5.4xlarge",
                                  "initialInstanceCount": 2, "environment": {"OMP_NUM_THREADS": "3"},
                                  "endpointName": "fraud-endpoint"}
    # The baseline is part of the job's definition: without it, another name.
    plain = SAGEMAKER.plan(spec_module.parse(spec), OWNER, 1, None)
    assert plain.job_name != submit.plan.job_name and "Endpoints" not in plain.request["InputConfig"]


def test_a_restart_after_the_read_plans_the_same_job_and_does_not_read_again():
    spec = with_baseline()
    status, submit = written_ahead(spec)
    # The operator died before the create returned: it looks before creating, under the same name.
    look = reconcile(spec, status, at(T0 + seconds(1)))
    assert look.effect == DescribeJob(submit.plan.job_name)
    trace = run(spec, status, at(T0 + seconds(1)), at(T0 + seconds(1), job_missing=True))
    assert trace.last.effect.plan == submit.plan and trace.last.effect.plan.baseline == CURRENT


def test_what_the_target_serves_later_does_not_change_a_submitted_job():
    spec = with_baseline()
    status, name = completed(spec)
    # The promotion (or a person) changed the target meanwhile: the recorded baseline still names this job.
    assert SAGEMAKER.plan(spec_module.parse(spec), OWNER, 1, name,
                          baseline=CURRENT).job_name == name
    outcome = reconcile(spec, status, at(T2, generation=2))
    assert not isinstance(outcome.effect, (ReadBaseline, StopJob, SubmitJob))


def test_a_job_defining_edit_reads_the_target_again_for_the_new_job():
    spec = with_baseline()
    status, name = completed(spec)
    edited = {**spec, "jobDurationInSeconds": 3600}
    trace = run(edited, status, at(T2, generation=2))
    assert isinstance(trace.last.effect, ReadBaseline) and "baseline" not in trace.status
    assert [e.message for e in trace.events if e.reason == "JobReplaced"] == \
        [f"the spec changed: job {name} is replaced by a new job"]
    promoted = ack(endpoint("fraud-config-2"), configs=(endpoint_config("fraud-config-2", "fraud-model",
                                                                        "ml.m5.2xlarge", 2),))
    trace = run(edited, trace.status, read_back(promoted, T2, 2))
    assert trace.last.effect.plan.baseline.instance_type == "ml.m5.2xlarge"
    assert trace.status["baseline"]["instanceType"] == "ml.m5.2xlarge" and trace.status["jobName"] != name


def test_another_promotion_target_means_another_baseline_and_another_job():
    spec = with_baseline()
    status, name = completed(spec)
    other = with_baseline(target={"apiVersion": ACK, "kind": "Endpoint", "name": "fraud-canary"})
    trace = run(other, status, at(T2, generation=2))  # the finished job is replaced without a stop
    assert trace.last.effect == ReadBaseline(targets.baseline_reads(ObjectRef(ACK, "Endpoint", "ml", "fraud-canary")))


UPDATING = endpoint("fraud-config", endpoint_status="Updating", synced=False)
FAILED_UPDATE = endpoint("fraud-config-2", sent="fraud-config-2", failure="CapacityError: no ml.m5.4xlarge")
TWO_VARIANTS = copy.deepcopy(BASELINE_CONFIG)
TWO_VARIANTS["spec"]["productionVariants"].append({**TWO_VARIANTS["spec"]["productionVariants"][0],
                                                   "variantName": "Canary"})


@pytest.mark.parametrize("world,said", [
    (World({ENDPOINT_REF: None}, {CONFIGS: (), MODELS: ()}),
     "cannot read what Endpoint/fraud-endpoint serves now for spec.baseline: Endpoint/fraud-endpoint does not exist "
     "in namespace ml"),
    (World({ENDPOINT_REF: None}, error="endpoints.sagemaker.services.k8s.aws is forbidden", forbidden=True),
     "the operator may not read or patch Endpoint/fraud-endpoint: endpoints.sagemaker.services.k8s.aws is forbidden"),
    (World({ENDPOINT_REF: None}, unserved=frozenset({(ACK, "Endpoint")})), "the API server does not serve Endpoint"),
    (World({ENDPOINT_REF: None}, error="etcdserver: request timed out"),
     "reading Endpoint/fraud-endpoint and its ACK objects failed: etcdserver: request timed out"),
    (ack(UPDATING), "Endpoint/fraud-endpoint is not steadily serving EndpointConfig fraud-config (endpointStatus "
                    "Updating); what it serves is read once it is InService with it"),
    (ack(FAILED_UPDATE), "(endpointStatus InService: CapacityError: no ml.m5.4xlarge)"),
    (ack(configs=()), "EndpointConfig fraud-config, which Endpoint/fraud-endpoint serves, is not an ACK resource in "
                      "namespace ml: its instance type and count cannot be read"),
    (ack(configs=(TWO_VARIANTS,)), "has 2 production variants; a baseline is an endpoint of exactly one"),
    (ack(models=()), "Model fraud-model, which Endpoint/fraud-endpoint serves, is not an ACK resource in namespace "
                     "ml: the environment the experiment varies (OMP_NUM_THREADS) cannot be read"),
], ids=["missing", "forbidden", "unserved", "error", "updating", "failed-update", "no-config", "two-variants",
        "no-model"])
def test_a_target_whose_current_configuration_cannot_be_read_submits_nothing_and_is_read_again(world, said):
    spec = with_baseline()
    first = run(spec, {}, at(T0))
    trace = run(spec, first.status, read_back(world))
    assert trace.last.effect is None and "jobName" not in trace.status and "baseline" not in trace.status
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "BaselineUnreadable")
    assert said in ready["message"] and "no job is submitted until it can be measured" in ready["message"]
    retry_at = TIMING.after(T0, TIMING.promotion_retry)
    assert trace.status["nextPollTime"] == st.timestamp(retry_at)
    assert conditions(trace.status)["JobSubmitted"] == ("False", "NotSubmitted")
    assert [(e.type, e.reason) for e in trace.events if e.reason == "BaselineUnreadable"] == \
        [("Warning", "BaselineUnreadable")]
    # Once it can be read, the job goes.
    again = run(spec, trace.status, at(retry_at), read_back(LIVE, retry_at))
    assert isinstance(again.last.effect, SubmitJob) and again.status["baseline"]["instanceType"] == "ml.m5.4xlarge"
    assert conditions(again.status)["Ready"][1] == "JobSubmitting"


def test_an_endpoint_in_another_region_than_the_job_cannot_be_benchmarked():
    spec = with_baseline()  # the sample's job runs in us-east-1
    elsewhere = endpoint("fraud-config")
    elsewhere["status"]["ackResourceMetadata"] = {
        "arn": "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/fraud-endpoint"}
    trace = run(spec, run(spec, {}, at(T0)).status, read_back(ack(elsewhere)))
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"], trace.last.effect) == ("False", "BaselineUnsupported", None)
    assert ("SageMaker cannot measure what Endpoint/fraud-endpoint serves now (ml.m5.4xlarge x2 (OMP_NUM_THREADS=3)) "
            "as spec.baseline: endpoint fraud-endpoint is in eu-west-1 but the job runs in us-east-1") in ready["message"]


def test_an_ack_endpoint_without_a_sagemaker_name_cannot_be_benchmarked():
    nameless = endpoint("fraud-config")
    del nameless["spec"]["endpointName"]
    trace = run(with_baseline(), run(with_baseline(), {}, at(T0)).status, read_back(ack(nameless)))
    assert "names no SageMaker endpoint" in by_type(trace.status["conditions"])["Ready"]["message"]


def test_the_count_is_what_sagemaker_runs_and_the_region_comes_from_ack():
    running = endpoint("fraud-config")
    running["status"]["productionVariants"] = [{"variantName": "AllTraffic", "currentInstanceCount": 3}]
    running["status"]["ackResourceMetadata"] = {"region": "us-east-1"}
    current = targets.current_configuration(ENDPOINT_REF, ack(running), None, None, ("OMP_NUM_THREADS",))
    assert (current.instance_count, current.region, current.environment) == (3, "us-east-1", {"OMP_NUM_THREADS": "3"})


def test_a_kserve_and_a_generic_target_are_read_where_promotion_writes():
    service_ref = ObjectRef(KSERVE, "InferenceService", "ml", "fraud")
    service = {"spec": {"predictor": {"minReplicas": 2, "nodeSelector": {targets.INSTANCE_TYPE_LABEL: "m5.xlarge"},
                                      "model": {"env": [{"name": "OMP_NUM_THREADS", "value": "2"},
                                                        {"name": "OTHER", "value": "x"},
                                                        {"name": "FROM", "valueFrom": {"secretKeyRef": {}}}]}}}}
    current = targets.current_configuration(service_ref, World({service_ref: service}), None, None,
                                            ("OMP_NUM_THREADS", "FROM"))
    assert current == CurrentConfiguration("ml.m5.xlarge", 2, {"OMP_NUM_THREADS": "2"})
    local = {"spec": {"predictor": {"nodeSelector": {targets.INSTANCE_TYPE_LABEL: "local-1cpu-2gi"},
                                    "containers": [{"name": "server"}]}}}
    assert targets.current_configuration(service_ref, World({service_ref: local}), None, None, ()) == \
        CurrentConfiguration("local-1cpu-2gi", 1, {})

    generic_ref = ObjectRef("serving.example.com/v1", "ModelDeployment", "ml", "fraud")
    paths = FieldPaths("spec.fleets[0].machineType", "spec.fleets[0].replicas", "spec.fleets[0].env")
    deployment = {"spec": {"fleets": [{"machineType": "ml.c5.xlarge", "replicas": 4,
                                       "env": {"OMP_NUM_THREADS": "4", "X": "y"}}]}}
    assert targets.current_configuration(generic_ref, World({generic_ref: deployment}), paths, None,
                                         ("OMP_NUM_THREADS",)) == CurrentConfiguration("ml.c5.xlarge", 4,
                                                                                       {"OMP_NUM_THREADS": "4"})
    for broken, said in (({"machineType": 7}, "not an instance type"), ({"replicas": "four"}, "not a count"),
                         ({"env": ["OMP_NUM_THREADS=4"]}, "not a string map")):
        with pytest.raises(targets.TargetProblem, match=said):
            targets.current_configuration(generic_ref, World({generic_ref: {"spec": {"fleets": [broken]}}}), paths,
                                          None, ())


# -- the SageMaker backend measures it -----------------------------------------------------------------------------

def test_the_endpoint_is_measured_priced_judged_and_kept_apart_from_the_candidates():
    status, name = completed(with_baseline())
    baseline = status["baseline"]
    # 2 x ml.m5.4xlarge at the catalog's 0.922 USD/h; cost per inference over an hour at 40,000/min.
    assert baseline["recommendationId"] == baseline_recommendation_id(name)
    assert baseline["metrics"]["costPerHour"] == pytest.approx(1.844)
    assert baseline["metrics"]["costPerInference"] == pytest.approx(1.844 / (40000 * 60))
    assert (baseline["metrics"]["maxInvocations"], baseline["metrics"]["modelLatency"]) == (40000, 5)
    assert (baseline["meetsSLA"], baseline["slaMessage"]) == (True, "meets the SLA")
    assert baseline_recommendation_id(name) not in [r["recommendationId"] for r in status["recommendations"]]
    assert status["recommendationsTotal"] == 6
    best = status["best"]
    assert best["recommendationId"] == f"{name}/00000001"  # ml.m5.2xlarge x2, OMP_NUM_THREADS=4
    savings = best["savings"]
    assert savings["costPerHour"] == pytest.approx(0.922) and savings["costPerHourPercent"] == 50.0
    assert savings["costPerInference"] == pytest.approx(1.844 / 2.4e6 - 0.922 / (42604 * 60))
    assert savings["costPerInferencePercent"] == pytest.approx(100 * (1 - (0.922 / 42604) / (1.844 / 40000)), abs=0.01)
    assert (savings["modelLatencyChange"], savings["modelLatencyChangePercent"]) == (1, 20.0)


def test_the_baseline_is_best_only_when_it_is_and_then_saves_nothing():
    status, name = completed(with_baseline(), performances=(EndpointPerformance("fraud-endpoint", 45000, 5),))
    # 1.844 USD/h at 45,000/min is dearer per inference than 0.922 at 42,604: a candidate wins.
    assert status["best"]["recommendationId"] != baseline_recommendation_id(name)

    cheap = dataclasses.replace(CURRENT, instance_type="ml.m5.xlarge", instance_count=1)
    cheap_config = endpoint_config("fraud-config", "fraud-model", "ml.m5.xlarge", 1)
    spec = with_baseline()
    ahead = run(spec, run(spec, {}, at(T0)).status, read_back(ack(configs=(cheap_config,))))
    name = ahead.last.effect.plan.job_name
    assert ahead.last.effect.plan.baseline == cheap
    trace = run(spec, ahead.status, at(T0, submit_result=Submitted(arn(name))), at(T2),
                at(T2, job=snapshot(name, "COMPLETED", completion_time=T2, recommendations=advanced_recommendations(name),
                                    endpoint_performances=(EndpointPerformance("fraud-endpoint", 31000, 20),))))
    best = trace.status["best"]
    assert best["recommendationId"] == baseline_recommendation_id(name)
    assert best["reason"].endswith("; it is what Endpoint/fraud-endpoint serves now (spec.baseline)")
    assert best["savings"] == {"costPerHour": 0.0, "costPerHourPercent": 0.0, "costPerInference": 0.0,
                               "costPerInferencePercent": 0.0, "modelLatencyChange": 0, "modelLatencyChangePercent": 0.0}


def test_a_tie_goes_to_what_the_target_serves():
    from rightsizer import selection
    incumbent = Recommendation("j/baseline", "ml.m5.xlarge", 1, {}, {"costPerHour": 0.23, "maxInvocations": 31000,
                                                                     "modelLatency": 9})
    twin = dataclasses.replace(incumbent, recommendation_id="j/00000000")
    constraints = selection.Constraints()
    assert selection.select([twin, incumbent], "CostPerInference", constraints, incumbent="j/baseline").best == incumbent
    assert selection.select([twin, incumbent], "CostPerInference", constraints).best == twin  # otherwise by id


def test_a_job_that_ends_without_measuring_the_baseline_says_so_and_the_gate_promotes_nothing():
    spec = with_baseline(mode="Automatic", minSavingsPercent=10)
    status, name = completed(spec, performances=())
    assert status["baseline"]["failureReason"] == f"job {name} ended (COMPLETED) without measuring it"
    assert "recommendationId" not in status["baseline"] and "savings" not in status["best"]
    assert conditions(status)["Promoted"] == ("False", "SavingsUnknown")
    assert conditions(status)["Ready"] == ("False", "SavingsUnknown")
    ready = by_type(status["conditions"])["Ready"]["message"]
    assert ready == (f"nothing is promoted to Endpoint/fraud-endpoint: spec.promotion.minSavingsPercent 10 cannot be "
                     f"judged, since the saving of ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) against what "
                     f"Endpoint/fraud-endpoint serves now (ml.m5.4xlarge x2 (OMP_NUM_THREADS=3)) is unknown: the job "
                     f"did not measure it: job {name} ended (COMPLETED) without measuring it")
    assert reconcile(spec, status, at(T2)).effect is None  # nothing read, nothing applied


def test_without_a_gate_a_missing_baseline_is_reported_and_the_promotion_goes_on():
    status, _ = completed(with_baseline(mode="Automatic"), performances=())
    assert "failureReason" in status["baseline"]
    assert isinstance(reconcile(with_baseline(mode="Automatic"), status, at(T2)).effect, ReadWorld)


# -- the savings gate, through the core ------------------------------------------------------------------------

def test_too_small_a_saving_is_not_promoted_and_a_lower_bar_lets_it_through():
    spec = with_baseline(mode="Automatic", minSavingsPercent=60)
    status, name = completed(spec)
    assert conditions(status)["Promoted"] == ("False", "InsufficientSavings")
    assert conditions(status)["Ready"] == ("True", "InsufficientSavings")  # a decision, not a fault
    assert conditions(status)["AwaitingApproval"] == ("False", "InsufficientSavings")
    message = by_type(status["conditions"])["Promoted"]["message"]
    assert message.startswith("nothing is promoted to Endpoint/fraud-endpoint: ml.m5.2xlarge x2 (OMP_NUM_THREADS=4) "
                              "saves 53.1 % per inference (4.08e-07 USD); latency +1 ms (+20 %) against what "
                              "Endpoint/fraud-endpoint serves now (ml.m5.4xlarge x2 (OMP_NUM_THREADS=3)), below "
                              "spec.promotion.minSavingsPercent 60")
    assert reconcile(spec, status, at(T2)).effect is None
    # Lowering the bar is a promotion edit: the same job, and the promotion starts (it reads the target first).
    lower = with_baseline(mode="Automatic", minSavingsPercent=50)
    outcome = reconcile(lower, status, at(T2, generation=2))
    assert isinstance(outcome.effect, ReadWorld) and apply(status, outcome)["jobName"] == name


def test_insufficient_savings_is_a_normal_event_not_a_warning():
    spec = with_baseline(mode="Automatic", minSavingsPercent=60)
    ahead, submit = written_ahead(spec)
    name = submit.plan.job_name
    trace = run(spec, ahead, at(T0, submit_result=Submitted(arn(name))), at(T2),
                at(T2, job=snapshot(name, "COMPLETED", completion_time=T2, recommendations=advanced_recommendations(name),
                                    endpoint_performances=(EndpointPerformance("fraud-endpoint", 40000, 5),))))
    assert ("Normal", "InsufficientSavings") in [(e.type, e.reason) for e in trace.events]
    assert ("Warning", "InsufficientSavings") not in [(e.type, e.reason) for e in trace.events]


def test_a_baseline_that_misses_the_sla_does_not_hold_a_fix_back():
    spec = with_baseline(mode="Automatic", minSavingsPercent=60)
    # The target answers in 150 ms, over the SLA's 100: the winner saves less than 60 % and is promoted anyway.
    status, _ = completed(spec, performances=(EndpointPerformance("fraud-endpoint", 40000, 150),))
    assert status["baseline"]["meetsSLA"] is False
    assert status["baseline"]["slaMessage"] == "P95 latency 150 ms > 100 ms"
    assert status["best"]["savings"]["costPerInferencePercent"] < 60
    assert isinstance(reconcile(spec, status, at(T2)).effect, ReadWorld)


def test_dry_run_reports_insufficient_savings_too():
    status, _ = completed(with_baseline(mode="DryRun", minSavingsPercent=60))
    promoted = by_type(status["conditions"])["Promoted"]
    assert (promoted["status"], promoted["reason"]) == ("False", "InsufficientSavings")
    assert promoted["message"].startswith("dry run: nothing is promoted to Endpoint/fraud-endpoint")


def test_a_manual_promotion_below_the_bar_asks_nobody_for_approval():
    status, _ = completed(with_baseline(mode="Manual", minSavingsPercent=60))
    assert conditions(status)["AwaitingApproval"] == ("False", "InsufficientSavings")


def test_a_baseline_with_no_price_makes_the_saving_unknown():
    spec = with_baseline(mode="Automatic", minSavingsPercent=10)
    del spec["sagemaker"]["region"]  # the job runs in the operator's AWS_REGION
    elsewhere = endpoint("fraud-config")
    elsewhere["status"]["ackResourceMetadata"] = {"region": "eu-west-1"}  # outside the bundled catalog
    ahead = run(spec, run(spec, {}, at(T0)).status, read_back(ack(elsewhere)))
    submit = ahead.last.effect
    assert submit.plan.baseline.region == "eu-west-1"
    name = submit.plan.job_name
    trace = run(spec, ahead.status, at(T0, submit_result=Submitted(arn(name))), at(T2),
                at(T2, job=snapshot(name, "COMPLETED", completion_time=T2, recommendations=advanced_recommendations(name),
                                    endpoint_performances=(EndpointPerformance("fraud-endpoint", 40000, 5),))))
    baseline = trace.status["baseline"]
    assert "costPerHour" not in baseline["metrics"] and baseline["meetsSLA"] is True
    assert "costPerInference" not in trace.status["best"]["savings"]
    assert conditions(trace.status)["Promoted"] == ("False", "SavingsUnknown")
    assert "no cost per inference is known for both (a price is missing)" in \
        by_type(trace.status["conditions"])["Promoted"]["message"]
    assert pricing.price_per_hour("ml.m5.4xlarge", region="eu-west-1").price is None


def test_the_cost_per_hour_objective_gates_on_the_hourly_saving():
    spec = with_baseline(mode="Automatic", minSavingsPercent=51)
    spec["selection"] = {**spec["selection"], "objective": "CostPerHour"}
    status, _ = completed(spec)
    assert "saves 50 % per hour (0.922 USD/h)" in by_type(status["conditions"])["Promoted"]["message"]


# -- the local backend measures it as one more configuration ----------------------------------------------------

LOCAL_KSERVE = {"target": {"apiVersion": KSERVE, "kind": "InferenceService", "name": "fraud"}, "mode": "Automatic"}
SERVICE_REF = ObjectRef(KSERVE, "InferenceService", "ml", "fraud")


def kserve(instance_type: str | None, replicas: int = 1, env: dict | None = None) -> World:
    predictor: dict = {"minReplicas": replicas, "model": {"env": [{"name": k, "value": v}
                                                                  for k, v in (env or {}).items()]}}
    if instance_type:
        predictor["nodeSelector"] = {targets.INSTANCE_TYPE_LABEL: instance_type}
    return World({SERVICE_REF: {"spec": {"predictor": predictor}}})


def local_spec() -> dict:
    raw = copy.deepcopy(sample("fraud-local"))
    raw["promotion"] = LOCAL_KSERVE
    raw["baseline"] = {}
    raw["selection"] = {"objective": "CostPerInference", "constraints": {"maxModelLatencyMs": 100,
                                                                         "minInvocationsPerMinute": 1000}}
    return raw


@pytest.mark.parametrize("instance_type,problem", [
    (None, "it names no instance type"),
    ("g4dn.xlarge", "its instance type ml.g4dn.xlarge has GPU (NVIDIA T4); the local backend emulates only CPUs and "
                    "memory"),
    ("c7x.huge", "its instance type c7x.huge is neither a local-<N>cpu[-<M>gi] profile nor a SageMaker hosting type"),
])
def test_the_local_backend_refuses_a_baseline_it_cannot_emulate(instance_type, problem):
    spec = local_spec()
    trace = run(spec, run(spec, {}, at(T0)).status, read_back(kserve(instance_type)))
    ready = by_type(trace.status["conditions"])["Ready"]
    assert (ready["status"], ready["reason"], trace.last.effect) == ("False", "BaselineUnsupported", None)
    assert "the local backend cannot measure what InferenceService/fraud serves now" in ready["message"]
    assert problem in ready["message"]


def local_submitted(world: World) -> tuple[dict, SubmitJob]:
    spec = local_spec()
    trace = run(spec, run(spec, {}, at(T0)).status, read_back(world))
    assert isinstance(trace.last.effect, SubmitJob), trace.status["conditions"]
    return trace.status, trace.last.effect


def test_the_local_backend_names_the_job_after_the_baseline_and_plans_it_first_with_its_own_count():
    status, submit = local_submitted(kserve("local-1cpu", 3, {"OMP_NUM_THREADS": "1"}))
    plan = submit.plan
    assert plan.baseline == CurrentConfiguration("local-1cpu", 3, {"OMP_NUM_THREADS": "1"})
    other = registry.policy("local").plan(spec_module.parse(local_spec()), OWNER, 1, None,
                                          baseline=dataclasses.replace(plan.baseline, instance_count=2))
    assert other.job_name != plan.job_name  # what the target serves is part of the job
    host = HostFacts(cpus=(0, 1, 2, 3), memory_total_bytes=16 << 30, memory_available_bytes=16 << 30)
    planned = plan_experiment(plan.spec, plan.job_name, host, plan.baseline)
    first = planned[0]
    assert (first.recommendation_id, first.baseline, first.instance_count, first.index) == (
        baseline_recommendation_id(plan.job_name), True, 3, 0)
    # The candidates keep the ids they have without a baseline.
    assert [p.recommendation_id for p in planned[1:]] == [p.recommendation_id for p in
                                                          plan_experiment(plan.spec, plan.job_name, host)]


def test_a_baseline_the_host_cannot_place_is_skipped_with_the_reason():
    host = HostFacts(cpus=(0, 1), memory_total_bytes=16 << 30, memory_available_bytes=16 << 30)
    planned = plan_experiment(spec_module.parse(local_spec()), "job", host,
                              CurrentConfiguration("ml.m5.4xlarge", 1, {}))
    assert planned[0].baseline and planned[0].skipped_reason == \
        "ml.m5.4xlarge needs 16 vCPUs; this host has 1 free after the load generator's CPU 1"


def test_the_baseline_keeps_its_own_count_and_cost():
    count, metrics = endpoint_metrics(1000, 30000, 0.05, count=3)
    assert count == 3 and metrics["maxInvocations"] == 3000 and metrics["costPerHour"] == pytest.approx(0.15)
    assert endpoint_metrics(1000, 30000, 0.05)[0] == 30  # a candidate: what maxInvocations needs


def local_rows(job_name: str) -> tuple[Recommendation, ...]:
    return (Recommendation(f"{job_name}/00000000", "local-1cpu", 1, {"OMP_NUM_THREADS": "1"},
                           {"maxInvocations": 9000, "modelLatency": 40, "costPerHour": 0.05}),)


def test_a_local_snapshot_holds_the_baseline_as_one_more_row_which_status_keeps_apart():
    spec = local_spec()
    spec["promotion"] = {**spec["promotion"], "minSavingsPercent": 30}
    status, submit = local_submitted(kserve("local-1cpu", 2, {"OMP_NUM_THREADS": "1"}))
    name = submit.plan.job_name
    baseline_row = Recommendation(baseline_recommendation_id(name), "local-1cpu", 2, {"OMP_NUM_THREADS": "1"},
                                  {"maxInvocations": 16000, "modelLatency": 40, "costPerHour": 0.1})
    trace = run(spec, status, at(T0, submit_result=Submitted(arn(name))), at(T2),
                at(T2, job=snapshot(name, "IN_PROGRESS", recommendations=(baseline_row,),
                                    progress=Progress(1, 9), steps=StepSummary(9, {"COMPLETED": 1, "PENDING": 8}))))
    assert trace.status["baseline"]["metrics"]["maxInvocations"] == 16000
    assert "recommendations" not in trace.status or not trace.status["recommendations"]
    # A restart: the baseline is not run again.
    assert reconcile(spec, trace.status, at(T2 + seconds(5))).effect == DescribeJob(name)
    resume = reconcile(spec, trace.status, at(T2 + seconds(5), job_missing=True)).effect.plan.resume
    assert baseline_recommendation_id(name) in [r.recommendation_id for r in resume.completed]
    done = run(spec, trace.status, at(T2 + seconds(10)), at(T2 + seconds(10), job=snapshot(
        name, "COMPLETED", completion_time=T2, recommendations=(baseline_row, *local_rows(name)))))
    best = done.status["best"]
    assert best["recommendationId"] == f"{name}/00000000"
    # 0.05 USD/h at 9,000/min against 0.1 at 16,000/min: 11 % less per inference, half per hour.
    assert best["savings"]["costPerHourPercent"] == 50.0 and best["savings"]["costPerInferencePercent"] == 11.11
    assert conditions(done.status)["Promoted"] == ("False", "InsufficientSavings")


def test_a_local_baseline_that_failed_is_reported_with_the_reason():
    spec = local_spec()
    status, submit = local_submitted(kserve("local-1cpu"))
    name = submit.plan.job_name
    failure = StepFailure("local-1cpu", {}, "the model server exited with code 1", baseline=True)
    trace = run(spec, status, at(T0, submit_result=Submitted(arn(name))), at(T2),
                at(T2, job=snapshot(name, "COMPLETED", completion_time=T2, recommendations=local_rows(name),
                                    steps=StepSummary(9, {"COMPLETED": 8, "FAILED": 1}, (failure,)))))
    assert trace.status["baseline"]["failureReason"] == "the model server exited with code 1"
    assert trace.status["steps"]["failures"][0]["baseline"] is True


def test_a_restored_baseline_failure_matches_the_baseline_only():
    host = HostFacts(cpus=(0, 1, 2, 3), memory_total_bytes=16 << 30, memory_available_bytes=16 << 30)
    raw = copy.deepcopy(sample("fraud-local"))
    raw["instanceTypes"] = ["local-1cpu"]
    raw.pop("environmentParameterRanges", None)
    plan = plan_experiment(spec_module.parse(raw), "job", host, CurrentConfiguration("local-1cpu", 1, {}))
    failed = StepFailure("local-1cpu", {}, "crashed", baseline=True)
    assert list(restored_outcomes(plan, {}, [failed])) == ["job/baseline"]
    summary = step_summary([ConfigurationOutcome(plan[0], None, "crashed", None)], len(plan))
    assert summary.failures == (failed,)


def test_the_baseline_outcome_of_a_backend_that_runs_the_spec_splits_by_id():
    policy = registry.policy("local")
    rows = (Recommendation("j/baseline", "local-1cpu", 1, {}, {"maxInvocations": 1}),
            Recommendation("j/00000000", "local-1cpu", 1, {}, {"maxInvocations": 2}))
    outcome = policy.baseline_outcome(spec_module.parse(local_spec()), "j", CurrentConfiguration("local-1cpu", 1, {}),
                                      JobSnapshot("j", "IN_PROGRESS", recommendations=rows))
    assert outcome == base.BaselineOutcome(rows[1:], rows[0])


def test_a_job_whose_candidates_all_failed_still_judges_the_baseline():
    status, name = completed(with_baseline(mode="Automatic"), rows=lambda name: ())
    assert status["baseline"]["meetsSLA"] is True
    assert status["best"]["recommendationId"] == baseline_recommendation_id(name)
    assert status["best"]["savings"]["costPerInferencePercent"] == 0.0
    assert status["recommendations"] == [] and status["recommendationsTotal"] == 0


def test_a_measured_baseline_keeps_the_targets_count_where_a_candidate_gets_what_max_invocations_needs():
    from rightsizer.backends.local.plan import measured_outcome, median_outcome
    from test_local_experiment import load_result
    raw = copy.deepcopy(local_spec())
    raw["stoppingConditions"] = {"maxInvocations": 25000,
                                 "modelLatencyThresholds": [{"percentile": "P95", "valueInMilliseconds": 100}]}
    parsed = spec_module.parse(raw)
    host = HostFacts(cpus=(0, 1, 2, 3), memory_total_bytes=16 << 30, memory_available_bytes=16 << 30)
    baseline, candidate = plan_experiment(parsed, "job", host, CurrentConfiguration("local-1cpu", 2, {}))[:2]
    result = load_result(max_invocations=12_000, p95=20.0, run_p95=25.0)
    measured = [measured_outcome(planned, result, setup_seconds=1, usage=None, stopping=parsed.stopping_conditions)
                for planned in (baseline, candidate)]
    assert [(o.recommendation.initial_instance_count, o.recommendation.metrics["maxInvocations"],
             o.recommendation.metrics["costPerHour"]) for o in measured] == [(2, 24000, 0.1), (3, 36000, 0.15)]
    assert median_outcome([measured[0], measured[0]], 25000).recommendation.initial_instance_count == 2


def manifest_file(tmp_path, spec: dict):
    import yaml
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob",
                                    "metadata": {"name": "fraud", "namespace": "ml"}, "spec": spec}))
    return path


def test_the_tools_without_a_cluster_say_the_baseline_is_read_at_submission(tmp_path, capsys):
    from rightsizer import cli
    from rightsizer.tools import run as run_tool
    assert cli.main(["render", str(manifest_file(tmp_path, with_baseline()))]) == 0
    assert "note: spec.baseline adds the SageMaker endpoint of spec.promotion.target to InputConfig.Endpoints" in \
        capsys.readouterr().err
    # `rightsizer run` has no target to read: it says so before it runs (here it stops at the missing payload).
    assert run_tool.run_file(str(manifest_file(tmp_path, local_spec()))) == 1
    err = capsys.readouterr().err
    assert "note: spec.baseline is not measured here" in err and "cannot run here" in err
