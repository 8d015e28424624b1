"""The per-object locks of the kopf shell: one visit at a time per object, and no lock outlives its visits."""

import threading

import kopf

from rightsizer import handlers


def test_two_visits_of_one_object_share_a_lock_and_take_turns():
    order: list[str] = []
    first_holds, second_asked = threading.Event(), threading.Event()

    def first() -> None:
        with handlers._lock_for("uid-1"):
            first_holds.set()
            assert second_asked.wait(10)
            order.append("first done")

    def second() -> None:
        assert first_holds.wait(10)
        lock = handlers._lock_for("uid-1")
        second_asked.set()
        with lock:
            order.append("second ran")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert order == ["first done", "second ran"]


def test_a_lock_is_gone_once_no_visit_holds_or_awaits_it():
    with handlers._lock_for("uid-2"):
        assert "uid-2" in handlers._object_locks
    # A deleted object (or one merely at rest) keeps no lock: the table does not grow with every job ever seen.
    assert "uid-2" not in handlers._object_locks
    with handlers._lock_for("uid-2"), handlers._lock_for("uid-3"):
        assert {"uid-2", "uid-3"} <= set(handlers._object_locks)
    assert not {"uid-2", "uid-3"} & set(handlers._object_locks)


def body_at(uid: str, version: str) -> kopf.Body:
    return kopf.Body({"metadata": {"name": "job", "namespace": "ns", "uid": uid, "resourceVersion": version},
                      "spec": {}, "status": {"phase": "Pending"}})


def test_a_visit_starts_from_kopfs_body_when_it_is_what_this_process_wrote_last(monkeypatch):
    reads: list[str] = []
    monkeypatch.setattr(handlers, "_fresh", lambda owner: reads.append(owner.uid) or {"read": "again"})
    # First sight: the event that brought the object is the newest anyone here knows.
    assert handlers._latest(body_at("uid-10", "5"))["status"] == {"phase": "Pending"} and reads == []
    handlers._remember({"metadata": {"uid": "uid-10", "resourceVersion": "7"}})
    # kopf hands over the very version this process wrote: no read.
    assert handlers._latest(body_at("uid-10", "7"))["metadata"]["resourceVersion"] == "7" and reads == []
    # An older event, queued while a visit wrote, or a newer one by someone else: read the object again.
    assert handlers._latest(body_at("uid-10", "6")) == {"read": "again"} and reads == ["uid-10"]


def test_the_written_versions_are_bounded(monkeypatch):
    monkeypatch.setattr(handlers, "WRITTEN_VERSIONS_KEPT", 3)
    monkeypatch.setattr(handlers, "_written_versions", type(handlers._written_versions)())
    for index in range(5):
        handlers._remember({"metadata": {"uid": f"uid-{index}", "resourceVersion": "1"}})
    handlers._remember({"metadata": {"uid": "uid-2", "resourceVersion": "2"}})  # written again: kept longest
    assert list(handlers._written_versions) == ["uid-3", "uid-4", "uid-2"]
