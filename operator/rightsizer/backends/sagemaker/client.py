"""The SageMaker backend: boto3 calls, their errors, a process-wide rate limit, one client per region.

Retries of throttling, 5xx and connection errors are botocore's (adaptive mode, which also slows the client
down when the account is throttled); what survives them becomes TransientBackendError, which the operator turns
into a later retry. Errors that retrying will not fix become Rejected, with a condition reason.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from typing import Any, Callable, Mapping

import boto3
import botocore.config
import botocore.exceptions

from rightsizer import metrics, pricing
from rightsizer import model
from rightsizer.backends import base
from rightsizer.backends.sagemaker import translate
from rightsizer.backends.sagemaker.translate import OWNER_TAG_KEYS

RETRY_CONFIG = botocore.config.Config(
    retries={"mode": "adaptive", "max_attempts": int(os.environ.get("RIGHTSIZER_SAGEMAKER_MAX_ATTEMPTS", "8"))},
    connect_timeout=10, read_timeout=60, user_agent_extra="rightsizer")

THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException",
                              "RequestLimitExceeded", "ProvisionedThroughputExceededException", "SlowDown"})
SERVER_CODES = frozenset({"InternalFailure", "InternalServerError", "ServiceUnavailable", "InternalError"})
ACCESS_CODES = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
                          "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException"})
MAX_STEP_PAGES = 20
MAX_SCALING_POLICIES = 8  # status.best.scaling.policies' maxItems
# What Stop says of a job that already ended; not "failed to satisfy constraint", which is a real error.
FINISHED_JOB_MESSAGE = re.compile(r"\b(COMPLETED|FAILED|STOPPED|STOPPING)\b|cannot be stopped|already (stopped|completed)")
# What GetScalingConfigurationRecommendation's ValidationException says of a job that did not complete, or of a
# recommendation or endpoint the job does not have (the service model lists only ResourceNotFound).
NOT_COMPLETED_MESSAGE = re.compile(r"not (yet )?(been )?completed?|\bCOMPLETED\b|\bIN_PROGRESS\b|\bPENDING\b",
                                   re.IGNORECASE)
UNKNOWN_RECOMMENDATION_MESSAGE = re.compile(r"not found|does not exist|doesn't exist|unknown|no such|invalid "
                                            r"(recommendation|endpoint)", re.IGNORECASE)


class RateLimiter:
    """A token bucket shared by every RightsizeJob in the process, so a thousand jobs polling at once
    stay within the account's SageMaker API rate instead of throttling each other."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.per_second, self.burst = per_second, burst
        self._tokens, self._clock, self._sleep = float(burst), clock, sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token, waiting if there is none; returns how long it waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                # At least a millisecond: a rounding-sized pause would not move a coarse clock forward.
                pause = max((1 - self._tokens) / self.per_second, 0.001)
            self._sleep(pause)
            waited += pause


RATE_LIMITER = RateLimiter(per_second=float(os.environ.get("RIGHTSIZER_SAGEMAKER_CALLS_PER_SECOND", "4")),
                           burst=int(os.environ.get("RIGHTSIZER_SAGEMAKER_BURST", "8")))

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
ClientFactory = Callable[[str], Any]
# A chain that found no credentials is looked at again at most this often: on a node it may probe the instance
# metadata address (a second or more), and a thousand refused jobs retry together.
CREDENTIALS_RECHECK_S = 30.0
_made_without_credentials: set[str] = set()  # regions whose cached client signs with nothing
_credentials_missing_at: float | None = None  # when the chain was last found empty


def _chain_has_credentials() -> bool:
    shared = translate.botocore_session()
    with translate.BOTOCORE_LOCK:
        # botocore's session keeps credentials once found, and looks again while it has none.
        return shared.get_credentials() is not None


def _default_factory(region: str):
    # Credentials come from the default chain: IRSA's web identity, EKS Pod Identity, the environment, ...
    shared = translate.botocore_session()
    with translate.BOTOCORE_LOCK:
        return boto3.session.Session(botocore_session=shared).client("sagemaker", region_name=region,
                                                                     config=RETRY_CONFIG)


def credentials_missing() -> bool:
    """Whether the default chain has no credentials now (every call would fail at signing, before it is sent).
    A client made while it had none is made again once it has some (a web identity token mounted late)."""
    global _credentials_missing_at
    if _factory is not _default_factory:
        return False  # a swapped-in client (a test's) carries its own
    with _clients_lock:
        if _credentials_missing_at is not None and time.monotonic() - _credentials_missing_at < CREDENTIALS_RECHECK_S:
            return True
    found = _chain_has_credentials()
    with _clients_lock:
        if found:
            _credentials_missing_at = None
            for region in _made_without_credentials:
                _clients.pop(region, None)
            _made_without_credentials.clear()
        else:
            _credentials_missing_at = time.monotonic()
    return not found


_factory: ClientFactory = _default_factory


def use_client_factory(factory: ClientFactory | None) -> None:
    """Swap how clients are made (tests use botocore's Stubber); None restores boto3."""
    global _factory, _credentials_missing_at
    with _clients_lock:
        _factory = factory or _default_factory
        _clients.clear()
        _made_without_credentials.clear()
        _credentials_missing_at = None


def region_for(spec_region: str | None) -> str:
    region = spec_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise base.RejectedError(base.Rejected(
            "RegionUnknown", "no AWS region: set spec.sagemaker.region or AWS_REGION in the operator's environment",
            retryable_later=False, unsent=True))
    return region


# The limiter of the backend making the call now: botocore sends on the caller's thread, so a context variable
# carries it from SageMakerBackend._call to the before-send hook.
_call_limiter: contextvars.ContextVar[RateLimiter | None] = contextvars.ContextVar("sagemaker_limiter", default=None)


def _take_a_token(**_: Any) -> None:
    """botocore's before-send: a token for each request that goes over the wire, each retry included. A call
    refused before sending (no credentials, an invalid parameter) costs none and never waits for one."""
    limiter = _call_limiter.get()
    if limiter is not None:
        limiter.acquire()


def client_for(region: str):
    with _clients_lock:
        if region not in _clients:
            if _factory is _default_factory and not _chain_has_credentials():
                _made_without_credentials.add(region)
            made = _factory(region)
            made.meta.events.register_first("before-send.sagemaker", _take_a_token)
            _clients[region] = made
        return _clients[region]


def classify(error: Exception) -> base.Rejected | base.TransientBackendError:
    # HTTPClientError covers a connection reset mid-call (ConnectionClosedError) and read timeouts.
    if isinstance(error, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return base.TransientBackendError(f"cannot reach SageMaker: {error}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return base.Rejected("NoCredentials", "the operator has no AWS credentials (IRSA, EKS Pod Identity or the "
                             "environment)", retryable_later=True, unsent=True)
    if not isinstance(error, botocore.exceptions.ClientError):
        raise error
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in THROTTLING_CODES or status == 429:
        return base.TransientBackendError(f"SageMaker throttled the request ({code}): {message}", throttled=True)
    if code in SERVER_CODES or status >= 500:
        return base.TransientBackendError(f"SageMaker failed ({code or status}): {message}")
    if code in ACCESS_CODES:
        return base.Rejected("AccessDenied", f"{code}: {message}", retryable_later=True)
    if code == "ResourceLimitExceeded":
        return base.Rejected("ResourceLimitExceeded", message, retryable_later=True)
    if code == "ValidationException" and ("assume" in message.lower() or "sts" in message.lower()):
        return base.Rejected("RoleNotAssumable", f"SageMaker cannot assume spec.sagemaker.roleArn: {message}",
                             retryable_later=True)
    if code == "ValidationException":
        return base.Rejected("ValidationFailed", message, retryable_later=False)
    return base.Rejected(code or "BackendError", message, retryable_later=True)


def _error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _environment(model_configuration: dict | None) -> dict[str, str]:
    return {p["Key"]: p["Value"] for p in (model_configuration or {}).get("EnvironmentParameters") or ()}


METRIC_KEYS = {"CostPerHour": "costPerHour", "CostPerInference": "costPerInference",
               "MaxInvocations": "maxInvocations", "ModelLatency": "modelLatency",
               "CpuUtilization": "cpuUtilization", "MemoryUtilization": "memoryUtilization",
               "ModelSetupTime": "modelSetupTime"}
SERVERLESS_KEYS = {"MemorySizeInMB": "memorySizeInMB", "MaxConcurrency": "maxConcurrency",
                   "ProvisionedConcurrency": "provisionedConcurrency"}


def _metrics(raw: dict | None) -> dict[str, float | int]:
    metrics = {}
    for key, name in METRIC_KEYS.items():
        value = (raw or {}).get(key)
        if value is not None and value == value:  # NaN means "not applicable"
            metrics[name] = value
    return metrics


def _benchmark_id(job_name: str, benchmark: dict) -> str:
    """A benchmark step has no RecommendationId: name it by IR's benchmark endpoint, or by what it measured."""
    endpoint = benchmark.get("EndpointConfiguration") or {}
    if endpoint.get("EndpointName"):
        return f"{job_name}/{endpoint['EndpointName']}"
    measured = json.dumps([endpoint, benchmark.get("ModelConfiguration") or {}], sort_keys=True, default=str)
    return f"{job_name}/benchmark-{hashlib.sha256(measured.encode()).hexdigest()[:12]}"


def _measured_key(recommendation: model.Recommendation) -> tuple[Any, ...]:
    return (recommendation.instance_type, tuple(sorted(recommendation.environment.items())),
            tuple(sorted((recommendation.serverless or {}).items())), recommendation.compilation_job_name,
            recommendation.inference_specification_name)


def _with_benchmarks(recommended: tuple[model.Recommendation, ...],
                     benchmarks: tuple[model.Recommendation, ...]) -> tuple[model.Recommendation, ...]:
    """IR's recommendations, then every measured benchmark it did not recommend: selection judges them all (IR's
    list is its own pick; ListInferenceRecommendationsJobSteps holds every benchmark it ran). A benchmark is IR's
    recommendation when both name one benchmark endpoint, or measured the same configuration."""
    endpoints = {r.endpoint_name for r in recommended if r.endpoint_name}
    keys = {_measured_key(r) for r in recommended}
    others = tuple(b for b in benchmarks
                   if not (b.endpoint_name and b.endpoint_name in endpoints) and _measured_key(b) not in keys)
    return recommended + others


def _recommendation(raw: dict, region: str | None = None, recommended: bool | None = None) -> model.Recommendation:
    """An InferenceRecommendation, or a benchmark step's InferenceBenchmark (the same fields); `recommended`: which."""
    endpoint = raw.get("EndpointConfiguration") or {}
    configuration = raw.get("ModelConfiguration") or {}
    serverless = endpoint.get("ServerlessConfig")
    metrics = _metrics(raw.get("Metrics"))
    instance_type, count = endpoint.get("InstanceType"), endpoint.get("InitialInstanceCount") or 1
    if "costPerHour" not in metrics and instance_type:
        # SageMaker leaves cost out in some results; the bundled catalog knows its own region's prices.
        quote = pricing.price_per_hour(instance_type, region=region)
        if quote.price is not None:
            metrics["costPerHour"] = round(quote.price * count, 6)
    return model.Recommendation(
        recommendation_id=raw.get("RecommendationId") or endpoint.get("EndpointName", ""),
        instance_type=instance_type,
        initial_instance_count=endpoint.get("InitialInstanceCount"),
        environment=_environment(configuration),
        metrics=metrics,
        serverless={SERVERLESS_KEYS[k]: v for k, v in serverless.items()} if serverless else None,
        invocation_start=raw.get("InvocationStartTime"),
        invocation_end=raw.get("InvocationEndTime"),
        inference_specification_name=configuration.get("InferenceSpecificationName"),
        compilation_job_name=configuration.get("CompilationJobName"),
        endpoint_name=endpoint.get("EndpointName"),
        variant_name=endpoint.get("VariantName"),
        recommended=recommended,
    )


def _scaling_subject(request: Mapping[str, Any]) -> str:
    which = (f"recommendation {request['RecommendationId']}" if "RecommendationId" in request
             else f"benchmark endpoint {request.get('EndpointName')}")
    return f"{which} of job {request['InferenceRecommendationsJobName']}"


def _scaling_refusal(error: botocore.exceptions.ClientError, classified: base.Rejected,
                     request: Mapping[str, Any]) -> base.Rejected:
    """A refused GetScalingConfigurationRecommendation in the words of what went wrong (the service's message is
    quoted): a job that is not completed, a recommendation or endpoint the job does not have, or classify's."""
    code = _error_code(error)
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    subject = _scaling_subject(request)
    if code == "ValidationException" and NOT_COMPLETED_MESSAGE.search(message):
        return base.Rejected("JobNotCompleted", f"SageMaker recommends scaling only for a completed job ({subject}): "
                             f"{message}", retryable_later=False)
    if code == "ResourceNotFound" or (code == "ValidationException" and UNKNOWN_RECOMMENDATION_MESSAGE.search(message)):
        return base.Rejected("RecommendationNotFound", f"SageMaker does not know the {subject}: {message}",
                             retryable_later=False)
    return dataclasses.replace(classified, message=f"{subject}: {classified.message}")


def _scaling(response: Mapping[str, Any], call: base.ScalingCall, source: str) -> model.Scaling:
    """GetScalingConfigurationRecommendation's answer as status.best.scaling keeps it."""
    dynamic = response.get("DynamicScalingConfiguration") or {}
    metric = response.get("Metric") or {}
    derivation = f"{translate.SCALING_OPERATION} for the {_scaling_subject(call.request)}"
    if dynamic.get("MinCapacity") is None or dynamic.get("MaxCapacity") is None:
        return model.Scaling(call.objective, source, derivation, refused=model.ScalingRefusal(
            "NoRecommendation", f"SageMaker answered {derivation} without a minimum and maximum capacity"))
    policies = []
    for policy in dynamic.get("ScalingPolicies") or ():
        tracking = policy.get("TargetTracking") or {}
        if tracking.get("TargetValue") is None:
            continue  # a union member this operator does not know, or a policy without a target: nothing to track
        specification = tracking.get("MetricSpecification") or {}
        custom = specification.get("Customized")
        policies.append(model.TargetTrackingPolicy(
            float(tracking["TargetValue"]), (specification.get("Predefined") or {}).get("PredefinedMetricType"),
            model.CustomizedMetric(custom.get("MetricName"), custom.get("Namespace"), custom.get("Statistic"))
            if custom else None))
    return model.Scaling(
        call.objective, source, derivation, min_capacity=dynamic["MinCapacity"], max_capacity=dynamic["MaxCapacity"],
        scale_in_cooldown=dynamic.get("ScaleInCooldown"), scale_out_cooldown=dynamic.get("ScaleOutCooldown"),
        policies=tuple(policies[:MAX_SCALING_POLICIES]), invocations_per_instance=metric.get("InvocationsPerInstance"),
        model_latency=metric.get("ModelLatency"))


class SageMakerBackend:
    def __init__(self, region: str | None, rate_limiter: RateLimiter = RATE_LIMITER):
        self.region = region_for(region)
        self.rate_limiter = rate_limiter

    def _call(self, operation: str, **kwargs):
        token = _call_limiter.set(self.rate_limiter)
        try:
            response = getattr(client_for(self.region), operation)(**kwargs)
        except botocore.exceptions.ClientError as error:
            metrics.SAGEMAKER_CALLS.labels(operation, _error_code(error) or "ClientError").inc()
            raise
        except botocore.exceptions.BotoCoreError as error:
            metrics.SAGEMAKER_CALLS.labels(operation, type(error).__name__).inc()
            raise
        finally:
            _call_limiter.reset(token)
        metrics.SAGEMAKER_CALLS.labels(operation, "ok").inc()
        return response

    def _translate_errors(self, call: Callable[[], Any]):
        try:
            return call()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            classified = classify(error)
            if isinstance(classified, base.TransientBackendError):
                raise classified from error
            raise base.RejectedError(classified) from error

    # -- the Backend interface -------------------------------------------------------------------------------
    def unsendable(self) -> base.Rejected | None:
        if credentials_missing():
            refusal = classify(botocore.exceptions.NoCredentialsError())
            assert isinstance(refusal, base.Rejected)
            return refusal
        return None

    def submit(self, plan: base.JobPlan, owner: model.Owner) -> base.SubmitResult:
        try:
            response = self._call("create_inference_recommendations_job", **plan.request)
            return base.Submitted(job_arn=response["JobArn"])
        except botocore.exceptions.ClientError as error:
            if _error_code(error) != "ResourceInUse":
                classified = classify(error)
                if isinstance(classified, base.TransientBackendError):
                    raise classified from error
                return classified
        except botocore.exceptions.BotoCoreError as error:
            classified = classify(error)
            if isinstance(classified, base.TransientBackendError):
                raise classified from error
            return classified
        # The name is taken: ours from an earlier attempt (a restart between Create and the status write), or not.
        snapshot = self.describe(plan.job_name)
        if snapshot is None:
            raise base.TransientBackendError(f"{plan.job_name} is in use but cannot be described yet")
        tags = self._translate_errors(lambda: self._call("list_tags", ResourceArn=snapshot.job_arn, MaxResults=100))
        found = {tag["Key"]: tag["Value"] for tag in tags.get("Tags", ())}
        expected = dict(zip(OWNER_TAG_KEYS, (owner.namespace, owner.name, owner.uid)))
        if all(found.get(key) == value for key, value in expected.items()):
            return base.Adopted(snapshot)
        return base.NameTaken(f"a SageMaker job named {plan.job_name} exists and its tags do not name this "
                              f"RightsizeJob (uid {owner.uid}); rename the RightsizeJob or delete that job's owner")

    def describe(self, job_name: str) -> model.JobSnapshot | None:
        try:
            raw = self._translate_errors(
                lambda: self._call("describe_inference_recommendations_job", JobName=job_name))
        except base.RejectedError as error:
            if error.rejected.reason == "ResourceNotFound":
                return None
            raise
        steps, benchmarks = self._steps(job_name)
        return model.JobSnapshot(
            job_name=raw["JobName"], status=model.JobStatus(raw["Status"]), job_arn=raw.get("JobArn"),
            failure_reason=raw.get("FailureReason"), creation_time=raw.get("CreationTime"),
            completion_time=raw.get("CompletionTime"),
            recommendations=_with_benchmarks(
                tuple(_recommendation(r, self.region, recommended=True)
                      for r in raw.get("InferenceRecommendations") or ()), benchmarks),
            steps=steps,
            endpoint_performances=tuple(
                model.EndpointPerformance(p["EndpointInfo"]["EndpointName"], p["Metrics"]["MaxInvocations"],
                                         p["Metrics"]["ModelLatency"])
                for p in raw.get("EndpointPerformances") or ()),
        )

    def _steps(self, job_name: str) -> tuple[model.StepSummary, tuple[model.Recommendation, ...]]:
        """The benchmark steps counted by status with their failures, and every measured benchmark as a row."""
        by_status: dict[str, int] = {}
        failures: list[model.StepFailure] = []
        benchmarks: list[model.Recommendation] = []
        token = None
        for _page in range(MAX_STEP_PAGES):
            kwargs = {"JobName": job_name, "MaxResults": 100, **({"NextToken": token} if token else {})}
            page = self._translate_errors(lambda: self._call("list_inference_recommendations_job_steps", **kwargs))
            for step in page.get("Steps", ()):
                by_status[step["Status"]] = by_status.get(step["Status"], 0) + 1
                benchmark = step.get("InferenceBenchmark") or {}
                if step["Status"] == model.JobStatus.FAILED:
                    failures.append(model.StepFailure(
                        instance_type=(benchmark.get("EndpointConfiguration") or {}).get("InstanceType"),
                        environment=_environment(benchmark.get("ModelConfiguration")),
                        failure_reason=benchmark.get("FailureReason") or "no reason given"))
                elif step["Status"] == model.JobStatus.COMPLETED and benchmark.get("Metrics"):
                    benchmarks.append(_recommendation(
                        {**benchmark, "RecommendationId": _benchmark_id(job_name, benchmark)}, self.region,
                        recommended=False))
            token = page.get("NextToken")
            if not token:
                break
        return (model.StepSummary(total=sum(by_status.values()), by_status=by_status, failures=tuple(failures)),
                tuple(benchmarks))

    def recommend_scaling(self, call: base.ScalingCall) -> model.Scaling:
        try:
            response = self._call("get_scaling_configuration_recommendation", **call.request)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            classified = classify(error)
            if isinstance(classified, base.TransientBackendError):
                raise classified from error
            if isinstance(error, botocore.exceptions.ClientError):
                classified = _scaling_refusal(error, classified, call.request)
            raise base.RejectedError(classified) from error
        return _scaling(response, call, "SageMaker")

    def persisted(self, snapshot: model.JobSnapshot) -> None:
        """Nothing to do: SageMaker keeps its own results."""

    def stop(self, job_name: str) -> base.StopDone:
        try:
            self._call("stop_inference_recommendations_job", JobName=job_name)
            return base.StopDone()
        except botocore.exceptions.ClientError as error:
            code = _error_code(error)
            if code == "ResourceNotFound":
                return base.StopDone(not_found=True)
            if code == "ValidationException" and FINISHED_JOB_MESSAGE.search(str(error)):
                return base.StopDone(already_finished=True)  # a finished job cannot be stopped: nothing to do
            classified = classify(error)
            if isinstance(classified, base.TransientBackendError):
                raise classified from error
            raise base.RejectedError(classified) from error
