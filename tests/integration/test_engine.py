"""The reference scenarios through the services and real worker processes."""

from __future__ import annotations

import pytest

from runs import services
from runs.errors import ActionRefused, DefinitionChanged, IdempotencyConflict
from runs.models import Run, RunEvent, StepAttempt
from stepflow import InvalidParams, UnknownWorkflow
from tests.conftest import wait_for, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(run: Run) -> dict[str, str]:
    return dict(run.steps.values_list("name", "status"))


def ledger(redis_conn, run: Run) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k.decode(): int(v) for k, v in redis_conn.hgetall(f"ledger:{run.pk}").items()}


def test_deploy_fails_at_build_then_retry_failed_completes(start_worker, redis_conn):
    start_worker()
    redis_conn.set("fail:build", 1)
    run = services.start_run("t_deploy", {}, origin="test")
    run = wait_run(run.pk)
    assert run.status == "failed"
    assert statuses(run) == {
        "prepare": "completed",
        "build": "failed",
        "template": "pending",
        "deploy": "pending",
    }
    assert run.failed_step == "build"
    assert run.error_summary == "build failed: RuntimeError: build exploded"
    build = run.steps.get(name="build")
    assert build.error == "RuntimeError: build exploded"
    assert list(build.attempt_set.values_list("status", flat=True)) == ["failed"]
    assert "Traceback" in build.attempt_set.get().traceback

    redis_conn.delete("fail:build")
    plan = services.resume_run(run.pk, "retry_failed", origin="test")
    assert plan.will_run == ["build", "template", "deploy"]
    assert plan.kept == ["prepare"]
    run = wait_run(run.pk)
    assert run.status == "completed"
    assert run.attempt == 2
    assert run.progress == 1.0
    assert ledger(redis_conn, run) == {"prepare": 1, "build": 2, "template": 1, "deploy": 1}
    kinds = list(run.events.values_list("kind", flat=True))
    assert kinds.count("resumed") == 1
    assert kinds[-1] == "completed"


def test_continue_from_reruns_that_step_and_downstream(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_deploy", {}).pk)
    assert run.status == "completed"
    services.resume_run(run.pk, "continue_from", step="template")
    run = wait_run(run.pk)
    assert run.status == "completed"
    assert ledger(redis_conn, run) == {"prepare": 1, "build": 1, "template": 2, "deploy": 2}


def test_only_runs_one_step_and_skip_skips(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_deploy", {}).pk)
    services.resume_run(run.pk, "only", step="build")
    run = wait_run(run.pk)
    assert run.status == "completed"
    assert ledger(redis_conn, run) == {"prepare": 1, "build": 2, "template": 1, "deploy": 1}

    redis_conn.set("fail:template", 1)
    run2 = wait_run(services.start_run("t_deploy", {"note": "2"}).pk)
    assert statuses(run2)["template"] == "failed"
    redis_conn.delete("fail:template")
    services.resume_run(run2.pk, "resume", skip=["template"], origin="test")
    run2 = wait_run(run2.pk)
    assert run2.status == "completed"
    assert statuses(run2) == {
        "prepare": "completed",
        "build": "completed",
        "template": "skipped",
        "deploy": "completed",
    }
    assert run2.steps.get(name="template").skip_reason == "skipped by test"
    assert ledger(redis_conn, run2) == {"prepare": 1, "build": 1, "template": 1, "deploy": 1}


def test_diamond_runs_b_and_c_in_parallel_on_two_workers(start_worker, redis_conn):
    start_worker(name="one")
    start_worker(name="two")
    run = wait_run(services.start_run("t_diamond", {"sleep": 1.5}).pk, timeout=60)
    assert run.status == "completed"
    out = dict(run.steps.values_list("name", "output"))
    workers = dict(run.steps.values_list("name", "worker"))
    assert out["b"]["start"] < out["c"]["end"] and out["c"]["start"] < out["b"]["end"]
    assert workers["b"] != workers["c"]
    assert out["d"]["start"] >= max(out["b"]["end"], out["c"]["end"])


def test_retry_with_backoff_records_every_attempt(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_retry", {}).pk)
    assert run.status == "completed"
    attempts = list(
        StepAttempt.objects.filter(step__run=run)
        .order_by("number")
        .values_list("number", "status", "error")
    )
    assert attempts == [
        (1, "failed", "ConnectionError: attempt 1 failed"),
        (2, "failed", "ConnectionError: attempt 2 failed"),
        (3, "completed", ""),
    ]
    started = list(
        StepAttempt.objects.filter(step__run=run)
        .order_by("number")
        .values_list("started_at", flat=True)
    )
    gap1 = (started[1] - started[0]).total_seconds()
    gap2 = (started[2] - started[1]).total_seconds()
    assert gap1 >= 0.3 and gap2 >= 0.6
    assert list(run.events.filter(kind="step_retrying").values_list("message", flat=True)) == [
        "ConnectionError: attempt 1 failed — retry in 0.3s",
        "ConnectionError: attempt 2 failed — retry in 0.6s",
    ]


def test_timeout_ends_step_timed_out(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_timeout", {}).pk, timeout=30)
    assert run.status == "failed"
    step = run.steps.get()
    assert step.status == "timed_out"
    assert step.error == "timed out after 1s"
    assert run.error_summary == "sleepy timed out: timed out after 1s"


def test_rollback_in_reverse_order_of_completed_steps(start_worker, redis_conn):
    start_worker()
    redis_conn.set("fail:four", 1)
    run = wait_run(services.start_run("t_rollback", {}).pk)
    assert run.status == "failed"
    wait_for(lambda: redis_conn.llen(f"rollback:{run.pk}") == 3, 20, message="rollbacks")
    assert [x.decode() for x in redis_conn.lrange(f"rollback:{run.pk}", 0, -1)] == [
        "three",
        "two",
        "one",
    ]
    wait_for(
        lambda: run.events.filter(kind="rolled_back").count() == 3, 10, message="rollback events"
    )
    assert list(run.events.filter(kind="rolled_back").values_list("step", flat=True)) == [
        "three",
        "two",
        "one",
    ]


def test_cancel_running_run_and_refusals(start_worker, redis_conn):
    start_worker()
    run = services.start_run("t_cancel", {})
    wait_for(
        lambda: run.steps.filter(name="long_loop", status="running").exists(), 20, message="running"
    )
    with pytest.raises(ActionRefused) as exc:
        services.resume_run(run.pk, "resume")
    assert (
        exc.value.message
        == f"Run #{run.pk} is already running; wait for it to stop or cancel it first"
    )
    services.cancel_run(run.pk, reason="operator asked", origin="test")
    run = wait_run(run.pk, timeout=20)
    assert run.status == "cancelled"
    assert statuses(run) == {"long_loop": "cancelled", "after_loop": "cancelled"}
    assert run.events.get(kind="cancel_requested").message == "Cancelled by test: operator asked"
    with pytest.raises(ActionRefused) as exc:
        services.cancel_run(run.pk)
    assert (
        exc.value.message
        == f"Run #{run.pk} is already cancelled; only an active run can be cancelled"
    )
    # and a cancelled run resumes to completion
    services.resume_run(run.pk, "resume")
    wait_for(
        lambda: run.steps.filter(name="long_loop", status="running").exists(),
        20,
        message="running again",
    )
    services.cancel_run(run.pk)
    assert wait_run(run.pk, timeout=20).status == "cancelled"


def test_cancel_of_a_step_that_ignores_it_stops_the_job(start_worker, redis_conn):
    start_worker(simple=False)
    run = services.start_run("t_stubborn", {})
    wait_for(lambda: run.steps.filter(status="running").exists(), 20, message="running")
    services.cancel_run(run.pk)
    run = wait_run(run.pk, timeout=30)
    assert run.status == "cancelled"
    assert statuses(run) == {"stubborn": "cancelled"}
    assert run.events.filter(kind="stop_requested").count() == 1


def test_definition_change_needs_confirmation(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_deploy", {}).pk)
    Run.objects.filter(pk=run.pk).update(definition_hash="0000")
    with pytest.raises(DefinitionChanged) as exc:
        services.resume_run(run.pk, "continue_from", step="deploy")
    assert exc.value.message == (
        f"The definition of workflow 't_deploy' changed since run #{run.pk} started "
        "(steps edited); confirm to run with the new definition"
    )
    assert Run.objects.get(pk=run.pk).attempt == 1
    services.resume_run(run.pk, "continue_from", step="deploy", confirm_definition_change=True)
    run = wait_run(run.pk)
    assert run.status == "completed"
    event = run.events.get(kind="definition_changed")
    assert event.message == "Resumed with the new definition (confirmed)"


def test_heavy_steps_go_to_their_own_queue(start_worker, redis_conn):
    run = services.start_run("t_heavy", {})
    start_worker("default")
    with pytest.raises(AssertionError):
        wait_run(run.pk, timeout=3)
    start_worker("heavy")
    assert wait_run(run.pk).status == "completed"


def test_bad_input_is_refused_and_changes_nothing(redis_conn):
    with pytest.raises(UnknownWorkflow) as exc:
        services.start_run("nope", {})
    assert exc.value.message.startswith("No workflow named 'nope' is registered (registered: ")
    with pytest.raises(InvalidParams) as exc2:
        services.start_run("t_deploy", {"sleep": "soon", "extra": 1})
    assert exc2.value.message == (
        "Invalid parameters: extra: unknown parameter (declared: sleep, note); "
        "sleep: expected a number, got 'soon'"
    )
    assert Run.objects.count() == 0
    assert RunEvent.objects.count() == 0


def test_idempotency_key(redis_conn):
    a = services.start_run("t_deploy", {"note": "x"}, idempotency_key="k1")
    b = services.start_run("t_deploy", {"note": "x"}, idempotency_key="k1")
    assert (a.pk, a.created, b.pk, b.created) == (a.pk, True, a.pk, False)
    with pytest.raises(IdempotencyConflict) as exc:
        services.start_run("t_deploy", {"note": "y"}, idempotency_key="k1")
    assert exc.value.message == (
        f"Idempotency key 'k1' was already used for run #{a.pk} (t_deploy) "
        "with different parameters"
    )
    assert Run.objects.count() == 1


def test_cancel_interrupts_a_busy_step_in_a_simple_worker(start_worker, redis_conn):
    start_worker(simple=True)
    run = services.start_run("t_busy", {})
    wait_for(lambda: run.steps.filter(status="running").exists(), 20, message="running")
    services.cancel_run(run.pk)
    run = wait_run(run.pk, timeout=20)
    assert run.status == "cancelled"
    assert statuses(run) == {"busy": "cancelled"}
    assert list(StepAttempt.objects.filter(step__run=run).values_list("status", flat=True)) == [
        "cancelled"
    ]


def test_optional_step_failure_does_not_fail_the_run(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_optional", {}).pk)
    assert run.status == "completed"
    assert statuses(run) == {"nice_to_have": "failed", "use_it": "skipped", "carry_on": "completed"}
    assert run.error_summary == "completed with failures: nice_to_have"
    assert run.steps.get(name="use_it").skip_reason == "condition is false"
    assert ledger(redis_conn, run) == {"nice_to_have": 1, "carry_on": 1}


def test_max_parallel_keeps_ready_steps_waiting_in_order(start_worker, redis_conn):
    start_worker(name="one")
    start_worker(name="two")
    run = wait_run(services.start_run("t_limited", {"sleep": 0.5}).pk, timeout=60)
    assert run.status == "completed"
    out = dict(run.steps.values_list("name", "output"))
    spans = sorted((out[n]["start"], out[n]["end"], n) for n in "bcd")
    assert [n for _, _, n in spans] == ["b", "c", "d"]
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))  # never two at once
