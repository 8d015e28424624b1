"""The per-object locks of the kopf shell: one visit at a time per object, and no lock outlives its visits."""

import threading

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
