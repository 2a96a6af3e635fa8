"""The JSON API for other systems: start, read, resume, retry and cancel runs.

Authenticate with ``Authorization: Bearer <token>`` (``manage.py stepflow token
USER``). The same permissions as the pages: reading needs a login, acting needs
``runs.operate_run``. Errors are ``{"error": "<one sentence>"}`` with 400 (bad
input), 401, 403, 404, or 409 (refused in the run's state, or an idempotency
key reused with other parameters).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from stepflow.errors import InvalidParams, PlanError, StepflowError, UnknownStep, UnknownWorkflow
from stepflow.params import mask_params
from stepflow.registry import registry

from . import services
from .errors import ActionRefused, DefinitionChanged, IdempotencyConflict, RunNotFound
from .models import ApiToken, Run

OPERATE = "runs.operate_run"


def new_token(user: AbstractBaseUser, name: str = "") -> str:
    """Create a token for ``user``; the plain token is returned once and not stored."""
    token = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, digest=_digest(token), prefix=token[:8])
    return token


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def error(message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api_view(
    operate: bool = False,
) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    def wrap(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @csrf_exempt  # token-authenticated, no cookies: CSRF does not apply
        @wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error("Authentication required: send 'Authorization: Bearer <token>'", 401)
            token = (
                ApiToken.objects.select_related("user")
                .filter(digest=_digest(header[7:].strip()))
                .first()
            )
            if token is None or not token.user.is_active:
                return error("Invalid token", 401)
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
            request.user = token.user
            if operate and not token.user.has_perm(OPERATE):
                return error("This token's user may not operate runs", 403)
            try:
                return view(request, *args, **kwargs)
            except RunNotFound as exc:
                return error(exc.message, 404)
            except (UnknownWorkflow, UnknownStep) as exc:
                return error(exc.message, 404 if isinstance(exc, UnknownWorkflow) else 400)
            except InvalidParams as exc:
                return error(exc.message, 400, fields=exc.errors)
            except DefinitionChanged as exc:
                return error(exc.message, 409, changes=exc.changes)
            except (IdempotencyConflict, ActionRefused, PlanError) as exc:
                return error(exc.message, 409)
            except StepflowError as exc:
                return error(exc.message, 400)

        return inner

    return wrap


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StepflowError("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise StepflowError("The request body must be a JSON object")
    return data


def run_json(run: Run, steps: bool = True) -> dict[str, Any]:
    try:
        declared = registry.get(run.workflow).params
    except StepflowError:
        declared = {}
    data: dict[str, Any] = {
        "id": run.pk,
        "workflow": run.workflow,
        "status": run.status,
        "progress": round(run.progress, 4),
        "params": mask_params(declared, run.params),
        "idempotency_key": run.idempotency_key,
        "attempt": run.attempt,
        "error": run.error_summary,
        "failed_step": run.failed_step or None,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "deadline": run.deadline.isoformat() if run.deadline else None,
        "parent": run.parent_id,
        "schedule": run.schedule_id,
        "url": f"/runs/{run.pk}/",
    }
    if steps:
        data["children"] = list(run.children.order_by("pk").values_list("pk", flat=True))
        data["steps"] = [
            {
                "name": s.name,
                "status": s.status,
                "attempts": s.attempts,
                "error": s.error,
                "items_done": s.items_done,
                "progress": s.fraction,
                "message": s.progress_message,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in run.steps.all()
        ]
    return data


@require_POST
@api_view(operate=True)
def start(request: HttpRequest) -> JsonResponse:
    body = _body(request)
    workflow = body.get("workflow")
    if not isinstance(workflow, str) or not workflow:
        raise StepflowError("'workflow' (the workflow's name) is required")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise StepflowError("'params' must be a JSON object")
    key = body.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise StepflowError("'idempotency_key' must be a string")
    run = services.start_run(workflow, params, idempotency_key=key, user=request.user, origin="api")
    created = getattr(run, "created", True)
    return JsonResponse(run_json(run), status=201 if created else 200)


@require_GET
@api_view()
def detail(request: HttpRequest, run_id: int) -> JsonResponse:
    return JsonResponse(run_json(services.get_run(run_id)))


@require_POST
@api_view(operate=True)
def resume(request: HttpRequest, run_id: int) -> JsonResponse:
    body = _body(request)
    mode = body.get("mode", "resume")
    skip = body.get("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise StepflowError("'skip' must be a list of step names")
    plan = services.resume_run(
        run_id,
        mode,
        step=body.get("step"),
        skip=skip,
        user=request.user,
        confirm_definition_change=bool(body.get("confirm_definition_change", False)),
        clear_items=bool(body.get("clear_items", False)),
        origin="api",
    )
    return JsonResponse(
        {
            "run": run_json(services.get_run(run_id)),
            "plan": {
                "will_run": plan.will_run,
                "kept": plan.kept,
                "skip": plan.skip,
                "summary": plan.summary(),
            },
        }
    )


@require_POST
@api_view(operate=True)
def retry(request: HttpRequest, run_id: int) -> JsonResponse:
    body = _body(request)
    step = body.get("step")
    if step:
        services.retry_step(run_id, str(step), user=request.user, origin="api")
    else:
        services.resume_run(run_id, "retry_failed", user=request.user, origin="api")
    return JsonResponse(run_json(services.get_run(run_id)))


@require_POST
@api_view(operate=True)
def cancel(request: HttpRequest, run_id: int) -> JsonResponse:
    reason = _body(request).get("reason", "")
    services.cancel_run(run_id, user=request.user, reason=str(reason), origin="api")
    return JsonResponse(run_json(services.get_run(run_id)))
