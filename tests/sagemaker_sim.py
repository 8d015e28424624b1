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
import threading
from typing import Any

import boto3
from botocore.stub import Stubber

from rightsizer.backends.sagemaker.client import use_client_factory

ACCOUNT, REGION = "111122223333", "us-east-1"
T0 = datetime.datetime(2026, 11, 29, 8, 0, tzinfo=datetime.timezone.utc)

# The seed's Default job results (one instance each): type, OMP_NUM_THREADS, cost/h, max invocations/min,
# latency ms, CPU %, memory %, model server workers.
DEFAULT_RESULTS = [
    ("ml.m5.xlarge", "2", 0.23, 15189, 18, 108.864, 1.62012, "1"),
    ("ml.m5.4xlarge", "3", 0.922, 32628, 9, 220.57001, 0.69791, "3"),
    ("ml.m5.large", "2", 0.115, 13793, 19, 106.34, 3.24398, "1"),
    ("ml.m5.12xlarge", "4", 2.765, 32016, 4, 215.32401, 0.44658, "7"),
    ("ml.m5.2xlarge", "2", 0.461, 32427, 13, 248.673, 1.43109, "3"),
]
# The seed's Advanced job results (instance count 2): type, OMP_NUM_THREADS, cost/h, invocations, latency, CPU, mem.
ADVANCED_RESULTS = [
    ("ml.m5.2xlarge", "3", 0.922, 39688, 6, 86.732803, 3.04769),
    ("ml.m5.2xlarge", "4", 0.922, 42604, 6, 177.164993, 3.05089),
    ("ml.m5.2xlarge", "5", 0.922, 39268, 6, 125.402, 3.08665),
    ("ml.m5.4xlarge", "3", 1.844, 38174, 4, 102.546997, 2.68003),
    ("ml.m5.4xlarge", "4", 1.844, 39452, 4, 141.826004, 2.68136),
    ("ml.m5.4xlarge", "5", 1.844, 40472, 4, 107.825996, 2.70936),
]


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


# The first step of the write-up's ListInferenceRecommendationsJobSteps response.
SEED_STEP = {
    "StepType": "BENCHMARK", "Status": "COMPLETED",
    "InferenceBenchmark": {
        "Metrics": {"CostPerHour": 1.8359999656677246, "CostPerInference": 1.6814110495033674e-06,
                    "MaxInvocations": 18199, "ModelLatency": 40,
                    "CpuUtilization": 106.06400299072266, "MemoryUtilization": 0.3920480012893677},
        "EndpointConfiguration": {"EndpointName": "sm-epc-seed", "VariantName": "sm-epc-seed",
                                  "InstanceType": "ml.c5.9xlarge", "InitialInstanceCount": 1},
        "ModelConfiguration": {"EnvironmentParameters": [
            {"Key": "SAGEMAKER_MODEL_SERVER_WORKERS", "ValueType": "String", "Value": "1"},
            {"Key": "OMP_NUM_THREADS", "ValueType": "String", "Value": "28"}]}},
}


@dataclasses.dataclass
class SimulatedJob:
    request: dict[str, Any]
    # The statuses successive describes report; the last one repeats.
    script: list[str]
    recommendations: list[dict[str, Any]]
    failure_reason: str | None = None
    failed_steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
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
                 endpoint_performances=None):
        self.client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="testing",
                                   aws_secret_access_key="testing")
        self.stubber = Stubber(self.client)
        self.client.meta.events.register("provide-client-params.sagemaker.*", self._queue_response)
        self.stubber.activate()
        self.script = script or ["PENDING", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
        self.results, self.failure_reason = results, failure_reason
        self.failed_steps, self.endpoint_performances = failed_steps or [], endpoint_performances or []
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
                method = getattr(client, name)

                def call(**kwargs):
                    with lock:
                        return method(**kwargs)
                return call

        use_client_factory(lambda region: Serialized())

    # -- the service -----------------------------------------------------------------------------------------
    def _new_job(self, request: dict[str, Any]) -> SimulatedJob:
        job = SimulatedJob(copy.deepcopy(request), list(self.script), self.results(request["JobName"]),
                           self.failure_reason, list(self.failed_steps), list(self.endpoint_performances))
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
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise AssertionError(f"the operator called {operation}, which this simulator does not serve")
        handler(name, params)

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
        status = job.script[min(max(job.describes - 1, 0), len(job.script) - 1)]
        steps = [{**SEED_STEP, "JobName": job.name}]
        if status in ("IN_PROGRESS", "PENDING"):
            steps.append({"StepType": "BENCHMARK", "JobName": job.name, "Status": "IN_PROGRESS",
                          "InferenceBenchmark": {"ModelConfiguration": {}}})
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
