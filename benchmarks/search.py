"""spec.search Grid against Adaptive on the same job, side by side in one run: load-test seconds, load tests, wall
time, and the winner of each run (with its ties), then how often the two agree and how often each names the same
winner as its own first run.

    .venv/bin/python benchmarks/search.py --job demo --rounds 5
    .venv/bin/python benchmarks/search.py --job large --rounds 3

`demo` is manifests/samples/fraud-local.yaml (on a 2-core host its 4 local-2cpu configurations do not fit beside
the load generator and are skipped; 2 repetitions each). `large` is 3 one-CPU profiles (priced 0.05, 0.06 and
0.07 USD/h, as more memory costs more) x OMP_NUM_THREADS 1-3 x SAGEMAKER_MODEL_SERVER_WORKERS 1-3 = 27
configurations, one repetition. The strategies alternate which goes first in each round, so that a drift of the
shared machine does not land on one of them. Runs in-process, without a cluster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rightsizer import schema, selection
from rightsizer import spec as spec_module
from rightsizer.backends.local import experiment as experiment_module
from rightsizer.reference import fraud_model

SAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "samples" / "fraud-local.yaml"


def job_spec(kind: str, example: fraud_model.Example, strategy: str) -> spec_module.RightsizeJobSpec:
    body = copy.deepcopy(schema.rightsize_jobs(SAMPLE.read_text())[0])
    spec = body["spec"]
    spec["model"]["local"]["modelUri"] = f"file://{example.model}"
    spec["model"]["local"]["payload"]["path"] = str(example.payload)
    if kind == "large":
        spec["instanceTypes"] = ["local-1cpu", "local-1cpu-2gi", "local-1cpu-3gi"]
        spec["environmentParameterRanges"] = {"OMP_NUM_THREADS": ["1", "2", "3"],
                                              "SAGEMAKER_MODEL_SERVER_WORKERS": ["1", "2", "3"]}
        spec["local"]["pricePerHour"] = {"local-1cpu": 0.05, "local-1cpu-2gi": 0.06, "local-1cpu-3gi": 0.07}
        spec["local"]["repetitions"] = 1
        spec["jobDurationInSeconds"] = 3600
    spec["search"] = {"strategy": strategy}
    return spec_module.parse(spec)


def run(parsed: spec_module.RightsizeJobSpec) -> dict:
    experiment = experiment_module.Experiment(parsed, "bench")
    started = time.monotonic()
    outcomes = experiment.run()
    wall = time.monotonic() - started
    measured = [o.recommendation for o in outcomes if o.recommendation is not None]
    chosen = selection.select(measured, parsed.selection.objective, selection.constraints_for(parsed))
    label = selection.describe_configuration(chosen.best) if chosen.best else "none"
    return {"seconds": experiment.load_seconds, "tests": experiment.load_tests, "wall": wall, "winner": label,
            "ties": {selection.describe_configuration(r) for r in chosen.tied_with},
            "full": len(measured), "cut": sum(1 for o in outcomes if o.planned.skipped and o.recommendation is None
                                               and "spec.search" in (o.failure_reason or ""))}


def agree(a: dict, b: dict) -> bool:
    """The same winner, or each one's winner within the other's tie."""
    return a["winner"] == b["winner"] or a["winner"] in b["ties"] or b["winner"] in a["ties"]


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--job", choices=("demo", "large"), default="demo")
    arguments.add_argument("--rounds", type=int, default=5)
    arguments.add_argument("--trees", type=int, default=300)
    options = arguments.parse_args()

    results: dict[str, list[dict]] = {"Grid": [], "Adaptive": []}
    with tempfile.TemporaryDirectory() as work:
        example = fraud_model.write_example(Path(work), trees=options.trees)
        for number in range(options.rounds):
            order = ("Grid", "Adaptive") if number % 2 == 0 else ("Adaptive", "Grid")
            for strategy in order:
                result = run(job_spec(options.job, example, strategy))
                results[strategy].append(result)
                ties = f" (tie with {', '.join(sorted(result['ties']))})" if result["ties"] else ""
                print(f"round {number + 1} {strategy:<8}: {result['tests']:>2} load tests, {result['seconds']:6.1f} "
                      f"load-test s, {result['wall']:6.1f} s wall, {result['full']} measured in full, "
                      f"{result['cut']} cut; winner {result['winner']}{ties}", flush=True)
            grid, adaptive = results["Grid"][-1], results["Adaptive"][-1]
            print(f"round {number + 1}: adaptive/grid load-test seconds {adaptive['seconds'] / grid['seconds']:.2f}, "
                  f"winners agree: {agree(grid, adaptive)}", flush=True)

    ratios = [a["seconds"] / g["seconds"] for g, a in zip(results["Grid"], results["Adaptive"])]
    print(f"\nadaptive/grid load-test seconds per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")
    print(f"rounds where the two agree (same winner or within each other's tie): "
          f"{sum(agree(g, a) for g, a in zip(results['Grid'], results['Adaptive']))} of {options.rounds}")
    for strategy, runs in results.items():
        same = sum(agree(runs[0], other) for other in runs)
        print(f"{strategy}: winners {[r['winner'] for r in runs]}; agreeing with its first run: {same} of "
              f"{len(runs)}; load-test seconds median {statistics.median(r['seconds'] for r in runs):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
