"""Whole-experiment time of the demo job (manifests/samples/fraud-local.yaml), run in-process without a cluster:
the wall time of all its load tests against the traffic pattern's nominal length, with each configuration's
model-server setup time and result, in one run.

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
from rightsizer.backends.local.plan import traffic_pattern_of
from rightsizer.reference import fraud_model
from rightsizer.loadtest.load_shape import LoadShape

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

        experiment = experiment_module.Experiment(parsed, "bench", time_scale=options.time_scale)
        nominal = LoadShape(traffic_pattern_of(parsed), time_scale=options.time_scale).total_duration()
        started = time.monotonic()
        outcomes = experiment.run()
        total = time.monotonic() - started

    print(f"model made in {model_seconds:.1f} s ({options.trees} trees)")
    print(f"{'configuration':<70} {'setup s':>7}  result")
    runs = 0
    for outcome in outcomes:
        if outcome.recommendation is None:
            print(f"{outcome.planned.label:<70} {'-':>7}  {'skipped' if outcome.planned.skipped else 'failed'}: "
                  f"{outcome.failure_reason}")
            continue
        runs += experiment.repetitions
        metrics = outcome.recommendation.metrics
        print(f"{outcome.planned.label:<70} {metrics.get('modelSetupTime', '-'):>7}  "
              f"{metrics.get('maxInvocations')} /min, {metrics.get('modelLatency')} ms ({outcome.detail.split(';')[0]})")
    print(f"whole experiment: {total:.1f} s for {runs} load test(s) ({experiment.repetitions} per configuration), "
          f"{total / max(runs, 1):.1f} s each with the server's start; the pattern's nominal length is {nominal:.0f} s")
    measured = [o.recommendation for o in outcomes if o.recommendation is not None]
    chosen = selection.select(measured, parsed.selection.objective, selection.constraints_for(parsed))
    print(f"winner: {chosen.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
