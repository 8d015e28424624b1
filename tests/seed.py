"""The reference use case's published figures (../shared/seed-figures.md), shared by the tests as fixtures."""

from __future__ import annotations

from typing import Any

# The Default job's results (one instance each): instance type, OMP_NUM_THREADS, cost/h, max invocations/min,
# model latency ms, CPU %, memory %, model server workers.
DEFAULT_RESULTS = [
    ("ml.m5.xlarge", "2", 0.23, 15189, 18, 108.864, 1.62012, "1"),
    ("ml.m5.4xlarge", "3", 0.922, 32628, 9, 220.57001, 0.69791, "3"),
    ("ml.m5.large", "2", 0.115, 13793, 19, 106.34, 3.24398, "1"),
    ("ml.m5.12xlarge", "4", 2.765, 32016, 4, 215.32401, 0.44658, "7"),
    ("ml.m5.2xlarge", "2", 0.461, 32427, 13, 248.673, 1.43109, "3"),
]
# The Advanced job's results (initial instance count 2): type, OMP_NUM_THREADS, cost/h, invocations, latency,
# CPU %, memory %.
ADVANCED_RESULTS = [
    ("ml.m5.2xlarge", "3", 0.922, 39688, 6, 86.732803, 3.04769),
    ("ml.m5.2xlarge", "4", 0.922, 42604, 6, 177.164993, 3.05089),
    ("ml.m5.2xlarge", "5", 0.922, 39268, 6, 125.402, 3.08665),
    ("ml.m5.4xlarge", "3", 1.844, 38174, 4, 102.546997, 2.68003),
    ("ml.m5.4xlarge", "4", 1.844, 39452, 4, 141.826004, 2.68136),
    ("ml.m5.4xlarge", "5", 1.844, 40472, 4, 107.825996, 2.70936),
]


def seed_step(job_name: str) -> dict[str, Any]:
    """The first step of the write-up's ListInferenceRecommendationsJobSteps response."""
    return {
        "StepType": "BENCHMARK", "JobName": job_name, "Status": "COMPLETED",
        "InferenceBenchmark": {
            "Metrics": {"CostPerHour": 1.8359999656677246, "CostPerInference": 1.6814110495033674e-06,
                        "MaxInvocations": 18199, "ModelLatency": 40,
                        "CpuUtilization": 106.06400299072266, "MemoryUtilization": 0.3920480012893677},
            "EndpointConfiguration": {"EndpointName": "sm-epc-seed", "VariantName": "sm-epc-seed-v",
                                      "InstanceType": "ml.c5.9xlarge", "InitialInstanceCount": 1},
            "ModelConfiguration": {"EnvironmentParameters": [
                {"Key": "SAGEMAKER_MODEL_SERVER_WORKERS", "ValueType": "String", "Value": "1"},
                {"Key": "OMP_NUM_THREADS", "ValueType": "String", "Value": "28"}]}},
    }
