"""The SageMaker backend's policy, pure: what Inference Recommender refuses or advises against, how a job is
planned and named, and how often it is looked at."""

from __future__ import annotations

import functools

from rightsizer import pricing
from rightsizer.backends import base
from rightsizer.backends.sagemaker import translate
from rightsizer.model import (CurrentConfiguration, JobSnapshot, JobStatus, Owner, Recommendation, Scaling,
                              ScalingRefusal, baseline_recommendation_id)
from rightsizer.spec import Autoscaling, RightsizeJobSpec, configuration_count

# Documented guidance for custom load tests, which SageMaker's own published example breaks: warnings.
# https://docs.aws.amazon.com/sagemaker/latest/dg/inference-recommender-load-test.html
PHASE_USERS_RANGE = (1, 3)
PHASE_SPAWN_RATE_MAX = 3
TRAFFIC_DURATION_RANGE_SECONDS = (120, 3600)
MAX_INVOCATIONS_DOCUMENTED = 30000
RESOURCE_LIMIT_DOCUMENTED_MAX = 10
# botocore's ModelLatencyThreshold.Percentile: "Acceptable values are P95 and P99. For custom load tests, specify
# the value as P95."
CUSTOM_LOAD_TEST_PERCENTILE = "P95"
# Consecutive phases may differ by at most this many users (a documented failure cause of Advanced jobs).
PHASE_CONTINUITY_MAX_USER_JUMP = 3

DOCUMENTED_CONTAINER_VALUES = {
    "domain": ("COMPUTER_VISION", "NATURAL_LANGUAGE_PROCESSING", "MACHINE_LEARNING"),
    "task": ("IMAGE_CLASSIFICATION", "OBJECT_DETECTION", "TEXT_GENERATION", "IMAGE_SEGMENTATION", "FILL_MASK",
             "CLASSIFICATION", "REGRESSION", "OTHER"),
    "framework": ("TENSORFLOW", "PYTORCH", "XGBOOST", "SAGEMAKER-SCIKIT-LEARN"),
    "nearestModelName": ("efficientnetb7", "unet", "xgboost", "faster-rcnn-resnet101", "nasnetlarge", "vgg16",
                         "inception-v3", "mask-rcnn", "sagemaker-scikit-learn", "densenet201-gluon",
                         "resnet18v2-gluon", "xception", "densenet201", "yolov4", "resnet152", "bert-base-cased",
                         "xceptionV1-keras", "resnet50", "retinanet"),
}
# The ACK SageMaker controller's API group: the only promotion target whose endpoint Inference Recommender can run.
ACK_GROUP = "sagemaker.services.k8s.aws"
# Inference Recommender rejects burstable ml.t2 types although the API enum lists them (its troubleshooting guide).
REJECTED_INSTANCE_FAMILIES = ("ml.t2.",)

# Jobs take 45 minutes to hours: looks start at 30 s and slow to 120 s over the first hour (AWS's own SDK polls
# every 60-120 s).
FIRST_POLL_SECONDS = 30.0
MAX_POLL_SECONDS = 120.0
POLL_RAMP_SECONDS = 3600.0


@functools.cache
def instance_types() -> frozenset[str]:
    """Real-time hosting instance types, from botocore's service model (the same enum the service checks)."""
    return frozenset(translate.service_model().shape_for("ProductionVariantInstanceType").enum)


class SageMakerPolicy:
    name = "sagemaker"
    display_name = "SageMaker"
    capabilities = base.Capabilities(existing_endpoint=True, jobs_outlive_operator=True, parallel_tests=True)

    def errors(self, spec: RightsizeJobSpec) -> list[str]:
        errors: list[str] = []
        traffic = spec.traffic_pattern
        for index, (previous, following) in enumerate(zip(traffic.phases, traffic.phases[1:]) if traffic else (),
                                                      start=1):
            jump = abs(following.initial_users - previous.final_users)
            if jump > PHASE_CONTINUITY_MAX_USER_JUMP:
                errors.append(
                    f"spec.trafficPattern.phases[{index}].initialNumberOfUsers is {following.initial_users} but "
                    f"phase {index - 1} ends with {previous.final_users} users "
                    f"({previous.initial_users} + {previous.spawn_rate_per_minute}/min x "
                    f"{previous.duration_seconds} s); SageMaker allows a jump of at most "
                    f"{PHASE_CONTINUITY_MAX_USER_JUMP}")
        known = instance_types()
        for index, candidate in enumerate(spec.candidates):
            name = candidate.instance_type
            if name is None:
                continue
            if name not in known:
                errors.append(f"{spec.candidates_field}[{index}]: {name} is not a SageMaker real-time hosting "
                              "instance type")
            elif name.startswith(REJECTED_INSTANCE_FAMILIES):
                errors.append(f"{spec.candidates_field}[{index}]: Inference Recommender rejects burstable {name}")
        supported = (spec.container_config or {}).get("supportedInstanceTypes") or ()
        for index, name in enumerate(supported):
            if name not in known:
                errors.append(f"spec.containerConfig.supportedInstanceTypes[{index}]: {name} is not a SageMaker "
                              "real-time hosting instance type")
        if supported and spec.candidates:
            # The CRD refuses this too; repeated here for `rightsizer render`/`validate`, which see no API server,
            # and for objects admitted before that rule existed.
            errors.append(f"spec.containerConfig.supportedInstanceTypes and {spec.candidates_field} both name the "
                          "instance types to benchmark: give only one")
        return errors + self._baseline_errors(spec)

    @staticmethod
    def _baseline_errors(spec: RightsizeJobSpec) -> list[str]:
        """The CRD's rules on spec.baseline (for files): Inference Recommender measures a baseline only as an
        existing SageMaker endpoint, one per job."""
        if spec.baseline is None:
            return []
        errors = []
        target = spec.promotion.target if spec.promotion else None
        if target is not None and not (target.api_version.startswith(f"{ACK_GROUP}/") and target.kind == "Endpoint"):
            errors.append("spec.baseline with spec.backend: sagemaker benchmarks the target's SageMaker endpoint "
                          "(InputConfig.Endpoints): spec.promotion.target must be an ACK SageMaker Endpoint")
        if spec.model.endpoint_name:
            errors.append("spec.baseline and spec.model.endpointName both benchmark an existing endpoint, and a job "
                          "takes one (InputConfig.Endpoints): give only one")
        return errors

    def warnings(self, spec: RightsizeJobSpec) -> list[str]:
        warnings: list[str] = []
        traffic = spec.traffic_pattern
        low, high = TRAFFIC_DURATION_RANGE_SECONDS
        if traffic:
            for index, phase in enumerate(traffic.phases):
                if not PHASE_USERS_RANGE[0] <= phase.initial_users <= PHASE_USERS_RANGE[1]:
                    warnings.append(f"spec.trafficPattern.phases[{index}].initialNumberOfUsers is "
                                    f"{phase.initial_users}; SageMaker documents "
                                    f"{PHASE_USERS_RANGE[0]}-{PHASE_USERS_RANGE[1]}")
                if phase.spawn_rate_per_minute > PHASE_SPAWN_RATE_MAX:
                    warnings.append(f"spec.trafficPattern.phases[{index}].spawnRate is {phase.spawn_rate_per_minute}; "
                                    f"SageMaker documents 0-{PHASE_SPAWN_RATE_MAX} users per minute")
                if not low <= phase.duration_seconds <= high:
                    warnings.append(f"spec.trafficPattern.phases[{index}].durationInSeconds is "
                                    f"{phase.duration_seconds}; SageMaker documents {low}-{high} s")
            if traffic.stairs and not low <= traffic.stairs.duration_seconds <= high:
                warnings.append(f"spec.trafficPattern.stairs.durationInSeconds is {traffic.stairs.duration_seconds}; "
                                f"SageMaker documents {low}-{high} s")
        stopping = spec.stopping_conditions
        threshold = stopping.latency_threshold if stopping else None
        if spec.job_type == "Advanced" and threshold and threshold.percentile != CUSTOM_LOAD_TEST_PERCENTILE:
            warnings.append(f"spec.stoppingConditions.modelLatencyThresholds[0].percentile is {threshold.percentile}; "
                            f"for custom load tests (Advanced jobs) SageMaker says to specify "
                            f"{CUSTOM_LOAD_TEST_PERCENTILE}")
        if stopping and stopping.max_invocations and stopping.max_invocations > MAX_INVOCATIONS_DOCUMENTED:
            warnings.append(f"spec.stoppingConditions.maxInvocations is {stopping.max_invocations}; SageMaker "
                            f"documents 1-{MAX_INVOCATIONS_DOCUMENTED} per minute")
        for key, value in (spec.resource_limit or {}).items():
            if value > RESOURCE_LIMIT_DOCUMENTED_MAX:
                warnings.append(f"spec.resourceLimit.{key} is {value}; SageMaker documents "
                                f"1-{RESOURCE_LIMIT_DOCUMENTED_MAX}")
        max_tests = (spec.resource_limit or {}).get("maxNumberOfTests")
        configurations = configuration_count(spec)
        if max_tests and configurations > max_tests:
            warnings.append(f"the candidates make {configurations} configurations but "
                            f"spec.resourceLimit.maxNumberOfTests is {max_tests}: not every configuration will be "
                            "tested")
        for field, documented in DOCUMENTED_CONTAINER_VALUES.items():
            written = (spec.container_config or {}).get(field)
            if written is not None and written not in documented:
                warnings.append(f"spec.containerConfig.{field} {written!r} is not a documented value "
                                f"({', '.join(documented)})")
        if spec.job_type == "Advanced" and not spec.model.endpoint_name and (traffic is None or stopping is None):
            missing = " and ".join(name for name, value in (("trafficPattern", traffic),
                                                            ("stoppingConditions", stopping)) if value is None)
            warnings.append(f"an Advanced job without spec.{missing} runs with SageMaker's defaults")
        if spec.baseline is not None and spec.promotion is not None:
            warnings.append(f"spec.baseline load-tests the SageMaker endpoint of {spec.promotion.target.kind}/"
                            f"{spec.promotion.target.name} as it serves; AWS strongly recommends against running "
                            f"Inference Recommender on an endpoint that handles live traffic (it may throttle it)")
        return warnings

    def describe_job(self, spec: RightsizeJobSpec) -> str:
        if spec.model.endpoint_name:
            return f"the SageMaker {spec.job_type} job on endpoint {spec.model.endpoint_name}"
        if spec.job_type == "Default" and not spec.candidates:
            return "the SageMaker Default job (Inference Recommender picks the instance types)"
        return f"the SageMaker {spec.job_type} job of {configuration_count(spec)} configuration(s)"

    def plan(self, spec: RightsizeJobSpec, owner: Owner, generation: int, current_name: str | None,
             baseline: CurrentConfiguration | None = None) -> base.JobPlan:
        try:
            request = translate.build_request(spec, owner, generation, current_name=current_name, baseline=baseline)
        except translate.RequestInvalid as invalid:
            raise base.PlanInvalid([f"the SageMaker request would be refused: {error}"
                                    for error in invalid.errors]) from invalid
        return base.JobPlan(request["JobName"], spec, request, baseline=baseline)

    def baseline_problem(self, spec: RightsizeJobSpec, current: CurrentConfiguration) -> str | None:
        if not current.endpoint_name:
            return "the ACK Endpoint names no SageMaker endpoint (spec.endpointName) for Inference Recommender to benchmark"
        region = spec.sagemaker.get("region")
        if region and current.region and current.region != region:
            return (f"endpoint {current.endpoint_name} is in {current.region} but the job runs in {region} "
                    f"(spec.sagemaker.region): Inference Recommender benchmarks endpoints of its own region")
        if not current.instance_type:
            return f"the production variant of endpoint {current.endpoint_name} names no instance type to price"
        return None

    def baseline_outcome(self, spec: RightsizeJobSpec, job_name: str, current: CurrentConfiguration,
                         snapshot: JobSnapshot) -> base.BaselineOutcome:
        """Inference Recommender reports the existing endpoint in EndpointPerformances (throughput and latency
        only): its cost is the bundled catalog's price in the endpoint's region times its instances."""
        performance = next((p for p in snapshot.endpoint_performances if p.endpoint_name == current.endpoint_name),
                           None)
        if performance is None:
            return base.BaselineOutcome(snapshot.recommendations)
        metrics: dict[str, float | int] = {"maxInvocations": performance.max_invocations,
                                           "modelLatency": performance.model_latency}
        price = pricing.price_per_hour(current.instance_type, region=current.region or spec.sagemaker.get("region")) \
            if current.instance_type else None
        if price is not None and price.price is not None:
            metrics["costPerHour"] = round(price.price * current.instance_count, 6)
        measured = Recommendation(baseline_recommendation_id(job_name), current.instance_type, current.instance_count,
                                  dict(current.environment), metrics, endpoint_name=current.endpoint_name)
        return base.BaselineOutcome(snapshot.recommendations, measured)

    def first_poll(self, timing: base.Timing) -> float:
        return timing.seconds(FIRST_POLL_SECONDS)

    def poll_interval(self, timing: base.Timing, elapsed_seconds: float) -> float:
        ramp = min(1.0, max(0.0, elapsed_seconds) / POLL_RAMP_SECONDS)
        return timing.seconds(FIRST_POLL_SECONDS + (MAX_POLL_SECONDS - FIRST_POLL_SECONDS) * ramp)

    def scaling(self, spec: RightsizeJobSpec, objective: Autoscaling, job_name: str, job_status: JobStatus | None,
                best: Recommendation) -> Scaling | base.ScalingCall:
        # GetScalingConfigurationRecommendation takes "a previously completed Inference Recommender job": a stopped
        # job's partial results are refused here rather than by the service.
        if job_status != JobStatus.COMPLETED:
            return Scaling(objective, self.display_name, refused=ScalingRefusal(
                "JobNotCompleted", f"job {job_name} is {job_status}: SageMaker recommends scaling only for a "
                                   f"completed Inference Recommender job"))
        try:
            return base.ScalingCall(objective, translate.scaling_request(job_name, best, objective))
        except translate.RequestInvalid as invalid:
            return Scaling(objective, self.display_name, refused=ScalingRefusal(
                "InvalidRequest", f"the {translate.SCALING_OPERATION} request would be refused: {invalid}"))


POLICY = SageMakerPolicy()
