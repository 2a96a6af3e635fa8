"""Two runs side by side: parameter differences and per-step durations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepflow.params import mask_params

from ..models import Run, StepRun
from .detail import workflow_or_none

_MISSING = object()


@dataclass(frozen=True)
class ParamRow:
    name: str
    a: Any
    b: Any
    differs: bool
    a_missing: bool
    b_missing: bool


@dataclass(frozen=True)
class StepRow:
    name: str
    a: StepRun | None
    b: StepRun | None
    a_duration: float | None
    b_duration: float | None
    slower: str  # "a", "b" or ""
    change: str  # "+38%" on the slower side


def _masked(run: Run) -> dict[str, Any]:
    wf = workflow_or_none(run.workflow)
    return mask_params(wf.params if wf else {}, run.params or {})


def param_rows(a: Run, b: Run) -> list[ParamRow]:
    pa, pb = _masked(a), _masked(b)
    names = list(dict.fromkeys([*pa, *pb]))
    rows = []
    for n in names:
        va, vb = pa.get(n, _MISSING), pb.get(n, _MISSING)
        rows.append(
            ParamRow(
                n,
                None if va is _MISSING else va,
                None if vb is _MISSING else vb,
                va != vb,
                va is _MISSING,
                vb is _MISSING,
            )
        )
    return rows


def _diff(da: float | None, db: float | None) -> tuple[str, str]:
    if da is None or db is None or da == db:
        return "", ""
    slower, fast, slow = ("a", db, da) if da > db else ("b", da, db)
    if fast <= 0:
        return slower, "slower"
    return slower, f"+{(slow - fast) / fast * 100:.0f}%"


def step_rows(steps_a: list[StepRun], steps_b: list[StepRun]) -> list[StepRow]:
    by_a = {s.name: s for s in steps_a}
    by_b = {s.name: s for s in steps_b}
    names = list(dict.fromkeys([*(s.name for s in steps_a), *(s.name for s in steps_b)]))
    rows = []
    for n in names:
        sa, sb = by_a.get(n), by_b.get(n)
        da = sa.duration if sa and sa.finished_at else None
        db = sb.duration if sb and sb.finished_at else None
        slower, change = _diff(da, db)
        rows.append(StepRow(n, sa, sb, da, db, slower, change))
    return rows


def load_pair(a_id: int, b_id: int) -> tuple[Run, Run, list[StepRow]]:
    """Both runs and their steps in two queries."""
    runs = {r.pk: r for r in Run.objects.select_related("created_by").filter(pk__in=[a_id, b_id])}
    if a_id not in runs or b_id not in runs:
        missing = a_id if a_id not in runs else b_id
        raise Run.DoesNotExist(f"No run with id {missing}")
    steps = list(
        StepRun.objects.filter(run_id__in=[a_id, b_id]).defer("output", "rollback_data", "metrics")
    )
    rows = step_rows([s for s in steps if s.run_id == a_id], [s for s in steps if s.run_id == b_id])
    return runs[a_id], runs[b_id], rows
