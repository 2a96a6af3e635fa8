"""Queue limits in the admin: at most N steps of all runs active on a queue."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from stepflow import states

from . import engine
from .models import QueueLimit, StepRun


@admin.register(QueueLimit)
class QueueLimitAdmin(admin.ModelAdmin):
    list_display = ("queue", "limit", "active_now", "waiting_now", "note", "updated_at")
    search_fields = ("queue", "note")
    ordering = ("queue",)

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        def count(**where: object) -> Coalesce:
            steps = (
                StepRun.objects.filter(queue=OuterRef("queue"), **where)
                .values("queue")
                .annotate(n=Count("pk"))
                .values("n")
            )
            return Coalesce(Subquery(steps), 0)

        return (
            super()
            .get_queryset(request)
            .annotate(
                active=count(status__in=list(states.STEP_HOLDS_SLOT)),
                waiting=count(waiting_since__isnull=False),
            )
        )

    @admin.display(description="Active now", ordering="active")
    def active_now(self, obj: QueueLimit) -> int:
        return int(getattr(obj, "active", 0))

    @admin.display(description="Waiting now", ordering="waiting")
    def waiting_now(self, obj: QueueLimit) -> int:
        return int(getattr(obj, "waiting", 0))

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        obj.queue = obj.queue.strip()
        super().save_model(request, obj, form, change)
        engine.forget_queue_limits()
        # A raised (or new) limit may let waiting steps start now.
        engine.dispatch_queue(obj.queue, actor=request.user.get_username())

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        name = obj.queue
        super().delete_model(request, obj)
        engine.forget_queue_limits()
        engine.dispatch_queue(name, actor=request.user.get_username())
