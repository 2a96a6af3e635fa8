"""Schedules: start a run of a workflow at every tick of a cron expression.

The pages, the admin and the command line create and change schedules through these
services; every worker's SchedulerThread calls :func:`fire_due`.

- **Once per tick.** A tick's run is started with the idempotency key
  ``schedule:<id>:<tick in UTC>``, then ``next_run_at`` moves on with a guarded update
  (``WHERE next_run_at = <the tick>``). Several workers firing the same schedule at once
  get the same run back from the key, and only one of them moves the schedule on.
- **Missed ticks** (every worker was down): only the most recent missed tick is started,
  once; the schedule then continues with the first tick after now.
- **A schedule that cannot start** (its workflow is no longer registered, its parameters
  no longer validate): the tick is skipped with a warning in the worker's log and the
  schedule moves on to its next tick, so a broken schedule does not retry in a loop;
  the schedules page and ``manage.py stepflow schedules`` show why it cannot start.
- Ticks do not wait for the previous run: a run still going when the next tick comes
  does not stop the next one from starting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from stepflow.cron import CronExpression, get_timezone
from stepflow.errors import CronError, InvalidParams, StepflowError, UnknownWorkflow
from stepflow.params import MASK, mask_params
from stepflow.registry import registry
from stepflow.workflow import Workflow

from . import services
from .events import User
from .models import Run, Schedule

log = logging.getLogger("stepflow.schedules")

#: How runs started by a schedule name their origin (and so who started them).
ORIGIN_PREFIX = "schedule "
#: Windows searched, smallest first, for the most recent missed tick (see latest_tick).
_WINDOWS = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=62),
    timedelta(days=800),
)


class ScheduleInvalid(StepflowError):
    """The schedule is invalid."""

    def __init__(self, errors: dict[str, str], param_errors: dict[str, str] | None = None):
        #: One message per field: name, workflow, cron, timezone, params.
        self.errors = dict(errors)
        #: The workflow's parameter errors by parameter name (``__all__`` for the whole).
        self.param_errors = dict(param_errors or {})
        super().__init__("; ".join(self.errors.values()))


class ScheduleNotFound(StepflowError):
    """No schedule has that name or id."""


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule's validated values."""

    name: str
    workflow: str
    expression: CronExpression
    timezone: str
    zone: ZoneInfo
    params: dict[str, Any] = field(default_factory=dict)


def get_schedule(ref: int | str) -> Schedule:
    """A schedule by id (an int) or name (a str)."""
    if isinstance(ref, int):
        found = Schedule.objects.filter(pk=ref).first()
        if found is None:
            raise ScheduleNotFound(f"No schedule with id {ref}")
        return found
    found = Schedule.objects.filter(name=ref).first()
    if found is None:
        raise ScheduleNotFound(f"No schedule named {ref!r}")
    return found


def _unmask(wf: Workflow, raw: Mapping[str, Any], instance: Schedule | None) -> dict[str, Any]:
    """A secret given as the mask keeps the schedule's stored value (forms show the mask)."""
    stored = instance.params if instance is not None and instance.workflow == wf.name else {}
    stored = stored if isinstance(stored, Mapping) else {}
    return {
        k: (stored.get(k) if k in wf.params and wf.params[k].secret and v == MASK else v)
        for k, v in raw.items()
    }


def validate(
    name: str,
    workflow: str,
    cron: str,
    tz: str = "UTC",
    params: Mapping[str, Any] | None = None,
    *,
    instance: Schedule | None = None,
) -> ScheduleSpec:
    """Check every value at once; raise ScheduleInvalid naming each bad one.

    The parameters are checked with the workflow's declared parameters; only the ones
    given are kept (typed), so the others follow the workflow's defaults."""
    errors: dict[str, str] = {}
    param_errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "A schedule needs a name"
    elif len(name) > 100:
        errors["name"] = "A schedule's name can be at most 100 characters long"
    else:
        same = Schedule.objects.filter(name=name)
        if instance is not None and instance.pk is not None:
            same = same.exclude(pk=instance.pk)
        if same.exists():
            errors["name"] = f"A schedule named {name!r} already exists"
    wf: Workflow | None = None
    try:
        wf = registry.get((workflow or "").strip())
    except UnknownWorkflow as exc:
        errors["workflow"] = exc.message
    expression: CronExpression | None = None
    try:
        expression = CronExpression.parse(cron)
    except CronError as exc:
        errors["cron"] = exc.message
    zone: ZoneInfo | None = None
    try:
        zone = get_timezone(tz)
    except CronError as exc:
        errors["timezone"] = exc.message
    kept: dict[str, Any] = {}
    if wf is not None:
        raw = params if params is not None else {}
        if not isinstance(raw, Mapping):
            errors["params"] = "Invalid parameters: parameters must be a JSON object"
            param_errors["__all__"] = "parameters must be a JSON object"
        else:
            given = _unmask(wf, raw, instance)
            try:
                cleaned = wf.validate_params(given)
            except InvalidParams as exc:
                errors["params"] = exc.message
                param_errors = exc.errors
            else:
                kept = {k: cleaned[k] for k, v in given.items() if v is not None and v != ""}
    if errors:
        raise ScheduleInvalid(errors, param_errors)
    assert wf is not None and expression is not None and zone is not None
    return ScheduleSpec(name, wf.name, expression, zone.key, zone, kept)


def save_schedule(
    name: str,
    workflow: str,
    cron: str,
    tz: str = "UTC",
    params: Mapping[str, Any] | None = None,
    *,
    enabled: bool = True,
    note: str = "",
    user: User = None,
    instance: Schedule | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Create a schedule, or change ``instance``; nothing is saved unless every value is
    valid. ``next_run_at`` is the first tick after now when the schedule is new, its cron
    or time zone changed, or it was just enabled; otherwise it is kept."""
    spec = validate(name, workflow, cron, tz, params, instance=instance)
    now = now or timezone.now()
    schedule = instance if instance is not None else Schedule()
    before = None
    if schedule.pk is not None:
        before = (
            Schedule.objects.filter(pk=schedule.pk)
            .values("cron", "timezone", "enabled", "next_run_at")
            .first()
        )
    schedule.name = spec.name
    schedule.workflow = spec.workflow
    schedule.cron = spec.expression.text
    schedule.timezone = spec.timezone
    schedule.params = spec.params
    schedule.enabled = enabled
    schedule.note = note or ""
    if not enabled:
        schedule.next_run_at = None
    elif (
        before is None
        or before["next_run_at"] is None
        or not before["enabled"]
        or before["cron"] != schedule.cron
        or before["timezone"] != schedule.timezone
    ):
        schedule.next_run_at = spec.expression.next_after(now, spec.zone).astimezone(UTC)
    else:
        schedule.next_run_at = before["next_run_at"]
    if schedule.pk is None and user is not None and user.is_authenticated:
        schedule.created_by = user  # type: ignore[assignment]
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise ScheduleInvalid({"name": f"A schedule named {spec.name!r} already exists"}) from None
    return schedule


def set_enabled(
    ref: int | str | Schedule, enabled: bool, *, now: datetime | None = None
) -> Schedule:
    """Enable (the next tick is the first one after now: ticks missed while it was
    disabled are not started) or disable (no next tick) a schedule."""
    pk = ref.pk if isinstance(ref, Schedule) else get_schedule(ref).pk
    now = now or timezone.now()
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().filter(pk=pk).first()
        if schedule is None:
            raise ScheduleNotFound(f"No schedule with id {pk}")
        if schedule.enabled == enabled and (schedule.next_run_at is not None) == enabled:
            return schedule
        if enabled:
            try:
                expression = CronExpression.parse(schedule.cron)
                zone = get_timezone(schedule.timezone)
            except CronError as exc:
                raise ScheduleInvalid({"cron": exc.message}) from None
            schedule.next_run_at = expression.next_after(now, zone).astimezone(UTC)
        else:
            schedule.next_run_at = None
        schedule.enabled = enabled
        schedule.save(update_fields=["enabled", "next_run_at", "updated_at"])
    return schedule


def delete_schedule(ref: int | str | Schedule) -> tuple[str, int]:
    """Delete a schedule; the runs it started are kept. Returns its name and their count."""
    schedule = ref if isinstance(ref, Schedule) else get_schedule(ref)
    name = schedule.name
    kept = Run.objects.filter(schedule_id=schedule.pk).count()
    schedule.delete()
    return name, kept


# -- what the pages show ------------------------------------------------------------------
def local_time(moment: datetime | None, tz: str) -> str:
    """A time in a schedule's time zone, as the pages and the CLI show it:
    ``2026-11-22 02:00 CET`` (``—`` for none)."""
    if moment is None:
        return "—"
    try:
        moment = moment.astimezone(get_timezone(tz))
    except CronError:
        pass
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def masked_params(schedule: Schedule) -> dict[str, Any]:
    """The schedule's parameters as they may be shown: secret values masked."""
    declared = registry.get(schedule.workflow).params if schedule.workflow in registry else {}
    params = schedule.params if isinstance(schedule.params, Mapping) else {}
    return mask_params(declared, params)


def problem(schedule: Schedule) -> str:
    """Why the schedule's next tick would not start a run, or "" if it would."""
    try:
        CronExpression.parse(schedule.cron)
        get_timezone(schedule.timezone)
        wf = registry.get(schedule.workflow)
        wf.validate_params(schedule.params if isinstance(schedule.params, Mapping) else {})
    except StepflowError as exc:
        return exc.message
    return ""


def preview(
    cron: str, tz: str = "UTC", count: int = 5, *, now: datetime | None = None
) -> list[datetime]:
    """The next ``count`` ticks after now, in the time zone; CronError if either is invalid."""
    expression = CronExpression.parse(cron)
    zone = get_timezone(tz)
    return expression.ticks(now or timezone.now(), zone, count)


def next_due() -> datetime | None:
    """When the next enabled schedule is due (for the scheduler to sleep until then)."""
    result: datetime | None = Schedule.objects.filter(
        enabled=True, next_run_at__isnull=False
    ).aggregate(due=Min("next_run_at"))["due"]
    return result


# -- firing ---------------------------------------------------------------------------------
def idempotency_key(schedule: Schedule, tick: datetime) -> str:
    return f"schedule:{schedule.pk}:{tick.astimezone(UTC).isoformat()}"


def latest_tick(
    expression: CronExpression, zone: ZoneInfo, since: datetime, now: datetime
) -> datetime:
    """The most recent tick in ``[since, now]`` (``since`` itself if there is no later one).

    Searches growing windows back from now, so that a schedule missed for months
    costs a handful of steps, not one per missed tick."""
    start = since
    for window in _WINDOWS:
        if now - window <= since:
            break
        found = expression.next_after(now - window, zone)
        if found <= now:
            start = found
            break
    latest = start
    while True:
        following = expression.next_after(latest, zone)
        if following > now:
            return latest
        latest = following


def fire_due(now: datetime | None = None) -> list[Run]:
    """Start the runs of every enabled schedule that is due; return the runs this call
    created (a tick's run that another worker created first is not returned)."""
    now = now or timezone.now()
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at", "pk")
    started: list[Run] = []
    for schedule in due:
        try:
            run = fire(schedule, now)
        except Exception:
            log.exception("schedule %r: firing failed; it will be tried again", schedule.name)
            continue
        if run is not None:
            started.append(run)
    return started


def fire(schedule: Schedule, now: datetime) -> Run | None:
    """Start the run of the schedule's most recent due tick and move it on to the next."""
    tick = schedule.next_run_at
    assert tick is not None
    try:
        expression = CronExpression.parse(schedule.cron)
        zone = get_timezone(schedule.timezone)
    except CronError as exc:
        # Only a direct database edit gets here (every service validates): stop firing it.
        log.error("schedule %r stopped: %s", schedule.name, exc.message)
        Schedule.objects.filter(pk=schedule.pk, next_run_at=tick).update(next_run_at=None)
        return None
    latest = latest_tick(expression, zone, tick, now).astimezone(UTC)
    following = expression.next_after(now, zone).astimezone(UTC)
    try:
        run = services.start_run(
            schedule.workflow,
            schedule.params if isinstance(schedule.params, Mapping) else {},
            idempotency_key=idempotency_key(schedule, latest),
            origin=(ORIGIN_PREFIX + schedule.name)[:100],
            schedule=schedule,
            scheduled_for=latest,
        )
    except StepflowError as exc:
        log.warning(
            "schedule %r: no run for %s: %s; next tick %s",
            schedule.name,
            latest.isoformat(),
            exc.message,
            following.isoformat(),
        )
        _advance(schedule, tick, following)
        return None
    _advance(schedule, tick, following, last_run_at=latest)
    return run if getattr(run, "created", False) else None


def _advance(
    schedule: Schedule, tick: datetime, following: datetime, last_run_at: datetime | None = None
) -> bool:
    """Move the schedule from ``tick`` to ``following``, unless someone already did."""
    changes: dict[str, Any] = {"next_run_at": following}
    if last_run_at is not None:
        changes["last_run_at"] = last_run_at
    return bool(
        Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=tick).update(**changes)
    )
