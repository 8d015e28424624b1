"""The crash-point sweep: for every k, the operator dies right before or right after its k-th side effect (a
SageMaker call, a promotion read or apply; for the local backend a submit, the start or the finish of a load test),
a new operator starts, and the RightsizeJob must converge to what an uninterrupted run gives — exactly one
CreateInferenceRecommendationsJob per job definition, no promotion object left over, no finished load test run
again, and the same final status, timestamps aside.

Dying is played in the operator process (KopfRunner): from the crash point on, every effect and every status write
of the dead operator fails, so nothing it would have done afterwards happens, as when a process is killed; then
that operator is stopped and another one started against the same API server and the same simulated SageMaker.
"""

from __future__ import annotations

import collections
import copy
import datetime
import re
import threading
import time
import types
import uuid

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from conftest import wait_for
from rightsizer import handlers
from rightsizer import reconcile as core
from rightsizer.backends import inprocess
from rightsizer.backends.local import backend as local_backend
from rightsizer.backends.local import experiment as experiment_module
from rightsizer.backends.local.plan import ConfigurationOutcome, endpoint_metrics
from rightsizer.loadtest.placement import GIB, HostFacts
from rightsizer.model import Recommendation, Uncertainty
from rightsizer.promotion import targets
from sagemaker_sim import SimulatedInferenceRecommender, advanced_recommendations
from test_local_operator import local_job
from test_promotion_operator import ACK, ack_status, get, install_endpoint, kinds, ours, play_controller  # noqa: F401
from test_promotion_operator import serving_crds  # noqa: F401 (fixture)
from test_sagemaker_operator import condition, create, creates, operator_args, read, sample

pytestmark = pytest.mark.cluster
# Times and what only says when: they differ between any two runs.
VOLATILE = {"lastTransitionTime", "lastPolledTime", "nextPollTime", "startTime", "completionTime",
            "invocationStartTime", "invocationEndTime", "lastAttemptTime", "startedAt", "updatedAt", "deadline",
            "appliedAt"}
# Promotion objects are named <target>-rs<hash of the RightsizeJob's uid>-<attempt>.
OBJECT_UID = re.compile(r"-rs[0-9a-f]{5,}-")


@pytest.fixture
def namespace_factory(api):
    """A fresh namespace per run of the sweep: each operator watches only its own."""
    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        return name
    return make


def wait_until(predicate, timeout: float, on_the_side=None) -> None:
    """wait_for, doing `on_the_side` (a controller the test plays) between looks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_the_side is not None:
            on_the_side()
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not converged within {timeout} s")


class SimulatedCrash(kopf.TemporaryError):
    """What the dead operator's calls meet. Temporary, with a short delay: kopf's retry note on the object is then
    what a killed process leaves (the handler to run again), not a 15 s backoff the next operator would honour."""

    def __init__(self, message: str):
        super().__init__(message, delay=0.1)


class CrashPoint:
    """Kills the operator (in effect) before or after its `index`-th side effect (1-based)."""

    def __init__(self, index: int, after: bool):
        self.index, self.after = index, after
        self.effects = 0
        self.dead = threading.Event()

    def install(self, monkeypatch) -> None:
        execute, write = handlers._execute, handlers._write_status

        def dying_execute(effect, *args, **kwargs):
            self._check()
            self.effects += 1
            if self.effects == self.index and not self.after:
                self._die()
            result = execute(effect, *args, **kwargs)
            if self.effects == self.index and self.after:
                self._die()  # the effect happened; the operator never learns its result
            return result

        def dying_write(*args, **kwargs):
            self._check()
            return write(*args, **kwargs)

        monkeypatch.setattr(handlers, "_execute", dying_execute)
        monkeypatch.setattr(handlers, "_write_status", dying_write)

    def _check(self) -> None:
        if self.dead.is_set():
            raise SimulatedCrash("this operator is dead")

    def _die(self) -> None:
        self.dead.set()
        raise SimulatedCrash(f"killed {'after' if self.after else 'before'} side effect {self.index}")


def normalized(value):
    """Status without its times: what must be equal between a crashed run and an uninterrupted one."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def without(value, names: tuple[str, ...]):
    """`value` with each of `names` replaced by <job> in every string (job names hash the owner's uid)."""
    if isinstance(value, dict):
        return {k: without(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [without(v, names) for v in value]
    if isinstance(value, str):
        for name in names:
            value = value.replace(name, "<job>")
        return OBJECT_UID.sub("-rs<uid>-", value)
    return value


def comparable(status: dict) -> dict:
    job = status.get("jobName") or ""
    status = without(normalized(copy.deepcopy(status)), (job, job.lower()) if job else ())
    for entry in status.get("conditions") or []:
        if entry["type"] == "JobSubmitted" and entry["reason"] == "JobAdopted":
            # Killed after the create and before its result was written: the next operator finds the job by its
            # name and adopts it. The only difference an interrupted run may show.
            entry["reason"], entry["message"] = "JobSubmitted", None
        elif entry["type"] == "JobSubmitted":
            entry["message"] = None
    return status


def run_once(monkeypatch, api, namespace: str, body: dict, done, crash: CrashPoint | None,
             on_the_side=None) -> tuple[dict, bool]:
    """One RightsizeJob from creation to `done`, the operator killed at `crash` and started again. Returns the
    final object and whether the crash point was reached."""
    name = body["metadata"]["name"]
    with monkeypatch.context() as patched:
        if crash is not None:
            crash.install(patched)
        with KopfRunner(operator_args(namespace)) as first:
            create(api, namespace, body)
            wait_until(lambda: (crash is not None and crash.dead.is_set()) or done(read(api, namespace, name)),
                       60, on_the_side)
        assert first.exception is None, first.output
    reached = crash is not None and crash.dead.is_set()
    if reached:
        monkeypatch.setattr(handlers, "_written_versions", collections.OrderedDict())  # a new process knows none
        with KopfRunner(operator_args(namespace)) as second:
            wait_until(lambda: done(read(api, namespace, name)), 60, on_the_side)
        assert second.exception is None, second.output
    return read(api, namespace, name), reached


def ready_with_best(body: dict | None) -> bool:
    return bool(body) and condition(body, "Ready").get("reason") == "BestSelected"


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_every_crash_point_of_a_sagemaker_job_converges_to_the_same_answer_once(api, control_plane, crd_installed,
                                                                                namespace_factory, monkeypatch,
                                                                                after):
    script = ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    reference_sim = SimulatedInferenceRecommender(script=script)
    reference_sim.install()
    reference, _ = run_once(monkeypatch, api, namespace_factory(), sample("fraud-default"), ready_with_best, None)
    assert len(creates(reference_sim)) == 1
    expected = comparable(reference["status"])
    index = 1
    while True:
        sim = SimulatedInferenceRecommender(script=script)
        sim.install()
        crash = CrashPoint(index, after)
        final, reached = run_once(monkeypatch, api, namespace_factory(), sample("fraud-default"), ready_with_best,
                                  crash)
        if not reached:
            break  # past the run's last side effect
        assert len(creates(sim)) == 1, (index, sim.calls)
        assert len(sim.jobs) == 1
        assert comparable(final["status"]) == expected, index
        index += 1
    print(f"{index - 1} crash points {'after' if after else 'before'} side effects, each converged")
    assert index > 3, "the sweep never crashed: the run had fewer side effects than expected"


class AckController:
    """Plays the ACK SageMaker controller while a test waits: our Model and EndpointConfig copies become synced, and
    an Endpoint pointed at a new config goes InService."""

    def __init__(self, kinds, namespace: str):
        self.kinds, self.namespace = kinds, namespace
        self.served = "fraud-config"

    def __call__(self) -> None:
        for kind in ("Model", "EndpointConfig"):
            for item in ours(self.kinds, kind, self.namespace):
                if not (item.get("status") or {}).get("conditions"):
                    play_controller(self.kinds[kind], self.namespace, item["metadata"]["name"], ack_status())
        endpoint = get(self.kinds["Endpoint"], self.namespace, "fraud-endpoint")
        wanted = endpoint["spec"]["endpointConfigName"]
        if wanted != self.served:
            play_controller(self.kinds["Endpoint"], self.namespace, "fraud-endpoint",
                            ack_status(endpointStatus="InService"), {targets.ACK_LAST_UPDATE_ANNOTATION: wanted})
            self.served = wanted


def promoted(body: dict | None) -> bool:
    return bool(body) and condition(body, "Promoted").get("reason") == "Promoted"


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_every_crash_point_of_an_ack_promotion_converges_with_no_object_left_over(api, control_plane, crd_installed,
                                                                                 kinds, namespace_factory,
                                                                                 monkeypatch, after):
    def job() -> dict:
        body = sample("fraud-advanced")
        body["spec"]["promotion"].update(mode="Automatic", forceConflicts=True)
        return body

    def setup() -> tuple[str, AckController]:
        namespace = namespace_factory()
        install_endpoint(kinds, namespace)
        return namespace, AckController(kinds, namespace)

    reference_sim = SimulatedInferenceRecommender(script=["COMPLETED"], results=advanced_recommendations)
    reference_sim.install()
    namespace, controller = setup()
    reference, _ = run_once(monkeypatch, api, namespace, job(), promoted, None, on_the_side=controller)
    expected = comparable(reference["status"])
    expected_objects = {kind: len(ours(kinds, kind, namespace)) for kind in ("Model", "EndpointConfig")}
    index = 1
    while True:
        sim = SimulatedInferenceRecommender(script=["COMPLETED"], results=advanced_recommendations)
        sim.install()
        namespace, controller = setup()
        crash = CrashPoint(index, after)
        final, reached = run_once(monkeypatch, api, namespace, job(), promoted, crash, on_the_side=controller)
        if not reached:
            break
        assert len(creates(sim)) == 1, index
        left = {kind: len(ours(kinds, kind, namespace)) for kind in ("Model", "EndpointConfig")}
        assert left == expected_objects, (index, left)  # no copy of a crashed attempt left behind
        endpoint = get(kinds["Endpoint"], namespace, "fraud-endpoint")
        assert endpoint["spec"]["endpointConfigName"] == final["status"]["promotion"]["current"]["endpointConfigName"]
        assert comparable(final["status"]) == expected, index
        index += 1
    print(f"{index - 1} crash points {'after' if after else 'before'} side effects, each converged")
    assert index > 5, "the sweep never crashed: the run had fewer side effects than expected"


# ---- the local backend ------------------------------------------------------------------------------------------
#
# Its experiment runs in a thread of the operator (backends/inprocess.py), so the side effects are the submit and
# each load test: its start and its finish, before the finish's result reaches status. Real load tests would make
# each k take seconds and give other figures every time, so each is answered from RECORDED_FIGURES by overriding
# Experiment._run_configuration (the seam tests/test_local_experiment.py's RecordedExperiment uses); the operator,
# the API server, status writes, the in-process registry and its durability barrier are the real ones.
# DescribeJob polls are reads whose number depends on timing: they are not crash points (they fail once dead).

# maxInvocationsPerInstance of each (OMP_NUM_THREADS, repetition): OMP_NUM_THREADS=2 wins clearly.
RECORDED_FIGURES = {"1": (100_000, 104_000), "2": (150_000, 146_000)}
REPETITIONS = 2
LOAD_TESTS = [(omp, run) for run in range(1, REPETITIONS + 1) for omp in RECORDED_FIGURES]  # interleaved
LOAD_TEST_SECONDS = 0.05  # a moment, as a real one takes: a poll may write status while it runs
RECORDED_HOST = HostFacts(cpus=(0, 1), memory_total_bytes=16 * GIB, memory_available_bytes=12 * GIB)


def local_crash_job(tmp_path) -> dict:
    payload = tmp_path / "payload.csv"
    payload.write_text("0.0,1.0\n")  # read by the experiment, sent to nobody
    files = types.SimpleNamespace(model=tmp_path / "model.ubj", payload_row=payload)  # no server starts
    body = local_job(files, name="fraud-local", omp=tuple(RECORDED_FIGURES))
    body["spec"]["local"]["repetitions"] = REPETITIONS
    return body


class Ledger:
    """What each operator did: ("first" | "second", "submit" | "start" | "finish", (OMP_NUM_THREADS, run))."""

    def __init__(self):
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str, tuple]] = []

    def note(self, operator: str, what: str, key: tuple = ()) -> None:
        with self._lock:
            self.entries.append((operator, what, key))

    def keys(self, operator: str, what: str) -> list[tuple]:
        with self._lock:
            return [key for who, did, key in self.entries if (who, did) == (operator, what)]


class LocalCrashPoint:
    """Kills the operator (in effect) before or after its `index`-th side effect (1-based): a SubmitJob or StopJob,
    or the start or the finish of a load test. Thread-safe, since the experiment runs beside the handlers: each
    effect takes its number as it begins (the submit is always 1: the experiment's thread starts inside it)."""

    def __init__(self, index: int, after: bool):
        self.index, self.after = index, after
        self.dead = threading.Event()
        self.effects: list[str] = []  # what each number was
        self._lock = threading.Lock()

    def effect(self, what: str, do, *, raise_after: bool = True):
        with self._lock:
            self._check()
            self.effects.append(what)
            number = len(self.effects)
            if number == self.index and not self.after:
                self.dead.set()
                raise SimulatedCrash(f"killed before side effect {number} ({what})")
        result = do()
        if number == self.index and self.after:
            self.dead.set()
            if raise_after:  # the effect happened; its caller never learns the result
                raise SimulatedCrash(f"killed after side effect {number} ({what})")
        return result

    def install(self, monkeypatch) -> None:
        execute, write = handlers._execute, handlers._write_status

        def dying_execute(effect, *args, **kwargs):
            if isinstance(effect, (core.SubmitJob, core.StopJob)):
                return self.effect(type(effect).__name__, lambda: execute(effect, *args, **kwargs))
            self._check()  # a DescribeJob: a read, not a crash point
            return execute(effect, *args, **kwargs)

        def dying_write(*args, **kwargs):
            self._check()
            return write(*args, **kwargs)

        poll = handlers.poll

        def dead_poll(*args, **kwargs):
            # A dead process polls nothing. (Failing instead, the poll scheduler would log a traceback and
            # retry the object until the operator stops.)
            if not self.dead.is_set():
                poll(*args, **kwargs)

        monkeypatch.setattr(handlers, "_execute", dying_execute)
        monkeypatch.setattr(handlers, "_write_status", dying_write)
        monkeypatch.setattr(handlers, "poll", dead_poll)  # what the poll scheduler calls

    def _check(self) -> None:
        if self.dead.is_set():
            raise SimulatedCrash("this operator is dead")


def recorded_experiment(ledger: Ledger, operator: str, crash: LocalCrashPoint | None):
    """The local backend's Experiment with each load test answered from RECORDED_FIGURES, noted in `ledger`."""

    def boundary(what: str, do, raise_after: bool = True):
        return do() if crash is None else crash.effect(what, do, raise_after=raise_after)

    class RecordedExperiment(experiment_module.Experiment):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "host": RECORDED_HOST})

        def _run_configuration(self, planned, deadline, probe=False):
            key = (planned.environment["OMP_NUM_THREADS"], self._run_number)
            # Dying after the start: the process dies while the load test runs; it never finishes.
            boundary(f"start {key}", lambda: ledger.note(operator, "start", key))
            started = datetime.datetime.now(datetime.timezone.utc)
            time.sleep(LOAD_TEST_SECONDS)
            per_minute = RECORDED_FIGURES[key[0]][key[1] - 1]
            count, metrics = endpoint_metrics(per_minute, None, planned.placement.price_per_hour,
                                              planned.instance_count)
            metrics.update(modelLatency=20 + key[1], modelSetupTime=1, cpuUtilization=95.5 + key[1],
                           memoryUtilization=12.25)
            outcome = ConfigurationOutcome(planned, Recommendation(
                planned.recommendation_id, planned.instance_type, count, dict(planned.environment), metrics,
                invocation_start=started, invocation_end=datetime.datetime.now(datetime.timezone.utc),
                uncertainty=Uncertainty(2.5, 4.0, runs=1, windows=3)), None, None, "recorded")
            # Dying after the finish: the experiment has the figures, status never will (every write fails).
            boundary(f"finish {key}", lambda: ledger.note(operator, "finish", key), raise_after=False)
            return outcome

    return RecordedExperiment


def as_a_new_process(monkeypatch, ledger: Ledger, operator: str, crash: LocalCrashPoint | None) -> dict:
    """What one operator process has of its own: its registry of runs and its host queue, empty at its start, and
    the recorded experiment; with `crash`, its death. Returns the registry."""
    registry: dict = {}
    monkeypatch.setattr(inprocess, "_runs", registry)
    monkeypatch.setattr(local_backend, "_host", inprocess.HostQueue())
    monkeypatch.setattr(handlers, "_written_versions", collections.OrderedDict())
    monkeypatch.setattr(experiment_module, "Experiment", recorded_experiment(ledger, operator, crash))
    execute = handlers._execute

    def noting_execute(effect, *args, **kwargs):
        result = execute(effect, *args, **kwargs)
        if isinstance(effect, core.SubmitJob):
            ledger.note(operator, "submit")
        return result

    monkeypatch.setattr(handlers, "_execute", noting_execute)
    if crash is not None:
        crash.install(monkeypatch)
    return registry


def end_with_the_process(registry: dict) -> None:
    """What a process's death does to its experiments: their threads end with it. (A dead operator's experiment
    starts no load test anyway; stopping it ends one that waits at the barrier now rather than after
    DURABLE_WAIT_S.) Fails if a thread lives on."""
    for run in list(registry.values()):
        with inprocess._runs_guard:
            run.stop_requested = True
            experiment = run.experiment
        if experiment is not None:
            experiment.stop()
        with run.durable:
            run.durable.notify_all()
        if run.queue is not None:
            run.queue.wake()
    names = {f"job {name}" for name in registry}
    wait_for(lambda: not [t for t in threading.enumerate() if t.name in names and t.is_alive()], timeout=10)


def local_job_done(body: dict | None) -> bool:
    return ready_with_best(body) and condition(body, "Succeeded").get("status") == "True"


def run_local_once(monkeypatch, api, namespace: str, body: dict,
                   crash: LocalCrashPoint | None) -> tuple[dict, Ledger, dict | None, dict]:
    """One local RightsizeJob from creation to done, the operator killed at `crash` and started again. Returns the
    final object, the ledger, the status the dead operator left (None when it did not die) and the registry of the
    operator that finished the job."""
    name = body["metadata"]["name"]
    ledger = Ledger()
    with monkeypatch.context() as patched:
        registry = as_a_new_process(patched, ledger, "first", crash)
        with KopfRunner(operator_args(namespace)) as first:
            create(api, namespace, body)
            wait_until(lambda: (crash is not None and crash.dead.is_set())
                       or local_job_done(read(api, namespace, name)), 60)
        assert first.exception is None, first.output
        end_with_the_process(registry)
    if crash is None or not crash.dead.is_set():
        return read(api, namespace, name), ledger, None, registry
    left = read(api, namespace, name).get("status") or {}
    with monkeypatch.context() as patched:
        registry = as_a_new_process(patched, ledger, "second", None)
        with KopfRunner(operator_args(namespace)) as second:
            wait_until(lambda: local_job_done(read(api, namespace, name)), 60)
        assert second.exception is None, second.output
        end_with_the_process(registry)
    return read(api, namespace, name), ledger, left, registry


def local_comparable(body: dict) -> dict:
    """comparable(), and without the namespace (status.jobArn is local:<namespace>/<job>)."""
    return without(comparable(body["status"]), (body["metadata"]["namespace"],))


def held_by(status: dict) -> set[tuple]:
    """The load tests whose results `status` holds: every run of a configuration in status.recommendations, and
    the first runs of the others in status.progress.runs."""
    held = {(row["environment"]["OMP_NUM_THREADS"], run) for row in status.get("recommendations") or []
            for run in range(1, REPETITIONS + 1)}
    runs = collections.Counter(row["environment"]["OMP_NUM_THREADS"]
                               for row in (status.get("progress") or {}).get("runs") or [])
    held |= {(omp, run) for omp, count in runs.items() for run in range(1, count + 1)}
    return held


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_every_crash_point_of_a_local_job_converges_and_runs_no_finished_load_test_again(api, control_plane,
                                                                                        crd_installed,
                                                                                        namespace_factory,
                                                                                        monkeypatch, tmp_path,
                                                                                        after):
    body = local_crash_job(tmp_path)
    reference, ledger, _, registry = run_local_once(monkeypatch, api, namespace_factory(), body, None)
    assert ledger.keys("first", "start") == ledger.keys("first", "finish") == LOAD_TESTS
    assert len(ledger.keys("first", "submit")) == 1 and len(registry) == 1
    expected = local_comparable(reference)
    assert expected["best"]["environment"] == {"OMP_NUM_THREADS": "2"}
    index = 1
    points = []
    while True:
        crash = LocalCrashPoint(index, after)
        final, ledger, left, registry = run_local_once(monkeypatch, api, namespace_factory(), body, crash)
        if left is None:
            break  # past the run's last side effect
        points.append(crash.effects[index - 1])
        where = (index, crash.effects[index - 1], ledger.entries)
        held = held_by(left)
        started, finished = ledger.keys("first", "start"), ledger.keys("first", "finish")
        again = ledger.keys("second", "start")
        assert len(set(started)) == len(started) and len(set(again)) == len(again), where
        assert held <= set(finished), where  # status holds only what finished
        assert not held & set(again), where  # a load test whose result status held never runs again
        assert held | set(again) == set(LOAD_TESTS), where  # and every other one runs
        # Run again: only what the dead operator started and status did not hold — at most the one that ran, or
        # had finished, when it died (the barrier lets none start before status holds every finished one).
        rerun = set(started) & set(again)
        assert rerun == set(started) - held and len(rerun) <= 1, where
        assert ledger.keys("second", "finish") == again, where
        # One job per operator: the new one submits it once (afresh or resumed) and its registry holds only it.
        assert len(ledger.keys("first", "submit")) <= 1 and len(ledger.keys("second", "submit")) == 1, where
        assert len(registry) == 1 and next(iter(registry.values())).error is None, where
        assert local_comparable(final) == expected, where
        index += 1
    print(f"{index - 1} crash points {'after' if after else 'before'} side effects, each converged: "
          + ", ".join(points))
    # The submit, then the start and the finish of each load test.
    assert index - 1 == 1 + 2 * len(LOAD_TESTS), points
