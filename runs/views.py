"""The dashboard's pages. One view per page; htmx requests get a named partial.

Views read through :mod:`runs.ui` and act only through :mod:`runs.services`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseStopPolling, reswap, retarget
from django_htmx.middleware import HtmxDetails

from stepflow import states
from stepflow.errors import StepflowError
from stepflow.registry import registry

from . import services
from .errors import IdempotencyConflict
from .forms import StartRunForm
from .models import Run
from .ui import actions
from .ui import children as children_ui
from .ui import compare as compare_ui
from .ui import detail as detail_ui
from .ui import history as history_ui
from .ui import live as live_ui
from .ui import workflows as workflows_ui

OPERATE = "runs.operate_run"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    user: AbstractBaseUser | AnonymousUser


def can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm(OPERATE)


def _run_or_404(run_id: int) -> Run:
    try:
        return detail_ui.load_run(run_id)
    except Run.DoesNotExist:
        raise Http404(f"No run #{run_id}") from None


# -- history ----------------------------------------------------------------------------
@login_required
@require_GET
def history(request: HtmxHttpRequest) -> HttpResponse:
    row_id = request.GET.get("row", "")
    if request.htmx and row_id.isdigit():
        return history_row(request, int(row_id))
    query = history_ui.HistoryQuery.from_querydict(request.GET)
    page = history_ui.page(query)
    ctx = {
        "query": query,
        "page": page,
        "workflows": history_ui.workflow_choices(),
        "statuses": history_ui.status_choices(),
        "newer_url": query.url(after=page.newer) if page.newer else "",
        "older_url": query.url(before=page.older) if page.older else "",
        "can_operate": can_operate(request),
        "nav": "runs",
    }
    template = "runs/history.html"
    if request.htmx and request.htmx.target == "results":
        template += "#results"
    return render(request, template, ctx)


def history_row(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    """One polled row of the history: the run as it is now; polling stops once finished."""
    run = history_ui.base_queryset().filter(pk=run_id).first()
    if run is None:
        return HttpResponseStopPolling("")
    html = render_to_string("runs/history.html#row", {"run": run}, request=request)
    if history_ui.is_active(run):
        return HttpResponse(html)
    return HttpResponseStopPolling(html)


# -- run detail -------------------------------------------------------------------------
def _detail_context(request: HttpRequest, run: Run, **extra: Any) -> dict[str, Any]:
    detail = detail_ui.load_detail(run)
    operate = can_operate(request)
    return {
        "run": run,
        "d": detail,
        "token": live_ui.version_of(detail).token(),
        "can_operate": operate,
        "actions": actions.available(run, bool(detail.failed_steps)) if operate else [],
        "nav": "runs",
        **(_children_context(run) if children_ui.has_children(run) else {}),
        **extra,
    }


def _children_context(run: Run) -> dict[str, Any]:
    tree = children_ui.child_tree(run)
    return {
        "has_children": True,
        "children": tree.children,
        "shown": tree.shown,
        "truncated": tree.truncated,
        "tree_active": tree.active,
    }


def _live_region(request: HttpRequest, run: Run) -> HttpResponse:
    """The whole live region, in place of the one shown (the polling head asked for it);
    polling stops once the run is finished."""
    ctx = _detail_context(request, run)
    html = render_to_string("runs/detail.html#live", ctx, request=request)
    response = HttpResponse(html) if ctx["d"].active else HttpResponseStopPolling(html)
    return reswap(retarget(response, "#run-live"), "outerHTML")


@login_required
@require_GET
def run_detail(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(run_id)
    if request.htmx and request.htmx.target == "run-live":
        return _live_region(request, run)
    ctx = _detail_context(request, run, previous_id=detail_ui.previous_run_id(run))
    return render(request, "runs/detail.html", ctx)


@login_required
@require_GET
def run_children(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    """The tree of child runs (the run page refreshes it while any of them is active).

    ``?slot=1``: asked by an active run's page that had no child runs yet: nothing
    (204) until there are some, then the whole card in place of the slot."""
    run = _run_or_404(run_id)
    finished = run.status in states.RUN_FINISHED
    if request.GET.get("slot"):
        if not children_ui.has_children(run):
            return HttpResponseStopPolling("") if finished else HttpResponse(status=204)
        ctx = {"run": run, **_children_context(run)}
        return HttpResponse(render_to_string("runs/_children_card.html", ctx, request=request))
    ctx = _children_context(run)
    html = render_to_string("runs/_children.html", ctx, request=request)
    if not ctx["tree_active"] and finished:
        return HttpResponseStopPolling(html)
    return HttpResponse(html)


@login_required
@require_GET
def run_live(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    """What the polling head of the run page swaps: see :mod:`runs.ui.live`."""
    try:
        run = live_ui.load_run(run_id)
    except Run.DoesNotExist:
        raise Http404(f"No run #{run_id}") from None
    update = live_ui.poll(run, request.GET.get("v", ""))
    if update.kind == "same":
        return HttpResponse(status=204)
    if update.kind == "all":
        return _live_region(request, run)
    assert update.version is not None
    ctx = {
        "run": run,
        "d": update.head,
        "token": update.version.token(),
        "steps": update.steps,
        "step_oob": True,
        "history": update.history,
        "logs": update.logs,
        "charts": update.charts,
    }
    return HttpResponse(render_to_string("runs/detail.html#update", ctx, request=request))


@login_required
@require_http_methods(["GET", "POST"])
def run_action(request: HtmxHttpRequest, run_id: int, action: str) -> HttpResponse:
    """GET: the confirm panel with the plan. POST: do it (operators only)."""
    if action not in actions.ACTIONS:
        raise Http404(f"No action {action!r}")
    if not can_operate(request):
        raise PermissionDenied("Only operators can start, resume, retry or cancel runs")
    run = _run_or_404(run_id)
    status = 200
    if request.method == "POST":
        panel, status = actions.perform(run, action, request.user, request.POST.dict())
        if panel.flash and not request.htmx:
            messages.success(request, panel.flash)
            return redirect("run_detail", run_id=run.pk)
    else:
        clear = request.GET.get("clear_items") in ("1", "on", "true")
        panel = actions.build(run, action, request.GET.get("step"), clear)
    if not request.htmx:
        ctx = _detail_context(request, run, panel=panel, previous_id=None)
        return render(request, "runs/detail.html", ctx, status=status)
    html = render_to_string("runs/_action_panel.html", {"panel": panel}, request=request)
    if request.method == "POST":
        # The page follows at once: the live region comes back out of band, polling again.
        run.refresh_from_db()
        live = render_to_string(
            "runs/detail.html#live", {**_detail_context(request, run), "oob": True}, request
        )
        html += live
    return HttpResponse(html, status=status)


# -- compare ----------------------------------------------------------------------------
def _int(raw: str | None) -> int | None:
    raw = (raw or "").strip().lstrip("#")
    return int(raw) if raw.isdigit() else None


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    picked = [i for i in (_int(v) for v in request.GET.getlist("run")) if i is not None]
    if len(picked) >= 2 and not request.GET.get("a"):
        first, second = sorted(picked[:2])
        return redirect(f"{reverse('compare')}?a={first}&b={second}")
    a_id, b_id = _int(request.GET.get("a")), _int(request.GET.get("b"))
    if a_id is None or b_id is None:
        ctx = {"error": "Pick two runs: select them in the history, or give ?a=<id>&b=<id>."}
        if picked or request.GET.get("a") or request.GET.get("b"):
            ctx["error"] = "Select exactly two runs to compare."
        return render(request, "runs/compare.html", ctx, status=400)
    try:
        a, b, steps = compare_ui.load_pair(a_id, b_id)
    except Run.DoesNotExist as exc:
        raise Http404(str(exc)) from None
    ctx = {
        "a": a,
        "b": b,
        "params": compare_ui.param_rows(a, b),
        "steps": steps,
        "same_definition": a.definition_hash == b.definition_hash,
        "nav": "runs",
    }
    return render(request, "runs/compare.html", ctx)


# -- workflows --------------------------------------------------------------------------
@login_required
@require_GET
def workflows(request: HttpRequest) -> HttpResponse:
    cards = [workflows_ui.stats(wf) for wf in registry]
    return render(request, "runs/workflows.html", {"cards": cards, "nav": "workflows"})


@login_required
@require_http_methods(["GET", "POST"])
def workflow_detail(request: HttpRequest, name: str) -> HttpResponse:
    try:
        wf = registry.get(name)
    except StepflowError:
        raise Http404(f"No workflow named {name!r}") from None
    operate = can_operate(request)
    status = 200
    if request.method == "POST":
        if not operate:
            raise PermissionDenied("Only operators can start runs")
        form = StartRunForm(wf, request.POST)
        if form.is_valid():
            try:
                run = services.start_run(
                    wf,
                    form.cleaned_params,
                    idempotency_key=form.key,
                    user=request.user,
                )
            except IdempotencyConflict as exc:
                form.add_error("idempotency_key", exc.message)
            except StepflowError as exc:
                form.add_error(None, exc.message)
            else:
                if not getattr(run, "created", True):
                    messages.info(
                        request, f"A run with this idempotency key already exists: #{run.pk}"
                    )
                return redirect("run_detail", run_id=run.pk)
        status = 400
    else:
        form = StartRunForm(wf)
    ctx = {
        "wf": workflows_ui.info(wf),
        "dag": detail_ui.charts.dag(wf),
        "form": form,
        "can_operate": operate,
        "recent": workflows_ui.recent_runs(wf),
        "trends": detail_ui.metric_trends(wf),
        "trend_runs": detail_ui.TREND_RUNS,
        "nav": "workflows",
    }
    return render(request, "runs/workflow_detail.html", ctx, status=status)
