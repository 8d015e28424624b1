"""How long `rightsizer cluster up` takes with the binaries cached, against the API server's own readiness.

Run: .venv/bin/python benchmarks/controlplane_start.py [--runs 5]
Each run starts etcd + kube-apiserver in a fresh state dir, waits for /readyz, then stops them. It reports
the wall time of up() and of down() per run and their medians; the first-build time is printed by
`rightsizer cluster build` on a machine without the cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rightsizer.cluster import binaries
from rightsizer.cluster.controlplane import ControlPlane


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binaries.resolve(build=True)
    ups, downs = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as state:
            plane = ControlPlane(Path(state) / "cluster")
            started = time.perf_counter()
            plane.up()
            ups.append(time.perf_counter() - started)
            started = time.perf_counter()
            plane.down()
            downs.append(time.perf_counter() - started)
        print(f"run {run + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s")
    print(f"control plane {binaries.version_label()}: median up {statistics.median(ups):.2f} s "
          f"(min {min(ups):.2f}, max {max(ups):.2f}), median down {statistics.median(downs):.2f} s")


if __name__ == "__main__":
    main()
