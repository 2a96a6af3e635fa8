"""The admin of schedules: every value is checked by ``runs.schedules.validate`` (a bad
cron, time zone or parameter is a form error and nothing is saved) and saved through
``runs.schedules.save_schedule``. Changing a schedule also needs the operate permission,
as on the pages: a schedule starts runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from stepflow.errors import StepflowError
from stepflow.registry import registry

from . import corrections, schedules
from .admin import AdminMedia
from .models import Schedule

OPERATE = "runs.operate_run"
_MONO = {"class": "sf-mono vLargeTextField", "spellcheck": "false"}


class ScheduleAdminForm(forms.ModelForm):
    workflow = forms.ChoiceField(choices=())
    params_json = forms.CharField(
        label="Parameters",
        required=False,
        widget=forms.Textarea(attrs={**_MONO, "rows": 6}),
        help_text="A JSON object checked against the workflow's declared parameters; the "
        "ones left out take the workflow's defaults. Secret values are shown masked; "
        "leave the mask to keep them.",
    )

    class Meta:
        model = Schedule
        fields = ["name", "workflow", "cron", "timezone", "enabled", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(n, n) for n in registry.names()]
        current = self.instance.workflow if self.instance.pk else ""
        if current and current not in registry:
            choices.insert(0, (current, f"{current} (not registered)"))
        self.fields["workflow"].choices = choices  # type: ignore[attr-defined]
        self.fields["cron"].widget.attrs.update({"class": "sf-mono", "spellcheck": "false"})
        self.spec: schedules.ScheduleSpec | None = None
        if self.instance.pk:
            self.initial["params_json"] = json.dumps(
                schedules.masked_params(self.instance),
                indent=2,
                sort_keys=True,
                ensure_ascii=False,
            )

    def clean_params_json(self) -> Any:
        text = (self.cleaned_data.get("params_json") or "").strip() or "{}"
        try:
            value = corrections.parse_json(text, "the parameters")
        except StepflowError as exc:
            raise ValidationError(exc.message) from None
        if not isinstance(value, Mapping):
            raise ValidationError("The parameters must be a JSON object")
        return value

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
                data.get("params_json", {}),
                instance=self.instance if self.instance.pk else None,
            )
        except schedules.ScheduleInvalid as exc:
            for key, message in exc.errors.items():
                self.add_error("params_json" if key == "params" else key, message)
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleAdminForm
    Media = AdminMedia
    list_display = [
        "name",
        "workflow",
        "cron_text",
        "timezone",
        "enabled",
        "next_run",
        "last_run",
        "runs_link",
    ]
    list_filter = ["enabled", "workflow", "timezone"]
    search_fields = ["name", "workflow", "note"]
    actions = ["enable_schedules", "disable_schedules"]
    readonly_fields = ["next_run", "last_run", "created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "workflow", "cron", "timezone", "enabled", "params_json"]}),
        ("Notes", {"fields": ["note"]}),
        (
            "When",
            {"fields": ["next_run", "last_run", "created_by", "created_at", "updated_at"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Schedule]:
        return super().get_queryset(request).annotate(run_count=Count("runs"))

    # -- a schedule starts runs: changing it needs the operate permission too
    def _operates(self, request: HttpRequest) -> bool:
        return request.user.has_perm(OPERATE)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._operates(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._operates(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._operates(request)

    # -- columns
    @admin.display(description="Cron", ordering="cron")
    def cron_text(self, obj: Schedule) -> str:
        return format_html("<code>{}</code>", obj.cron.replace(" ", "\u00a0"))

    @admin.display(description="Next run", ordering="next_run_at")
    def next_run(self, obj: Schedule) -> str:
        return schedules.local_time(obj.next_run_at, obj.timezone)

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, obj: Schedule) -> str:
        return schedules.local_time(obj.last_run_at, obj.timezone)

    @admin.display(description="Runs", ordering="run_count")
    def runs_link(self, obj: Schedule) -> str:
        count = getattr(obj, "run_count", None)
        if count is None:
            count = obj.runs.count()
        return format_html('<a href="{}?schedule={}">{}</a>', reverse("history"), obj.pk, count)

    # -- saving goes through the service
    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        spec = form.spec
        assert spec is not None
        schedules.save_schedule(
            spec.name,
            spec.workflow,
            spec.expression.text,
            spec.timezone,
            form.cleaned_data.get("params_json", {}),
            enabled=form.cleaned_data.get("enabled", False),
            note=form.cleaned_data.get("note", ""),
            user=request.user,
            instance=obj,
        )

    # -- actions
    @admin.action(permissions=["change"], description="Enable selected schedules")
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(permissions=["change"], description="Disable selected schedules")
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[Schedule], enabled: bool
    ) -> None:
        for schedule in queryset.order_by("name"):
            try:
                done = schedules.set_enabled(schedule, enabled)
            except schedules.ScheduleInvalid as exc:
                self.message_user(request, f"{schedule.name}: {exc.message}", messages.ERROR)
                continue
            if enabled:
                when = schedules.local_time(done.next_run_at, done.timezone)
                self.message_user(
                    request, f"Enabled {done.name}; next run {when}", messages.SUCCESS
                )
            else:
                self.message_user(request, f"Disabled {done.name}", messages.SUCCESS)
