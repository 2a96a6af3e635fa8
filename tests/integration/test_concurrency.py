"""Concurrent duplicate requests: exactly one winner, clear messages for the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from runs import engine, services
from runs.errors import ActionRefused
from runs.models import Run, RunEvent
from stepflow.states import RunStatus, StepStatus

# Threads with connections of their own. On PostgreSQL the run's row lock (SELECT ... FOR UPDATE)
# serializes them; on SQLite, IMMEDIATE transactions do (one writer at a time): one winner
# either way.
pytestmark = [pytest.mark.django_db(transaction=True)]


def in_threads(n: int, func: Callable[[int], Any]) -> list[Any]:
    """Run func(i) in n threads released at the same moment; return results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = func(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_ten_simultaneous_submissions_with_one_key_create_one_run(redis_conn):
    results = in_threads(
        10, lambda i: services.start_run("t_deploy", {"note": "same"}, idempotency_key="pay-1")
    )
    assert [type(r).__name__ for r in results] == ["Run"] * 10
    assert len({r.pk for r in results}) == 1
    assert sorted(r.created for r in results) == [False] * 9 + [True]
    assert Run.objects.count() == 1
    assert RunEvent.objects.filter(kind="created").count() == 1
    # the first step was enqueued exactly once
    assert redis_conn.llen("rq:queue:default") == 1


def fail_run(run: Run) -> None:
    """Put a run into the failed state as a worker would have (test setup)."""
    from django.db import transaction

    with transaction.atomic():
        run = engine.lock_run(run.pk)
        steps = engine.load_steps(run)
        prepare = steps["prepare"]
        engine.set_step(prepare, StepStatus.RUNNING, attempts=1)
        engine.set_step(prepare, StepStatus.FAILED, error="RuntimeError: boom")
        engine.advance_run(run)


def test_eight_simultaneous_resumes_produce_one_resume(redis_conn):
    run = services.start_run("t_deploy", {})
    fail_run(run)
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    redis_conn.flushdb()
    results = in_threads(8, lambda i: services.resume_run(run.pk, "retry_failed", origin=f"op{i}"))
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1
    assert [type(e) for e in losers] == [ActionRefused] * 7
    assert {e.message for e in losers} == {
        f"Run #{run.pk} is already running; wait for it to stop or cancel it first"
    }
    assert RunEvent.objects.filter(run=run, kind="resumed").count() == 1
    assert Run.objects.get(pk=run.pk).attempt == 2
    assert redis_conn.llen("rq:queue:default") == 1


def test_simultaneous_cancels_and_resumes_on_one_run_resolve_cleanly(redis_conn):
    run = services.start_run("t_deploy", {})
    fail_run(run)

    def act(i: int) -> str:
        if i % 2:
            services.cancel_run(run.pk, origin=f"op{i}")
            return "cancel"
        services.resume_run(run.pk, "resume", origin=f"op{i}")
        return "resume"

    results = in_threads(8, act)
    won = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert all(isinstance(r, ActionRefused) for r in refused), refused
    # Each success was valid at its moment: the row lock serializes them, so the
    # history alternates resume, cancel, resume... and matches the winners exactly.
    kinds = list(
        RunEvent.objects.filter(run=run, kind__in=["resumed", "cancel_requested"])
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert len(kinds) == len(won)
    assert kinds == (["resumed", "cancel_requested"] * 8)[: len(kinds)]
    final = Run.objects.get(pk=run.pk)
    expected = RunStatus.RUNNING if kinds[-1] == "resumed" else RunStatus.CANCELLED
    assert final.status == expected
    assert final.attempt == 1 + kinds.count("resumed")
