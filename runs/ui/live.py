"""The polled part of the run page: the version the browser shows, and what changed since.

The run page's head polls with the token of the version it shows. The answer is
nothing (204) while that version is current; the head, the rows of the steps that
moved and the events since when only steps moved; the whole live region when the run
itself changed (status, attempt, definition) or the token is unknown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from stepflow import states
from stepflow.workflow import Workflow

from ..models import Run, RunEvent, StepRun
from . import charts
from .detail import (
    EVENT_LIMIT,
    STEP_DEFER,
    STEP_MOVING,
    AttemptRow,
    EventRow,
    RunDetail,
    StepLine,
    StepMetrics,
    StepView,
    attempts_of,
    events_of,
    metrics_of,
    step_lines,
    step_views,
    workflow_or_none,
)
from .eta import estimate_eta

#: Seconds between two refreshes of the head while nothing else changes, so that
#: the duration and the ETA of a quiet run still move.
TICK = 10


#: What a moving step's row shows.
SHOWN = (
    "position",
    "status",
    "attempts",
    "progress_current",
    "progress_total",
    "progress_message",
    "items_done",
    "error",
)


def _hash(*values: object) -> str:
    return hashlib.blake2b(repr(values).encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Version:
    """What the browser shows: ``run_key`` (status, attempt, definition), the newest event,
    a digest of the head and of the moving steps, and which steps were moving (positions)."""

    run_key: str
    last_event: int
    digest: str
    moving: tuple[int, ...] = ()

    def token(self) -> str:
        return f"{self.run_key}.{self.last_event}.{self.digest}.{'-'.join(map(str, self.moving))}"

    @classmethod
    def parse(cls, raw: str) -> Version | None:
        parts = raw.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        positions = [p for p in parts[3].split("-") if p]
        if not all(p.isdigit() for p in positions):
            return None
        return cls(parts[0], int(parts[1]), parts[2], tuple(int(p) for p in positions))


def run_key(run: Run) -> str:
    return _hash(run.status, run.attempt, run.definition_hash)


def version(
    run: Run, last_event: int, moving: Iterable[StepRun], now: datetime | None = None
) -> Version:
    moving = sorted((r for r in moving if r.status in STEP_MOVING), key=lambda r: r.position)
    now = now or timezone.now()
    digest = _hash(
        run.progress,
        run.updated_at,
        last_event,
        int(now.timestamp() // TICK),
        [tuple(getattr(r, name) for name in SHOWN) for r in moving],
    )
    return Version(run_key(run), last_event, digest, tuple(r.position for r in moving))


def version_of(detail: RunDetail) -> Version:
    """The version a full render of the page shows."""
    return version(detail.run, detail.last_event_id, (s.row for s in detail.steps))


@dataclass
class Head:
    """What the head and the charts of a poll show (the parts of ``RunDetail`` they read)."""

    run: Run
    workflow: Workflow | None
    lines: list[StepLine]
    attempts: dict[int, list[AttemptRow]] = field(default_factory=dict)
    eta: float | None = None
    #: Set only when the metrics are sent again (a step that has some moved).
    metrics: list[StepMetrics] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.run.status not in states.RUN_FINISHED

    @property
    def definition_changed(self) -> bool:
        return (
            self.workflow is not None and self.workflow.definition_hash != self.run.definition_hash
        )

    def timeline(self) -> charts.Timeline | None:
        return charts.timeline((s.name, self.attempts.get(s.pk, [])) for s in self.lines)

    def dag(self) -> charts.Dag | None:
        if self.workflow is None:
            return None
        return charts.dag(self.workflow, {s.name: s.status for s in self.lines})


@dataclass
class Update:
    """The answer to a poll: ``same`` (nothing to send), ``steps`` (the parts below) or
    ``all`` (render the whole live region)."""

    kind: Literal["same", "steps", "all"]
    version: Version | None = None
    head: Head | None = None
    steps: list[StepView] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    charts: bool = False

    @property
    def history(self) -> list[EventRow]:
        return [e for e in self.events if e.kind != "log"]

    @property
    def logs(self) -> list[EventRow]:
        return [e for e in self.events if e.kind == "log"]


def load_run(run_id: int) -> Run:
    """The run with the id of its newest event (``last_event``), in one query."""
    newest = RunEvent.objects.filter(run_id=OuterRef("pk")).order_by("-id").values("id")[:1]
    return (
        Run.objects.select_related("created_by")
        .annotate(last_event=Subquery(newest))
        .get(pk=run_id)
    )


def poll(run: Run, token: str) -> Update:
    """What changed since the version of ``token`` (``run`` from :func:`load_run`): one
    more query when nothing did, 5–7 when steps moved, whatever the number of steps."""
    seen = Version.parse(token)
    if run.status in states.RUN_FINISHED or seen is None or seen.run_key != run_key(run):
        return Update("all")
    last_event = run.last_event or 0  # type: ignore[attr-defined]
    # The steps moving now, and those moving at the last poll (their rows come again).
    rows = list(
        run.steps.filter(Q(status__in=STEP_MOVING) | Q(position__in=seen.moving))
        .order_by()
        .defer(*STEP_DEFER)
    )
    moving = [r for r in rows if r.status in STEP_MOVING]
    now = version(run, last_event, moving)
    if now.digest == seen.digest:
        return Update("same", now)

    events = events_of(run, after=seen.last_event) if last_event != seen.last_event else []
    if len(events) == EVENT_LIMIT:  # a burst: the rest comes with the next poll
        now = version(run, events[-1].pk, moving)
    wf = workflow_or_none(run.workflow)
    head = Head(run, wf, step_lines(run))
    # Also send again the rows of the steps named by an event since (a step that was
    # skipped or failed without running).
    named = {e.step for e in events if e.step} - {r.name for r in rows}
    if named:
        rows += run.steps.filter(name__in=named).order_by().defer(*STEP_DEFER)
    rows.sort(key=lambda r: r.position)
    # A step event changes the graph and the timeline: draw them again.
    redraw = any(e.kind != "log" for e in events)
    if redraw:
        head.attempts = attempts_of(run)
    steps = step_views(run, wf, rows, whole_run=False)
    # A metric changes only while its step runs, and such a step is among the rows sent.
    metrics = metrics_of(run)
    sent = {r.pk for r in rows}
    if any(m.pk in sent for m in metrics):
        head.metrics = metrics
    if wf is not None:
        head.eta = estimate_eta(run, wf, head.lines)
    return Update("steps", now, head, steps=steps, events=events, charts=redraw)
