"""WorkerPool: hard deadlines (kill and replace), thread safety, bounded size, confinement."""

from __future__ import annotations

import threading
import time

import pytest
from k15_envs.sandbox import WorkerPool, WorkerTask

pytestmark = pytest.mark.usefixtures("linux_only")


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(size=2, task_timeout_s=1.0)
    pool.warm_up()
    yield pool
    pool.close()


def test_call_returns_value(pool):
    assert pool.call(WorkerTask.PING, {"a": [1, 2]}).value == {"a": [1, 2]}


def test_deadline_kills_and_replaces_the_worker(pool):
    start = time.monotonic()
    outcome = pool.call(WorkerTask.SLEEP, 30)
    assert outcome.status == "timeout"
    assert time.monotonic() - start < 2.5
    assert pool.call(WorkerTask.PING, 7).value == 7  # a fresh worker took its place


def test_task_errors_are_reported_not_raised(pool):
    outcome = pool.call(WorkerTask.SLEEP, "not a number")
    assert outcome.status == "error" and "TypeError" in outcome.error


def test_map_keeps_order_and_never_exceeds_size(pool):
    outcomes = pool.map(WorkerTask.PING, [(i,) for i in range(20)])
    assert [o.value for o in outcomes] == list(range(20))
    assert pool._state.live <= pool.size


def test_calls_from_many_threads(pool):
    results = [None] * 8

    def work(i):
        results[i] = pool.call(WorkerTask.SLEEP, 0.05 if i % 2 else 30, timeout_s=1.0).status

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == ["timeout", "ok"] * 4
    assert pool._state.live <= pool.size


def test_closed_pool_refuses_work():
    pool = WorkerPool(size=1, task_timeout_s=1.0)
    pool.close()
    pool.close()  # idempotent
    assert pool.call(WorkerTask.PING, 1).status == "error"


def test_pool_is_not_picklable(pool):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(pool)
