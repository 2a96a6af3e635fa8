"""The ETA of an active run, learnt from the durations of earlier completed runs."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.utils import timezone

from stepflow import states
from stepflow.workflow import Workflow

from ..models import Run, RunStatus, StepRun

if TYPE_CHECKING:
    from .detail import StepLine

#: How many earlier completed runs the ETA learns from.
ETA_HISTORY = 20
#: Seconds the medians the ETA learns from are kept (they change as earlier runs finish).
MEDIANS_CACHE = 300


def step_medians(run: Run) -> tuple[dict[str, float], float | None]:
    """Median step and run durations over the latest completed runs of the workflow (one
    query; kept a few minutes, as the page asks again at every change of the run)."""
    key = f"stepflow:medians:{run.workflow}:{run.pk}:{run.created_at.timestamp():.0f}"
    cached = cache.get(key)
    if cached is None:
        cached = _step_medians(run)
        cache.set(key, cached, MEDIANS_CACHE)
    return cached


def _step_medians(run: Run) -> tuple[dict[str, float], float | None]:
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


def estimate_eta(run: Run, wf: Workflow, steps: Iterable[StepRun | StepLine]) -> float | None:
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
            step = by_name.get(name)
            status = step.status if step else "pending"
            if status in states.STEP_FINISHED:
                continue
            expected = medians.get(name)
            if expected is None:
                if run_median is None:
                    continue
                expected = run_median * (wf.steps[name].weight or 1) / total_weight
            if step and status == "running":
                fraction = step.fraction
                if fraction is not None:
                    left = expected * (1 - fraction)
                else:
                    started = step.started_at or now
                    left = max(expected - (now - started).total_seconds(), expected * 0.1)
            else:
                left = expected
            longest = max(longest, left)
        remaining += longest
    return remaining
