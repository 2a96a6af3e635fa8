"""The JSON API: token authentication, the same permissions as the pages, clear errors."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from runs import services
from runs.api import new_token
from runs.models import ApiToken, Run, RunEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_token() -> str:
    user = User.objects.create_user("ops", password="pw-ops-12345")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return new_token(user, "ci")


@pytest.fixture
def viewer_token() -> str:
    return new_token(User.objects.create_user("viewer", password="pw-view-12345"))


def call(method: str, path: str, token: str | None, body: object = None) -> tuple[int, dict]:
    client = Client(enforce_csrf_checks=True)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body) if body is not None else ""
    response = getattr(client, method)(path, data, content_type="application/json", headers=headers)
    return response.status_code, response.json()


def test_start_is_idempotent_and_conflicts_are_409(operator_token, redis_conn):
    body = {"workflow": "t_deploy", "params": {"note": "x"}, "idempotency_key": "deploy-42"}
    status, first = call("post", "/api/runs/", operator_token, body)
    assert status == 201
    assert (first["workflow"], first["status"], first["params"]) == (
        "t_deploy",
        "running",
        {"note": "x", "sleep": 0.0},
    )
    assert [s["name"] for s in first["steps"]] == ["prepare", "build", "template", "deploy"]
    status, again = call("post", "/api/runs/", operator_token, body)
    assert (status, again["id"]) == (200, first["id"])
    status, conflict = call("post", "/api/runs/", operator_token, {**body, "params": {"note": "y"}})
    assert status == 409
    assert conflict == {
        "error": f"Idempotency key 'deploy-42' was already used for run #{first['id']} "
        "(t_deploy) with different parameters"
    }
    assert Run.objects.count() == 1
    assert Run.objects.get().origin == "api"
    assert RunEvent.objects.get(kind="created").actor == "ops"


def test_bad_input_is_refused_with_a_clear_message(operator_token, redis_conn):
    assert call("post", "/api/runs/", operator_token, {"workflow": "nope"})[0] == 404
    status, body = call(
        "post", "/api/runs/", operator_token, {"workflow": "t_deploy", "params": {"sleep": "x"}}
    )
    assert (status, body) == (
        400,
        {
            "error": "Invalid parameters: sleep: expected a number, got 'x'",
            "fields": {"sleep": "expected a number, got 'x'"},
        },
    )
    assert call("post", "/api/runs/", operator_token, ["x"]) == (
        400,
        {"error": "The request body must be a JSON object"},
    )
    assert call("get", "/api/runs/999/", operator_token) == (404, {"error": "No run with id 999"})
    assert Run.objects.count() == 0


def test_read_resume_retry_cancel(operator_token, redis_conn):
    run = services.start_run("t_deploy", {})
    status, body = call("get", f"/api/runs/{run.pk}/", operator_token)
    assert (status, body["status"]) == (200, "running")
    status, body = call("post", f"/api/runs/{run.pk}/resume/", operator_token, {})
    assert (status, body) == (
        409,
        {"error": f"Run #{run.pk} is already running; wait for it to stop or cancel it first"},
    )
    status, body = call("post", f"/api/runs/{run.pk}/cancel/", operator_token, {"reason": "api"})
    assert (status, body["status"]) == (200, "cancelled")
    status, body = call("post", f"/api/runs/{run.pk}/retry/", operator_token, {})
    assert (status, body) == (409, {"error": f"Run #{run.pk}: Nothing to retry: no step failed"})
    status, body = call(
        "post",
        f"/api/runs/{run.pk}/resume/",
        operator_token,
        {"mode": "continue_from", "step": "build"},
    )
    assert status == 409
    assert body == {
        "error": f"Run #{run.pk}: Cannot continue from 'build': it depends on 'prepare', "
        "which is cancelled"
    }
    status, body = call("post", f"/api/runs/{run.pk}/resume/", operator_token, {"mode": "resume"})
    assert (status, body["run"]["status"], body["plan"]["will_run"]) == (
        200,
        "running",
        ["prepare", "build", "template", "deploy"],
    )
    assert RunEvent.objects.filter(run=run, kind="resumed").get().actor == "ops"


def test_authentication_and_permissions(viewer_token, operator_token, redis_conn):
    run = services.start_run("t_deploy", {})
    assert call("get", f"/api/runs/{run.pk}/", None) == (
        401,
        {"error": "Authentication required: send 'Authorization: Bearer <token>'"},
    )
    assert call("get", f"/api/runs/{run.pk}/", "wrong") == (401, {"error": "Invalid token"})
    assert call("get", f"/api/runs/{run.pk}/", viewer_token)[0] == 200
    assert call("post", f"/api/runs/{run.pk}/cancel/", viewer_token, {}) == (
        403,
        {"error": "This token's user may not operate runs"},
    )
    assert call("post", "/api/runs/", viewer_token, {"workflow": "t_deploy"})[0] == 403
    assert Run.objects.get(pk=run.pk).status == "running"
    assert ApiToken.objects.filter(last_used_at__isnull=False).count() == 1
    assert len(ApiToken.objects.get(name="ci").digest) == 64  # only a hash is stored
