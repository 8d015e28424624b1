"""N RightsizeJobs at once: rightsizer against a bare kopf operator, side by side on one real API server.

Run: .venv/bin/python benchmarks/operator_scale.py [--jobs 1000] [--rounds 3] [--only rightsizer|bare]
     [--profile stacks.txt]

For each operator in turn (a subprocess, in its own namespace of one control plane started here): create N copies
of the seed's advanced sample (SageMaker backend, no credentials and no metadata service, so each ends at
Ready=False/NoCredentials with no network call), then watch until every object has settled. Reported per operator:
- first Ready: seconds from the first create until every object has a Ready condition;
- settled: ... until every object's Ready is no longer Unknown and its status has not changed for --quiet seconds
  (measured to the last change);
- peak RSS of the operator process (VmHWM) and its CPU seconds;
- API requests: the API server's apiserver_request_total over the run, less the benchmark's own creates.
Then the ratios rightsizer / bare; with --rounds, one pair per round (who goes first alternates) and the medians. `--steady` instead submits N SageMaker jobs that stay in progress (the
operator's clients answered at botocore's before-send: benchmarks/steady_operator.py) and reports, once all are
submitted, SageMaker requests per minute against the rate limit and the operator's CPU over --minutes. `--profile out.txt` runs rightsizer under py-spy (pip install py-spy; every
thread sampled, waiting ones too) and writes collapsed stacks.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from rightsizer import kube, schema  # noqa: E402
from rightsizer.cluster import binaries  # noqa: E402
from rightsizer.cluster.controlplane import ControlPlane  # noqa: E402

SAMPLE = ROOT / "manifests" / "samples" / "fraud-advanced.yaml"
BARE = ROOT / "benchmarks" / "bare_operator.py"
RATIOS = ("first_ready", "settled", "rss_mib", "cpu_s", "requests")


def api_requests(api: client.ApiClient) -> collections.Counter[str]:
    """The API server's own count of the requests it has served, by verb, resource and subresource."""
    response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False,
                            _return_http_data_only=True)
    counts: collections.Counter[str] = collections.Counter()
    for line in response.data.decode().splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = " ".join(part for part in (labels.get("verb"), labels.get("resource"), labels.get("subresource"))
                           if part)
            counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


class Watcher:
    """Times, per object, its first Ready condition and its last status change (one watch: one request)."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.api, self.namespace = api, namespace
        self.first_ready: dict[str, float] = {}
        self.last_change: dict[str, float] = {}
        self.ready_status: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run_quietly, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        objects = client.CustomObjectsApi(self.api)
        seen_status: dict[str, object] = {}
        stream = watch.Watch()
        for event in stream.stream(objects.list_namespaced_custom_object, schema.GROUP, schema.VERSION,
                                   self.namespace, schema.PLURAL, timeout_seconds=3600):
            body, now = event["object"], time.perf_counter()
            name, status = body["metadata"]["name"], body.get("status") or {}
            ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
            if ready is not None:
                self.first_ready.setdefault(name, now)
                self.ready_status[name] = ready.get("status")
            if status != seen_status.get(name):
                seen_status[name] = copy.deepcopy(status)
                self.last_change[name] = now
            if self.stop.is_set():
                stream.stop()
                return

    def run_quietly(self) -> None:
        try:
            self._run()
        except Exception:  # the control plane went away at the end of the run
            if not self.stop.is_set():
                raise

    def settled(self, count: int, quiet: float) -> bool:
        now = time.perf_counter()
        return (len(self.first_ready) == count and all(s != "Unknown" for s in self.ready_status.values())
                and now - max(self.last_change.values()) >= quiet)


def operator_command(which: str, namespace: str, profile: str | None) -> list[str]:
    target = ["-m", "rightsizer.handlers"] if which == "rightsizer" else [str(BARE)]
    # py-spy samples every thread, waiting ones included (kopf runs sync handlers in a thread pool).
    prefix = ["py-spy", "record", "--idle", "--format", "raw", "--rate", "50", "-o", profile, "--"] if profile else []
    return [*prefix, sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={namespace}", *target]


def measure(which: str, api: client.ApiClient, kubeconfig: Path, jobs: int, quiet: float,
            profile: str | None, round_: int = 1) -> dict[str, float]:
    namespace = f"scale-{which}-{round_}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "operator"),
           # No cloud: no credentials anywhere, and boto3 never probes the instance-metadata address.
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    env.pop("AWS_ACCESS_KEY_ID"), env.pop("AWS_SECRET_ACCESS_KEY")
    log = tempfile.NamedTemporaryFile("w", prefix=f"scale-{which}-", suffix=".log", delete=False)
    process = subprocess.Popen(operator_command(which, namespace, profile), env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    watcher = Watcher(api, namespace)
    body = yaml.safe_load(SAMPLE.read_text())
    objects = client.CustomObjectsApi(api)
    try:
        time.sleep(3)  # the operator's startup (imports, the first list) is not what is measured
        before = api_requests(api)
        started = time.perf_counter()
        for index in range(jobs):
            item = copy.deepcopy(body)
            item["metadata"] = {"name": f"fraud-{index:04d}", "namespace": namespace}
            objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, item)
        created = time.perf_counter() - started
        deadline = time.perf_counter() + 3600
        while not watcher.settled(jobs, quiet) and time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{which} exited with {process.returncode}; see {log.name}")
            time.sleep(0.5)
        made = api_requests(api)
        made.subtract(before)
        made["POST rightsizejobs"] -= jobs  # the benchmark's own creates
        made["GET"] -= 2  # and its two metric reads
        requests = sum(made.values())
        print(f"{which} API requests: " + ", ".join(f"{key} {count}" for key, count in made.most_common()
                                                     if count > 0), flush=True)
        info = psutil.Process(process.pid)
        peak_rss = int(next(line.split()[1] for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                            if line.startswith("VmHWM:"))) * 1024
        cpu = sum(info.cpu_times()[:2])
    finally:
        watcher.stop.set()
        children = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        if profile:
            process.send_signal(signal.SIGINT)  # py-spy writes its samples on an interrupt
            process.wait(120)
        for child in children:
            child.terminate()
        process.terminate()
        process.wait(60)
        log.close()
    return {"create": created, "first_ready": max(watcher.first_ready.values()) - started,
            "settled": max(watcher.last_change.values()) - started, "rss_mib": peak_rss / 2**20,
            "cpu_s": cpu, "requests": requests}


def steady(api: client.ApiClient, kubeconfig: Path, jobs: int, minutes: float) -> None:
    """N submitted SageMaker jobs, all in progress: the operator's CPU and SageMaker requests per minute, against the
    configured rate limit, once every job is submitted."""
    namespace = "scale-steady"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    counts = Path(tempfile.mkdtemp()) / "arrivals.json"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "operator"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    per_second = float(env.get("RIGHTSIZER_SAGEMAKER_CALLS_PER_SECOND", "4"))
    burst = int(env.get("RIGHTSIZER_SAGEMAKER_BURST", "8"))
    log = tempfile.NamedTemporaryFile("w", prefix="scale-steady-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "steady_operator.py"), namespace,
                                str(counts)], env=env, stdout=log, stderr=subprocess.STDOUT)
    objects = client.CustomObjectsApi(api)
    body = yaml.safe_load(SAMPLE.read_text())
    try:
        time.sleep(3)
        started = time.perf_counter()
        for index in range(jobs):
            item = copy.deepcopy(body)
            item["metadata"] = {"name": f"fraud-{index:04d}", "namespace": namespace}
            objects.create_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL, item)
        deadline = time.perf_counter() + 3600
        while time.perf_counter() < deadline:
            listed = objects.list_namespaced_custom_object(schema.GROUP, schema.VERSION, namespace, schema.PLURAL)
            submitted = sum(1 for o in listed["items"] if (o.get("status") or {}).get("jobArn"))
            if submitted == jobs:
                break
            time.sleep(5)
        print(f"steady: {submitted} of {jobs} jobs submitted {time.perf_counter() - started:.0f} s after the first "
              f"create", flush=True)
        operator = psutil.Process(process.pid)
        cpu_before, window_start = sum(operator.cpu_times()[:2]), time.monotonic()
        time.sleep(minutes * 60)
        cpu = sum(operator.cpu_times()[:2]) - cpu_before
        time.sleep(6)  # the operator rewrites its counts every 5 s
        arrivals = json.loads(counts.read_text())
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # handlers still waiting for rate-limit tokens: not worth waiting for
            process.kill()
            process.wait(30)
        log.close()
    end = max(arrivals)
    window = [t for t in arrivals if t >= end - minutes * 60]
    busiest = max(sum(1 for t in window if start <= t < start + 60) for start in window) if window else 0
    print(f"steady: over the last {minutes:g} min, {len(window) / minutes:.0f} SageMaker requests/min "
          f"(limit {per_second * 60:.0f}/min + a burst of {burst}); busiest minute {busiest}; "
          f"{len(window) / minutes / 2 / jobs:.2f} polls per job per minute (a poll is 2 requests); "
          f"operator CPU {cpu:.1f} s ({100 * cpu / (minutes * 60):.0f} % of a core)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds without a status change = settled")
    parser.add_argument("--only", choices=("rightsizer", "bare"))
    parser.add_argument("--profile", help="run rightsizer under py-spy (on PATH), writing collapsed stacks here")
    parser.add_argument("--steady", action="store_true",
                        help="instead: N in-progress SageMaker jobs, requests per minute and CPU over --minutes")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs; the median ratios are reported too")
    args = parser.parse_args()
    binaries.resolve(build=True)
    with tempfile.TemporaryDirectory() as state:
        plane = ControlPlane(Path(state) / "cluster")
        running = plane.up()
        try:
            api = kube.api_client(running.kubeconfig)
            kube.install_crds(api)
            if args.steady:
                steady(api, running.kubeconfig, args.jobs, args.minutes)
                return
            ratios: list[dict[str, float]] = []
            for round_ in range(1, args.rounds + 1):
                results = {}
                # The first of a pair runs on a quieter API server (fewer objects stored): alternate who goes first.
                order = ("bare", "rightsizer") if round_ % 2 else ("rightsizer", "bare")
                for which in order:
                    if args.only and which != args.only:
                        continue
                    results[which] = measure(which, api, running.kubeconfig, args.jobs, args.quiet,
                                             args.profile if which == "rightsizer" else None, round_)
                    r = results[which]
                    print(f"{which}: {args.jobs} jobs created in {r['create']:.1f} s; every first Ready at "
                          f"{r['first_ready']:.1f} s, settled at {r['settled']:.1f} s; peak RSS {r['rss_mib']:.0f} "
                          f"MiB, CPU {r['cpu_s']:.1f} s, {r['requests']:.0f} API requests", flush=True)
                if len(results) == 2:
                    bare, ours = results["bare"], results["rightsizer"]
                    ratios.append({key: ours[key] / bare[key] for key in RATIOS})
                    print(f"round {round_}: rightsizer / bare: " + ", ".join(
                        f"{key} {value:.2f}x" for key, value in ratios[-1].items()), flush=True)
            if len(ratios) > 1:
                print(f"median of {len(ratios)} rounds: rightsizer / bare: " + ", ".join(
                    f"{key} {statistics.median(r[key] for r in ratios):.2f}x" for key in RATIOS))
        finally:
            plane.down()


if __name__ == "__main__":
    main()
