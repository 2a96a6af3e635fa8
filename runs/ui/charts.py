"""Geometry of the server-drawn SVGs: the Gantt timeline of attempts and the DAG.

The templates only place what is computed here; colours come from CSS classes
named after statuses (no inline styles: the CSP forbids them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from stepflow.workflow import Workflow

from ..models import StepAttempt
from ..templatetags.stepflow_ui import human_duration

LABEL_W = 96
CHART_W = 380
ROW_H = 22
BAR_H = 12


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


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def timeline(
    steps: Iterable[tuple[str, list[StepAttempt]]], now: datetime | None = None
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
