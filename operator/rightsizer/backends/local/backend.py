"""The local backend: a RightsizeJob's experiment run on this host (backends/inprocess.py runs it in a thread of
the operator; its model servers and load generator are child processes pinned to their own cores). Only one
experiment runs at a time on a host, since two would measure each other: jobs waiting for the host get it in the
order they were submitted (a resumed job keeps its first submission's place)."""

from __future__ import annotations

from rightsizer import model
from rightsizer.backends import base, inprocess
from rightsizer.backends.local import experiment as experiment_module

# One experiment at a time per host: a second one would share the cores and skew both.
_host = inprocess.HostQueue()


class LocalBackend(inprocess.InProcessBackend):
    def __init__(self, time_scale: float = 1.0):
        super().__init__(self._experiment, scheme="local", queue=_host)
        self.time_scale = time_scale

    def _experiment(self, plan: base.JobPlan, owner: model.Owner, resume: base.ResumeState,
                    hooks: inprocess.Hooks) -> experiment_module.Experiment:
        # Reads the payload and the host's CPUs and memory, when the job's turn comes (its memory caps must not
        # be sized while another job's server holds memory).
        return experiment_module.Experiment(
            plan.spec, plan.job_name, time_scale=self.time_scale,
            completed={r.recommendation_id: r for r in resume.completed}, job_started_at=hooks.started_at(),
            failed=resume.failed, runs=resume.runs, on_progress=hooks.on_progress, on_outcome=hooks.on_outcome,
            on_run=hooks.on_run, before_run=hooks.before_run, baseline=plan.baseline)
