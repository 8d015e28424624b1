"""Inference Recommender played behind botocore's Stubber.

Every call the operator makes reaches a real boto3 SageMaker client with a Stubber on it, so each request is
validated by botocore against the service model and each canned response is validated by the Stubber against
the model's output shape. What differs from a plain Stubber queue is who decides the response: just before
each call (botocore's `provide-client-params` event, which precedes the Stubber's own hooks) the simulator
looks at its jobs and queues the response the service would give now. That lets a test script a job's life
(PENDING -> IN_PROGRESS -> COMPLETED, a stop, throttling bursts) without knowing how often the operator polls.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import random
import threading
from typing import Any

import boto3
import botocore.exceptions
from botocore.stub import Stubber

from rightsizer.backends.sagemaker.client import use_client_factory
from seed import ADVANCED_RESULTS, DEFAULT_RESULTS

ACCOUNT, REGION = "111122223333", "us-east-1"
T0 = datetime.datetime(2026, 11, 29, 8, 0, tzinfo=datetime.timezone.utc)

def default_recommendations(job_name: str) -> list[dict[str, Any]]:
    rows = []
    for index, (instance, omp, cost, invocations, latency, cpu, memory, workers) in enumerate(DEFAULT_RESULTS):
        rows.append({
            "RecommendationId": f"{job_name}/{index:08d}",
            "Metrics": {"CostPerHour": cost, "CostPerInference": cost / (invocations * 60),
                        "MaxInvocations": invocations, "ModelLatency": latency, "CpuUtilization": cpu,
                        "MemoryUtilization": memory},
            "EndpointConfiguration": {"EndpointName": f"sm-epc-{index}", "VariantName": f"sm-epc-{index}",
                                      "InstanceType": instance, "InitialInstanceCount": 1},
            "ModelConfiguration": {"EnvironmentParameters": [
                {"Key": "OMP_NUM_THREADS", "ValueType": "String", "Value": omp},
                {"Key": "SAGEMAKER_MODEL_SERVER_WORKERS", "ValueType": "String", "Value": workers}]},
        })
    return rows


def advanced_recommendations(job_name: str) -> list[dict[str, Any]]:
    return [{
        "RecommendationId": f"{job_name}/{index:08d}",
        "Metrics": {"CostPerHour": cost, "CostPerInference": cost / (invocations * 60), "MaxInvocations": invocations,
                    "ModelLatency": latency, "CpuUtilization": cpu, "MemoryUtilization": memory},
        "EndpointConfiguration": {"EndpointName": f"sm-epc-{index}", "VariantName": f"sm-epc-{index}",
                                  "InstanceType": instance, "InitialInstanceCount": 2},
        "ModelConfiguration": {"EnvironmentParameters": [{"Key": "OMP_NUM_THREADS", "ValueType": "String", "Value": omp}]},
    } for index, (instance, omp, cost, invocations, latency, cpu, memory) in enumerate(ADVANCED_RESULTS)]


def benchmark_step(job_name: str, recommendation: dict[str, Any], status: str) -> dict[str, Any]:
    """The ListInferenceRecommendationsJobSteps entry of the benchmark behind one of IR's recommendations."""
    benchmark: dict[str, Any] = {"EndpointConfiguration": recommendation["EndpointConfiguration"],
                                 "ModelConfiguration": recommendation["ModelConfiguration"]}
    if status == "COMPLETED":
        benchmark["Metrics"] = recommendation["Metrics"]
    return {"StepType": "BENCHMARK", "JobName": job_name, "Status": status, "InferenceBenchmark": benchmark}


@dataclasses.dataclass
class SimulatedJob:
    request: dict[str, Any]
    # The statuses successive describes report; the last one repeats.
    script: list[str]
    recommendations: list[dict[str, Any]]
    failure_reason: str | None = None
    failed_steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Benchmarks IR ran and did not recommend (each an InferenceBenchmark).
    extra_benchmarks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    endpoint_performances: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    describes: int = 0
    stopped: bool = False
    stopped_at: int = 0

    @property
    def name(self) -> str:
        return self.request["JobName"]

    @property
    def arn(self) -> str:
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-recommendations-job/{self.name.lower()}"

    def status(self) -> str:
        if self.stopped:
            return "STOPPED" if self.describes > self.stopped_at else "STOPPING"
        return self.script[min(self.describes, len(self.script) - 1)]


class SimulatedInferenceRecommender:
    def __init__(self, script: list[str] | None = None, results=default_recommendations,
                 failure_reason: str | None = None, failed_steps: list[dict] | None = None,
                 endpoint_performances=None, extra_benchmarks: list[dict] | None = None,
                 fault_rate: float = 0.0, seed: int = 0):
        self.client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="testing",
                                   aws_secret_access_key="testing")
        self.stubber = Stubber(self.client)
        self.client.meta.events.register("provide-client-params.sagemaker.*", self._queue_response)
        self.stubber.activate()
        self.script = script or ["PENDING", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
        self.results, self.failure_reason = results, failure_reason
        self.failed_steps, self.endpoint_performances = failed_steps or [], endpoint_performances or []
        self.extra_benchmarks = extra_benchmarks or []  # whole steps, as seed.seed_step gives them
        # Sustained faults: this share of calls fails (throttled, a 5xx, or the connection reset), chosen by a
        # seeded generator; a reset Create may have created the job first, as a lost response would leave it.
        self.fault_rate, self.random = fault_rate, random.Random(seed)
        self.faults: list[tuple[str, str]] = []  # (operation, what failed)
        self.jobs: dict[str, SimulatedJob] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.injected: list[tuple[str, str, int, str]] = []  # (operation, error code, http status, message)
        self.lock = threading.RLock()

    # -- test controls ---------------------------------------------------------------------------------------
    def inject(self, operation: str, code: str, times: int = 1, http_status: int = 400, message: str = "") -> None:
        with self.lock:
            self.injected += [(operation, code, http_status, message or code)] * times

    def add_existing_job(self, request: dict[str, Any], **overrides) -> SimulatedJob:
        with self.lock:
            job = self._new_job(request)
            for key, value in overrides.items():
                setattr(job, key, value)
            return job

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    def install(self) -> None:
        lock = self.lock
        client = self.client

        class Serialized:
            """The operator may call from several threads; the Stubber's queue must see one call at a time."""

            def __getattr__(self, name):
                if name == "meta":
                    return client.meta  # the client's events and config, not a call
                method = getattr(client, name)

                def call(**kwargs):
                    with lock:
                        return method(**kwargs)
                return call

        use_client_factory(lambda region: Serialized())

    # -- the service -----------------------------------------------------------------------------------------
    def _new_job(self, request: dict[str, Any]) -> SimulatedJob:
        job = SimulatedJob(copy.deepcopy(request), list(self.script), self.results(request["JobName"]),
                           failure_reason=self.failure_reason, failed_steps=list(self.failed_steps),
                           extra_benchmarks=[step["InferenceBenchmark"] for step in self.extra_benchmarks],
                           endpoint_performances=list(self.endpoint_performances))
        self.jobs[job.name] = job
        return job

    def _queue_response(self, params, model, **_):
        operation = model.name
        self.calls.append((operation, copy.deepcopy(params)))
        method = self.client.meta.method_to_api_mapping
        name = next(python for python, api in method.items() if api == operation)
        for index, (injected_operation, code, http_status, message) in enumerate(self.injected):
            if injected_operation == operation:
                del self.injected[index]
                self.stubber.add_client_error(name, code, message, http_status_code=http_status)
                return
        if self.fault_rate and self.random.random() < self.fault_rate:
            return self._fault(operation, name, params)
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise AssertionError(f"the operator called {operation}, which this simulator does not serve")
        handler(name, params)

    def _fault(self, operation: str, name: str, params: dict[str, Any]) -> None:
        kind = self.random.choice(("throttled", "5xx", "reset"))
        self.faults.append((operation, kind))
        if kind == "throttled":
            self.stubber.add_client_error(name, "ThrottlingException", "Rate exceeded", http_status_code=400)
        elif kind == "5xx":
            self.stubber.add_client_error(name, "InternalFailure", "We encountered an internal error",
                                          http_status_code=500)
        else:
            if operation == "CreateInferenceRecommendationsJob" and params["JobName"] not in self.jobs \
                    and self.random.random() < 0.5:
                self._new_job(params)  # created, and the answer lost on the way back
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=f"https://api.sagemaker.{REGION}.amazonaws.com")

    def _not_found(self, name: str, job_name: str) -> None:
        self.stubber.add_client_error(name, "ResourceNotFound", f"job {job_name} not found", http_status_code=400)

    def _create_inference_recommendations_job(self, name, params):
        if params["JobName"] in self.jobs:
            self.stubber.add_client_error(name, "ResourceInUse", f"job {params['JobName']} already exists")
            return
        job = self._new_job(params)
        self.stubber.add_response(name, {"JobArn": job.arn}, expected_params=params)

    def _describe_inference_recommendations_job(self, name, params):
        job = self.jobs.get(params["JobName"])
        if job is None:
            return self._not_found(name, params["JobName"])
        status = job.status()
        job.describes += 1
        response = {
            "JobName": job.name, "JobType": job.request["JobType"], "JobArn": job.arn,
            "RoleArn": job.request["RoleArn"], "Status": status, "CreationTime": T0,
            "LastModifiedTime": T0 + datetime.timedelta(minutes=job.describes),
            "InputConfig": job.request["InputConfig"],
        }
        if "StoppingConditions" in job.request:
            response["StoppingConditions"] = job.request["StoppingConditions"]
        if status in ("COMPLETED", "FAILED", "STOPPED"):
            response["CompletionTime"] = T0 + datetime.timedelta(minutes=45)
        if status in ("COMPLETED", "STOPPED") and job.recommendations:
            completed = job.recommendations if status == "COMPLETED" else job.recommendations[:2]
            response["InferenceRecommendations"] = completed
        if status == "COMPLETED" and job.endpoint_performances:
            response["EndpointPerformances"] = job.endpoint_performances
        if status == "FAILED":
            response["FailureReason"] = job.failure_reason or "unknown"
        self.stubber.add_response(name, response, expected_params=params)

    def _list_inference_recommendations_job_steps(self, name, params):
        job = self.jobs.get(params["JobName"])
        if job is None:
            return self._not_found(name, params["JobName"])
        status = job.status() if job.stopped else job.script[min(max(job.describes - 1, 0), len(job.script) - 1)]
        # One benchmark per configuration IR recommends, as it measured it; the first only while the job runs, two
        # when it was stopped (what describe reports then), plus the extra benchmarks IR did not recommend.
        measured = {"COMPLETED": len(job.recommendations), "STOPPED": 2}.get(status, 1)
        steps = [benchmark_step(job.name, recommendation, "COMPLETED")
                 for recommendation in job.recommendations[:measured]]
        steps += [{"StepType": "BENCHMARK", "JobName": job.name, "Status": "COMPLETED", "InferenceBenchmark": step}
                  for step in job.extra_benchmarks]
        unfinished = "STOPPED" if status in ("STOPPED", "STOPPING") else "IN_PROGRESS"
        if status != "COMPLETED":
            steps += [benchmark_step(job.name, recommendation, unfinished)
                      for recommendation in job.recommendations[measured:]]
        steps += [{"StepType": "BENCHMARK", "JobName": job.name, "Status": "FAILED", "InferenceBenchmark": step}
                  for step in job.failed_steps]
        # One step per page, so the operator's pagination is exercised on every describe.
        start = int(params.get("NextToken", "0"))
        page = {"Steps": steps[start:start + 1]}
        if start + 1 < len(steps):
            page["NextToken"] = str(start + 1)
        self.stubber.add_response(name, page, expected_params=params)

    def _list_tags(self, name, params):
        job = next((j for j in self.jobs.values() if j.arn == params["ResourceArn"]), None)
        if job is None:
            return self._not_found(name, params["ResourceArn"])
        self.stubber.add_response(name, {"Tags": job.request.get("Tags", [])}, expected_params=params)

    def _get_scaling_configuration_recommendation(self, name, params):
        """What the service documents: a completed job's recommendation (by id) or benchmark endpoint (by name),
        scaled here as a made-up service would, with the request echoed back."""
        job = self.jobs.get(params["InferenceRecommendationsJobName"])
        if job is None:
            return self._not_found(name, params["InferenceRecommendationsJobName"])
        if job.status() != "COMPLETED":
            self.stubber.add_client_error(name, "ValidationException",
                                          f"Inference recommendations job {job.name} is in {job.status()} status, "
                                          f"not COMPLETED")
            return
        measured = job.recommendations + [{"EndpointConfiguration": b.get("EndpointConfiguration") or {},
                                           "Metrics": b.get("Metrics") or {}} for b in job.extra_benchmarks]
        found = next((r for r in measured if r.get("RecommendationId") == params.get("RecommendationId")
                      or (params.get("EndpointName") and
                          r["EndpointConfiguration"].get("EndpointName") == params.get("EndpointName"))), None)
        if found is None:
            self._not_found(name, params.get("RecommendationId") or params.get("EndpointName"))
            return
        per_instance = found["Metrics"]["MaxInvocations"] // found["EndpointConfiguration"]["InitialInstanceCount"]
        cpu_target = params.get("TargetCpuUtilizationPerCore", 50)
        objective = params.get("ScalingPolicyObjective") or {}
        target = max(1, per_instance * cpu_target // 100)
        response = {
            "InferenceRecommendationsJobName": job.name, "TargetCpuUtilizationPerCore": cpu_target,
            **{key: params[key] for key in ("RecommendationId", "EndpointName", "ScalingPolicyObjective")
               if key in params},
            "Metric": {"InvocationsPerInstance": per_instance, "ModelLatency": found["Metrics"]["ModelLatency"]},
            "DynamicScalingConfiguration": {
                "MinCapacity": max(1, -(-objective.get("MinInvocationsPerMinute", 0) // target)),
                "MaxCapacity": max(1, -(-objective.get("MaxInvocationsPerMinute", per_instance) // target)),
                "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
                "ScalingPolicies": [{"TargetTracking": {
                    "MetricSpecification": {"Predefined": {"PredefinedMetricType":
                                                           "SageMakerVariantInvocationsPerInstance"}},
                    "TargetValue": float(target)}}]},
        }
        self.stubber.add_response(name, response, expected_params=params)

    def _stop_inference_recommendations_job(self, name, params):
        job = self.jobs.get(params["JobName"])
        if job is None:
            return self._not_found(name, params["JobName"])
        if job.status() in ("COMPLETED", "FAILED", "STOPPED"):
            self.stubber.add_client_error(name, "ValidationException",
                                          f"job {job.name} is in status {job.status()} and cannot be stopped")
            return
        job.stopped, job.stopped_at = True, job.describes
        self.stubber.add_response(name, {}, expected_params=params)
