"""The run history: filters kept in the URL, search, keyset pagination by id."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import QueryDict
from django.utils import timezone

from stepflow import states
from stepflow.registry import registry

from ..models import Run, RunStatus, Schedule

PAGE_SIZE = 50
FILTER_KEYS = ("workflow", "status", "who", "since", "until", "q", "schedule")
_RUN_ID = re.compile(r"^#?(\d{1,18})$")


def _parse_date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return None


def _aware(d: date) -> datetime:
    return timezone.make_aware(datetime.combine(d, time.min))


@dataclass
class HistoryQuery:
    """The history page's filters, as read from (and written back to) the URL."""

    workflow: str = ""
    status: str = ""
    who: str = ""
    since: date | None = None
    until: date | None = None
    q: str = ""
    schedule: int | None = None  # runs started by this schedule (its id)
    before: int | None = None
    after: int | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_querydict(cls, data: QueryDict) -> HistoryQuery:
        self = cls(
            workflow=data.get("workflow", "").strip(),
            status=data.get("status", "").strip(),
            who=data.get("who", "").strip(),
            q=data.get("q", "").strip()[:200],
        )
        if self.status and self.status not in RunStatus.values:
            self.errors.append(f"Unknown status {self.status!r}")
            self.status = ""
        for name in ("since", "until"):
            raw = data.get(name, "").strip()
            if raw:
                parsed = _parse_date(raw)
                if parsed is None:
                    self.errors.append(f"{name.title()} must be a date like 2026-11-21")
                setattr(self, name, parsed)
        raw_schedule = data.get("schedule", "").strip()
        if raw_schedule.isdigit():
            self.schedule = int(raw_schedule)
        elif raw_schedule:
            self.errors.append(f"Schedule must be a schedule's id, not {raw_schedule!r}")
        for name in ("before", "after"):
            raw = data.get(name, "").strip()
            if raw.isdigit():
                setattr(self, name, int(raw))
        return self

    @property
    def active(self) -> bool:
        return any(self.filters().values())

    def filters(self) -> dict[str, str]:
        return {
            "workflow": self.workflow,
            "status": self.status,
            "who": self.who,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "q": self.q,
            "schedule": str(self.schedule) if self.schedule is not None else "",
        }

    @property
    def schedule_name(self) -> str:
        """The name of the schedule filtered by (``#id`` once it is deleted)."""
        if self.schedule is None:
            return ""
        name = Schedule.objects.filter(pk=self.schedule).values_list("name", flat=True).first()
        return name or f"#{self.schedule}"

    def url(self, **extra: Any) -> str:
        params = {k: v for k, v in {**self.filters(), **extra}.items() if v not in ("", None)}
        return "?" + urlencode(params) if params else "?"

    def apply(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        if self.workflow:
            qs = qs.filter(workflow=self.workflow)
        if self.status:
            qs = qs.filter(status=self.status)
        if self.who:
            qs = qs.filter(
                Q(created_by__username=self.who) | Q(created_by__isnull=True, origin=self.who)
            )
        if self.since:
            qs = qs.filter(created_at__gte=_aware(self.since))
        if self.until:
            qs = qs.filter(created_at__lt=_aware(self.until + timedelta(days=1)))
        if self.schedule is not None:
            qs = qs.filter(schedule_id=self.schedule)
        if self.q:
            qs = qs.alias(params_text=Cast("params", TextField())).filter(search_q(self.q))
        return qs


def search_q(text: str) -> Q:
    """Run id (``42``; ``#42`` finds only that run), idempotency key, or any text inside
    the parameters.

    The parameters are searched as JSON text (a cast works on PostgreSQL and SQLite). On
    PostgreSQL each branch has an index: the primary key, and trigram indexes over exactly
    the ``UPPER(...)`` expressions that ``icontains`` compiles to (migration 0003)."""
    match = _RUN_ID.match(text)
    if match and text.startswith("#"):
        return Q(pk=int(match.group(1)))
    q = Q(idempotency_key__icontains=text) | Q(params_text__icontains=text)
    if match:
        q |= Q(pk=int(match.group(1)))
    return q


def base_queryset() -> QuerySet[Run]:
    return Run.objects.select_related("created_by", "schedule").defer(
        "params",
        "scope",
        "note",
        "params_hash",
        "definition_hash",
        "schedule__params",
        "schedule__note",
    )


@dataclass
class Page:
    rows: list[Run]
    newer: int | None  # the ``after=`` id of the newer page, if any
    older: int | None  # the ``before=`` id of the older page, if any


def page(query: HistoryQuery, size: int | None = None) -> Page:
    """One page of runs, newest first, by keyset (``id < before`` or ``id > after``):
    two queries whatever the page, served by the ``(…, -id)`` indexes."""
    size = size or PAGE_SIZE
    qs = query.apply(base_queryset())
    if query.after is not None and query.before is None:
        rows = list(qs.filter(pk__gt=query.after).order_by("pk")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        older = rows[-1].pk if rows else None
        if older is not None and not qs.filter(pk__lt=older).exists():
            older = None
        return Page(rows, rows[0].pk if more_newer else None, older)
    qs_page = qs.filter(pk__lt=query.before) if query.before is not None else qs
    rows = list(qs_page.order_by("-pk")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    newer = None
    if query.before is not None and rows and qs.filter(pk__gt=rows[0].pk).exists():
        newer = rows[0].pk
    return Page(rows, newer, rows[-1].pk if more_older else None)


def workflow_choices() -> list[str]:
    return registry.names()


def status_choices() -> list[str]:
    return list(RunStatus.values)


def is_active(run: Run) -> bool:
    return run.status not in states.RUN_FINISHED


def eta_seconds(run: Run) -> float | None:
    """A quick ETA for a list row: the elapsed time extrapolated by progress."""
    if not is_active(run) or not run.started_at or run.progress < 0.05:
        return None
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return max(0.0, elapsed * (1 - run.progress) / run.progress)
