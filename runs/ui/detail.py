"""Everything the run detail page shows, loaded in a fixed number of queries."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch
from django.utils import timezone

from stepflow import states
from stepflow.errors import StepflowError
from stepflow.params import mask_params
from stepflow.registry import registry
from stepflow.step import Step
from stepflow.workflow import Workflow

from ..models import Checkpoint, Run, RunEvent, RunStatus, StepAttempt, StepRun
from . import charts

#: How many events (logs and history) the page shows, newest kept.
EVENT_LIMIT = 500
#: How many earlier completed runs the ETA learns from.
ETA_HISTORY = 20


@dataclass
class StepView:
    row: StepRun
    spec: Step | None
    attempts: list[StepAttempt]
    checkpoints: list[Checkpoint]

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def last_attempt(self) -> StepAttempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def earlier_failures(self) -> list[StepAttempt]:
        """Failed attempts other than the one whose error the step shows."""
        failed = [a for a in self.attempts if a.error]
        if self.row.error and failed and failed[-1].error == self.row.error:
            failed = failed[:-1]
        return failed[::-1]

    @property
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


@dataclass
class RunDetail:
    run: Run
    workflow: Workflow | None
    steps: list[StepView]
    events: list[RunEvent]
    params: dict[str, Any]
    eta: float | None = None
    previous_id: int | None = None
    definition_changed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.run.status not in states.RUN_FINISHED

    @property
    def param_items(self) -> list[tuple[str, Any]]:
        """As a list: a parameter named "items" would shadow ``dict.items`` in a template."""
        return list(self.params.items())

    @property
    def logs(self) -> list[RunEvent]:
        return [e for e in self.events if e.kind == "log"]

    @property
    def history(self) -> list[RunEvent]:
        return [e for e in self.events if e.kind != "log"]

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
    return Run.objects.select_related("created_by").get(pk=run_id)


def load_detail(run: Run, *, with_events: bool = True) -> RunDetail:
    """Steps with their attempts and checkpoints, events, ETA: 4–7 queries, whatever the sizes."""
    wf = workflow_or_none(run.workflow)
    rows = list(
        run.steps.defer("output", "rollback_data", "metrics").prefetch_related(
            Prefetch("attempt_set", queryset=StepAttempt.objects.order_by("number")),
            Prefetch("checkpoints", queryset=Checkpoint.objects.order_by("key")),
        )
    )
    steps = [
        StepView(
            row=r,
            spec=wf.steps.get(r.name) if wf else None,
            attempts=list(r.attempt_set.all()),
            checkpoints=list(r.checkpoints.all()),
        )
        for r in rows
    ]
    events: list[RunEvent] = []
    if with_events:
        events = list(run.events.order_by("-id")[:EVENT_LIMIT])[::-1]
    detail = RunDetail(
        run=run,
        workflow=wf,
        steps=steps,
        events=events,
        params=mask_params(wf.params if wf else {}, run.params or {}),
        definition_changed=wf is not None and wf.definition_hash != run.definition_hash,
    )
    if detail.active and wf is not None:
        detail.eta = estimate_eta(run, wf, steps)
    return detail


def previous_run_id(run: Run) -> int | None:
    return (
        Run.objects.filter(workflow=run.workflow, pk__lt=run.pk)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


def step_medians(run: Run) -> tuple[dict[str, float], float | None]:
    """Median step and run durations over the latest completed runs of the workflow (one query)."""
    recent = (
        Run.objects.filter(workflow=run.workflow, status=RunStatus.COMPLETED, pk__lt=run.pk)
        .order_by("-pk")
        .values("pk")[:ETA_HISTORY]
    )
    rows = StepRun.objects.filter(run_id__in=recent, status="completed").values_list(
        "name", "started_at", "finished_at", "run__started_at", "run__finished_at", "run_id"
    )
    per_step: dict[str, list[float]] = defaultdict(list)
    per_run: dict[int, float] = {}
    for name, s0, s1, r0, r1, rid in rows:
        if s0 and s1:
            per_step[name].append((s1 - s0).total_seconds())
        if r0 and r1:
            per_run[rid] = (r1 - r0).total_seconds()
    medians = {n: statistics.median(v) for n, v in per_step.items()}
    return medians, (statistics.median(per_run.values()) if per_run else None)


def estimate_eta(run: Run, wf: Workflow, steps: list[StepView]) -> float | None:
    """Seconds left: per step, its median duration in earlier runs (or its weight's share of
    the median run) times the part not done yet; steps of one level run side by side."""
    medians, run_median = step_medians(run)
    now = timezone.now()
    if not medians and run_median is None:
        if not run.started_at or run.progress < 0.05:
            return None
        elapsed = (now - run.started_at).total_seconds()
        return elapsed * (1 - run.progress) / run.progress
    total_weight = wf.total_weight or len(wf.steps)
    by_name = {s.name: s for s in steps}
    remaining = 0.0
    for level in wf.levels():
        longest = 0.0
        for name in level:
            view = by_name.get(name)
            status = view.row.status if view else "pending"
            if status in states.STEP_FINISHED:
                continue
            expected = medians.get(name)
            if expected is None:
                if run_median is None:
                    continue
                expected = run_median * (wf.steps[name].weight or 1) / total_weight
            if view and status == "running":
                fraction = view.row.fraction
                if fraction is not None:
                    left = expected * (1 - fraction)
                else:
                    started = view.row.started_at or now
                    left = max(expected - (now - started).total_seconds(), expected * 0.1)
            else:
                left = expected
            longest = max(longest, left)
        remaining += longest
    return remaining
