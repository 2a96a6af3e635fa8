"""The schedules pages: the list with a create form, one schedule with its edit form and
the runs it started, enable/disable/delete, and the cron preview.

Views read here and act only through :mod:`runs.schedules`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from stepflow.cron import timezone_names
from stepflow.errors import CronError, StepflowError
from stepflow.params import MASK
from stepflow.registry import registry
from stepflow.workflow import Workflow

from .. import schedules
from ..forms import PREFIX, param_field
from ..models import Run, Schedule
from ..views import HtmxHttpRequest, can_operate

#: How many of a schedule's runs its page lists (the history has them all).
RUNS_SHOWN = 50
#: How many ticks the preview shows.
PREVIEW_TICKS = 5
ACTIONS = ("enable", "disable", "delete")


# -- the form -------------------------------------------------------------------------------
class ScheduleForm(forms.Form):
    """A schedule's fields and, for the chosen workflow, one field per declared parameter
    (the start form's fields). ``runs.schedules.validate`` does every check."""

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    workflow = forms.ChoiceField(choices=())
    cron = forms.CharField(
        label="Cron",
        max_length=100,
        help_text="minute hour day-of-month month day-of-week, e.g. 30 2 * * mon-fri; "
        "or @hourly, @daily, @weekly, @monthly, @yearly",
        widget=forms.TextInput(attrs={"autocomplete": "off", "class": "mono"}),
    )
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        initial="UTC",
        help_text="The cron's wall clock: an IANA name such as UTC or Europe/Berlin",
        widget=forms.TextInput(attrs={"autocomplete": "off", "list": "tz-names"}),
    )
    enabled = forms.BooleanField(required=False, initial=True)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    #: The workflow whose parameter fields were shown (the select may have changed since).
    shown = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(
        self,
        *args: Any,
        workflow: Workflow | None = None,
        instance: Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.wf = workflow
        #: For templates, which must not index a Workflow (its ``[]`` raises UnknownStep).
        self.wf_name = workflow.name if workflow is not None else ""
        self.instance = instance
        self.spec: schedules.ScheduleSpec | None = None
        names = registry.names()
        choices = [(n, n) for n in names]
        if instance is not None and instance.workflow not in names:
            choices.insert(0, (instance.workflow, f"{instance.workflow} (not registered)"))
        self.fields["workflow"].choices = choices  # type: ignore[attr-defined]
        preview_url = reverse("schedule_preview")
        self.fields["cron"].widget.attrs.update(
            {
                "hx-get": preview_url,
                "hx-trigger": "input changed delay:300ms",
                "hx-target": "#cron-preview",
                "hx-swap": "outerHTML",
                "hx-include": "[name='timezone']",
                "aria-describedby": "cron-preview",
            }
        )
        self.fields["timezone"].widget.attrs.update(
            {
                "hx-get": preview_url,
                "hx-trigger": "input changed delay:300ms, change",
                "hx-target": "#cron-preview",
                "hx-swap": "outerHTML",
                "hx-include": "[name='cron']",
            }
        )
        self.fields["workflow"].widget.attrs.update(
            {
                "hx-get": reverse("schedule_params"),
                "hx-target": "#schedule-params",
                "hx-swap": "outerHTML",
                "hx-include": "[name='schedule_id']",
            }
        )
        if workflow is not None:
            self.initial.setdefault("workflow", workflow.name)
            self.initial.setdefault("shown", workflow.name)
            for p in workflow.params.values():
                self.fields[PREFIX + p.name] = param_field(p)
            if instance is not None and instance.workflow == workflow.name:
                self.initial.update(initial_params(workflow, instance))

    def param_fields(self) -> list[forms.BoundField]:
        return [self[n] for n in self.fields if n.startswith(PREFIX)]

    def basic_fields(self) -> list[forms.BoundField]:
        return [self[n] for n in ("name", "workflow", "cron", "timezone", "enabled", "note")]

    def raw_params(self, data: dict[str, Any]) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if self.wf is None:
            return raw
        for name, param in self.wf.params.items():
            value = data.get(PREFIX + name)
            if param.type == "bool":
                raw[name] = bool(value)
            elif value not in (None, ""):
                raw[name] = value
        return raw

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            self.spec = schedules.validate(
                data.get("name", ""),
                data.get("workflow", ""),
                data.get("cron", ""),
                data.get("timezone", ""),
                self.raw_params(data),
                instance=self.instance,
            )
        except schedules.ScheduleInvalid as exc:
            for key, message in exc.errors.items():
                if key != "params":
                    self.add_error(key, message)
            for key, message in exc.param_errors.items():
                field = PREFIX + key
                self.add_error(field if field in self.fields else None, message)
        return data

    def save(self, user: Any) -> Schedule:
        data = self.cleaned_data
        return schedules.save_schedule(
            data["name"],
            data["workflow"],
            data["cron"],
            data["timezone"],
            self.raw_params(data),
            enabled=bool(data.get("enabled")),
            note=data.get("note", ""),
            user=user,
            instance=self.instance,
        )


def initial_params(wf: Workflow, schedule: Schedule) -> dict[str, Any]:
    """The start form's fields filled with the schedule's parameters; secrets as the mask."""
    initial: dict[str, Any] = {}
    stored = schedule.params if isinstance(schedule.params, dict) else {}
    for name, value in stored.items():
        param = wf.params.get(name)
        if param is None or value is None:
            continue
        if param.secret:
            initial[PREFIX + name] = MASK
        elif param.type == "json":
            initial[PREFIX + name] = json.dumps(value, indent=2)
        else:
            initial[PREFIX + name] = value
    return initial


def _workflow(name: str | None) -> Workflow | None:
    if name and name in registry:
        return registry.get(name)
    names = registry.names()
    return registry.get(names[0]) if names and not name else None


def _switched_form(request: HttpRequest, instance: Schedule | None) -> ScheduleForm | None:
    """When the workflow select changed without JavaScript, the parameters shown were
    another workflow's: show the new workflow's fields, filled with its defaults."""
    chosen, shown = request.POST.get("workflow", ""), request.POST.get("shown", "")
    if not shown or chosen == shown or chosen not in registry:
        return None
    keep = {k: request.POST.get(k, "") for k in ("name", "cron", "timezone", "note")}
    keep["enabled"] = bool(request.POST.get("enabled"))
    form = ScheduleForm(
        initial={**keep, "workflow": chosen, "shown": chosen},
        workflow=registry.get(chosen),
        instance=instance,
    )
    form.switched = True  # type: ignore[attr-defined]
    return form


# -- what the pages show --------------------------------------------------------------------
@dataclass
class ScheduleRow:
    schedule: Schedule
    params: list[tuple[str, Any]]  # masked, by name
    problem: str
    next_local: str
    last_local: str
    runs: int = 0


def row(schedule: Schedule, runs: int = 0) -> ScheduleRow:
    return ScheduleRow(
        schedule=schedule,
        params=sorted(schedules.masked_params(schedule).items()),
        problem=schedules.problem(schedule) if schedule.enabled else "",
        next_local=schedules.local_time(schedule.next_run_at, schedule.timezone),
        last_local=schedules.local_time(schedule.last_run_at, schedule.timezone),
        runs=runs,
    )


@dataclass
class Preview:
    ticks: list[str]
    error: str = ""


def preview(cron: str, tz: str) -> Preview | None:
    if not (cron or "").strip():
        return None
    try:
        ticks = schedules.preview(cron, tz or "UTC", PREVIEW_TICKS)
    except CronError as exc:
        return Preview([], exc.message)
    return Preview([t.strftime("%a %Y-%m-%d %H:%M %Z") for t in ticks])


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {"can_operate": can_operate(request), "nav": "schedules", **extra}


def _form_context(form: ScheduleForm | None) -> dict[str, Any]:
    if form is None:
        return {"form": None}
    data = form.data if form.is_bound else form.initial
    shown = preview(str(data.get("cron", "") or ""), str(data.get("timezone", "") or ""))
    if shown is not None and form.is_bound and ("cron" in form.errors or "timezone" in form.errors):
        shown = Preview([])  # the field's own error says it already
    return {"form": form, "preview": shown, "tz_names": timezone_names()}


def _require_operate(request: HttpRequest) -> None:
    if not can_operate(request):
        raise PermissionDenied("Only operators can create and change schedules")


# -- views ------------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request: HtmxHttpRequest) -> HttpResponse:
    form: ScheduleForm | None = None
    status = 200
    if request.method == "POST":
        _require_operate(request)
        form = _switched_form(request, None)
        if form is None:
            form = ScheduleForm(request.POST, workflow=_workflow(request.POST.get("workflow")))
            if "preview" not in request.POST and form.is_valid():
                try:
                    schedule = form.save(request.user)
                except StepflowError as exc:
                    form.add_error(None, exc.message)
                else:
                    messages.success(
                        request,
                        f"Created schedule {schedule.name}; next run "
                        f"{schedules.local_time(schedule.next_run_at, schedule.timezone)}"
                        if schedule.enabled
                        else f"Created schedule {schedule.name} (disabled)",
                    )
                    return redirect("schedule_detail", schedule_id=schedule.pk)
            status = 200 if "preview" in request.POST else 400
    elif can_operate(request):
        form = ScheduleForm(workflow=_workflow(request.GET.get("workflow")))
    counts = dict(
        Run.objects.filter(schedule__isnull=False)
        .order_by()
        .values("schedule_id")
        .annotate(n=Count("id"))
        .values_list("schedule_id", "n")
    )
    rows = [row(s, counts.get(s.pk, 0)) for s in Schedule.objects.order_by("name")]
    ctx = _context(request, rows=rows, **_form_context(form))
    return render(request, "runs/schedules.html", ctx, status=status)


def _schedule_or_404(schedule_id: int) -> Schedule:
    found = Schedule.objects.select_related("created_by").filter(pk=schedule_id).first()
    if found is None:
        raise Http404(f"No schedule #{schedule_id}")
    return found


@login_required
@require_http_methods(["GET", "POST"])
def schedule_detail(request: HtmxHttpRequest, schedule_id: int) -> HttpResponse:
    schedule = _schedule_or_404(schedule_id)
    form: ScheduleForm | None = None
    status = 200
    if request.method == "POST":
        _require_operate(request)
        form = _switched_form(request, schedule)
        if form is None:
            form = ScheduleForm(
                request.POST,
                workflow=_workflow(request.POST.get("workflow") or schedule.workflow),
                instance=schedule,
            )
            if "preview" not in request.POST and form.is_valid():
                try:
                    saved = form.save(request.user)
                except StepflowError as exc:
                    form.add_error(None, exc.message)
                else:
                    messages.success(request, f"Saved schedule {saved.name}")
                    return redirect("schedule_detail", schedule_id=saved.pk)
            status = 200 if "preview" in request.POST else 400
    elif can_operate(request):
        form = ScheduleForm(
            initial={
                "name": schedule.name,
                "workflow": schedule.workflow,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "enabled": schedule.enabled,
                "note": schedule.note,
            },
            workflow=_workflow(schedule.workflow),
            instance=schedule,
        )
    runs = list(
        Run.objects.filter(schedule=schedule)
        .defer("params", "scope", "note")
        .select_related("created_by")
        .order_by("-pk")[:RUNS_SHOWN]
    )
    run_rows = [(r, schedules.local_time(r.scheduled_for, schedule.timezone)) for r in runs]
    total = Run.objects.filter(schedule=schedule).count() if len(runs) == RUNS_SHOWN else len(runs)
    upcoming = None
    if schedule.enabled:
        upcoming = preview(schedule.cron, schedule.timezone)
    ctx = _context(
        request,
        s=row(schedule, total),
        run_rows=run_rows,
        runs_total=total,
        upcoming=upcoming,
        **_form_context(form),
    )
    return render(request, "runs/schedules_detail.html", ctx, status=status)


@login_required
@require_POST
def schedule_action(request: HttpRequest, schedule_id: int, action: str) -> HttpResponse:
    if action not in ACTIONS:
        raise Http404(f"No action {action!r}")
    _require_operate(request)
    schedule = _schedule_or_404(schedule_id)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = ""
    try:
        if action == "delete":
            name, kept = schedules.delete_schedule(schedule)
            messages.success(
                request, f"Deleted schedule {name}; the {kept} run(s) it started are kept"
            )
            return redirect("schedules")
        changed = schedules.set_enabled(schedule, action == "enable")
    except StepflowError as exc:
        messages.error(request, exc.message)
        return redirect(back or reverse("schedule_detail", args=[schedule.pk]))
    if changed.enabled:
        next_run = schedules.local_time(changed.next_run_at, changed.timezone)
        messages.success(request, f"Enabled schedule {changed.name}; next run {next_run}")
    else:
        messages.success(request, f"Disabled schedule {changed.name}")
    return redirect(back or reverse("schedule_detail", args=[schedule.pk]))


@login_required
@require_GET
def schedule_preview(request: HttpRequest) -> HttpResponse:
    """The next ticks of ``?cron=&timezone=`` (the partial the form's inputs fetch)."""
    ctx = {"preview": preview(request.GET.get("cron", ""), request.GET.get("timezone", ""))}
    return render(request, "runs/schedules_preview.html", ctx)


@login_required
@require_GET
def schedule_params(request: HttpRequest) -> HttpResponse:
    """The parameter fields of ``?workflow=`` (swapped in when the workflow select changes)."""
    wf = _workflow(request.GET.get("workflow"))
    instance = None
    raw_id = request.GET.get("schedule_id", "")
    if raw_id.isdigit():
        instance = Schedule.objects.filter(pk=int(raw_id)).first()
    form = ScheduleForm(workflow=wf, instance=instance)
    return render(request, "runs/schedules_params.html", {"form": form})
