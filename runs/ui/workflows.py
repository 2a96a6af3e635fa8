"""Workflow cards: last run, success rate and median duration over recent runs."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from stepflow import states
from stepflow.workflow import Workflow

from ..models import Run, RunStatus

#: How many of the latest runs a card's figures cover.
RECENT = 50


@dataclass(frozen=True)
class StepInfo:
    name: str
    description: str
    depends_on: tuple[str, ...]
    weight: float
    max_attempts: int
    timeout: float | None
    queue: str


@dataclass(frozen=True)
class WorkflowInfo:
    """What the pages show of a workflow (templates never index a Workflow: its
    ``__getitem__`` raises UnknownStep, which Django's variable lookup does not expect)."""

    name: str
    version: str
    description: str
    definition_hash: str
    steps: list[StepInfo]
    timeout: float | None = None
    max_parallel: int | None = None

    @property
    def step_count(self) -> int:
        return len(self.steps)


def info(wf: Workflow) -> WorkflowInfo:
    steps = [
        StepInfo(
            name=s.name,
            description=s.description,
            depends_on=tuple(s.depends_on),
            weight=s.weight,
            max_attempts=s.retry.max_attempts,
            timeout=s.timeout,
            queue=s.queue,
        )
        for s in (wf.steps[n] for n in wf.order())
    ]
    return WorkflowInfo(
        wf.name,
        wf.version,
        wf.description,
        wf.definition_hash,
        steps,
        timeout=wf.timeout,
        max_parallel=wf.max_parallel,
    )


@dataclass(frozen=True)
class WorkflowStats:
    workflow: WorkflowInfo
    last_status: str
    last_id: int | None
    runs: int
    success_rate: float | None
    median_duration: float | None


def stats(wf: Workflow, recent: int = RECENT) -> WorkflowStats:
    """One indexed query ((workflow, -id)) per workflow."""
    rows = list(
        Run.objects.filter(workflow=wf.name)
        .order_by("-pk")
        .values_list("pk", "status", "started_at", "finished_at")[:recent]
    )
    finished = [r for r in rows if r[1] in states.RUN_FINISHED]
    ok = [r for r in rows if r[1] == RunStatus.COMPLETED]
    durations = [(r[3] - r[2]).total_seconds() for r in ok if r[2] and r[3]]
    return WorkflowStats(
        workflow=info(wf),
        last_status=rows[0][1] if rows else "",
        last_id=rows[0][0] if rows else None,
        runs=len(rows),
        success_rate=len(ok) / len(finished) if finished else None,
        median_duration=statistics.median(durations) if durations else None,
    )


def recent_runs(wf: Workflow, limit: int = 10) -> list[Run]:
    return list(
        Run.objects.filter(workflow=wf.name)
        .select_related("created_by")
        .defer("params", "scope", "note")
        .order_by("-pk")[:limit]
    )
