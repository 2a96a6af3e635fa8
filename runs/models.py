"""What is stored: runs, their steps, attempts, checkpoints, item marks and events."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from stepflow import states


def _choices(enum: type[states.StrEnum]) -> list[tuple[str, str]]:
    return [(m.value, m.value.replace("_", " ")) for m in enum]


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out", "timed out"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out", "timed out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class AttemptStatus(models.TextChoices):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMED_OUT = "timed_out", "timed out"
    WORKER_LOST = "worker_lost", "worker lost"
    CANCELLED = "cancelled"


class Run(models.Model):
    workflow = models.CharField(max_length=100)
    definition_hash = models.CharField(max_length=32)
    params = models.JSONField(default=dict, blank=True)
    params_hash = models.CharField(max_length=64, db_index=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    progress = models.FloatField(default=0.0)
    progress_at = models.DateTimeField(null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    parent_step = models.ForeignKey(
        "StepRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_runs",
        help_text="The step of the parent run that started this run and waits for it",
    )
    schedule = models.ForeignKey(
        "Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The schedule that started this run",
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The schedule's tick this run was started for"
    )
    deadline = models.DateTimeField(
        null=True, blank=True, help_text="When the workflow's timeout stops this run attempt"
    )
    stop_reason = models.CharField(
        max_length=20,
        blank=True,
        help_text="Why a cancelling run is stopping: cancel (a user) or timeout (the deadline)",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    origin = models.CharField(max_length=100, default="web", help_text="web, cli, api, admin...")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    attempt = models.PositiveIntegerField(
        default=1, help_text="How many times it was started or resumed"
    )
    scope = models.JSONField(null=True, blank=True, help_text="Steps allowed to start (only=)")
    error_summary = models.TextField(blank=True)
    failed_step = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True, help_text="Annotation for the team")

    class Meta:
        ordering = ["-id"]
        permissions = [("operate_run", "Can start, resume, retry and cancel runs")]
        indexes = [
            models.Index(fields=["status", "-id"], name="run_status_id"),
            models.Index(fields=["workflow", "-id"], name="run_workflow_id"),
            models.Index(fields=["created_by", "-id"], name="run_created_by_id"),
            models.Index(fields=["created_at"], name="run_created_at"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.workflow}"

    @property
    def is_finished(self) -> bool:
        return self.status in states.RUN_FINISHED

    @property
    def duration(self) -> float | None:
        if not self.started_at:
            return None
        from django.utils import timezone

        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class StepRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    queue = models.CharField(max_length=100, default="default")
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts made, over all resumes")
    round_start = models.PositiveIntegerField(
        default=0,
        help_text="Attempts made before the latest reset (the retry policy counts from here)",
    )
    job_id = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    progress_current = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)
    items_done = models.BigIntegerField(default=0)
    output = models.JSONField(null=True, blank=True)
    rollback_data = models.JSONField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=300, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    waiting_for = models.JSONField(
        null=True, blank=True, help_text="Ids of the child runs the step's attempt waits for"
    )
    waiting_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Ready, but waiting for a free slot of its queue's limit (see Queue limits)",
    )

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="steprun_run_name")]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="steprun_status_heartbeat"),
            models.Index(
                fields=["queue", "waiting_since", "id"],
                name="steprun_queue_waiting",
                condition=models.Q(waiting_since__isnull=False),
            ),
            models.Index(
                fields=["run"],
                name="steprun_run_failed",
                condition=models.Q(status__in=["failed", "timed_out"]),
            ),
            models.Index(
                fields=["queue", "status"],
                name="steprun_queue_active",
                condition=models.Q(status__in=["queued", "running", "retrying"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} of run #{self.run_id}"

    @property
    def fraction(self) -> float | None:
        if self.progress_total:
            return min(1.0, max(0.0, (self.progress_current or 0) / self.progress_total))
        return None

    @property
    def duration(self) -> float | None:
        if not self.started_at:
            return None
        from django.utils import timezone

        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class StepAttempt(models.Model):
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    run_attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=AttemptStatus.choices)
    worker = models.CharField(max_length=200, blank=True)
    job_id = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["step", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step", "number"], name="stepattempt_step_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.step}"

    @property
    def duration(self) -> float | None:
        if not self.finished_at:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Checkpoint(models.Model):
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="checkpoints")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["step", "key"]
        constraints = [models.UniqueConstraint(fields=["step", "key"], name="checkpoint_step_key")]

    def __str__(self) -> str:
        return f"{self.key} of {self.step}"


class ItemChunk(models.Model):
    """Done integer item keys of a step: a bitmap of 65,536 keys per row."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="item_chunks")
    chunk = models.PositiveIntegerField()
    bits = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["step", "chunk"], name="itemchunk_step_chunk")
        ]

    def __str__(self) -> str:
        return f"items chunk {self.chunk} of step run {self.step_id}"


class ItemKey(models.Model):
    """Done item keys of a step that are not non-negative integers."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="item_keys")
    key = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["step", "key"], name="itemkey_step_key")]

    def __str__(self) -> str:
        return f"item {self.key} of {self.step_id}"


class RunEvent(models.Model):
    """Append-only history of a run: what happened, when, by whom. Step logs are events too."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    step = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=40)
    level = models.CharField(max_length=10, default="info")
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "kind"], name="runevent_run_kind")]

    def __str__(self) -> str:
        return f"{self.kind} on run #{self.run_id}"


def event_data(**data: Any) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class ApiToken(models.Model):
    """A user's token for the JSON API. Only a hash of the token is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=8, editable=False, help_text="First characters, to tell tokens apart"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user}, {self.name or 'unnamed'})"


class QueueLimit(models.Model):
    """At most ``limit`` steps of all runs on one queue are queued, running or
    retrying at once; ready steps beyond it wait, oldest first."""

    queue = models.CharField(max_length=100, unique=True)
    limit = models.PositiveIntegerField(help_text="Steps of all runs active on this queue at once")
    note = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["queue"]

    def __str__(self) -> str:
        return f"{self.queue}: at most {self.limit}"


class Schedule(models.Model):
    """Starts a run of a workflow with given parameters at every tick of a cron expression."""

    name = models.CharField(max_length=100, unique=True)
    workflow = models.CharField(max_length=100)
    cron = models.CharField(
        max_length=100, help_text="minute hour day-of-month month day-of-week, or @hourly, @daily…"
    )
    timezone = models.CharField(max_length=64, default="UTC")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="The next tick")
    last_run_at = models.DateTimeField(null=True, blank=True, help_text="The last tick started")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="schedule_due")]

    def __str__(self) -> str:
        return f"{self.name} ({self.workflow}, {self.cron})"
