"""Geometry of the server-drawn SVGs: the Gantt timeline of attempts, the DAG, and
the sparklines of step metrics (with how a metric's value is written).

The markup is built here too (``Timeline.svg``, ``Dag.svg``): a run of 200 steps has
hundreds of bars, and one ``format_html`` per element costs a fraction of a template loop.
Colours come from CSS classes named after statuses (no inline styles: the CSP forbids them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Protocol

from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from stepflow.workflow import Workflow

from ..templatetags.stepflow_ui import human_duration
from .rows import format_html, format_html_join

LABEL_W = 96
CHART_W = 380
ROW_H = 22
BAR_H = 12


class AttemptLike(Protocol):
    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    status: str
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    label_w: int
    rows: list[tuple[str, float]]  # step name, text baseline y
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    span: float

    def svg(self) -> SafeString:
        # Numbers need no escaping; names and titles do. Plain strings here: a run of
        # 200 steps has 400 bars, and format_html per bar is most of the page's time.
        ticks = "".join(
            f'<line x1="{x}" x2="{x}" y1="14" y2="{self.height}" class="tl-grid"/>'
            f'<text x="{x}" y="10" class="tl-tick">{escape(label)}</text>'
            for x, label in self.ticks
        )
        labels = "".join(
            f'<text x="0" y="{y}" class="tl-label">{escape(name)}</text>' for name, y in self.rows
        )
        bars = "".join(
            f'<rect x="{b.x}" y="{b.y}" width="{b.width}" height="12" rx="2" '
            f'class="tl-bar a-{escape(b.status)}"><title>{escape(b.title)}</title></rect>'
            for b in self.bars
        )
        return mark_safe(
            f'<svg class="timeline" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="Timeline of the attempts, {escape(human_duration(self.span))} in all">'
            f"{ticks}{labels}{bars}</svg>"
        )


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def timeline(
    steps: Iterable[tuple[str, Sequence[AttemptLike]]], now: datetime | None = None
) -> Timeline | None:
    """One row per step, one bar per attempt, from the first attempt's start."""
    now = now or timezone.now()
    steps = list(steps)
    spans = [(a.started_at, a.finished_at or now) for _, attempts in steps for a in attempts]
    if not spans:
        return None
    t0 = min(s for s, _ in spans)
    t1 = max(e for _, e in spans)
    span = max((t1 - t0).total_seconds(), 0.001)
    scale = CHART_W / span
    rows: list[tuple[str, float]] = []
    bars: list[Bar] = []
    for i, (name, attempts) in enumerate(steps):
        y = 20 + i * ROW_H
        rows.append((_short(name), y + BAR_H - 2))
        for a in attempts:
            start = (a.started_at - t0).total_seconds()
            end = ((a.finished_at or now) - t0).total_seconds()
            width = max(2.0, (end - start) * scale)
            title = (
                f"{name} · attempt {a.number} · {a.status.replace('_', ' ')} · "
                f"{human_duration(end - start)}"
            )
            bars.append(Bar(round(LABEL_W + start * scale, 1), y, round(width, 1), a.status, title))
    ticks = [
        (round(LABEL_W + CHART_W * f, 1), human_duration(span * f) if f else "0 s")
        for f in (0, 0.25, 0.5, 0.75, 1)
    ]
    return Timeline(
        width=LABEL_W + CHART_W + 24,
        height=20 + len(steps) * ROW_H + 6,
        label_w=LABEL_W,
        rows=rows,
        bars=bars,
        ticks=ticks,
        span=span,
    )


NODE_W = 124
NODE_H = 30
COL_GAP = 44
ROW_GAP = 12
PAD = 6


@dataclass(frozen=True)
class Node:
    name: str
    label: str
    x: float
    y: float
    status: str
    icon: str


@dataclass(frozen=True)
class Dag:
    width: float
    height: float
    node_w: int
    node_h: int
    nodes: list[Node]
    edges: list[str]  # SVG path data

    def svg(self) -> SafeString:
        label = ", ".join(
            n.name + (f" ({n.status})" if n.status != "none" else "") for n in self.nodes
        )
        edges = format_html_join(
            "",
            '<path d="{}" class="dag-edge" marker-end="url(#arrow)"/>',
            ((e,) for e in self.edges),
        )
        nodes = format_html_join(
            "",
            '<g class="dag-node n-{0}"><title>{1}{2}</title>'
            '<rect x="{3}" y="{4}" width="{5}" height="{6}" rx="6"/>'
            '<text x="{3}" y="{4}" dx="10" dy="19">{7}{8}</text></g>',
            (
                (
                    n.status,
                    n.name,
                    f" — {n.status}" if n.status != "none" else "",
                    f"{n.x:.1f}",
                    f"{n.y:.1f}",
                    self.node_w,
                    self.node_h,
                    f"{n.icon} " if n.icon else "",
                    n.label,
                )
                for n in self.nodes
            ),
        )
        return format_html(
            '<svg class="dag" viewBox="0 0 {0} {1}" width="{0}" height="{1}" '
            'role="img" aria-label="Step graph: {2}"><defs><marker id="arrow" viewBox="0 0 8 8" '
            'refX="6" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0 0 L8 4 L0 8 z" class="dag-arrow"/></marker></defs>{3}{4}</svg>',
            f"{self.width:.0f}",
            f"{self.height:.0f}",
            label,
            edges,
            nodes,
        )


def dag(wf: Workflow, statuses: Mapping[str, str] | None = None) -> Dag:
    """Steps laid out by topological level, left to right; edges dependency → dependant."""
    from ..templatetags.stepflow_ui import STATUS_ICONS

    statuses = statuses or {}
    levels = wf.levels()
    tallest = max(len(level) for level in levels)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    pos: dict[str, tuple[float, float]] = {}
    nodes: list[Node] = []
    for col, level in enumerate(levels):
        x = PAD + col * (NODE_W + COL_GAP)
        column_h = len(level) * NODE_H + (len(level) - 1) * ROW_GAP
        top = (height - column_h) / 2
        for row, name in enumerate(level):
            y = top + row * (NODE_H + ROW_GAP)
            pos[name] = (x, y)
            status = statuses.get(name, "")
            nodes.append(
                Node(name, _short(name, 14), x, y, status or "none", STATUS_ICONS.get(status, ""))
            )
    edges = []
    for s in wf:
        x2, y2 = pos[s.name]
        for dep in s.depends_on:
            x1, y1 = pos[dep]
            sx, sy = x1 + NODE_W, y1 + NODE_H / 2
            ex, ey = x2, y2 + NODE_H / 2
            mid = (ex - sx) / 2
            edges.append(
                f"M{sx:.1f} {sy:.1f} C{sx + mid:.1f} {sy:.1f} {ex - mid:.1f} {ey:.1f} "
                f"{ex - 4:.1f} {ey:.1f}"
            )
    width = PAD * 2 + len(levels) * NODE_W + (len(levels) - 1) * COL_GAP
    return Dag(width, height, NODE_W, NODE_H, nodes, edges)


# -- metrics -----------------------------------------------------------------------------
def metric_text(value: object) -> str:
    """A metric as shown: ``1,204`` for a whole number, else at most 4 decimals
    (``3.1416``), 4 significant digits below 1 (``0.001235``), ``1.235e-07`` below 0.0001."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)  # not written by ctx.metric (edited by hand): shown as it is
    v = float(value)
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("∞" if v > 0 else "-∞")
    if v.is_integer():
        return f"{int(v):,}"
    size = abs(v)
    if size < 1e-4:
        return f"{v:.4g}"
    decimals = 4 if size >= 1 else 3 - math.floor(math.log10(size))
    text = f"{v:,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("0", "-0") else text


SPARK_W = 150
SPARK_H = 30
SPARK_PAD = 4


@dataclass(frozen=True)
class SparkPoint:
    run_id: int
    value: float
    x: float
    y: float
    href: str


@dataclass(frozen=True)
class Sparkline:
    """One metric over runs, oldest first: a line, a dot per run (its title names the
    run, the dot links to it), and the figures shown beside it."""

    label: str
    points: list[SparkPoint]

    @property
    def last(self) -> str:
        return metric_text(self.points[-1].value)

    @property
    def low(self) -> str:
        return metric_text(min(p.value for p in self.points))

    @property
    def high(self) -> str:
        return metric_text(max(p.value for p in self.points))

    def svg(self) -> SafeString:
        # Each run's column is its link and its tooltip: a 3 px dot is too small to aim at.
        column = (SPARK_W - 2 * SPARK_PAD) / max(len(self.points) - 1, 1)
        line = " ".join(f"{p.x},{p.y}" for p in self.points)
        dots = "".join(
            f'<a href="{escape(p.href)}"><title>#{p.run_id}: {escape(metric_text(p.value))}'
            f'</title><rect x="{p.x - column / 2:.1f}" y="0" width="{column:.1f}" '
            f'height="{SPARK_H}" class="spark-hit"/><circle cx="{p.x}" cy="{p.y}" r="2.5" '
            f'class="spark-dot{" spark-last" if i == len(self.points) - 1 else ""}"/></a>'
            for i, p in enumerate(self.points)
        )
        return mark_safe(
            f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" '
            f'height="{SPARK_H}" role="img" aria-label="{escape(self.label)}: '
            f"{len(self.points)} run{'s' if len(self.points) != 1 else ''}, last "
            f'{escape(self.last)}, min {escape(self.low)}, max {escape(self.high)}">'
            f'<polyline points="{line}" class="spark-line"/>{dots}</svg>'
        )


def sparkline(
    label: str, values: Sequence[tuple[int, float]], href: Callable[[int], str]
) -> Sparkline:
    """``values``: (run id, value), oldest first, evenly spaced; the y axis spans min to max
    (a flat line in the middle when they are equal)."""
    low = min(v for _, v in values)
    high = max(v for _, v in values)
    inner_w, inner_h = SPARK_W - 2 * SPARK_PAD, SPARK_H - 2 * SPARK_PAD
    step = inner_w / (len(values) - 1) if len(values) > 1 else 0
    points = []
    for i, (run_id, value) in enumerate(values):
        x = SPARK_PAD + i * step if len(values) > 1 else SPARK_W / 2
        y = SPARK_H / 2 if high == low else SPARK_PAD + inner_h * (high - value) / (high - low)
        points.append(SparkPoint(run_id, value, round(x, 1), round(y, 1), href(run_id)))
    return Sparkline(label, points)
