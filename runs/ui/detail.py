"""Everything the run detail page shows, loaded in a fixed number of queries.

What every row shows is worked out here, once, so the template of a 200-step run
places prepared values instead of calling tags and filters 200 times.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from django.urls import reverse
from django.utils.safestring import SafeString

from stepflow import states
from stepflow.errors import StepflowError
from stepflow.params import mask_params
from stepflow.registry import registry
from stepflow.step import Step
from stepflow.workflow import Workflow

from ..models import Checkpoint, Run, RunEvent, StepAttempt, StepRun
from ..templatetags import stepflow_ui as fmt
from . import charts, rows
from .eta import estimate_eta

#: How many events (logs and history) the page shows, newest kept.
EVENT_LIMIT = 500
#: Statuses of a step whose row can change without an event (progress, items, duration).
STEP_MOVING = frozenset(states.STEP_ACTIVE)
#: Fields of a step row the page does not show (large JSON); metrics come from
#: :func:`metrics_of`, one query for the few steps that have some.
STEP_DEFER = ("output", "rollback_data", "metrics")
#: How many of a workflow's latest runs its page draws the metrics of.
TREND_RUNS = 30


@dataclass(frozen=True)
class AttemptRow:
    """One attempt, read as a tuple: lighter than a model instance, and all the page needs."""

    FIELDS = (
        "pk",
        "step_id",
        "number",
        "status",
        "worker",
        "started_at",
        "finished_at",
        "error",
        "traceback",
    )

    pk: int
    step_id: int
    number: int
    status: str
    worker: str
    started_at: datetime
    finished_at: datetime | None
    error: str
    traceback: str

    @property
    def badge(self) -> SafeString:
        return fmt.badge_html(self.status)

    @property
    def error_head(self) -> str:
        return fmt.error_head(self.error)


@dataclass(frozen=True)
class EventRow:
    """One history event or log line, with its display values."""

    FIELDS = ("pk", "step", "kind", "level", "message", "data", "actor", "created_at")

    pk: int
    step: str
    kind: str
    level: str
    message: str
    data: Any
    actor: str
    created_at: datetime

    @property
    def time(self) -> SafeString | str:
        return fmt.abstime(self.created_at)

    @property
    def html(self) -> SafeString:
        return rows.log(self) if self.kind == "log" else rows.event(self)

    @property
    def kind_text(self) -> str:
        return self.kind.replace("step_", "").replace("_requested", "")

    @property
    def actor_text(self) -> str:
        return fmt.truncate(self.actor or "stepflow", 18)

    @property
    def data_text(self) -> str:
        if not self.data:
            return ""
        return fmt.truncate(fmt.show_value(self.data), 300)


@dataclass(frozen=True)
class StepLine:
    """A step's place, status and progress, read as a tuple: all that the ETA, the
    graph and the timeline need of the steps that the page does not show again."""

    FIELDS = (
        "pk",
        "name",
        "position",
        "status",
        "progress_current",
        "progress_total",
        "started_at",
    )

    pk: int
    name: str
    position: int
    status: str
    progress_current: float | None
    progress_total: float | None
    started_at: datetime | None

    @property
    def fraction(self) -> float | None:
        if self.progress_total:
            return min(1.0, max(0.0, (self.progress_current or 0) / self.progress_total))
        return None


def step_lines(run: Run) -> list[StepLine]:
    return [StepLine(*r) for r in run.steps.order_by("position").values_list(*StepLine.FIELDS)]


def attempts_of(
    run: Run | None = None, step_ids: list[int] | None = None
) -> dict[int, list[AttemptRow]]:
    """Attempts by step id, in order: of the whole run, or of some of its steps."""
    if run is not None:
        qs = StepAttempt.objects.filter(step__run_id=run.pk)
    else:
        qs = StepAttempt.objects.filter(step_id__in=step_ids or [])
    attempts: dict[int, list[AttemptRow]] = defaultdict(list)
    for values in qs.order_by("step_id", "number").values_list(*AttemptRow.FIELDS):
        attempts[values[1]].append(AttemptRow(*values))
    return attempts


@dataclass(frozen=True)
class StepMetrics:
    """The metrics of one step, by name, as shown."""

    pk: int
    step: str
    values: list[tuple[str, str]]


def metrics_of(run: Run) -> list[StepMetrics]:
    """The steps that recorded metrics, in order: one query, whatever the number of steps."""
    rows = run.steps.exclude(metrics={}).order_by("position").values_list("pk", "name", "metrics")
    return [
        StepMetrics(pk, name, [(k, charts.metric_text(v)) for k, v in sorted(metrics.items())])
        for pk, name, metrics in rows
        if isinstance(metrics, dict)
    ]


@dataclass(frozen=True)
class MetricTrend:
    step: str
    metric: str
    spark: charts.Sparkline


def metric_trends(wf: Workflow, runs: int = TREND_RUNS) -> list[MetricTrend]:
    """Each (step, metric) recorded in the latest ``runs`` runs of ``wf``, over the runs
    that recorded it (the workflow page): one query."""
    latest = Run.objects.filter(workflow=wf.name).order_by("-pk").values("pk")[:runs]
    rows = (
        StepRun.objects.filter(run_id__in=latest)
        .exclude(metrics={})
        .order_by("run_id")
        .values_list("run_id", "name", "metrics")
    )
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for run_id, step, metrics in rows:
        if not isinstance(metrics, dict):
            continue
        for name, value in metrics.items():
            # Only numbers can be drawn (ctx.metric writes nothing else; the admin could).
            if isinstance(value, int | float) and not isinstance(value, bool):
                series[step, name].append((run_id, float(value)))
    order = {name: i for i, name in enumerate(wf.order())}
    keys = sorted(series, key=lambda k: (order.get(k[0], len(order)), k))
    return [
        MetricTrend(
            step,
            name,
            charts.sparkline(
                f"{name} of {step}", series[step, name], lambda pk: reverse("run_detail", args=[pk])
            ),
        )
        for step, name in keys
    ]


@dataclass
class StepView:
    row: StepRun
    spec: Step | None
    attempts: list[AttemptRow]
    checkpoints: list[Checkpoint]

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def last_attempt(self) -> AttemptRow | None:
        return self.attempts[-1] if self.attempts else None

    @cached_property
    def earlier_failures(self) -> list[AttemptRow]:
        """Failed attempts other than the one whose error the step shows."""
        failed = [a for a in self.attempts if a.error]
        if self.row.error and failed and failed[-1].error == self.row.error:
            failed = failed[:-1]
        return failed[::-1]

    @cached_property
    def traceback(self) -> str:
        for a in reversed(self.attempts):
            if a.traceback:
                return a.traceback
        return ""

    @property
    def shows_error(self) -> bool:
        return bool(self.row.error) and self.row.status in (
            "failed",
            "timed_out",
            "retrying",
            "running",
            "queued",
        )

    # -- what the row shows ---------------------------------------------------------------
    @property
    def badge(self) -> SafeString:
        return fmt.badge_html(self.row.status)

    @property
    def attempts_text(self) -> str:
        return str(self.row.attempts) if self.row.attempts else "—"

    @property
    def duration_text(self) -> str:
        return fmt.human_duration(self.row.duration)

    @property
    def progress(self) -> tuple[int, str, str] | None:
        """Bar value, percentage and "1,204 / 5,000" of a step that reports progress."""
        if not self.row.progress_total:
            return None
        fraction = self.row.fraction
        return fmt.percent_value(fraction), fmt.percent(fraction), fmt.step_fraction(self.row)

    @property
    def items_text(self) -> str:
        return fmt.number(self.row.items_done) if self.row.items_done else ""

    @property
    def skip_text(self) -> str:
        return self.row.skip_reason if self.row.status == "skipped" else ""

    @cached_property
    def has_extra(self) -> bool:
        return bool(self.shows_error or self.earlier_failures or self.checkpoints or self.skip_text)

    @property
    def error_head(self) -> str:
        return fmt.error_head(self.row.error)

    @property
    def html(self) -> SafeString:
        return rows.step(self)

    @property
    def copy_text(self) -> str:
        return self.row.error + (f"\n\n{self.traceback}" if self.traceback else "")


@dataclass
class RunDetail:
    run: Run
    workflow: Workflow | None
    steps: list[StepView]
    events: list[EventRow]
    params: dict[str, Any]
    eta: float | None = None
    previous_id: int | None = None
    definition_changed: bool = False
    metrics: list[StepMetrics] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.run.status not in states.RUN_FINISHED

    @property
    def param_items(self) -> list[tuple[str, Any]]:
        """As a list: a parameter named "items" would shadow ``dict.items`` in a template."""
        return list(self.params.items())

    @property
    def logs(self) -> list[EventRow]:
        return [e for e in self.events if e.kind == "log"]

    @property
    def history(self) -> list[EventRow]:
        return [e for e in self.events if e.kind != "log"]

    @property
    def last_event_id(self) -> int:
        return self.events[-1].pk if self.events else 0

    @property
    def statuses(self) -> dict[str, str]:
        return {s.name: s.row.status for s in self.steps}

    @property
    def failed_steps(self) -> list[StepView]:
        return [s for s in self.steps if s.row.status in states.STEP_FAILED]

    def timeline(self) -> charts.Timeline | None:
        return charts.timeline((s.name, s.attempts) for s in self.steps)

    def dag(self) -> charts.Dag | None:
        if self.workflow is None:
            return None
        return charts.dag(self.workflow, self.statuses)


def workflow_or_none(name: str) -> Workflow | None:
    try:
        return registry.get(name)
    except StepflowError:
        return None


def load_run(run_id: int) -> Run:
    return Run.objects.select_related("created_by", "parent_step").get(pk=run_id)


def step_views(
    run: Run, wf: Workflow | None, rows: list[StepRun], *, whole_run: bool
) -> list[StepView]:
    """The steps with their attempts and checkpoints: two queries, by run or by step ids."""
    if not rows:
        return []
    ids = [r.pk for r in rows]
    attempts = attempts_of(run) if whole_run else attempts_of(step_ids=ids)
    if whole_run:
        checkpoint_qs = Checkpoint.objects.filter(step__run_id=run.pk)
    else:
        checkpoint_qs = Checkpoint.objects.filter(step_id__in=ids)
    checkpoints: dict[int, list[Checkpoint]] = defaultdict(list)
    for c in checkpoint_qs.order_by("step_id", "key"):
        checkpoints[c.step_id].append(c)
    return [
        StepView(
            row=r,
            spec=wf.steps.get(r.name) if wf else None,
            attempts=attempts.get(r.pk, []),
            checkpoints=checkpoints.get(r.pk, []),
        )
        for r in rows
    ]


def events_of(run: Run, after: int | None = None) -> list[EventRow]:
    """The newest events of the run, oldest first; with ``after``, only the later ones."""
    qs = RunEvent.objects.filter(run_id=run.pk)
    if after is None:
        rows = list(qs.order_by("-id").values_list(*EventRow.FIELDS)[:EVENT_LIMIT])[::-1]
    else:
        rows = list(
            qs.filter(id__gt=after).order_by("id").values_list(*EventRow.FIELDS)[:EVENT_LIMIT]
        )
    return [EventRow(*r) for r in rows]


def load_detail(run: Run, *, with_events: bool = True) -> RunDetail:
    """Steps with their attempts and checkpoints, metrics, events, ETA: 5–8 queries,
    whatever the sizes."""
    wf = workflow_or_none(run.workflow)
    # Ordered here: the model's ordering ("run", "position") joins the run to sort by it.
    rows = list(run.steps.order_by("position").defer(*STEP_DEFER))
    detail = RunDetail(
        run=run,
        workflow=wf,
        steps=step_views(run, wf, rows, whole_run=True),
        events=events_of(run) if with_events else [],
        params=mask_params(wf.params if wf else {}, run.params or {}),
        definition_changed=wf is not None and wf.definition_hash != run.definition_hash,
        metrics=metrics_of(run),
    )
    if detail.active and wf is not None:
        detail.eta = estimate_eta(run, wf, [s.row for s in detail.steps])
    return detail


def previous_run_id(run: Run) -> int | None:
    return (
        Run.objects.filter(workflow=run.workflow, pk__lt=run.pk)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
