"""Breaking things on purpose: killed workers, a flushed Redis, a restarted
PostgreSQL, poison steps. Nothing is lost; nothing is done twice beyond the
documented bounds."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from runs import services
from runs.models import Checkpoint, Run, StepAttempt
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Item marks are flushed every BATCH items in these tests: the most a kill can make
#: a step process again.
BATCH = 50
FAULT_ENV = {"STEPFLOW_ITEM_BATCH_SIZE": str(BATCH), "STEPFLOW_ITEM_FLUSH_SECONDS": "0.5"}


def db_retry(func):  # type: ignore[no-untyped-def]
    """Call func, reconnecting while the database is restarting."""
    for _ in range(100):
        try:
            return func()
        except (OperationalError, InterfaceError):
            close_old_connections()
            connection.close()
            time.sleep(0.3)
    return func()


def wait_all(run_ids: list[int], timeout: float) -> dict[int, str]:
    def finished() -> dict[int, str] | None:
        rows = dict(Run.objects.filter(pk__in=run_ids).values_list("pk", "status"))
        if all(s in ("completed", "failed", "cancelled") for s in rows.values()):
            return rows
        return None

    return wait_for(lambda: db_retry(finished), timeout, 0.3, "the runs to finish")  # type: ignore[return-value]


def ledger_counts(redis_conn, run_id: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k.decode(): int(v) for k, v in redis_conn.hgetall(f"ledger:{run_id}").items()}


def item_counts(redis_conn, run_id: int) -> dict[int, int]:  # type: ignore[no-untyped-def]
    return {int(k): int(v) for k, v in redis_conn.hgetall(f"items:{run_id}").items()}


def test_sigkill_workers_during_20_runs(start_worker, redis_conn):
    rng = random.Random(7)
    workers = [start_worker(simple=False, env=FAULT_ENV) for _ in range(2)]
    runs = [services.start_run("t_fault", {"count": 600}, origin="test").pk for _ in range(20)]
    kills = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and kills < 6:
        time.sleep(rng.uniform(1.0, 3.0))
        busy = Run.objects.filter(pk__in=runs, status="running").exists()
        if not busy:
            break
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        kills += 1
        workers.append(start_worker(simple=False, env=FAULT_ENV))  # a supervisor restarts it
    statuses = wait_all(runs, timeout=240)
    assert kills >= 1
    assert set(statuses.values()) == {"completed"}, statuses
    lost = StepAttempt.objects.filter(step__run_id__in=runs, status="worker_lost").count()
    assert lost >= 1  # the kills did hit running steps
    for run_id in runs:
        counts = item_counts(redis_conn, run_id)
        assert sorted(counts) == list(range(600)), f"run {run_id} missed items"
        items_lost = StepAttempt.objects.filter(
            step__run_id=run_id, step__name="items", status="worker_lost"
        ).count()
        again = sum(c - 1 for c in counts.values())
        assert again <= BATCH * items_lost, (run_id, again, items_lost)
        # every other step ran once, plus once more per attempt a kill interrupted
        for name, count in ledger_counts(redis_conn, run_id).items():
            interrupted = StepAttempt.objects.filter(
                step__run_id=run_id, step__name=name, status="worker_lost"
            ).count()
            assert count == 1 + interrupted, (run_id, name, count, interrupted)
        acked = int(redis_conn.get(f"ack:{run_id}") or -1)
        cursor = Checkpoint.objects.get(step__run_id=run_id, step__name="items", key="cursor")
        assert cursor.value == 599 and cursor.value >= acked


def test_redis_flushed_in_the_middle_of_10_runs(start_worker, redis_conn):
    start_worker(simple=True)
    start_worker(simple=True)
    runs = [services.start_run("t_deploy", {"sleep": 0.3, "note": str(i)}).pk for i in range(10)]
    wait_for(
        lambda: Run.objects.filter(pk__in=runs, steps__status="completed").exists(),
        20,
        message="the first steps to finish",
    )
    redis_conn.flushdb()  # every queued job, scheduled retry and worker key is gone
    statuses = wait_all(runs, timeout=120)
    assert statuses == dict.fromkeys(runs, "completed")


@pytest.mark.postgres
def test_postgresql_restarted_in_the_middle_of_runs(start_worker, redis_conn):
    if connection.vendor != "postgresql" or not shutil.which("pg_ctlcluster"):
        pytest.skip("needs a local PostgreSQL cluster this test may restart")
    versions = os.listdir("/etc/postgresql")
    start_worker(simple=True)
    start_worker(simple=False)
    runs = [services.start_run("t_fault", {"count": 300, "sleep": 0.5}).pk for _ in range(4)]
    wait_for(
        lambda: Run.objects.filter(pk__in=runs, steps__status="running").exists(),
        20,
        message="steps to run",
    )
    time.sleep(1)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"],
        check=True,
        timeout=120,
    )
    close_old_connections()
    connection.close()
    statuses = wait_all(runs, timeout=180)
    assert statuses == dict.fromkeys(runs, "completed")
    for run_id in runs:
        assert sorted(item_counts(redis_conn, run_id)) == list(range(300))


def test_poison_step_ends_failed_after_its_attempts(start_worker, redis_conn):
    start_worker(simple=False)
    run = services.start_run("t_poison", {})
    statuses = wait_all([run.pk], timeout=60)
    assert statuses == {run.pk: "failed"}
    attempts = list(
        StepAttempt.objects.filter(step__run=run).order_by("number").values_list("number", "status")
    )
    assert attempts == [(1, "worker_lost"), (2, "worker_lost"), (3, "worker_lost")]
    step = Run.objects.get(pk=run.pk).steps.get()
    assert step.status == "failed"
    assert step.error.startswith("worker lost: ")
    assert step.error.endswith(": its job process exited with status 3")
    assert ledger_counts(redis_conn, run.pk) == {"poison": 3}
