"""`rightsizer run FILE`: a backend: local RightsizeJob run in the foreground, with no cluster: a progress line
per configuration, then the results table and the winner, and optionally an HTML report with charts."""

from __future__ import annotations

import datetime
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from rightsizer import schema, selection
from rightsizer.backends import registry
from rightsizer.tools import report
from rightsizer import spec as spec_module
from rightsizer.model import StepFailure
from rightsizer.backends.local import experiment as experiment_module
from rightsizer.backends.local.plan import ConfigurationOutcome, traffic_pattern_of
from rightsizer.loadtest.load_shape import LoadShape


def _pick(path: str, name: str | None) -> dict[str, Any]:
    documents = schema.read_jobs(path)
    candidates = [document for document in documents
                  if (name and document["metadata"].get("name") == name)
                  or (not name and document["spec"].get("backend") == "local")]
    if len(candidates) > 1:
        # Say which one runs: a file of several jobs must not run one of them silently.
        names = ", ".join(str(d["metadata"].get("name", "?")) for d in candidates)
        print(f"{path}: running {candidates[0]['metadata'].get('name', '?')}, the first of {len(candidates)} "
              f"{'named ' + name if name else 'with backend: local'} ({names}); --name picks another", file=sys.stderr)
    if candidates:
        return candidates[0]
    wanted = f"RightsizeJob named {name}" if name else "RightsizeJob with backend: local"
    raise SystemExit(f"{path}: no {wanted} (backend: sagemaker jobs run in SageMaker; `rightsizer render` shows "
                     f"their request)")


def run_file(path: str, *, name: str | None = None, report_path: Path | None = None, time_scale: float = 1.0,
             stream: TextIO = sys.stdout) -> int:
    document = _pick(path, name)
    job = document["metadata"].get("name", "local")
    try:
        validated = registry.validate_file(document.get("spec") or {})
    except spec_module.InvalidSpec as invalid:
        for error in invalid.errors:
            print(f"{path}: {job}: error: {error}", file=sys.stderr)
        return 1
    parsed = validated.spec
    for warning in validated.warnings:  # before the load tests, not after them
        print(f"{path}: {job}: warning: {warning}", file=sys.stderr)
    if parsed.backend != "local":
        print(f"{path}: {job}: backend {parsed.backend} does not run here", file=sys.stderr)
        return 1
    if parsed.baseline is not None:
        # The baseline is what the promotion target serves, read from a cluster; here there is none to read.
        print(f"{path}: {job}: note: spec.baseline is not measured here (it is read from spec.promotion.target in "
              f"a cluster); only the candidates run", file=sys.stderr)

    board: report.ProgressBoard | None = None

    def on_progress(progress: experiment_module.ExperimentProgress) -> None:
        planned = progress.configuration
        if board is None or planned is None:
            return
        load = progress.load
        fraction = None
        if load is not None and shape_seconds:
            fraction = min(1.0, load.elapsed_s / shape_seconds)
        board.update(planned.index, state="running", fraction=fraction,
                     detail=report.progress_detail(load) if load else "starting the model server")
        board.draw()

    def on_outcome(outcome: ConfigurationOutcome) -> None:
        if board is None:
            return
        if outcome.recommendation is not None:
            detail = report.result_detail(outcome.load) if outcome.load else "measured"
            if (outcome.detail or "").startswith("median of"):
                detail = outcome.detail.split("; ")[0]  # repeated runs: the median's spread
            board.update(outcome.planned.index, state="done", detail=detail)
        else:
            state = "skipped" if outcome.planned.skipped else "failed"
            board.update(outcome.planned.index, state=state, detail=outcome.failure_reason or "")
        board.draw()

    try:
        experiment = experiment_module.Experiment(parsed, job, time_scale=time_scale, on_progress=on_progress,
                                                  on_outcome=on_outcome)
    except experiment_module.ExperimentError as error:
        print(f"{path}: {job}: cannot run here: {error}", file=sys.stderr)
        return 1
    shape_seconds = LoadShape(traffic_pattern_of(parsed), time_scale=time_scale).total_duration()
    board = report.ProgressBoard([p.label for p in experiment.plan], stream)
    board.note(f"{job}: {len(experiment.plan)} configuration(s), one at a time; Ctrl-C stops")
    board.draw()

    # Ctrl-C stops the load test and the server cleanly and still prints what was measured.
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: (interrupted.set(), threading.Thread(
        target=experiment.stop, daemon=True).start()))
    try:
        outcomes = experiment.run()
    finally:
        signal.signal(signal.SIGINT, previous)

    measured = [o.recommendation for o in outcomes if o.recommendation is not None]
    unmeasured = [StepFailure(o.planned.instance_type, dict(o.planned.environment), o.failure_reason or "")
                  for o in outcomes if o.recommendation is None]
    chosen = selection.select(measured, parsed.selection.objective, selection.constraints_for(parsed))
    print(file=stream)
    print(report.results_table(chosen, unmeasured=unmeasured), file=stream)
    if experiment.end_reason:
        print(f"ended early: {experiment.end_reason}", file=stream)
    if report_path:
        timelines = {selection.describe_configuration(o.recommendation): o.load.timeline
                     for o in outcomes if o.recommendation is not None and o.load is not None}
        threshold = parsed.stopping_conditions.latency_threshold if parsed.stopping_conditions else None
        document = report.html_report(
            f"rightsizer: {job}", chosen, timelines,
            generated_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            spec_summary=validated.policy.describe_job(parsed),
            latency_threshold=threshold, unmeasured=unmeasured)
        print(f"report: {report.write_html(report_path, document)}", file=stream)
    if interrupted.is_set():
        return 130
    return 0 if chosen.best is not None else 2
