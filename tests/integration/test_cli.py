"""``manage.py stepflow``: every subcommand, including its error exits."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from runs import services
from runs.models import Run, StepRun
from tests.conftest import ROOT, WORKER_ENV, _database_url, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


def cli(*args: str) -> str:
    out = io.StringIO()
    call_command("stepflow", *args, stdout=out)
    return out.getvalue()


def cli_error(*args: str) -> str:
    with pytest.raises(CommandError) as exc:
        cli(*args)
    return str(exc.value)


def test_workflows_lists_registered_workflows():
    out = cli("workflows")
    assert "t_deploy  v1  4 steps" in out
    assert "    a\n    b  |  c\n    d\n" in out


def test_run_wait_status_history_and_resume(start_worker, redis_conn):
    start_worker()
    redis_conn.set("fail:template", 1)
    with pytest.raises(CommandError) as exc:
        cli("run", "t_deploy", "--param", "note=cli", "--wait")
    run = Run.objects.get()
    assert str(exc.value) == f"Run #{run.pk} failed"
    assert run.status == "failed"

    out = cli("status", str(run.pk))
    assert out.splitlines()[0] == f"Run #{run.pk} t_deploy  ✕ failed  57%  attempt 1"
    assert "  error: template failed: RuntimeError: template exploded" in out
    line = "  ✕ template             failed     1 attempt(s)  RuntimeError: template exploded"
    assert line in out

    hist = cli("history", "--workflow", "t_deploy", "--status", "failed")
    assert hist.startswith(f"#{run.pk:<6} t_deploy")
    assert cli("history", "--status", "completed") == "No runs.\n"

    redis_conn.delete("fail:template")
    out = cli("resume", str(run.pk), "--retry-failed", "--wait")
    assert out.startswith(
        f"Run #{run.pk} resumed. Will run template, deploy. Keeps prepare, build.\n"
    )
    assert wait_run(run.pk).status == "completed"


def test_idempotent_run_and_cancel(redis_conn):
    out = cli("run", "t_deploy", "--idempotency-key", "abc")
    run = Run.objects.get()
    assert out == f"Started run #{run.pk} of t_deploy\n"
    assert cli("run", "t_deploy", "--idempotency-key", "abc") == (
        f"Run #{run.pk} already exists for that idempotency key (running)\n"
    )
    assert cli("cancel", str(run.pk), "--reason", "not needed") == f"Run #{run.pk} is cancelled\n"
    assert cli_error("cancel", str(run.pk)) == (
        f"Run #{run.pk} is already cancelled; only an active run can be cancelled"
    )


def test_errors_are_one_clear_line(redis_conn):
    assert cli_error("run", "nope").startswith("No workflow named 'nope' is registered")
    assert cli_error("run", "t_deploy", "--param", "sleep=soon") == (
        "Invalid parameters: sleep: expected a number, got 'soon'"
    )
    assert cli_error("run", "t_deploy", "--param", "novalue") == (
        "--param takes key=value, not 'novalue'"
    )
    assert cli_error("status", "999999") == "No run with id 999999"
    assert cli_error("resume", "999999") == "No run with id 999999"
    run = services.start_run("t_deploy", {})
    assert cli_error("resume", str(run.pk)) == (
        f"Run #{run.pk} is already running; wait for it to stop or cancel it first"
    )
    assert Run.objects.count() == 1


def test_error_exit_code_through_manage_py():
    env = {**os.environ, **WORKER_ENV, "DATABASE_URL": _database_url()}
    proc = subprocess.run(
        [sys.executable, "manage.py", "stepflow", "status", "424242"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "CommandError: No run with id 424242"


def test_cleanup_deletes_only_old_finished_runs(redis_conn):
    old = services.start_run("t_deploy", {"note": "old"})
    services.cancel_run(old.pk)
    active = services.start_run("t_deploy", {"note": "active"})
    Run.objects.filter(pk__in=[old.pk, active.pk]).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    recent = services.start_run("t_deploy", {"note": "recent"})
    services.cancel_run(recent.pk)
    out = cli("cleanup", "--older-than", "30")
    assert out == "Deleted 1 finished run(s) older than 30 day(s)\n"
    assert sorted(Run.objects.values_list("pk", flat=True)) == sorted([active.pk, recent.pk])
    assert not StepRun.objects.filter(run_id=old.pk).exists()


def test_recover_reports_what_it_did(redis_conn):
    assert cli("recover") == (
        "0 lost attempt(s) reaped, 0 step(s) re-enqueued, 0 run(s) advanced, "
        "0 cancelled step(s) stopped, 0 run(s) timed out, 0 waiting step(s) settled, "
        "0 waiting step(s) given a queue slot\n"
    )


def test_run_resume_finds_the_latest_unfinished_run_with_the_same_params(start_worker, redis_conn):
    start_worker()
    out = cli("run", "t_deploy", "--param", "note=auto", "--resume")
    first = Run.objects.get()
    assert out == (
        "No failed, cancelled or timed-out run of t_deploy with these parameters; "
        "starting a new one.\n"
        f"Started run #{first.pk} of t_deploy\n"
    )
    services.cancel_run(first.pk)
    other = services.start_run("t_deploy", {"note": "other"})
    services.cancel_run(other.pk)
    out = cli("run", "t_deploy", "--param", "note=auto", "--resume", "--wait")
    assert out.startswith(f"Resumed run #{first.pk} (cancelled). Will run ")
    assert wait_run(first.pk).status == "completed"
    assert Run.objects.count() == 2
    assert cli_error("run", "t_deploy", "--param", "note=other", "--continue-from", "nope") == (
        "Workflow 't_deploy' has no step named 'nope'"
    )


def test_queue_limits_from_the_command_line(redis_conn):
    from runs import engine
    from runs.models import QueueLimit

    assert cli("queues") == "No queue limits, and no steps active or waiting.\n"
    assert cli("queue-limit", "gpu", "0", "--note", "hold") == (
        "Queue gpu: at most 0 step(s) of all runs at once\n"
    )
    engine.forget_queue_limits()
    runs = [services.start_run("t_gpu", {}) for _ in range(3)]
    assert cli("queues") == "gpu                  limit 0     active 0     waiting 3\n"
    status = cli("status", str(runs[0].pk))
    assert (
        "  ◌ on_gpu               pending    0 attempt(s)  waiting for a free slot on queue gpu\n"
        in (status)
    )
    assert cli("queue-limit", "gpu", "2") == (
        "Queue gpu: at most 2 step(s) of all runs at once; 2 waiting step(s) started\n"
    )
    assert cli("queues") == "gpu                  limit 2     active 2     waiting 1\n"
    assert cli("queue-limit", "gpu", "none") == (
        "Removed the limit of queue gpu; 1 waiting step(s) started\n"
    )
    assert cli("queue-limit", "gpu", "none") == "Queue gpu had no limit\n"
    assert QueueLimit.objects.count() == 0
    for bad in ("-1", "two"):
        assert cli_error("queue-limit", "gpu", bad) == (
            f"The limit must be a whole number >= 0 or 'none', not {bad!r}"
        )
    assert QueueLimit.objects.count() == 0


def test_status_shows_child_runs_and_the_deadline(redis_conn):
    parent = services.start_run("t_deadline", {"sleep": 1})
    child = services.start_run("t_child", {"n": 1}, parent=parent)
    out = cli("status", str(parent.pk))
    assert "  deadline: " in out
    assert f"  child run #{child.pk} t_child  ● running  0%\n" in out
    assert f"  child of run #{parent.pk}\n" in cli("status", str(child.pk))


def test_run_wait_on_a_run_that_times_out(start_worker, redis_conn):
    start_worker()
    out = io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("stepflow", "run", "t_deadline", "--param", "sleep=30", "--wait", stdout=out)
    run = Run.objects.get()
    assert str(exc.value) == f"Run #{run.pk} timed out"
    text = out.getvalue()
    assert "  error: Timed out: the workflow's timeout of 2s passed\n" in text
    assert text.endswith(f"\nTo resume:\n  python manage.py stepflow resume {run.pk}\n")
