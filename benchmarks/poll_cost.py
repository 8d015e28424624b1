"""What one poll of a running SageMaker job costs the API server: the status merge patch the operator writes
versus rewriting the whole status, measured side by side on the same jobs in one run.

Run: .venv/bin/python benchmarks/poll_cost.py [--jobs 200]
For each job: a poll that changes nothing but the poll timestamps, and the poll that sees COMPLETED with the
seed's five results. Reported: bytes written per poll (patch vs full status) and reconcile() time per poll.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

from rightsizer import reconcile as core
from rightsizer import status as st
from rightsizer import model
from rightsizer.backends import base

SPEC = {"backend": "sagemaker",
        "model": {"modelPackageVersionArn": "arn:aws:sagemaker:us-east-1:111122223333:model-package/fraud/1"},
        "instanceTypes": ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge"],
        "sagemaker": {"roleArn": "arn:aws:iam::111122223333:role/IR"},
        "selection": {"constraints": {"maxModelLatencyMs": 100, "minInvocationsPerMinute": 30000}}}
RESULTS = [("ml.m5.xlarge", 0.23, 15189, 18), ("ml.m5.4xlarge", 0.922, 32628, 9), ("ml.m5.large", 0.115, 13793, 19),
           ("ml.m5.12xlarge", 2.765, 32016, 4), ("ml.m5.2xlarge", 0.461, 32427, 13)]


def drive(spec, status, observation):
    """The shell's loop without I/O: returns the final status and the bytes each write would send."""
    written, full = 0, 0
    result = None
    fields = {key: value for key, value in observation.items() if key != "answer"}
    for _ in range(8):
        outcome = core.reconcile(spec, status, core.Observation(**fields, result=result))
        if outcome.status_patch:
            updated = {k: v for k, v in {**status, **outcome.status_patch}.items() if v is not None}
            written += len(json.dumps({"status": st.merge_patch(status, updated)}))
            full += len(json.dumps({"status": updated}))
            status = updated
        effect = outcome.effect
        if effect is None:
            return status, written, full
        result = observation["answer"](effect)
    raise RuntimeError("did not converge")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    t0 = datetime.datetime(2026, 11, 29, 8, tzinfo=datetime.timezone.utc)
    rows = {"in progress": [], "completed": []}
    for index in range(args.jobs):
        owner = model.Owner("ml", f"fraud-{index}", f"uid-{index}")
        steps = model.StepSummary(total=5, by_status={"COMPLETED": 2, "IN_PROGRESS": 3})
        running = lambda name: model.JobSnapshot(name, model.JobStatus.IN_PROGRESS, job_arn=f"arn:{name}", steps=steps)
        recommendations = tuple(model.Recommendation(f"r{i}", t, 1, {"OMP_NUM_THREADS": "2"},
                                                    {"costPerHour": c, "maxInvocations": n, "modelLatency": ms})
                                for i, (t, c, n, ms) in enumerate(RESULTS))
        answers = {
            core.SubmitJob: lambda effect: base.Submitted(f"arn:{effect.plan.job_name}"),
            core.DescribeJob: lambda effect: core.JobSeen(running(effect.job_name)),
        }
        observation = {"generation": 1, "now": t0, "owner": owner,
                       "answer": lambda effect: answers[type(effect)](effect)}
        status, _, _ = drive(SPEC, {}, observation)
        for minute in (1, 2):  # the first look after submission, then a poll that changes only timestamps
            started = time.perf_counter()
            status, written, full = drive(SPEC, status, {**observation, "now": t0 + datetime.timedelta(minutes=minute)})
        rows["in progress"].append((written, full, time.perf_counter() - started))
        answers[core.DescribeJob] = lambda effect: core.JobSeen(model.JobSnapshot(
            effect.job_name, model.JobStatus.COMPLETED, job_arn=f"arn:{effect.job_name}",
            recommendations=recommendations, steps=model.StepSummary(total=5, by_status={"COMPLETED": 5})))
        started = time.perf_counter()
        status, written, full = drive(SPEC, status, {**observation, "now": t0 + datetime.timedelta(minutes=5)})
        rows["completed"].append((written, full, time.perf_counter() - started))
    for kind, measured in rows.items():
        patch = statistics.mean(m[0] for m in measured)
        full = statistics.mean(m[1] for m in measured)
        seconds = statistics.median(m[2] for m in measured)
        print(f"{kind:12s} poll: patch {patch:7.0f} B vs full status {full:7.0f} B "
              f"(ratio {full / patch:5.1f}x), reconcile {seconds * 1e3:.2f} ms median over {len(measured)} jobs")


if __name__ == "__main__":
    main()
