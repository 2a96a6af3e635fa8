"""The Django admin: staff review what is stored and correct it through the services.

Statuses are never edited here. Actions call ``runs.services``; edits of
parameters, notes and checkpoints, and deletions, call ``runs.corrections``;
each one is checked by the state rules and leaves a RunEvent naming the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from stepflow.errors import StepflowError
from stepflow.params import mask_params
from stepflow.registry import registry
from stepflow.states import STATUS_ICONS

from . import corrections, services
from .admin_forms import CheckpointAdminForm, RunAdminForm, UnmarkItemsForm
from .models import ApiToken, Checkpoint, Run, RunEvent, StepAttempt, StepRun


def badge(status: str) -> str:
    return format_html(
        '<span class="sf-badge sf-{}">{} {}</span>',
        status,
        STATUS_ICONS.get(status, "•"),
        status.replace("_", " "),
    )


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre class="sf-json">{}</pre>',
        json.dumps(value, indent=2, default=str, ensure_ascii=False),
    )


def admin_link(obj: Any, text: Any = None) -> str:
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj if text is None else text)


def _swap(row: str | tuple[str, ...], old: str, new: str) -> str | tuple[str, ...]:
    if isinstance(row, str):
        return new if row == old else row
    return tuple(new if f == old else f for f in row)


def declared_params(workflow: str) -> dict[str, Any]:
    return registry.get(workflow).params if workflow in registry else {}


def masked_event_data(event: RunEvent, workflow: str) -> dict[str, Any]:
    """An event's data with any parameter values masked (events store them masked
    already; this keeps a secret from showing if one slipped through)."""
    declared = declared_params(workflow)
    return {
        k: mask_params(declared, v)
        if k in ("params", "before", "after") and isinstance(v, dict)
        else v
        for k, v in (event.data or {}).items()
    }


class AdminMedia:
    css = {"all": ["runs/admin.css"]}


class ReadOnlyMixin:
    """Rows written only by the engine and the services: viewable, never edited here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# -- inlines ---------------------------------------------------------------------------


class StepRunInline(ReadOnlyMixin, admin.TabularInline):
    model = StepRun
    classes = ["sf-inline"]
    fields = [
        "step_link",
        "status_badge",
        "attempts",
        "items_done",
        "progress_text",
        "duration",
        "error_line",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Steps"

    @admin.display(description="step")
    def step_link(self, obj: StepRun) -> str:
        return admin_link(obj, obj.name)

    @admin.display(description="status")
    def status_badge(self, obj: StepRun) -> str:
        return badge(obj.status)

    @admin.display(description="progress")
    def progress_text(self, obj: StepRun) -> str:
        if obj.fraction is None:
            return obj.progress_message or "—"
        return f"{obj.fraction:.0%} {obj.progress_message}".strip()

    @admin.display(description="duration")
    def duration(self, obj: StepRun) -> str:
        return human_duration(obj.duration)

    @admin.display(description="error")
    def error_line(self, obj: StepRun) -> str:
        lines = (obj.error or "").strip().splitlines()
        return Truncator(lines[-1]).chars(120) if lines else ""


class RunEventInline(ReadOnlyMixin, admin.TabularInline):
    model = RunEvent
    classes = ["sf-inline"]
    fields = ["created_at", "kind", "step", "level", "actor", "message", "data_display"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "History (step logs are listed under Run events)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RunEvent]:
        return super().get_queryset(request).exclude(kind="log").select_related("run")

    @admin.display(description="data")
    def data_display(self, obj: RunEvent) -> str:
        data = masked_event_data(obj, obj.run.workflow)
        return pretty_json(data) if data else ""


class StepAttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = StepAttempt
    classes = ["sf-inline"]
    fields = [
        "number",
        "run_attempt",
        "status_badge",
        "worker",
        "started_at",
        "duration_text",
        "error",
        "traceback_display",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="status")
    def status_badge(self, obj: StepAttempt) -> str:
        return badge(obj.status)

    @admin.display(description="duration")
    def duration_text(self, obj: StepAttempt) -> str:
        return human_duration(obj.duration)

    @admin.display(description="traceback")
    def traceback_display(self, obj: StepAttempt) -> str:
        if not obj.traceback:
            return ""
        return format_html(
            '<details><summary>traceback</summary><pre class="sf-json">{}</pre></details>',
            obj.traceback,
        )


class CheckpointInline(ReadOnlyMixin, admin.TabularInline):
    model = Checkpoint
    classes = ["sf-inline"]
    fields = ["key_link", "value_display", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Checkpoints (edit one by following its key)"

    @admin.display(description="key")
    def key_link(self, obj: Checkpoint) -> str:
        return admin_link(obj, obj.key)

    @admin.display(description="value")
    def value_display(self, obj: Checkpoint) -> str:
        return pretty_json(obj.value)


# -- runs ------------------------------------------------------------------------------


class RefusalMixin:
    """Saving through a service may still be refused (someone acted first): the
    reason is shown instead of the admin's "changed successfully"."""

    def _refuse(self, request: HttpRequest, exc: StepflowError) -> None:
        request._stepflow_refused = exc.message  # type: ignore[attr-defined]

    def _refused(self, request: HttpRequest) -> str | None:
        return getattr(request, "_stepflow_refused", None)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if self._refused(request):
            return None
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if self._refused(request):
            return None
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        refused = self._refused(request)
        if refused:
            self.message_user(request, refused, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)  # type: ignore[misc]

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None) -> Any:
        refused = self._refused(request)
        if refused:
            self.message_user(request, refused, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.path)
        return super().response_add(request, obj, post_url_continue)  # type: ignore[misc]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> Any:
        refused = self._refused(request)
        if refused:
            self.message_user(request, refused, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.path.rsplit("/delete/", 1)[0] + "/change/")
        return super().response_delete(request, obj_display, obj_id)  # type: ignore[misc]

    def _delete_refusing(
        self, request: HttpRequest, queryset: QuerySet[Any], refusal: Callable[[Any], str | None]
    ) -> Any:
        """Django's bulk delete on the rows that may be deleted; the others are reported."""
        allowed = []
        for obj in queryset.order_by("pk"):
            reason = refusal(obj)
            if reason:
                self.message_user(request, reason, messages.ERROR)  # type: ignore[attr-defined]
            else:
                allowed.append(obj.pk)
        if not allowed:
            return None
        return django_delete_selected(self, request, queryset.filter(pk__in=allowed))


@admin.register(Run)
class RunAdmin(RefusalMixin, admin.ModelAdmin):
    form = RunAdminForm
    Media = AdminMedia
    list_display = [
        "id",
        "workflow",
        "status_badge",
        "progress_bar",
        "created_by",
        "started_at",
        "finished_at",
        "duration_text",
        "params_short",
    ]
    list_display_links = ["id", "workflow"]
    list_filter = [
        "status",
        "workflow",
        "created_at",
        ("created_by", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["id__exact", "idempotency_key", "params"]
    search_help_text = "Search by run id, idempotency key or a parameter value."
    date_hierarchy = "created_at"
    list_select_related = ["created_by"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["resume_runs", "retry_failed_runs", "cancel_runs", "delete_selected"]
    inlines = [StepRunInline, RunEventInline]
    summary_rows = [
        ("workflow", "status_badge", "progress_bar", "attempt"),
        ("error_summary",),
        ("created_by", "origin", "parent", "parent_step", "idempotency_key"),
        ("schedule", "scheduled_for", "deadline", "stop_reason"),
        ("created_at", "started_at", "finished_at", "duration_text"),
    ]
    readonly_fields = [
        *(f for row in summary_rows for f in row),
        "definition_hash",
        "parameters",
        "params_hash",
        "attempts_table",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        editable = self.has_change_permission(request, obj)
        return [
            (None, {"fields": self.summary_rows}),
            (
                "Parameters",
                {"fields": ["params_json" if editable else "parameters", "params_hash"]},
            ),
            ("Review", {"fields": ["note"]}),
            ("Attempts", {"fields": ["attempts_table"]}),
            ("Definition", {"fields": ["definition_hash"], "classes": ["collapse"]}),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started from the dashboard, the CLI or the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and corrections.delete_refusal(obj):
            return False
        return super().has_delete_permission(request, obj)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.operate_run")

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        return super().get_search_results(request, queryset, search_term.strip().lstrip("#"))

    # -- columns and fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Run) -> str:
        if obj.status == "failed" and obj.failed_step:
            return format_html("{}<br><small>at {}</small>", badge(obj.status), obj.failed_step)
        return badge(obj.status)

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, obj: Run) -> str:
        pct = round(max(0.0, min(1.0, obj.progress)) * 100)
        return format_html(
            '<progress class="sf-progress" max="100" value="{}"></progress> {}%', pct, pct
        )

    @admin.display(description="duration")
    def duration_text(self, obj: Run) -> str:
        return human_duration(obj.duration)

    @admin.display(description="parameters")
    def params_short(self, obj: Run) -> str:
        shown = mask_params(declared_params(obj.workflow), obj.params or {})
        text = ", ".join(  # sorted: the same order on every database (jsonb sorts, SQLite not)
            f"{k}={json.dumps(v, default=str, ensure_ascii=False)}"
            for k, v in sorted(shown.items())
        )
        return Truncator(text).chars(60)

    @admin.display(description="parameters")
    def parameters(self, obj: Run) -> str:
        return pretty_json(mask_params(declared_params(obj.workflow), obj.params or {}))

    @admin.display(description="attempts of every step")
    def attempts_table(self, obj: Run) -> str:
        rows = (
            StepAttempt.objects.filter(step__run=obj)
            .select_related("step")
            .order_by("step__position", "number")
        )
        if not rows:
            return "No attempt yet."
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.step.name,
                    a.number,
                    badge(a.status),
                    a.worker,
                    localize(a.started_at),
                    human_duration(a.duration),
                )
                for a in rows
            ),
        )
        errors = format_html_join(
            "",
            "<li><b>{} attempt {}</b>: <code>{}</code></li>",
            ((a.step.name, a.number, Truncator(a.error).chars(300)) for a in rows if a.error),
        )
        return format_html(
            '<table class="sf-attempts"><thead><tr><th>step</th><th>#</th><th>status</th>'
            "<th>worker</th><th>started</th><th>duration</th></tr></thead><tbody>{}</tbody>"
            '</table><ul class="sf-errors">{}</ul>',
            body,
            errors,
        )

    # -- edits go through runs.corrections

    def save_model(self, request: HttpRequest, obj: Run, form: Any, change: bool) -> None:
        if not change:
            raise PermissionDenied
        try:
            if form.params_changed:
                corrections.update_params(obj.pk, form.cleaned_data["params_json"], request.user)
            if form.note_changed:
                corrections.update_note(obj.pk, form.cleaned_data["note"], request.user)
        except StepflowError as exc:
            self._refuse(request, exc)
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Run) -> None:
        try:
            corrections.delete_run(obj.pk, request.user)
        except StepflowError as exc:
            self._refuse(request, exc)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        for run in queryset.order_by("pk"):
            try:
                corrections.delete_run(run.pk, request.user)
            except StepflowError as exc:
                self.message_user(request, exc.message, messages.ERROR)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """What a delete removes, counted rather than listed: a run may have
        thousands of events, and its rows are removed with it by design."""
        runs = list(objs)
        ids = [r.pk for r in runs]
        frontier = ids
        while frontier:
            frontier = list(Run.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
            ids += frontier
        to_delete = [admin_link(r) for r in runs]
        counts = {
            "runs": len(ids),
            "step runs": StepRun.objects.filter(run_id__in=ids).count(),
            "step attempts": StepAttempt.objects.filter(step__run_id__in=ids).count(),
            "checkpoints": Checkpoint.objects.filter(step__run_id__in=ids).count(),
            "run events": RunEvent.objects.filter(run_id__in=ids).count(),
        }
        perms_needed = (
            set() if all(self.has_delete_permission(request, r) for r in runs) else {"runs"}
        )
        return to_delete, {k: v for k, v in counts.items() if v}, perms_needed, []

    # -- actions call runs.services

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Run], act: Callable[[Run], str]
    ) -> None:
        for run in queryset.order_by("pk"):
            try:
                done = act(run)
            except StepflowError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, done, messages.SUCCESS)

    @admin.action(permissions=["operate"], description="Resume selected runs (where they stopped)")
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def act(run: Run) -> str:
            plan = services.resume_run(run.pk, "resume", user=request.user, origin="admin")
            return f"Run #{run.pk} resumed. {plan.summary()}".strip()

        self._each(request, queryset, act)

    @admin.action(permissions=["operate"], description="Retry failed steps of selected runs")
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def act(run: Run) -> str:
            plan = services.resume_run(run.pk, "retry_failed", user=request.user, origin="admin")
            return f"Run #{run.pk}: failed steps retried. {plan.summary()}".strip()

        self._each(request, queryset, act)

    @admin.action(permissions=["operate"], description="Cancel selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        def act(run: Run) -> str:
            done = services.cancel_run(run.pk, user=request.user, origin="admin")
            if done.status == "cancelling":
                return f"Run #{run.pk} is being cancelled; running steps are asked to stop."
            return f"Run #{run.pk} cancelled."

        self._each(request, queryset, act)

    @admin.action(permissions=["delete"], description="Delete selected finished runs")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Run]) -> Any:
        return self._delete_refusing(request, queryset, corrections.delete_refusal)


# -- steps, attempts, checkpoints, events ----------------------------------------------


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    Media = AdminMedia
    list_display = [
        "__str__",
        "run_link",
        "name",
        "status_badge",
        "attempts",
        "items_done",
        "duration_text",
        "worker",
    ]
    list_filter = ["status", "run__workflow"]
    search_fields = ["run__id__exact", "name"]
    list_select_related = ["run"]
    show_full_result_count = False
    actions = ["unmark_all_items"]
    inlines = [StepAttemptInline, CheckpointInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("run_link", "name", "position", "status_badge"),
                    ("queue", "attempts", "round_start", "worker", "job_id"),
                    ("enqueued_at", "started_at", "finished_at", "duration_text"),
                    ("heartbeat_at", "retry_at"),
                ]
            },
        ),
        ("Progress", {"fields": [("progress_text", "items"), "metrics_display"]}),
        (
            "Result",
            {
                "fields": [
                    "error_display",
                    "skip_reason",
                    "output_display",
                    "rollback_display",
                    "rolled_back_at",
                ]
            },
        ),
    ]
    readonly_fields = [*flatten_fieldsets(fieldsets), "items_unmark"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[StepRun]:
        return super().get_queryset(request).select_related("run")

    def has_unmark_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.change_steprun")

    @admin.display(description="run", ordering="run")
    def run_link(self, obj: StepRun) -> str:
        return admin_link(obj.run)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: StepRun) -> str:
        return badge(obj.status)

    @admin.display(description="duration")
    def duration_text(self, obj: StepRun) -> str:
        return human_duration(obj.duration)

    @admin.display(description="progress")
    def progress_text(self, obj: StepRun) -> str:
        if obj.progress_total:
            return f"{obj.progress_current or 0:g} / {obj.progress_total:g} {obj.progress_message}"
        return obj.progress_message or "—"

    @admin.display(description="items done")
    def items(self, obj: StepRun) -> str:
        return localize(obj.items_done)

    @admin.display(description="items done")
    def items_unmark(self, obj: StepRun) -> str:
        url = reverse("admin:runs_steprun_unmark", args=[obj.pk])
        return format_html('{} · <a href="{}">Un-mark items…</a>', localize(obj.items_done), url)

    @admin.display(description="metrics")
    def metrics_display(self, obj: StepRun) -> str:
        return pretty_json(obj.metrics) if obj.metrics else "—"

    @admin.display(description="error")
    def error_display(self, obj: StepRun) -> str:
        return format_html('<pre class="sf-json">{}</pre>', obj.error) if obj.error else "—"

    @admin.display(description="output")
    def output_display(self, obj: StepRun) -> str:
        return pretty_json(obj.output) if obj.output is not None else "—"

    @admin.display(description="rollback data")
    def rollback_display(self, obj: StepRun) -> str:
        return pretty_json(obj.rollback_data) if obj.rollback_data is not None else "—"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if not self.has_unmark_permission(request):
            return self.fieldsets
        return [
            (
                name,
                {**spec, "fields": [_swap(row, "items", "items_unmark") for row in spec["fields"]]},
            )
            for name, spec in self.fieldsets
        ]

    def get_urls(self) -> list[Any]:
        unmark = path(
            "<path:object_id>/unmark/",
            self.admin_site.admin_view(self.unmark_view),
            name="runs_steprun_unmark",
        )
        return [unmark, *super().get_urls()]

    def _unmark(self, request: HttpRequest, step: StepRun, keys: list[Any] | None) -> bool:
        try:
            removed = services.unmark(
                step.run_id, step.name, keys, user=request.user, origin="admin"
            )
        except StepflowError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        what = "all items" if keys is None else f"{len(keys)} item key(s)"
        self.message_user(
            request,
            f"Un-marked {what} of {step.name} in run #{step.run_id} ({removed} were done); "
            "they will be processed again on resume.",
            messages.SUCCESS,
        )
        return True

    def unmark_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        step = self.get_object(request, object_id)
        if step is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_unmark_permission(request):
            raise PermissionDenied
        form = UnmarkItemsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if self._unmark(request, step, form.cleaned_data["item_keys"]):
                return HttpResponseRedirect(reverse("admin:runs_steprun_change", args=[step.pk]))
            step.refresh_from_db()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": step,
            "title": f"Un-mark items of {step}",
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/runs/steprun/unmark.html", context)

    @admin.action(permissions=["unmark"], description="Un-mark all items (process them again)")
    def unmark_all_items(self, request: HttpRequest, queryset: QuerySet[StepRun]) -> None:
        for step in queryset.order_by("run_id", "position"):
            self._unmark(request, step, None)


@admin.register(StepAttempt)
class StepAttemptAdmin(ReadOnlyMixin, admin.ModelAdmin):
    Media = AdminMedia
    list_display = ["__str__", "status_badge", "worker", "started_at", "finished_at", "error_line"]
    list_filter = ["status"]
    search_fields = ["step__run__id__exact", "step__name", "worker"]
    list_select_related = ["step"]
    show_full_result_count = False
    fields = [
        "step",
        "number",
        "run_attempt",
        "status_badge",
        "worker",
        "job_id",
        "started_at",
        "finished_at",
        "error",
        "traceback_display",
    ]
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: StepAttempt) -> str:
        return badge(obj.status)

    @admin.display(description="error")
    def error_line(self, obj: StepAttempt) -> str:
        return Truncator(obj.error).chars(100)

    @admin.display(description="traceback")
    def traceback_display(self, obj: StepAttempt) -> str:
        return format_html('<pre class="sf-json">{}</pre>', obj.traceback) if obj.traceback else "—"


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    Media = AdminMedia
    list_display = ["created_at", "run_link", "kind", "step", "level", "actor", "message_line"]
    list_filter = ["kind", "level"]
    search_fields = ["run__id__exact", "message", "actor", "step"]
    list_select_related = ["run"]
    show_full_result_count = False
    fields = [
        "run_link",
        "created_at",
        "kind",
        "step",
        "level",
        "actor",
        "user",
        "message",
        "data_display",
    ]
    readonly_fields = fields

    @admin.display(description="run", ordering="run")
    def run_link(self, obj: RunEvent) -> str:
        return admin_link(obj.run)

    @admin.display(description="message")
    def message_line(self, obj: RunEvent) -> str:
        return Truncator(obj.message).chars(120)

    @admin.display(description="data")
    def data_display(self, obj: RunEvent) -> str:
        return pretty_json(masked_event_data(obj, obj.run.workflow))


@admin.register(Checkpoint)
class CheckpointAdmin(RefusalMixin, admin.ModelAdmin):
    """Checkpoints are written by step code; staff set or delete them through
    runs.corrections, only while their step is not active."""

    Media = AdminMedia
    form = CheckpointAdminForm
    list_display = ["key", "step_link", "run_link", "value_short", "updated_at"]
    search_fields = ["key", "step__run__id__exact", "step__name"]
    list_select_related = ["step__run"]
    raw_id_fields = ["step"]
    actions = ["delete_selected"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["step", "key", "value_json"]
        editable = self.has_change_permission(request, obj)
        return [
            "step_link",
            "run_link",
            "key",
            "value_json" if editable else "value_display",
            "updated_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["step_link", "run_link", "key", "value_display", "updated_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and corrections.checkpoint_refusal(obj.step):
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="step", ordering="step")
    def step_link(self, obj: Checkpoint) -> str:
        return admin_link(obj.step, obj.step.name)

    @admin.display(description="run")
    def run_link(self, obj: Checkpoint) -> str:
        return admin_link(obj.step.run)

    @admin.display(description="value")
    def value_short(self, obj: Checkpoint) -> str:
        return Truncator(json.dumps(obj.value, default=str, ensure_ascii=False)).chars(80)

    @admin.display(description="value")
    def value_display(self, obj: Checkpoint) -> str:
        return pretty_json(obj.value)

    def save_model(self, request: HttpRequest, obj: Checkpoint, form: Any, change: bool) -> None:
        try:
            saved = corrections.set_checkpoint(
                obj.step_id, obj.key, form.cleaned_data["value_json"], request.user
            )
        except StepflowError as exc:
            self._refuse(request, exc)
            return
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass

    def delete_model(self, request: HttpRequest, obj: Checkpoint) -> None:
        try:
            corrections.delete_checkpoint(obj.step_id, obj.key, request.user)
        except StepflowError as exc:
            self._refuse(request, exc)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        for cp in queryset.order_by("pk"):
            try:
                corrections.delete_checkpoint(cp.step_id, cp.key, request.user)
            except StepflowError as exc:
                self.message_user(request, exc.message, messages.ERROR)

    @admin.action(permissions=["delete"], description="Delete selected checkpoints")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> Any:
        return self._delete_refusing(
            request,
            queryset.select_related("step"),
            lambda cp: corrections.checkpoint_refusal(cp.step),
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with ``manage.py stepflow token USER``; here they are
    reviewed and revoked (deleted). The token itself is never stored."""

    list_display = ("prefix", "user", "name", "created_at", "last_used_at")
    search_fields = ("user__username", "name", "prefix")
    readonly_fields = ("user", "name", "prefix", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


from . import admin_limits, admin_schedules  # noqa: E402,F401
