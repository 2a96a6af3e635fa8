"""Breaking queue limits and child runs on purpose: many workers freeing slots at
once, a worker killed while child runs work, Redis flushed while a parent waits."""

from __future__ import annotations

import time

import pytest

from runs import engine, services
from runs.models import QueueLimit, Run, RunEvent, StepAttempt
from tests.conftest import wait_for
from tests.faults.test_faults import ledger_counts, wait_all

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queue_limit_holds_with_four_workers_and_twelve_runs(start_worker, redis_conn):
    QueueLimit.objects.create(queue="gpu", limit=2)
    engine.forget_queue_limits()
    for i in range(4):
        start_worker("gpu", name=f"g{i}")
    runs = [services.start_run("t_gpu", {"sleep": 0.4}).pk for _ in range(12)]
    statuses = wait_all(runs, timeout=120)
    assert statuses == dict.fromkeys(runs, "completed")
    spans = [Run.objects.get(pk=r).steps.get().output for r in runs]
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most == 2  # the limit was used, never exceeded
    # Slots were handed out in the order the steps became ready (the runs' order).
    slots = [RunEvent.objects.get(run_id=r, kind="step_slot").pk for r in runs]
    assert slots == sorted(slots)
    assert all(ledger_counts(redis_conn, r) == {"on_gpu": 1} for r in runs)


def test_a_worker_killed_while_child_runs_work(start_worker, redis_conn):
    """The parent's step waits without a worker: the kill hits only child steps,
    whose retry policy takes over; the parent's step is never run again."""
    workers = [start_worker(simple=False, name=f"k{i}") for i in range(2)]
    run = services.start_run("t_sturdy_parent", {"count": 3, "sleep": 2.0})
    wait_for(
        lambda: Run.objects.filter(parent_id=run.pk, steps__status="running").count() >= 2,
        30,
        message="child steps running",
    )
    workers[0].kill()
    start_worker(simple=False, name="k2")  # a supervisor restarts it
    statuses = wait_all([run.pk], timeout=120)
    assert statuses == {run.pk: "completed"}
    children = list(Run.objects.filter(parent_id=run.pk).order_by("pk"))
    assert [c.status for c in children] == ["completed"] * 3
    assert ledger_counts(redis_conn, run.pk) == {"sturdy_fan": 1}
    lost = StepAttempt.objects.filter(step__run__parent_id=run.pk, status="worker_lost")
    assert lost.count() >= 1  # the kill did hit a child's step
    fan = run.steps.get()
    assert [a.status for a in fan.attempt_set.all()] == ["completed"]
    assert [c["status"] for c in fan.output["children"]] == ["completed"] * 3


def test_redis_flushed_while_a_parent_waits(start_worker, redis_conn):
    start_worker()
    run = services.start_run("t_sturdy_parent", {"count": 4, "sleep": 0.5})
    wait_for(
        lambda: run.steps.filter(status="waiting").exists(),
        30,
        message="the parent's step to wait",
    )
    time.sleep(0.2)
    redis_conn.flushdb()  # the children's queued jobs are gone
    statuses = wait_all([run.pk], timeout=120)
    assert statuses == {run.pk: "completed"}
    assert [c.status for c in Run.objects.filter(parent_id=run.pk)] == ["completed"] * 4
    fan = run.steps.get()
    assert [a.status for a in fan.attempt_set.all()] == ["completed"]
