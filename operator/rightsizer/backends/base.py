"""The small interface every backend implements, in two halves (as ACK attaches custom code at named hooks):

- `BackendPolicy`, pure: the backend's own rules and decisions — which specs it refuses or warns about, how it
  names and plans a job, how often its jobs are looked at, what it can do (`Capabilities`). The reconcile core
  asks these hooks and knows no backend by name.
- `Backend`, the imperative client: submit (idempotent by name), describe, stop. Only the shell calls it.

A backend runs one named job at a time per RightsizeJob. What it reports back is the shared vocabulary of
`rightsizer.model`.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Mapping, Protocol

from rightsizer.model import (CurrentConfiguration, JobSnapshot, JobStatus, Owner, Recommendation, Scaling,
                              StepFailure, baseline_recommendation_id)
from rightsizer.naming import job_name_for
from rightsizer.spec import Autoscaling, RightsizeJobSpec
from rightsizer.status import whole_seconds


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long to wait between looks at a job, and after problems. Every value is scaled by `factor` (tests and
    demos compress time); a backend's own intervals go through `seconds` to be scaled the same way."""

    retry_first: float = 300  # after a refusal worth retrying (permissions, quotas), doubling up to retry_max
    retry_max: float = 3600
    not_found_grace: float = 300  # a just-created job may not be visible yet (eventual consistency)
    promotion_poll: float = 30  # ACK polls SageMaker every 30 s while an endpoint updates
    promotion_retry: float = 120  # after a promotion problem that may clear by itself (missing target, conflict)
    factor: float = 1.0

    def scaled(self, factor: float) -> Timing:
        return Timing(self.retry_first * factor, self.retry_max * factor, self.not_found_grace * factor,
                      self.promotion_poll * factor, self.promotion_retry * factor, self.factor * factor)

    def seconds(self, unscaled: float) -> float:
        return unscaled * self.factor

    def after(self, now: datetime.datetime, seconds: float) -> datetime.datetime:
        return whole_seconds(now + datetime.timedelta(seconds=seconds))


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend can do, for the core's decisions and the user's messages."""

    # Benchmarks a deployed endpoint as it is (spec.model.endpointName).
    existing_endpoint: bool
    # Its jobs outlive the operator process. When not, a job the backend no longer knows after a restart is run
    # again without the configurations status already holds (ResumeState).
    jobs_outlive_operator: bool
    # Runs several configurations' load tests at once (spec.resourceLimit.maxParallelOfTests).
    parallel_tests: bool


@dataclasses.dataclass(frozen=True)
class ResumeState:
    """What status already holds of a job that must run again: not measured twice, not failed twice."""

    completed: tuple[Recommendation, ...]
    failed: tuple[StepFailure, ...]
    # When the job first got the host (None: it never did); its duration counts from then, not from submission.
    started_at: datetime.datetime | None
    runs: tuple[Recommendation, ...] = ()  # finished repetitions of configurations not complete yet
    submitted_at: datetime.datetime | None = None  # its place in a queue for the host: first come, first served


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """One job to run: its deterministic name, the parsed spec, and the backend's own request (for SageMaker the
    exact CreateInferenceRecommendationsJob arguments; a backend that runs the spec itself keeps what defines it)."""

    job_name: str
    # Not compared: the name hashes the job's definition, so the name and the request say which job this is.
    spec: RightsizeJobSpec = dataclasses.field(compare=False)
    request: Mapping[str, Any]
    resume: ResumeState | None = None
    # spec.baseline's configuration, read from the promotion target before submission; part of the name's hash.
    baseline: CurrentConfiguration | None = None


@dataclasses.dataclass(frozen=True)
class BaselineOutcome:
    """A job's results with spec.baseline's apart: the candidates, and the baseline's measurement or why the job
    did not make it (both None while it may still come)."""

    candidates: tuple[Recommendation, ...]
    measured: Recommendation | None = None
    failure_reason: str | None = None


class PlanInvalid(ValueError):
    """The backend would refuse the job as planned; the errors say why (no call is made)."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclasses.dataclass(frozen=True)
class Submitted:
    job_arn: str


@dataclasses.dataclass(frozen=True)
class Adopted:
    """The name was taken by a job whose tags name this RightsizeJob: ours, from an earlier attempt."""

    snapshot: JobSnapshot


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The backend refused the job or the call for a reason that retrying soon will not fix."""

    reason: str  # CamelCase condition reason, e.g. AccessDenied
    message: str
    retryable_later: bool  # environmental (permissions, quotas): worth another try after a long pause
    # Refused before any request left the operator (no credentials, no region): nobody refused anything yet.
    unsent: bool = False


@dataclasses.dataclass(frozen=True)
class NameTaken:
    """The name belongs to a job that is not ours (its tags name someone else)."""

    message: str


@dataclasses.dataclass(frozen=True)
class StopDone:
    already_finished: bool = False
    not_found: bool = False


SubmitResult = Submitted | Adopted | Rejected | NameTaken


@dataclasses.dataclass(frozen=True)
class ScalingCall:
    """A scaling recommendation only the backend's service can give: the exact request its client sends
    (SageMaker's GetScalingConfigurationRecommendation arguments), for the objective it answers."""

    objective: Autoscaling
    request: Mapping[str, Any]


class TransientBackendError(RuntimeError):
    """Throttling, 5xx or a lost connection that survived the client's own retries: try again later."""

    def __init__(self, message: str, throttled: bool = False):
        super().__init__(message)
        self.throttled = throttled


class RejectedError(RuntimeError):
    """A describe or stop call refused for a lasting reason (e.g. AccessDenied)."""

    def __init__(self, rejected: Rejected):
        super().__init__(rejected.message)
        self.rejected = rejected


class Backend(Protocol):
    """The imperative half: calls that leave the process (or start work in it)."""

    def submit(self, plan: JobPlan, owner: Owner) -> SubmitResult: ...

    def unsendable(self) -> Rejected | None:
        """What would refuse any call before it is sent (no credentials), known without sending one. Asked before
        a submit: a job that cannot be sent is then refused with nothing written ahead and no finalizer added."""

    def describe(self, job_name: str) -> JobSnapshot | None:
        """The job, or None when the backend does not know it."""

    def stop(self, job_name: str) -> StopDone: ...

    def recommend_scaling(self, call: ScalingCall) -> Scaling:
        """Asks the service for the scaling its policy's `scaling` hook planned as a call; raises RejectedError
        (the service refused) or TransientBackendError. Only a backend whose policy returns calls is asked."""

    def persisted(self, snapshot: JobSnapshot) -> None:
        """Status now holds what `snapshot` (from describe) reported. A backend whose results live only in the
        operator's process waits for this before its next load test, so that a crash never loses a finished one."""


class RunsTheSpecItself:
    """The plan and poll hooks of a backend whose job is the spec itself, run by the operator: named as SageMaker's
    jobs are, from the job-defining fields as written, and looked at every `poll_seconds` (a describe reads the
    operator's own memory)."""

    poll_seconds = 2.0

    def plan(self, spec: RightsizeJobSpec, owner: Owner, generation: int, current_name: str | None,
             baseline: CurrentConfiguration | None = None) -> JobPlan:
        definition = dict(spec.job_definition)
        if baseline is not None:
            definition["baselineConfiguration"] = baseline.as_definition()
        name = job_name_for(definition, owner, generation, current_name)
        return JobPlan(name, spec, {"JobName": name}, baseline=baseline)

    def first_poll(self, timing: Timing) -> float:
        return timing.seconds(self.poll_seconds)

    def poll_interval(self, timing: Timing, elapsed_seconds: float) -> float:
        return timing.seconds(self.poll_seconds)

    def baseline_outcome(self, spec: RightsizeJobSpec, job_name: str, current: CurrentConfiguration,
                         snapshot: JobSnapshot) -> BaselineOutcome:
        """The baseline runs as one more configuration, reported under baseline_recommendation_id; a failure of it
        is the step failure marked `baseline`."""
        baseline_id = baseline_recommendation_id(job_name)
        measured = next((r for r in snapshot.recommendations if r.recommendation_id == baseline_id), None)
        failure = next((f.failure_reason for f in (snapshot.steps.failures if snapshot.steps else ()) if f.baseline),
                       None)
        return BaselineOutcome(tuple(r for r in snapshot.recommendations if r.recommendation_id != baseline_id),
                               measured, failure if measured is None else None)


class BackendPolicy(Protocol):
    """The pure half: every decision the core needs from a backend. No I/O in any hook."""

    name: str  # the spec.backend value
    display_name: str  # how messages name it: "SageMaker", "the local backend"
    capabilities: Capabilities

    def errors(self, spec: RightsizeJobSpec) -> list[str]:
        """What this backend refuses in a spec the schema accepted, each naming its field."""

    def warnings(self, spec: RightsizeJobSpec) -> list[str]:
        """Documented guidance the spec breaks without making the job fail."""

    def describe_job(self, spec: RightsizeJobSpec) -> str:
        """One phrase naming what will run, for condition messages."""

    def plan(self, spec: RightsizeJobSpec, owner: Owner, generation: int, current_name: str | None,
             baseline: CurrentConfiguration | None = None) -> JobPlan:
        """The job to run, named by `rightsizer.naming` (`baseline`, spec.baseline's configuration, included);
        raises PlanInvalid when the backend would refuse it."""

    def baseline_problem(self, spec: RightsizeJobSpec, current: CurrentConfiguration) -> str | None:
        """Why this backend cannot measure `current`, read from the promotion target, as spec.baseline; None if
        it can."""

    def baseline_outcome(self, spec: RightsizeJobSpec, job_name: str, current: CurrentConfiguration,
                         snapshot: JobSnapshot) -> BaselineOutcome:
        """The snapshot's results with the baseline's apart (a backend reports it in its own way)."""

    def first_poll(self, timing: Timing) -> float:
        """Seconds from submission to the first look."""

    def poll_interval(self, timing: Timing, elapsed_seconds: float) -> float:
        """Seconds to the next look at a job that has run for `elapsed_seconds`."""

    def scaling(self, spec: RightsizeJobSpec, objective: Autoscaling, job_name: str, job_status: JobStatus | None,
                best: Recommendation) -> Scaling | ScalingCall:
        """How `best`, selected from job `job_name`, should scale for `objective` (spec.autoscaling): derived from
        what was measured, a Scaling whose `refused` says why there is none, or the call that asks the backend's
        service (carried out by the client's recommend_scaling)."""
