"""The Django admin: review, operator actions and staff corrections, through the real URLs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs import engine, services
from runs.models import Checkpoint, Run, RunEvent, StepAttempt, StepRun
from runs.store import load_items, mark_items
from stepflow import Param, Workflow, register, step
from stepflow.params import MASK
from stepflow.states import RunStatus, StepStatus

pytestmark = [
    pytest.mark.django_db,
    # WhiteNoise warns when STATIC_ROOT was never collected (a fresh checkout).
]
S, R = StepStatus, RunStatus
SECRET = "s3cr3t-t0ken-value"


@step()
def call_api(ctx: Any) -> None:
    return None


register(
    Workflow(
        "t_admin_secret",
        [call_api],
        params=[Param("token", "str", secret=True), Param("count", "int", default=1)],
    ),
    replace=True,
)


# -- setup helpers ----------------------------------------------------------------------


def start(params: dict[str, Any] | None = None, workflow: str = "t_deploy", **kw: Any) -> Run:
    return services.start_run(workflow, params or {}, **kw)


def _run_step(step_run: StepRun, target: StepStatus, **fields: Any) -> None:
    if step_run.status == S.PENDING:
        engine.set_step(step_run, S.QUEUED)
    if step_run.status == S.QUEUED:
        engine.set_step(step_run, S.RUNNING, started_at=timezone.now())
    if target != S.RUNNING:
        engine.set_step(step_run, target, finished_at=timezone.now(), **fields)


def finish(run: Run, status: str) -> Run:
    """Put a started run into a finished state (test setup, through the state rules)."""
    if status == R.CANCELLED:
        services.cancel_run(run.pk)
        return Run.objects.get(pk=run.pk)
    with transaction.atomic():
        run = engine.lock_run(run.pk)
        steps = engine.load_steps(run)
        now = timezone.now()
        if status == R.COMPLETED:
            for s in steps.values():
                _run_step(s, S.COMPLETED)
            engine.set_run(run, R.COMPLETED, finished_at=now, progress=1.0)
        else:
            _run_step(steps["prepare"], S.FAILED, error="RuntimeError: prepare exploded")
            for name in ("build", "template", "deploy"):
                engine.set_step(steps[name], S.CANCELLED, finished_at=now)
            engine.set_run(
                run,
                R.FAILED,
                finished_at=now,
                failed_step="prepare",
                error_summary="prepare failed: RuntimeError: prepare exploded",
            )
    return Run.objects.get(pk=run.pk)


def set_step_status(run: Run, name: str, target: StepStatus) -> StepRun:
    with transaction.atomic():
        engine.lock_run(run.pk)
        s = StepRun.objects.get(run=run, name=name)
        _run_step(s, target)
    return StepRun.objects.get(pk=s.pk)


def staff(*perms: str, username: str = "staff") -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def events(run: Run, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = RunEvent.objects.filter(run_id=run.pk, kind=kind).order_by("id")
    return [(e.actor, e.user.username if e.user else "", e.data) for e in rows]


def change_url(run: Run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


def post_change(client: Client, url: str, **fields: str) -> Any:
    """POST the change form as a browser would: the page's values, with ``fields`` changed."""
    page = client.get(url)
    assert page.status_code == 200
    data: dict[str, Any] = {}
    for inline in page.context["inline_admin_formsets"]:
        mgmt = inline.formset.management_form
        data.update({mgmt.add_prefix(k): v for k, v in mgmt.initial.items()})
    form = page.context["adminform"].form
    data.update({name: form[name].value() or "" for name in form.fields})
    data.update(fields)
    return client.post(url, data)


def act(client: Client, action: str, *runs: Run) -> Any:
    return client.post(
        reverse("admin:runs_run_changelist"),
        {"action": action, "_selected_action": [r.pk for r in runs], "index": 0},
    )


# -- review -----------------------------------------------------------------------------


def test_changelist__shows_runs_with_status_badges_and_masked_secrets(admin_client):
    failed = finish(start({"note": "visible"}), R.FAILED)
    secret = start({"token": SECRET, "count": 3}, workflow="t_admin_secret")

    response = admin_client.get(reverse("admin:runs_run_changelist"))

    assert response.status_code == 200
    body = response.content.decode()
    assert SECRET not in body
    assert f"count=3, token=&quot;{MASK}&quot;" in body  # keys sorted
    assert '<span class="sf-badge sf-failed">✕ failed</span><br><small>at prepare</small>' in body
    assert '<span class="sf-badge sf-running">● running</span>' in body
    assert list(response.context["cl"].result_list) == [secret, failed]


def test_changelist__search_by_id_key_and_param(admin_client):
    a = start({"note": "alpha-release"})
    b = start({"note": "beta"}, idempotency_key="nightly-42")
    url = reverse("admin:runs_run_changelist")

    def found(q: str) -> list[int]:
        return [r.pk for r in admin_client.get(url, {"q": q}).context["cl"].result_list]

    assert found(f"#{a.pk}") == [a.pk]
    assert found("nightly-42") == [b.pk]
    assert found("alpha-release") == [a.pk]
    assert found("workflow-that-is-nowhere") == []


def test_changelist__filters_by_status_and_workflow(admin_client):
    failed = finish(start(), R.FAILED)
    start()
    secret = start({"token": "x"}, workflow="t_admin_secret")
    url = reverse("admin:runs_run_changelist")

    by_status = admin_client.get(url, {"status__exact": "failed"}).context["cl"].result_list
    by_wf = admin_client.get(url, {"workflow": "t_admin_secret"}).context["cl"].result_list

    assert list(by_status) == [failed]
    assert list(by_wf) == [secret]


def test_change_page__shows_steps_attempts_events_read_only_and_masks_secrets(admin_client):
    run = start({"token": SECRET}, workflow="t_admin_secret")
    s = set_step_status(run, "call_api", S.RUNNING)
    StepAttempt.objects.create(
        step=s, number=1, status="running", worker="w-1", started_at=timezone.now()
    )

    response = admin_client.get(change_url(run))

    assert response.status_code == 200
    body = response.content.decode()
    assert SECRET not in body
    assert MASK in body
    assert 'name="status"' not in body
    assert '<span class="sf-badge sf-running">● running</span>' in body
    assert "<td>call_api</td><td>1</td>" in body  # the attempts table
    inlines = {
        i.formset.model: len(i.formset.forms) for i in response.context["inline_admin_formsets"]
    }
    assert inlines == {StepRun: 1, RunEvent: RunEvent.objects.filter(run=run).count()}
    assert not any(
        i.has_add_permission or i.has_change_permission or i.has_delete_permission
        for i in response.context["inline_admin_formsets"]
    )


def test_step_attempt_event_pages_are_read_only(admin_client):
    run = finish(start(), R.FAILED)
    s = StepRun.objects.get(run=run, name="prepare")
    event = RunEvent.objects.filter(run=run).first()
    assert event is not None

    assert admin_client.get(reverse("admin:runs_steprun_change", args=[s.pk])).status_code == 200
    assert (
        admin_client.post(
            reverse("admin:runs_steprun_change", args=[s.pk]), {"status": "completed"}
        ).status_code
        == 403
    )
    assert admin_client.get(reverse("admin:runs_steprun_add")).status_code == 403
    assert admin_client.get(reverse("admin:runs_runevent_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:runs_runevent_delete", args=[event.pk])).status_code == 403
    )
    assert admin_client.get(reverse("admin:runs_stepattempt_add")).status_code == 403
    assert admin_client.get(reverse("admin:runs_run_add")).status_code == 403
    assert StepRun.objects.get(pk=s.pk).status == S.FAILED


# -- actions ------------------------------------------------------------------------------


def test_resume_action__mixed_selection_resumes_what_it_can_and_reports_the_rest(
    admin_client, redis_conn
):
    failed = finish(start(), R.FAILED)
    completed = finish(start(), R.COMPLETED)
    running = start()

    response = act(admin_client, "resume_runs", failed, completed, running)

    assert response.status_code == 302
    assert texts(response) == [
        f"Run #{failed.pk} resumed. Will run prepare, build, template, deploy.",
        f"Run #{completed.pk}: Nothing to resume: no step is left to run",
        f"Run #{running.pk} is already running; wait for it to stop or cancel it first",
    ]
    assert Run.objects.get(pk=failed.pk).status == R.RUNNING
    assert Run.objects.get(pk=failed.pk).attempt == 2
    assert Run.objects.get(pk=completed.pk).status == R.COMPLETED
    assert Run.objects.get(pk=running.pk).attempt == 1
    assert events(failed, "resumed") == [
        (
            "admin",
            "admin",
            {
                "mode": "resume",
                "reset": ["prepare", "build", "template", "deploy"],
                "skip": [],
                "attempt": 2,
            },
        ),
    ]
    assert events(completed, "resumed") == events(running, "resumed") == []


def test_retry_failed_action(admin_client, redis_conn):
    failed = finish(start(), R.FAILED)
    cancelled = finish(start(), R.CANCELLED)

    response = act(admin_client, "retry_failed_runs", failed, cancelled)

    assert texts(response) == [
        f"Run #{failed.pk}: failed steps retried. Will run prepare, build, template, deploy.",
        f"Run #{cancelled.pk}: Nothing to retry: no step failed",
    ]
    assert events(failed, "resumed") == [
        (
            "admin",
            "admin",
            {
                "mode": "retry_failed",
                "reset": ["prepare", "build", "template", "deploy"],
                "skip": [],
                "attempt": 2,
            },
        ),
    ]
    assert Run.objects.get(pk=cancelled.pk).status == R.CANCELLED


def test_cancel_action(admin_client, redis_conn):
    running = start()
    completed = finish(start(), R.COMPLETED)

    response = act(admin_client, "cancel_runs", running, completed)

    assert texts(response) == [
        f"Run #{running.pk} cancelled.",
        f"Run #{completed.pk} is already completed; only an active run can be cancelled",
    ]
    assert Run.objects.get(pk=running.pk).status == R.CANCELLED
    assert events(running, "cancel_requested") == [("admin", "admin", {})]
    assert Run.objects.get(pk=completed.pk).status == R.COMPLETED


def test_actions__need_the_operate_permission(redis_conn):
    failed = finish(start(), R.FAILED)
    client = staff("runs.view_run", "runs.change_run")

    page = client.get(reverse("admin:runs_run_changelist"))
    response = act(client, "resume_runs", failed)

    assert page.context["action_form"] is None  # no action is offered
    assert response.status_code == 200  # a plain changelist POST: nothing acted on
    assert texts(response) == []
    assert Run.objects.get(pk=failed.pk).status == R.FAILED
    assert events(failed, "resumed") == []


def test_actions__offered_with_the_operate_permission(redis_conn):
    failed = finish(start(), R.FAILED)
    client = staff("runs.view_run", "runs.operate_run", username="operator")

    page = client.get(reverse("admin:runs_run_changelist"))
    offered = [name for name, _ in page.context["action_form"].fields["action"].choices]
    response = act(client, "resume_runs", failed)

    assert offered == ["", "resume_runs", "retry_failed_runs", "cancel_runs"]
    assert texts(response) == [
        f"Run #{failed.pk} resumed. Will run prepare, build, template, deploy."
    ]
    assert events(failed, "resumed")[0][:2] == ("operator", "operator")


# -- parameters and note ------------------------------------------------------------------


def test_edit_params__of_a_failed_run_records_the_diff(admin_client):
    run = finish(start({"sleep": 0.5}), R.FAILED)

    response = post_change(
        admin_client, change_url(run), params_json='{"sleep": 1.5, "note": "retry with more time"}'
    )

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.params == {"sleep": 1.5, "note": "retry with more time"}
    assert run.params_hash == services.params_hash(run.params)
    assert run.status == R.FAILED
    assert events(run, "params_changed") == [
        (
            "admin",
            "admin",
            {
                "before": {"note": "", "sleep": 0.5},
                "after": {"note": "retry with more time", "sleep": 1.5},
            },
        ),
    ]
    assert events(run, "note_changed") == []


def test_edit_params__secret_kept_when_left_masked_and_masked_in_the_event(admin_client):
    run = finish(start({"token": SECRET, "count": 1}, workflow="t_admin_secret"), R.CANCELLED)

    post_change(admin_client, change_url(run), params_json=f'{{"token": "{MASK}", "count": 5}}')
    run.refresh_from_db()
    assert run.params == {"token": SECRET, "count": 5}

    post_change(admin_client, change_url(run), params_json='{"token": "new-secret", "count": 5}')
    run.refresh_from_db()
    assert run.params == {"token": "new-secret", "count": 5}
    assert events(run, "params_changed") == [
        ("admin", "admin", {"before": {"count": 1}, "after": {"count": 5}}),
        ("admin", "admin", {"before": {"token": MASK}, "after": {"token": MASK}}),
    ]
    history = admin_client.get(change_url(run)).content.decode()
    assert SECRET not in history
    assert "new-secret" not in history


@pytest.mark.parametrize(
    ("posted", "error"),
    [
        (
            "{not json",
            "Invalid JSON in the parameters of run #{pk}: "
            "Expecting property name enclosed in double quotes at line 1, column 2",
        ),
        ('{"bogus": 1}', "Invalid parameters: bogus: unknown parameter (declared: sleep, note)"),
        ('{"sleep": "fast"}', "Invalid parameters: sleep: expected a number, got 'fast'"),
        ("[1, 2]", "The parameters of run #{pk} must be a JSON object"),
    ],
)
def test_edit_params__invalid_input_is_refused_and_changes_nothing(admin_client, posted, error):
    run = finish(start({"sleep": 0.5}), R.FAILED)
    before = RunEvent.objects.count()

    response = post_change(admin_client, change_url(run), params_json=posted)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"params_json": [error.format(pk=run.pk)]}
    run.refresh_from_db()
    assert run.params == {"sleep": 0.5, "note": ""}
    assert RunEvent.objects.count() == before


def test_edit_params__of_a_running_run_is_refused_but_its_note_can_change(admin_client):
    run = start({"sleep": 0.5})
    hash_before = run.params_hash

    refused = post_change(admin_client, change_url(run), params_json='{"sleep": 2}')

    message = f"Run #{run.pk} is running; its parameters can be changed once it has stopped"
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {"params_json": [message]}
    assert Run.objects.get(pk=run.pk).params_hash == hash_before
    assert events(run, "params_changed") == []

    noted = post_change(admin_client, change_url(run), note="Slow cluster today\r\nwatch it")

    assert noted.status_code == 302
    run.refresh_from_db()
    assert run.note == "Slow cluster today\nwatch it"
    assert run.params == {"sleep": 0.5, "note": ""}
    assert run.status == R.RUNNING
    assert events(run, "note_changed") == [
        ("admin", "admin", {"before": "", "after": "Slow cluster today\nwatch it"}),
    ]


def test_edit__without_change_permission_is_forbidden():
    run = finish(start({"sleep": 0.5}), R.FAILED)
    client = staff("runs.view_run")

    page = client.get(change_url(run))
    response = client.post(change_url(run), {"params_json": '{"sleep": 9}', "note": "x"})

    assert page.status_code == 200
    assert 'name="params_json"' not in page.content.decode()
    assert response.status_code == 403
    run.refresh_from_db()
    assert (run.params, run.note) == ({"sleep": 0.5, "note": ""}, "")


def test_update_params__refused_while_cancelling():
    from runs import corrections
    from runs.errors import ActionRefused

    run = start()
    Run.objects.filter(pk=run.pk).update(status=R.CANCELLING)
    with pytest.raises(ActionRefused) as exc:
        corrections.update_params(run.pk, {"sleep": 1}, None)
    assert exc.value.message == (
        f"Run #{run.pk} is cancelling; its parameters can be changed once it has stopped"
    )


# -- checkpoints --------------------------------------------------------------------------


def _checkpoint(run: Run, name: str, key: str, value: Any) -> Checkpoint:
    return Checkpoint.objects.create(
        step=StepRun.objects.get(run=run, name=name), key=key, value=value
    )


def test_checkpoint__edit_value_records_before_and_after(admin_client):
    run = finish(start(), R.FAILED)
    cp = _checkpoint(run, "prepare", "cursor", {"page": 3})
    url = reverse("admin:runs_checkpoint_change", args=[cp.pk])

    response = post_change(admin_client, url, value_json='{"page": 1}')

    assert response.status_code == 302
    assert Checkpoint.objects.get(pk=cp.pk).value == {"page": 1}
    assert events(run, "checkpoint_changed") == [
        (
            "admin",
            "admin",
            {"key": "cursor", "created": False, "before": {"page": 3}, "after": {"page": 1}},
        ),
    ]
    assert RunEvent.objects.get(run=run, kind="checkpoint_changed").step == "prepare"


def test_checkpoint__add_one(admin_client):
    run = finish(start(), R.FAILED)
    s = StepRun.objects.get(run=run, name="build")

    response = admin_client.post(
        reverse("admin:runs_checkpoint_add"), {"step": s.pk, "key": "offset", "value_json": "1200"}
    )

    assert response.status_code == 302
    assert list(Checkpoint.objects.values_list("step_id", "key", "value")) == [
        (s.pk, "offset", 1200)
    ]
    assert events(run, "checkpoint_changed") == [
        ("admin", "admin", {"key": "offset", "created": True, "after": 1200}),
    ]


def test_checkpoint__invalid_json_is_refused(admin_client):
    run = finish(start(), R.FAILED)
    cp = _checkpoint(run, "prepare", "cursor", 3)

    response = post_change(
        admin_client,
        reverse("admin:runs_checkpoint_change", args=[cp.pk]),
        value_json="{'page': 1}",
    )

    assert response.context["adminform"].form.errors == {
        "value_json": [
            "Invalid JSON in checkpoint 'cursor': "
            "Expecting property name enclosed in double quotes at line 1, column 2"
        ]
    }
    assert Checkpoint.objects.get(pk=cp.pk).value == 3
    assert events(run, "checkpoint_changed") == []


def test_checkpoint__of_a_running_step_cannot_be_changed_or_deleted(admin_client):
    run = start()
    set_step_status(run, "prepare", S.RUNNING)
    cp = _checkpoint(run, "prepare", "cursor", 3)

    response = post_change(
        admin_client, reverse("admin:runs_checkpoint_change", args=[cp.pk]), value_json="4"
    )
    delete = admin_client.post(
        reverse("admin:runs_checkpoint_delete", args=[cp.pk]), {"post": "yes"}
    )

    assert response.context["adminform"].form.errors == {
        "__all__": [
            f"Step 'prepare' of run #{run.pk} is running; "
            "its checkpoints can be changed once it has stopped"
        ]
    }
    assert delete.status_code == 403
    assert Checkpoint.objects.get(pk=cp.pk).value == 3
    assert events(run, "checkpoint_changed") == events(run, "checkpoint_deleted") == []


def test_checkpoint__delete(admin_client):
    run = finish(start(), R.COMPLETED)
    cp = _checkpoint(run, "deploy", "release", "v1.4.2")

    response = admin_client.post(
        reverse("admin:runs_checkpoint_delete", args=[cp.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Checkpoint.objects.exists()
    assert events(run, "checkpoint_deleted") == [
        ("admin", "admin", {"key": "release", "before": "v1.4.2"}),
    ]


def test_checkpoint__no_change_permission_is_forbidden():
    run = finish(start(), R.FAILED)
    cp = _checkpoint(run, "prepare", "cursor", 3)
    client = staff("runs.view_checkpoint")

    response = client.post(
        reverse("admin:runs_checkpoint_change", args=[cp.pk]), {"value_json": "4"}
    )

    assert response.status_code == 403
    assert Checkpoint.objects.get(pk=cp.pk).value == 3


# -- items ----------------------------------------------------------------------------------


def test_unmark__keys_one_per_line(admin_client):
    run = finish(start(), R.FAILED)
    s = StepRun.objects.get(run=run, name="prepare")
    mark_items(s.pk, [1, 2, 3, "a", "007"])
    url = reverse("admin:runs_steprun_unmark", args=[s.pk])

    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"keys": "1\n3\n\n a \n007\n99\n"})

    assert response.status_code == 302
    assert texts(response) == [
        f"Un-marked 5 item key(s) of prepare in run #{run.pk} (4 were done); "
        "they will be processed again on resume."
    ]
    assert sorted(load_items(s.pk), key=str) == [2]
    assert StepRun.objects.get(pk=s.pk).items_done == 1
    assert events(run, "items_unmarked") == [
        ("admin", "admin", {"keys": ["1", "3", "a", "007", "99"], "removed": 4}),
    ]


def test_unmark__all_items_with_the_step_action(admin_client):
    run = finish(start(), R.FAILED)
    s = StepRun.objects.get(run=run, name="prepare")
    mark_items(s.pk, list(range(10)))

    response = admin_client.post(
        reverse("admin:runs_steprun_changelist"),
        {"action": "unmark_all_items", "_selected_action": [s.pk], "index": 0},
    )

    assert texts(response) == [
        f"Un-marked all items of prepare in run #{run.pk} (10 were done); "
        "they will be processed again on resume."
    ]
    assert StepRun.objects.get(pk=s.pk).items_done == 0
    assert events(run, "items_unmarked") == [("admin", "admin", {"removed": 10})]


def test_unmark__running_step_is_refused(admin_client):
    run = start()
    s = set_step_status(run, "prepare", S.RUNNING)
    mark_items(s.pk, [1, 2])

    response = admin_client.post(
        reverse("admin:runs_steprun_unmark", args=[s.pk]), {"all_items": "on"}
    )

    assert response.status_code == 200
    assert texts(response) == [
        f"Step 'prepare' of run #{run.pk} is running; un-mark items once it has stopped"
    ]
    assert StepRun.objects.get(pk=s.pk).items_done == 2
    assert events(run, "items_unmarked") == []


def test_unmark__needs_the_change_step_run_permission():
    run = finish(start(), R.FAILED)
    s = StepRun.objects.get(run=run, name="prepare")
    mark_items(s.pk, [1])
    client = staff("runs.view_run", "runs.view_steprun")

    response = client.post(reverse("admin:runs_steprun_unmark", args=[s.pk]), {"all_items": "on"})

    assert response.status_code == 403
    assert StepRun.objects.get(pk=s.pk).items_done == 1


# -- deletion ---------------------------------------------------------------------------------


def test_delete__finished_run_with_all_its_rows(admin_client):
    run = finish(start(), R.FAILED)
    _checkpoint(run, "prepare", "cursor", 1)
    mark_items(StepRun.objects.get(run=run, name="prepare").pk, [1, "x"])
    url = reverse("admin:runs_run_delete", args=[run.pk])
    event_count = RunEvent.objects.filter(run=run).count()

    confirm = admin_client.get(url)
    response = admin_client.post(url, {"post": "yes"})

    assert dict(confirm.context["model_count"]) == {
        "runs": 1,
        "step runs": 4,
        "checkpoints": 1,
        "run events": event_count,
    }
    assert response.status_code == 302
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not StepRun.objects.exists()
    assert not RunEvent.objects.exists()
    assert not Checkpoint.objects.exists()


def test_delete__active_run_is_refused(admin_client):
    run = start()

    page = admin_client.get(change_url(run))
    response = admin_client.post(reverse("admin:runs_run_delete", args=[run.pk]), {"post": "yes"})

    assert page.context["has_delete_permission"] is False
    assert response.status_code == 403
    assert Run.objects.filter(pk=run.pk).exists()


def test_delete__bulk_deletes_finished_runs_and_reports_active_ones(admin_client):
    done = finish(start(), R.COMPLETED)
    running = start()

    confirm = act(admin_client, "delete_selected", done, running)

    assert confirm.status_code == 200
    assert texts(confirm) == [
        f"Run #{running.pk} is running; only a finished run (completed, failed or cancelled) "
        "can be deleted"
    ]
    assert list(confirm.context["queryset"]) == [done]

    deleted = admin_client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "delete_selected", "_selected_action": [done.pk], "index": 0, "post": "yes"},
    )

    assert deleted.status_code == 302
    assert list(Run.objects.values_list("pk", flat=True)) == [running.pk]


def test_delete__needs_the_delete_permission():
    run = finish(start(), R.COMPLETED)
    client = staff("runs.view_run", "runs.change_run")

    response = client.post(reverse("admin:runs_run_delete", args=[run.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert Run.objects.filter(pk=run.pk).exists()
