"""The crash-point sweep: for every k, the operator dies right before or right after its k-th side effect (a
SageMaker call, a promotion read or apply), a new operator starts, and the RightsizeJob must converge to what an
uninterrupted run gives — exactly one CreateInferenceRecommendationsJob per job definition, no promotion object
left over, and the same final status, timestamps aside.

Dying is played in the operator process (KopfRunner): from the crash point on, every effect and every status write
of the dead operator fails, so nothing it would have done afterwards happens, as when a process is killed; then
that operator is stopped and another one started against the same API server and the same simulated SageMaker.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from rightsizer import handlers
from rightsizer.promotion import targets
from sagemaker_sim import SimulatedInferenceRecommender, advanced_recommendations
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
