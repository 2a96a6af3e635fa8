"""Run timeouts, queue limits across runs, and child runs: services and real workers."""

from __future__ import annotations

import time

import pytest

from runs import engine, services
from runs.errors import ActionRefused
from runs.models import QueueLimit, Run, RunEvent, StepAttempt, StepRun
from tests.conftest import wait_for, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

ENDED = ("completed", "failed", "cancelled", "timed_out")


def statuses(run: Run) -> dict[str, str]:
    return dict(run.steps.values_list("name", "status"))


def ledger(redis_conn, run: Run) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k.decode(): int(v) for k, v in redis_conn.hgetall(f"ledger:{run.pk}").items()}


# -- run timeout ------------------------------------------------------------------------


def test_a_run_past_its_deadline_ends_timed_out_and_can_be_resumed(start_worker, redis_conn):
    start_worker()
    started = time.monotonic()
    run = services.start_run("t_deadline", {"sleep": 30})
    assert run.deadline is not None
    assert round((run.deadline - run.started_at).total_seconds()) == 2
    run = wait_run(run.pk, ENDED, timeout=30)
    assert run.status == "timed_out"
    assert time.monotonic() - started < 15  # not the step's 30 s
    assert run.error_summary == "Timed out: the workflow's timeout of 2s passed"
    assert statuses(run) == {"patient": "cancelled", "after_patient": "cancelled"}
    kinds = list(run.events.filter(step="").values_list("kind", flat=True))
    assert kinds == ["created", "timeout", "timed_out"]
    timeout_event = run.events.get(kind="timeout")
    assert timeout_event.message == "Timed out: the workflow's timeout of 2s passed"
    attempt = StepAttempt.objects.get(step__run=run, step__name="patient")
    assert attempt.status == "cancelled"

    # Resumable like a failed run; the resume gets a new deadline.
    with pytest.raises(ActionRefused) as exc:
        services.cancel_run(run.pk)
    assert str(exc.value) == (
        f"Run #{run.pk} is already timed out; only an active run can be cancelled"
    )
    Run.objects.filter(pk=run.pk).update(params={"sleep": 0.2})
    plan = services.resume_run(run.pk)
    assert plan.reset == ["patient", "after_patient"]
    run = wait_run(run.pk, ENDED, timeout=30)
    assert run.status == "completed"
    assert run.error_summary == ""
    assert run.stop_reason == ""
    assert ledger(redis_conn, run) == {"patient": 2, "after_patient": 1}


def test_latest_unfinished_includes_timed_out_runs(redis_conn):
    run = services.start_run("t_deadline", {"sleep": 5})
    Run.objects.filter(pk=run.pk).update(status="timed_out")
    assert services.latest_unfinished("t_deadline", {"sleep": 5}).pk == run.pk


def test_the_reaper_times_out_a_run_with_nothing_running(redis_conn):
    """No worker at all: the recovery pass enforces the deadline by itself."""
    from runs.recovery import recover

    run = services.start_run("t_deadline", {"sleep": 1})
    Run.objects.filter(pk=run.pk).update(deadline=run.started_at)
    report = recover()
    assert report.timed_out == [run.pk]
    run.refresh_from_db()
    assert run.status == "timed_out"
    assert statuses(run) == {"patient": "cancelled", "after_patient": "cancelled"}


# -- queue limits -----------------------------------------------------------------------


def test_a_queue_limit_holds_ready_steps_of_all_runs_in_order(start_worker, redis_conn):
    QueueLimit.objects.create(queue="gpu", limit=1)
    engine.forget_queue_limits()
    start_worker("gpu", name="g1")
    start_worker("gpu", name="g2")
    runs = [services.start_run("t_gpu", {"sleep": 0.6}) for _ in range(3)]
    # Only one may hold the slot: the others wait, visibly.
    waiting = [r.steps.get().progress_message for r in runs[1:]]
    assert waiting == ["waiting for a free slot on queue gpu"] * 2
    done = [wait_run(r.pk, ENDED, timeout=60) for r in runs]
    assert [r.status for r in done] == ["completed"] * 3
    spans = [r.steps.get().output for r in done]
    # In the order they became ready, never two at once (two workers were free).
    assert all(spans[i]["end"] <= spans[i + 1]["start"] for i in range(2))
    for r in done[1:]:
        kinds = list(r.events.filter(step="on_gpu").values_list("kind", flat=True))
        assert kinds[:3] == ["step_waiting", "step_slot", "step_started"]
        assert r.steps.get().waiting_since is None


def test_without_a_limit_the_same_steps_overlap(start_worker, redis_conn):
    start_worker("gpu", name="g1")
    start_worker("gpu", name="g2")
    runs = [services.start_run("t_gpu", {"sleep": 1.5}) for _ in range(2)]
    a, b = (wait_run(r.pk, ENDED, timeout=60).steps.get().output for r in runs)
    assert a["start"] < b["end"] and b["start"] < a["end"]


def test_cancelling_a_run_whose_step_waits_for_a_slot(redis_conn):
    QueueLimit.objects.create(queue="gpu", limit=0)
    engine.forget_queue_limits()
    run = services.start_run("t_gpu", {})
    step = run.steps.get()
    assert (step.status, step.waiting_since is not None) == ("pending", True)
    services.cancel_run(run.pk)
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == "cancelled"
    assert (step.status, step.waiting_since, step.progress_message) == ("cancelled", None, "")


def test_raising_a_limit_lets_waiting_steps_start(redis_conn):
    from runs.recovery import dispatch_waiting

    limit = QueueLimit.objects.create(queue="gpu", limit=0)
    engine.forget_queue_limits()
    runs = [services.start_run("t_gpu", {}) for _ in range(3)]
    assert dispatch_waiting() == []
    limit.limit = 2
    limit.save()
    started = dispatch_waiting()
    assert started == [runs[0].steps.get().pk, runs[1].steps.get().pk]
    assert [r.steps.get().status for r in runs] == ["queued", "queued", "pending"]


# -- child runs -------------------------------------------------------------------------


def test_a_step_waits_for_its_child_runs_without_holding_a_worker(start_worker, redis_conn):
    start_worker()  # one worker: the children can only run if the parent step freed it
    run = wait_run(services.start_run("t_parent", {"count": 3}).pk, ENDED, timeout=60)
    assert run.status == "completed"
    children = list(Run.objects.filter(parent=run).order_by("pk"))
    assert [c.status for c in children] == ["completed"] * 3
    fan = run.steps.get(name="fan")
    assert all(c.parent_step_id == fan.pk for c in children)
    assert fan.output == {
        "asked": 3,
        "children": [
            {
                "run": c.pk,
                "workflow": "t_child",
                "status": "completed",
                "outputs": {"child_work": {"n": i * 10}},
            }
            for i, c in enumerate(children)
        ],
    }
    assert run.steps.get(name="gather").output == {"total": 30}
    kinds = list(run.events.filter(step="fan").values_list("kind", flat=True))
    assert kinds == ["step_started", "step_waiting", "step_completed"]
    assert fan.attempt_set.get().status == "completed"
    assert children[0].events.get(kind="created").message == f"Started by run #{run.pk} step fan"


def test_a_failed_child_fails_the_step_and_a_resume_reuses_the_children(start_worker, redis_conn):
    start_worker()
    redis_conn.set("fail:child-1", 1)
    run = wait_run(services.start_run("t_parent", {"count": 2}).pk, ENDED, timeout=60)
    assert run.status == "failed"
    children = list(Run.objects.filter(parent=run).order_by("pk"))
    assert [c.status for c in children] == ["completed", "failed"]
    fan = run.steps.get(name="fan")
    assert fan.status == "failed"
    assert fan.error == (
        f"child run #{children[1].pk} (t_child) failed: "
        "child_work failed: RuntimeError: child 1 exploded"
    )
    assert run.error_summary == f"fan failed: {fan.error}"

    redis_conn.delete("fail:child-1")
    services.resume_run(run.pk, "retry_failed")
    run = wait_run(run.pk, ENDED, timeout=60)
    assert run.status == "completed"
    # The same two child runs: the completed one kept, the failed one resumed.
    assert list(Run.objects.filter(parent=run).order_by("pk")) == children
    assert [ledger(redis_conn, c) for c in children] == [{"work-0": 1}, {"work-1": 2}]
    assert run.steps.get(name="gather").output == {"total": 10}


def test_cancelling_the_parent_cancels_its_children(start_worker, redis_conn):
    start_worker(name="one")
    start_worker(name="two")
    run = services.start_run("t_parent", {"count": 2, "sleep": 30})
    wait_for(
        lambda: Run.objects.filter(parent=run, steps__status="running").count() == 2,
        30,
        message="both children running",
    )
    services.cancel_run(run.pk, reason="enough")
    run = wait_run(run.pk, ENDED, timeout=30)
    assert run.status == "cancelled"
    assert statuses(run) == {"fan": "cancelled", "gather": "cancelled"}
    children = [wait_run(c.pk, ENDED, timeout=30) for c in Run.objects.filter(parent=run)]
    assert [c.status for c in children] == ["cancelled", "cancelled"]
    assert {c.events.get(kind="cancel_requested").message for c in children} == {
        f"Cancelled with its parent run #{run.pk}"
    }


def test_a_child_that_cannot_start_fails_the_attempt(start_worker, redis_conn):
    start_worker()
    run = wait_run(services.start_run("t_bad_parent", {}).pk, ENDED, timeout=30)
    assert run.status == "failed"
    step = run.steps.get()
    assert step.error == (
        "could not start its child runs: "
        "Invalid parameters: n: expected a whole number, got 'not a number'"
    )
    assert not Run.objects.filter(parent=run).exists()
    assert RunEvent.objects.filter(run=run, kind="step_failed").count() == 1


def test_a_resume_with_other_child_params_starts_new_child_runs(start_worker, redis_conn):
    start_worker()
    redis_conn.set("fail:child-1", 1)
    run = wait_run(services.start_run("t_parent", {"count": 2}).pk, ENDED, timeout=60)
    assert run.status == "failed"
    first = list(Run.objects.filter(parent=run).order_by("pk"))
    redis_conn.delete("fail:child-1")
    Run.objects.filter(pk=run.pk).update(params={"count": 2, "sleep": 0.01})
    services.resume_run(run.pk, "retry_failed")
    run = wait_run(run.pk, ENDED, timeout=60)
    assert run.status == "completed"
    children = list(Run.objects.filter(parent=run).order_by("pk"))
    assert children[:2] == first
    assert [(c.status, c.params) for c in children[2:]] == [
        ("completed", {"n": 0, "sleep": 0.01}),
        ("completed", {"n": 1, "sleep": 0.01}),
    ]
    fan = run.steps.get(name="fan")
    assert [c["run"] for c in fan.output["children"]] == [c.pk for c in children[2:]]


def test_the_recovery_pass_settles_a_waiting_step_whose_notice_was_lost(redis_conn):
    """The worker died between a child's last commit and settling the parent."""
    from runs.recovery import recover

    parent = services.start_run("t_parent", {"count": 1})
    fan = parent.steps.get(name="fan")
    child = services.start_run("t_child", {"n": 4}, parent=parent, parent_step=fan)
    StepRun.objects.filter(pk=fan.pk).update(
        status="waiting", attempts=1, waiting_for=[child.pk], output={"asked": 1}
    )
    StepAttempt.objects.create(step=fan, number=1, status="waiting", started_at=parent.created_at)
    assert recover().settled == []  # the child is still running
    Run.objects.filter(pk=child.pk).update(status="completed")
    child.steps.update(status="completed", output={"n": 40})
    assert recover().settled == [fan.pk]
    fan.refresh_from_db()
    assert fan.status == "completed"
    assert fan.output == {
        "asked": 1,
        "children": [
            {
                "run": child.pk,
                "workflow": "t_child",
                "status": "completed",
                "outputs": {"child_work": {"n": 40}},
            }
        ],
    }
    assert fan.attempt_set.get().status == "completed"
    assert parent.steps.get(name="gather").status == "queued"
    assert recover().settled == []


def test_a_parent_past_its_deadline_cancels_its_children_and_resumes_them(start_worker, redis_conn):
    start_worker(name="one")
    start_worker(name="two")
    run = services.start_run("t_parent_deadline", {"count": 2, "sleep": 30})
    run = wait_run(run.pk, ENDED, timeout=40)
    assert run.status == "timed_out"
    assert statuses(run) == {"sturdy_fan": "cancelled"}
    children = [wait_run(c.pk, ENDED, timeout=30) for c in Run.objects.filter(parent=run)]
    assert [c.status for c in children] == ["cancelled", "cancelled"]
    # The children's parameters corrected (as in the admin), the parent resumed: the
    # same child runs are resumed with their corrected parameters, not new ones.
    from django.contrib.auth.models import User

    from runs.corrections import update_params

    staff = User.objects.create_superuser("sam", password="pw-sam-123")
    for child in children:
        update_params(child.pk, {**child.params, "sleep": 0.1}, staff)
    services.resume_run(run.pk)
    run = wait_run(run.pk, ENDED, timeout=40)
    assert run.status == "completed"
    assert [c.status for c in Run.objects.filter(parent=run).order_by("pk")] == ["completed"] * 2
    assert Run.objects.filter(parent=run).count() == 2
