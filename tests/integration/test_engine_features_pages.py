"""Run timeouts, child runs and queue waits where users see them: the run page,
the child-run tree, the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from runs import engine, services
from runs.models import QueueLimit, Run, StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_() -> Client:
    c = Client()
    c.force_login(User.objects.create_user("vera", password="pw-vera-123"))
    return c


@pytest.fixture
def staff_client() -> Client:
    c = Client()
    c.force_login(User.objects.create_superuser("sam", password="pw-sam-123"))
    return c


def _family() -> tuple[Run, list[Run]]:
    parent = services.start_run("t_parent", {"count": 2})
    fan = parent.steps.get(name="fan")
    StepRun.objects.filter(pk=fan.pk).update(status="waiting", progress_message="1 of 2 ended")
    kids = [
        services.start_run(
            "t_child", {"n": n}, parent=parent, parent_step=fan, origin=f"run #{parent.pk} step fan"
        )
        for n in range(2)
    ]
    grandchild = services.start_run("t_child", {"n": 9}, parent=kids[1])
    Run.objects.filter(pk=kids[0].pk).update(status="completed", progress=1.0)
    Run.objects.filter(pk=kids[1].pk).update(
        status="failed", error_summary="child_work failed: RuntimeError: <b>boom</b>"
    )
    return parent, [*kids, grandchild]


def test_the_run_page_shows_the_child_run_tree(client_: Client, redis_conn):
    parent, (a, b, c) = _family()
    html = client_.get(f"/runs/{parent.pk}/").content.decode()
    assert 'id="children-h">Child runs</h2>' in html
    assert f'hx-get="/runs/{parent.pk}/children/"' in html
    assert f'<li data-run="{a.pk}">' in html
    assert f'<a href="/runs/{a.pk}/"><span class="num">#{a.pk}</span> t_child</a>' in html
    assert "from step fan" in html
    # The grandchild is nested under its parent, errors are escaped.
    nested = html.split(f'<li data-run="{b.pk}">')[1]
    assert f'<li data-run="{c.pk}">' in nested
    assert "child_work failed: RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in html
    assert "<b>boom</b>" not in html
    assert '<span class="badge-icon" aria-hidden="true">◔</span> waiting</span>' in html


def test_the_child_tree_partial_stops_polling_once_everything_ended(client_: Client, redis_conn):
    parent, kids = _family()
    response = client_.get(f"/runs/{parent.pk}/children/")
    assert response.status_code == 200
    Run.objects.filter(pk__in=[parent.pk, *(k.pk for k in kids)]).update(status="completed")
    response = client_.get(f"/runs/{parent.pk}/children/")
    assert response.status_code == 286
    assert response.content.decode().count("<li data-run=") == 3


def test_a_child_run_links_to_its_parent(client_: Client, redis_conn):
    parent, (a, _, c) = _family()
    html = client_.get(f"/runs/{a.pk}/").content.decode()
    assert (
        f'Child run of <a href="/runs/{parent.pk}/">#{parent.pk}</a>, '
        "started by its step <strong>fan</strong>"
    ) in html
    html = client_.get(f"/runs/{c.pk}/").content.decode()
    assert f'Child run of <a href="/runs/{a.pk + 1}/">#{a.pk + 1}</a></p>' in html
    assert 'id="children-h"' not in html


def test_a_timed_out_run_shows_why_and_offers_resume(staff_client: Client, redis_conn):
    run = services.start_run("t_deadline", {"sleep": 1})
    html = staff_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-deadline"' in html
    Run.objects.filter(pk=run.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    from runs.recovery import enforce_deadlines

    assert enforce_deadlines() == [run.pk]
    html = staff_client.get(f"/runs/{run.pk}/").content.decode()
    assert '<span class="badge-icon" aria-hidden="true">◷</span> timed out</span>' in html
    assert (
        '<p class="run-error mono">Timed out: the workflow&#x27;s timeout of 2s passed</p>' in html
    )
    assert 'data-action="resume"' in html
    assert 'id="run-deadline"' not in html
    history = staff_client.get("/?status=timed_out").content.decode()
    assert f'id="run-{run.pk}"' in history


def test_a_step_waiting_for_a_queue_slot_says_so(client_: Client, redis_conn):
    QueueLimit.objects.create(queue="gpu", limit=0)
    engine.forget_queue_limits()
    run = services.start_run("t_gpu", {})
    html = client_.get(f"/runs/{run.pk}/").content.decode()
    assert '<span class="muted">waiting for a free slot on queue gpu</span>' in html


def test_queue_limits_in_the_admin(staff_client: Client):
    response = staff_client.post(
        "/admin/runs/queuelimit/add/", {"queue": "gpu", "limit": "2", "note": "two cards"}
    )
    assert response.status_code == 302
    assert list(QueueLimit.objects.values_list("queue", "limit")) == [("gpu", 2)]
    response = staff_client.post("/admin/runs/queuelimit/add/", {"queue": " ", "limit": "-1"})
    assert response.status_code == 200
    assert QueueLimit.objects.count() == 1
    html = staff_client.get("/admin/runs/queuelimit/").content.decode()
    assert "gpu" in html


def test_the_api_shows_parent_children_and_deadline(redis_conn):
    import json as json_

    from runs.api import new_token

    token = new_token(User.objects.create_user("api-user", password="pw-api-12345"))
    parent, (a, b, c) = _family()
    client = Client()
    headers = {"Authorization": f"Bearer {token}"}
    data = json_.loads(client.get(f"/api/runs/{parent.pk}/", headers=headers).content)
    assert (data["parent"], data["children"], data["deadline"]) == (None, [a.pk, b.pk], None)
    assert data["steps"][0]["status"] == "waiting"
    assert data["steps"][0]["message"] == "1 of 2 ended"
    data = json_.loads(client.get(f"/api/runs/{b.pk}/", headers=headers).content)
    assert (data["parent"], data["children"]) == (parent.pk, [c.pk])
    run = services.start_run("t_deadline", {"sleep": 1})
    data = json_.loads(client.get(f"/api/runs/{run.pk}/", headers=headers).content)
    assert data["deadline"] == run.deadline.isoformat()


def test_the_admin_shows_a_runs_parent_step_deadline_and_stop_reason(staff_client, redis_conn):
    parent, (a, _, _) = _family()
    html = staff_client.get(f"/admin/runs/run/{a.pk}/change/").content.decode()
    assert "Parent step:" in html
    assert f"fan of run #{parent.pk}" in html
    run = services.start_run("t_deadline", {"sleep": 1})
    services.cancel_run(run.pk)
    html = staff_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "Deadline:" in html
    assert "Stop reason:" in html
    assert '<div class="readonly">cancel</div>' in html


def test_an_active_run_without_children_polls_a_slot_for_them(client_: Client, redis_conn):
    run = services.start_run("t_parent", {"count": 1})
    html = client_.get(f"/runs/{run.pk}/").content.decode()
    assert f'hx-get="/runs/{run.pk}/children/?slot=1"' in html
    assert 'id="children-h"' not in html
    assert client_.get(f"/runs/{run.pk}/children/?slot=1").status_code == 204
    services.start_run("t_child", {"n": 1}, parent=run)
    response = client_.get(f"/runs/{run.pk}/children/?slot=1")
    assert response.status_code == 200
    assert '<h2 id="children-h">Child runs</h2>' in response.content.decode()
    Run.objects.filter(pk=run.pk).update(status="completed")
    other = services.start_run("t_deploy", {})
    Run.objects.filter(pk=other.pk).update(status="completed")
    assert client_.get(f"/runs/{other.pk}/children/?slot=1").status_code == 286
    assert 'id="child-runs-slot"' not in client_.get(f"/runs/{other.pk}/").content.decode()


def test_the_workflow_page_shows_the_run_timeout(client_: Client):
    html = client_.get("/workflows/t_deadline/").content.decode()
    assert (
        '<p class="muted" id="wf-limits">Runs time out after <strong>2.0 s</strong> '
        "(each start or resume)</p>"
    ) in html
    html = client_.get("/workflows/t_limited/").content.decode()
    assert "at most <strong>1</strong> step of a run at once" in html
    assert 'id="wf-limits"' not in client_.get("/workflows/t_deploy/").content.decode()
