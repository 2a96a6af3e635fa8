"""Two runs side by side: parameter differences, per-step durations and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepflow.params import mask_params

from ..models import Run, StepRun
from .charts import metric_text
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
class MetricRow:
    """A metric of a step in both runs, as shown; "—" where a run did not record it."""

    name: str
    a: str
    b: str
    diff: str  # B − A: "+1,204", "-0.5", "0"; "—" unless both have it
    percent: str  # of A: "+12.5%"; "" when A is 0 or either is missing


@dataclass(frozen=True)
class StepRow:
    name: str
    a: StepRun | None
    b: StepRun | None
    a_duration: float | None
    b_duration: float | None
    slower: str  # "a", "b" or ""
    change: str  # "+38%" on the slower side
    metrics: list[MetricRow] = field(default_factory=list)


class StepRows(list[StepRow]):
    """The step rows, in order, and those with a metric in either run (the template
    cannot filter a list)."""

    @property
    def with_metrics(self) -> list[StepRow]:
        return [s for s in self if s.metrics]


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


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _signed(value: float) -> str:
    text = metric_text(value)
    return f"+{text}" if value > 0 else text


def _percent(change: float) -> str:
    if not change:
        return "0%"
    text = f"{change:+,.1f}".removesuffix(".0")
    if text in ("+0", "-0"):  # a change too small for one decimal
        text = f"{change:+.2g}"
    return f"{text}%"


def metric_row(name: str, a: object, b: object) -> MetricRow:
    """``a`` or ``b`` is ``_MISSING`` when that run did not record the metric."""
    a_text = "—" if a is _MISSING else metric_text(a)
    b_text = "—" if b is _MISSING else metric_text(b)
    va, vb = _number(a), _number(b)
    if va is None or vb is None:
        return MetricRow(name, a_text, b_text, "—", "")
    percent = _percent((vb - va) / abs(va) * 100) if va else ""
    return MetricRow(name, a_text, b_text, _signed(vb - va), percent)


def metric_rows(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[MetricRow]:
    a, b = a or {}, b or {}
    return [metric_row(n, a.get(n, _MISSING), b.get(n, _MISSING)) for n in sorted({*a, *b})]


def step_rows(steps_a: list[StepRun], steps_b: list[StepRun]) -> StepRows:
    by_a = {s.name: s for s in steps_a}
    by_b = {s.name: s for s in steps_b}
    names = list(dict.fromkeys([*(s.name for s in steps_a), *(s.name for s in steps_b)]))
    rows = StepRows()
    for n in names:
        sa, sb = by_a.get(n), by_b.get(n)
        da = sa.duration if sa and sa.finished_at else None
        db = sb.duration if sb and sb.finished_at else None
        slower, change = _diff(da, db)
        metrics = metric_rows(sa.metrics if sa else None, sb.metrics if sb else None)
        rows.append(StepRow(n, sa, sb, da, db, slower, change, metrics))
    return rows


def load_pair(a_id: int, b_id: int) -> tuple[Run, Run, StepRows]:
    """Both runs and their steps (with their metrics: two runs' worth is small) in two
    queries."""
    runs = {r.pk: r for r in Run.objects.select_related("created_by").filter(pk__in=[a_id, b_id])}
    if a_id not in runs or b_id not in runs:
        missing = a_id if a_id not in runs else b_id
        raise Run.DoesNotExist(f"No run with id {missing}")
    steps = list(StepRun.objects.filter(run_id__in=[a_id, b_id]).defer("output", "rollback_data"))
    rows = step_rows([s for s in steps if s.run_id == a_id], [s for s in steps if s.run_id == b_id])
    return runs[a_id], runs[b_id], rows
