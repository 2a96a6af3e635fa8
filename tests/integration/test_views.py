"""The dashboard pages through Django's test client: permissions, escaping,
filters and pagination, query counts, forms and refused actions."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.models import Checkpoint, Run, RunEvent, StepAttempt, StepRun
from runs.ui import history as history_ui
from stepflow.registry import registry

pytestmark = [
    pytest.mark.django_db,
    # WhiteNoise warns when STATIC_ROOT (var/staticfiles) was never collected: not our concern here.
]

XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
ROW_ID = re.compile(r'<tr id="run-(\d+)"')


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return user


@pytest.fixture
def viewer() -> User:
    return User.objects.create_user("victor", password="pw-victor-123")


@pytest.fixture
def op_client(operator: User) -> Client:
    c = Client()
    c.force_login(operator)
    return c


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    c = Client()
    c.force_login(viewer)
    return c


def make_run(
    workflow: str = "t_deploy",
    status: str = "completed",
    *,
    params: dict | None = None,
    steps: int | None = None,
    user: User | None = None,
    key: str | None = None,
    origin: str = "web",
    created_at=None,
    step_error: str = "",
) -> Run:
    """A stored run with its steps, one attempt each, a checkpoint and events."""
    wf = registry.get(workflow)
    now = timezone.now()
    run = Run.objects.create(
        workflow=workflow,
        definition_hash=wf.definition_hash,
        params=params if params is not None else {"sleep": 0.0, "note": ""},
        params_hash="x",
        idempotency_key=key,
        status=status,
        progress=1.0 if status == "completed" else 0.5,
        created_by=user,
        origin=origin,
        started_at=now - timedelta(seconds=90),
        finished_at=None if status in ("running", "pending") else now,
        error_summary=f"build failed: {step_error}" if status == "failed" else "",
        failed_step="build" if status == "failed" else "",
    )
    if created_at is not None:
        Run.objects.filter(pk=run.pk).update(created_at=created_at)
    names = wf.order() if steps is None else [f"s{i}" for i in range(steps)]
    for i, name in enumerate(names):
        failed = status == "failed" and name == "build"
        step_status = "failed" if failed else ("running" if status == "running" else "completed")
        if status == "failed" and i > names.index("build"):
            step_status = "pending"
        s = StepRun.objects.create(
            run=run,
            name=name,
            position=i,
            status=step_status,
            attempts=0 if step_status == "pending" else 1,
            started_at=now - timedelta(seconds=60),
            finished_at=now if step_status in ("completed", "failed") else None,
            error=step_error if failed else "",
            items_done=10,
            progress_current=5,
            progress_total=10,
        )
        if step_status != "pending":
            StepAttempt.objects.create(
                step=s,
                number=1,
                status="failed" if failed else "completed",
                started_at=now - timedelta(seconds=60),
                finished_at=now,
                error=step_error if failed else "",
                traceback=f"Traceback (most recent call last):\n  {step_error}" if failed else "",
            )
        Checkpoint.objects.create(step=s, key="cursor", value={"at": i})
        RunEvent.objects.create(run=run, kind="log", step=name, message=f"log of {name}")
        RunEvent.objects.create(run=run, kind="step_completed", step=name, actor="w1")
    return run


def row_ids(response) -> list[int]:
    return [int(i) for i in ROW_ID.findall(response.content.decode())]


# -- access -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["/", "/runs/1/", "/workflows/", "/workflows/t_deploy/", "/runs/compare/?a=1&b=2"]
)
def test_pages__need_a_login(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={quote(url, safe='/')}"


def test_login_form__logs_in_and_redirects(client: Client, viewer: User) -> None:
    response = client.post("/login/", {"username": "victor", "password": "pw-victor-123"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_run_detail__viewer_sees_no_action_buttons(viewer_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: build exploded")
    body = viewer_client.get(f"/runs/{run.pk}/").content.decode()
    assert "build exploded" in body
    for label in ("Resume", "Retry failed", "Continue from", "Cancel run"):
        assert f">{label}" not in body
    assert "/actions/" not in body


def test_run_detail__operator_sees_the_buttons_of_a_failed_run(op_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: build exploded")
    body = op_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'hx-get="/runs/{run.pk}/actions/resume/"' in body
    assert f'hx-get="/runs/{run.pk}/actions/retry_failed/"' in body
    assert f'hx-get="/runs/{run.pk}/actions/continue_from/"' in body
    assert f"/runs/{run.pk}/actions/cancel/" not in body


@pytest.mark.parametrize("action", ["resume", "retry_failed", "continue_from", "cancel"])
def test_actions__viewer_post_is_forbidden(viewer_client: Client, action: str) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    response = viewer_client.post(f"/runs/{run.pk}/actions/{action}/", {"step": "build"})
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    run.refresh_from_db()
    assert (run.status, run.attempt) == ("failed", 1)


def test_start_form__viewer_post_is_forbidden(viewer_client: Client) -> None:
    response = viewer_client.post("/workflows/t_deploy/", {"p_sleep": "0"})
    assert response.status_code == 403
    assert Run.objects.count() == 0


def test_actions__post_without_csrf_token_is_refused(operator: User) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    c = Client(enforce_csrf_checks=True)
    c.force_login(operator)
    response = c.post(f"/runs/{run.pk}/actions/retry_failed/")
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == "failed"


def test_unknown_run__is_a_404_page(op_client: Client) -> None:
    response = op_client.get("/runs/999999/")
    assert response.status_code == 404
    assert "no run has that id" in response.content.decode()
    assert op_client.get("/runs/abc/").status_code == 404
    assert op_client.get("/runs/999999/actions/resume/").status_code == 404
    assert op_client.get("/workflows/nope/").status_code == 404


# -- escaping -----------------------------------------------------------------------------
def test_xss_payloads__are_shown_as_text(op_client: Client) -> None:
    run = make_run(
        status="failed", params={"sleep": 0.0, "note": XSS}, step_error=f"RuntimeError: {XSS}"
    )
    RunEvent.objects.create(run=run, kind="log", step="build", message=XSS, data={"x": XSS})
    RunEvent.objects.create(run=run, kind="resumed", actor=XSS, message=XSS)
    pages = [
        op_client.get(f"/runs/{run.pk}/").content.decode(),
        op_client.get("/").content.decode(),
        op_client.get(f"/runs/compare/?a={run.pk}&b={run.pk}").content.decode(),
    ]
    for body in pages:
        assert XSS not in body
        assert "onerror=alert(1)&gt;" in body
    assert pages[0].count(XSS_ESCAPED) >= 5  # param, error, traceback, log, event


def test_secret_params__are_masked(op_client: Client) -> None:
    run = make_run(
        "payment", params={"amount": 3.0, "currency": "EUR", "card_token": "tok_1"}, steps=2
    )
    body = op_client.get(f"/runs/{run.pk}/").content.decode()
    assert "tok_1" not in body
    assert "••••••" in body


# -- history ------------------------------------------------------------------------------
def test_history__empty_state(op_client: Client) -> None:
    body = op_client.get("/").content.decode()
    assert "No runs yet — start one from" in body


def test_history__filters_and_search(op_client: Client, operator: User) -> None:
    old = timezone.now() - timedelta(days=10)
    a = make_run("t_deploy", "completed", user=operator, params={"sleep": 0, "note": "alpha"})
    b = make_run(
        "t_deploy", "failed", step_error="RuntimeError: boom", params={"sleep": 0, "note": "beta-7"}
    )
    c = make_run("t_diamond", "running", origin="cron", key="order-42", params={"sleep": 1.0})
    d = make_run("t_diamond", "completed", created_at=old, params={"sleep": 2.0})

    def ids(query: str) -> list[int]:
        response = op_client.get("/" + query)
        assert response.status_code == 200
        return row_ids(response)

    assert ids("") == [d.pk, c.pk, b.pk, a.pk]
    assert ids("?workflow=t_diamond") == [d.pk, c.pk]
    assert ids("?status=failed") == [b.pk]
    assert ids("?status=completed&workflow=t_deploy") == [a.pk]
    assert ids("?who=olga") == [a.pk]
    assert ids("?who=cron") == [c.pk]
    assert ids(f"?since={(old + timedelta(days=1)).date().isoformat()}") == [c.pk, b.pk, a.pk]
    assert ids(f"?until={old.date().isoformat()}") == [d.pk]
    # A bare number finds the run with that id, and runs whose key or parameters contain it
    # (with small ids, as on SQLite, "2" is also in c's key "order-42" and d's sleep 2.0).
    text = {r.pk: json.dumps(r.params) + (r.idempotency_key or "") for r in (d, c, b, a)}
    assert ids(f"?q={b.pk}") == [r.pk for r in (d, c, b, a) if r == b or str(b.pk) in text[r.pk]]
    assert ids(f"?q=%23{b.pk}") == [b.pk]
    assert ids(f"?q=%23{c.pk}") == [c.pk]
    assert ids("?q=order-4") == [c.pk]
    assert ids("?q=beta-7") == [b.pk]
    assert ids("?q=ALPHA") == [a.pk]
    assert ids("?q=nothing-like-this") == []
    body = op_client.get("/?q=nothing-like-this").content.decode()
    assert "No runs match these filters." in body
    assert "at build: RuntimeError: boom" in op_client.get("/?status=failed").content.decode()


def test_history__keyset_pages_keep_the_filters(
    op_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_ui, "PAGE_SIZE", 2)
    runs = [make_run("t_deploy" if i % 2 == 0 else "t_retry", steps=1) for i in range(9)]
    deploy = [r.pk for r in runs if r.workflow == "t_deploy"][::-1]  # 5 runs, newest first
    first = op_client.get("/?workflow=t_deploy")
    assert row_ids(first) == deploy[:2]
    assert first.context["older_url"] == f"?workflow=t_deploy&before={deploy[1]}"
    assert first.context["newer_url"] == ""
    second = op_client.get("/" + first.context["older_url"])
    assert row_ids(second) == deploy[2:4]
    third = op_client.get("/" + second.context["older_url"])
    assert row_ids(third) == deploy[4:]
    assert third.context["older_url"] == ""
    back = op_client.get("/" + third.context["newer_url"])
    assert row_ids(back) == deploy[2:4]
    assert back.context["newer_url"] == f"?workflow=t_deploy&after={deploy[2]}"
    assert row_ids(op_client.get("/" + back.context["newer_url"])) == deploy[:2]


def test_history_row__polls_while_active_and_stops_when_finished(op_client: Client) -> None:
    run = make_run(status="running")
    headers = {"HX-Request": "true", "HX-Target": f"run-{run.pk}"}
    response = op_client.get(f"/?row={run.pk}", headers=headers)
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in response.content.decode()
    Run.objects.filter(pk=run.pk).update(status="completed", progress=1.0)
    response = op_client.get(f"/?row={run.pk}", headers=headers)
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()


# -- query counts -------------------------------------------------------------------------
def _count(client: Client, url: str, headers: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, headers=headers or {})
    assert response.status_code in (200, 286)
    return len(ctx.captured_queries)


def test_history__query_count_does_not_grow_with_rows(op_client: Client, operator: User) -> None:
    for _ in range(3):
        make_run(status="failed", user=operator, step_error="E: x")
    few = _count(op_client, "/")
    for _ in range(27):
        make_run(status="running", user=operator)
    assert _count(op_client, "/") == few
    assert _count(op_client, "/?q=x&status=failed&who=olga") <= few + 1


def test_run_detail__query_count_does_not_grow_with_steps(
    op_client: Client, django_assert_max_num_queries
) -> None:
    small = make_run("t_deploy", "running", steps=3)
    big = make_run("t_deploy", "running", steps=30)
    counts = [_count(op_client, f"/runs/{r.pk}/") for r in (small, big)]
    assert counts[0] == counts[1]
    live = {"HX-Request": "true", "HX-Target": "run-live"}
    assert _count(op_client, f"/runs/{small.pk}/", live) == _count(
        op_client, f"/runs/{big.pk}/", live
    )
    with django_assert_max_num_queries(12):
        op_client.get(f"/runs/{big.pk}/")


def test_run_detail__live_fragment_stops_polling_when_finished(op_client: Client) -> None:
    run = make_run(status="running")
    live = {"HX-Request": "true", "HX-Target": "run-live"}
    response = op_client.get(f"/runs/{run.pk}/", headers=live)
    assert response.status_code == 200
    assert 'hx-trigger="every 1500ms"' in response.content.decode()
    Run.objects.filter(pk=run.pk).update(status="completed")
    response = op_client.get(f"/runs/{run.pk}/", headers=live)
    assert response.status_code == 286
    assert 'id="run-live"' in response.content.decode()
    assert "hx-trigger" not in response.content.decode().split('id="action-panel"')[0]


# -- polling the run page -----------------------------------------------------------------
POLL_URL = re.compile(r'id="run-head"[^>]* hx-get="([^"]+)"')


def poll_url(client: Client, run: Run) -> str:
    """The URL the run page's head polls, with the token of the version it shows."""
    page = client.get(f"/runs/{run.pk}/").content.decode()
    return POLL_URL.search(page).group(1).replace("&amp;", "&")


def test_poll__an_unchanged_run_answers_204_in_4_queries(op_client: Client) -> None:
    run = make_run(status="running", steps=30)
    url = poll_url(op_client, run)
    assert url.startswith(f"/runs/{run.pk}/live/?v=")
    with CaptureQueriesContext(connection) as ctx:
        response = op_client.get(url, headers={"HX-Request": "true"})
    assert (response.status_code, response.content) == (204, b"")
    # session, user, the run with its newest event id, the moving steps
    assert len(ctx.captured_queries) == 4


def test_poll__a_moving_step_and_new_events_come_out_of_band(op_client: Client) -> None:
    run = make_run(status="running", steps=30)
    url = poll_url(op_client, run)
    StepRun.objects.filter(run=run, name="s3").update(progress_current=7)
    RunEvent.objects.create(run=run, kind="log", step="s3", message="seven of ten")
    response = op_client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="run-head" class="run-head" hx-get="')
    assert POLL_URL.search(body).group(1) != url
    # Every step is running, so every row comes again, out of band; nothing else.
    assert body.count('<tbody class="step" id="step-') == 30
    assert '<tbody class="step" id="step-s3" hx-swap-oob="true">' in body
    assert '<progress max="100" value="70" aria-label="Progress of s3">70%</progress>' in body
    assert '<ol hx-swap-oob="beforeend:#logs-list"><li class="log lvl-info">' in body
    assert "seven of ten" in body
    assert "history-list" not in body and "run-charts" not in body


def test_poll__only_the_steps_that_moved_and_a_step_event_redraws_the_charts(
    op_client: Client,
) -> None:
    run = make_run(status="running", steps=30)
    StepRun.objects.filter(run=run).exclude(name="s4").update(status="completed")
    url = poll_url(op_client, run)
    StepRun.objects.filter(run=run, name="s4").update(status="completed")
    RunEvent.objects.create(run=run, kind="step_completed", step="s4", actor="w1")
    Run.objects.filter(pk=run.pk).update(progress=0.9)
    response = op_client.get(url, headers={"HX-Request": "true"})
    body = response.content.decode()
    # s4 was moving at the last poll: its row comes again, as completed; no other row.
    assert re.findall(r'<tbody class="step" id="(step-[^"]+)"', body) == ["step-s4"]
    assert '<span class="badge s-completed">' in body.split('id="step-s4"')[1]
    assert '<ol hx-swap-oob="beforeend:#history-list"><li class="event ev-step_completed' in body
    assert '<div id="run-charts" hx-swap-oob="innerHTML">' in body
    assert 'class="timeline"' in body and 'class="dag"' in body
    assert "90%" in body
    # Nothing moves any more: the next poll with the new token has nothing to send.
    again = POLL_URL.search(body).group(1).replace("&amp;", "&")
    assert op_client.get(again, headers={"HX-Request": "true"}).status_code == 204


def test_poll__a_status_change_sends_the_whole_region_and_the_end_stops_polling(
    op_client: Client,
) -> None:
    run = make_run(status="running")
    url = poll_url(op_client, run)
    assert (
        op_client.get(f"/runs/{run.pk}/live/?v=nonsense")
        .content.decode()
        .startswith('\n<section id="run-live"')
    )
    Run.objects.filter(pk=run.pk).update(status="completed", progress=1.0)
    response = op_client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 286
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#run-live", "outerHTML")
    body = response.content.decode()
    assert '<section id="run-live" class="run-live" data-status="completed">' in body
    assert "hx-trigger" not in body.split('id="action-panel"')[0]


# -- start form ---------------------------------------------------------------------------
def test_start_form__shows_validation_errors_inline(op_client: Client) -> None:
    response = op_client.post("/workflows/payment/", {"p_amount": "", "p_currency": "XXX"})
    assert response.status_code == 400
    body = response.content.decode()
    assert (
        '<p class="field-error" id="id_p_amount_error" role="alert">this parameter is required</p>'
        in body
    )
    assert "Select a valid choice. XXX is not one of the available choices." in body
    response = op_client.post("/workflows/t_deploy/", {"p_sleep": "soon"})
    assert response.status_code == 400
    assert "expected a number, got &#x27;soon&#x27;" in response.content.decode()
    assert Run.objects.count() == 0


def test_start_form__starts_a_run_and_redirects(op_client: Client, operator: User) -> None:
    response = op_client.post("/workflows/t_deploy/", {"p_sleep": "0.5", "p_note": "hi"})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert (run.workflow, run.params, run.created_by) == (
        "t_deploy",
        {"sleep": 0.5, "note": "hi"},
        operator,
    )


def test_start_form__idempotency_conflict_is_a_form_error(op_client: Client) -> None:
    op_client.post("/workflows/t_deploy/", {"p_note": "one", "idempotency_key": "k-1"})
    again = op_client.post("/workflows/t_deploy/", {"p_note": "one", "idempotency_key": "k-1"})
    assert again.status_code == 302
    assert Run.objects.count() == 1
    conflict = op_client.post("/workflows/t_deploy/", {"p_note": "two", "idempotency_key": "k-1"})
    assert conflict.status_code == 400
    run = Run.objects.get()
    assert (
        f"Idempotency key &#x27;k-1&#x27; was already used for run #{run.pk} (t_deploy) "
        "with different parameters"
    ) in conflict.content.decode()


# -- actions ------------------------------------------------------------------------------
def test_resume__of_a_running_run_is_refused_with_the_message(op_client: Client) -> None:
    run = make_run(status="running")
    response = op_client.post(f"/runs/{run.pk}/actions/resume/", headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert (
        f"Run #{run.pk} is already running; wait for it to stop or cancel it first"
        in response.content.decode()
    )
    run.refresh_from_db()
    assert (run.status, run.attempt) == ("running", 1)


def test_action_panel__previews_the_plan(op_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    response = op_client.get(
        f"/runs/{run.pk}/actions/retry_failed/", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    plan = response.context["panel"].plan
    assert (plan.will_run, plan.kept) == (["build", "template", "deploy"], ["prepare"])
    body = response.content.decode()
    assert "<strong>Will run</strong> build, template, deploy" in body
    assert "<strong>Keeps</strong> prepare" in body
    assert "definition changed" not in body


def test_action_panel__warns_when_the_definition_changed(op_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    Run.objects.filter(pk=run.pk).update(definition_hash="0000")
    body = op_client.get(f"/runs/{run.pk}/actions/resume/").content.decode()
    assert "The workflow definition changed since this run started." in body
    assert 'name="confirm_definition_change"' in body
    response = op_client.post(f"/runs/{run.pk}/actions/resume/", headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert "confirm to run with the new definition" in response.content.decode()


def test_continue_from__offers_to_clear_the_items_done(op_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    StepRun.objects.filter(run=run).exclude(name="build").update(items_done=0)
    StepRun.objects.filter(run=run, name="build").update(items_done=1204)
    url = f"/runs/{run.pk}/actions/continue_from/?step=build"
    body = op_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert (
        '<input type="checkbox" name="clear_items" value="1" id="clear-items" '
        'form="action-form-continue_from"'
    ) in body
    assert "Clear the 1,204 items already done by build (they are processed again)" in body
    assert "Clears" not in body
    preview = op_client.get(url + "&clear_items=1", headers={"HX-Request": "true"})
    # Only the steps that go back to pending are cleared (template and deploy never ran).
    assert preview.context["panel"].plan.summary() == (
        "Will run build, template, deploy. Keeps prepare. Clears the items already done by build."
    )
    assert "<strong>Clears</strong> the items already done by build" in preview.content.decode()
    # Continuing from deploy re-runs no step with items done: nothing to offer.
    later = op_client.get(f"/runs/{run.pk}/actions/continue_from/?step=deploy").content.decode()
    assert "clear_items" not in later

    response = op_client.post(
        f"/runs/{run.pk}/actions/continue_from/",
        {"step": "build", "clear_items": "1"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert (
        "Continued from build by olga — Will run build, template, deploy. Keeps prepare. "
        "Clears the items already done by build."
    ) in response.content.decode()
    assert StepRun.objects.get(run=run, name="build").items_done == 0


def test_continue_from__unknown_step_is_a_400(op_client: Client) -> None:
    run = make_run(status="failed", step_error="RuntimeError: x")
    response = op_client.post(
        f"/runs/{run.pk}/actions/continue_from/", {"step": "nope"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 400
    assert "Workflow &#x27;t_deploy&#x27; has no step named &#x27;nope&#x27;" in (
        response.content.decode()
    )


def test_cancel__of_a_finished_run_is_refused(op_client: Client) -> None:
    run = make_run(status="completed")
    response = op_client.post(f"/runs/{run.pk}/actions/cancel/", {"reason": "x"})
    assert response.status_code == 409
    assert f"Run #{run.pk} is already completed; only an active run can be cancelled" in (
        response.content.decode()
    )


# -- compare and workflows ----------------------------------------------------------------
def test_compare__shows_differences_and_the_slower_step(op_client: Client) -> None:
    a = make_run(params={"sleep": 0.0, "note": "same"})
    b = make_run(params={"sleep": 1.0, "note": "same"})
    now = timezone.now()
    b.steps.filter(name="build").update(started_at=now - timedelta(seconds=138), finished_at=now)
    response = op_client.get(f"/runs/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    params = {p.name: p.differs for p in response.context["params"]}
    assert params == {"sleep": True, "note": False}
    build = next(s for s in response.context["steps"] if s.name == "build")
    assert (build.slower, build.change) == ("b", "+130%")
    assert "same definition" in response.content.decode()
    picked = op_client.get(f"/runs/compare/?run={b.pk}&run={a.pk}")
    assert picked["Location"] == f"/runs/compare/?a={a.pk}&b={b.pk}"
    assert op_client.get("/runs/compare/?run=1").status_code == 400


def test_workflows__cards_and_detail(op_client: Client) -> None:
    make_run("t_deploy", "completed")
    make_run("t_deploy", "failed", step_error="E: x")
    response = op_client.get("/workflows/")
    card = next(c for c in response.context["cards"] if c.workflow.name == "t_deploy")
    assert (card.last_status, card.runs, card.success_rate) == ("failed", 2, 0.5)
    body = op_client.get("/workflows/t_deploy/").content.decode()
    assert 'name="p_sleep"' in body and 'name="idempotency_key"' in body
    assert 'class="dag"' in body


def test_run_detail__a_param_named_items_is_shown(op_client: Client) -> None:
    run = make_run("dataset", params={"items": 7, "crash_at": -1, "item_delay_ms": 0.0}, steps=2)
    response = op_client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    assert "<dt>items</dt><dd><code>7</code></dd>" in response.content.decode()


def test_completed_with_failures_is_marked(client, redis_conn):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import User

    from runs.models import Run

    User.objects.create_user("marker", password="pw-marker-123")
    client.login(username="marker", password="pw-marker-123")
    run = Run.objects.create(
        workflow="t_optional",
        definition_hash="x",
        params_hash="x",
        status="completed",
        error_summary="completed with failures: nice_to_have",
    )
    history = client.get("/").content.decode()
    assert "⚠ completed with failures: nice_to_have</div>" in history
    detail = client.get(f"/runs/{run.pk}/").content.decode()
    assert "⚠ completed with failures: nice_to_have (optional steps)</p>" in detail
