"""Whole-experiment time of the demo job (manifests/samples/fraud-local.yaml), run in-process without a cluster:
wall time per configuration split into model-server setup and load test, against the traffic pattern's nominal
length, in one run.

    .venv/bin/python benchmarks/demo_experiment.py [--time-scale 1.0] [--trees 300]

What `make demo` adds on top: making the model, starting the control plane (about 3 s cached) and the operator,
and the status polls.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

from rightsizer import schema, selection
from rightsizer import spec as spec_module
from rightsizer.backends.local import experiment as experiment_module
from rightsizer.local import fraud_model
from rightsizer.local.load_shape import LoadShape

SAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "samples" / "fraud-local.yaml"


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--time-scale", type=float, default=1.0)
    arguments.add_argument("--trees", type=int, default=300)
    options = arguments.parse_args()

    with tempfile.TemporaryDirectory() as work:
        started = time.monotonic()
        example = fraud_model.write_example(Path(work), trees=options.trees)
        model_seconds = time.monotonic() - started
        body = copy.deepcopy(schema.rightsize_jobs(SAMPLE.read_text())[0])
        local = body["spec"]["model"]["local"]
        local["modelUri"] = f"file://{example.model}"
        local["payload"]["path"] = str(example.payload)
        parsed = spec_module.parse(body["spec"])

        timings: dict[int, dict[str, float]] = {}

        def on_progress(progress: experiment_module.ExperimentProgress) -> None:
            if progress.configuration is None:
                return
            entry = timings.setdefault(progress.configuration.index, {"start": time.monotonic()})
            if progress.load is not None and "load" not in entry:
                entry["load"] = time.monotonic()

        def on_outcome(outcome: experiment_module.ConfigurationOutcome) -> None:
            timings.setdefault(outcome.planned.index, {"start": time.monotonic()})["end"] = time.monotonic()

        experiment = experiment_module.Experiment(parsed, "bench", time_scale=options.time_scale,
                                                  on_progress=on_progress, on_outcome=on_outcome)
        pattern = experiment_module.traffic_pattern_dict(parsed.traffic_pattern)
        nominal = LoadShape(pattern, time_scale=options.time_scale).total_duration()
        started = time.monotonic()
        outcomes = experiment.run()
        total = time.monotonic() - started

    print(f"model made in {model_seconds:.1f} s ({options.trees} trees)")
    print(f"{'configuration':<70} {'setup s':>8} {'load s':>7} {'nominal s':>9}  result")
    ran = 0
    for outcome in outcomes:
        entry = timings.get(outcome.planned.index, {})
        if outcome.planned.skipped:
            print(f"{outcome.planned.label:<70} {'-':>8} {'-':>7} {'-':>9}  skipped")
            continue
        ran += 1
        setup = entry.get("load", entry.get("end", 0)) - entry.get("start", 0)
        load = entry.get("end", 0) - entry.get("load", entry.get("end", 0))
        result = (f"{outcome.recommendation.metrics.get('maxInvocations')} /min, "
                  f"{outcome.recommendation.metrics.get('modelLatency')} ms"
                  if outcome.recommendation else f"failed: {outcome.failure_reason}")
        stop = f" ({outcome.detail.split(':')[0]})" if outcome.detail else ""
        print(f"{outcome.planned.label:<70} {setup:8.1f} {load:7.1f} {nominal:9.1f}  {result}{stop}")
    print(f"whole experiment: {total:.1f} s for {ran} configuration(s) run; nominal load "
          f"{ran * nominal:.0f} s; ratio {total / max(ran * nominal, 1e-9):.2f}")
    measured = [o.recommendation for o in outcomes if o.recommendation is not None]
    chosen = selection.select(measured, parsed.selection.objective, selection.constraints_for(parsed))
    print(f"winner: {chosen.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
