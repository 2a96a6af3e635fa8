"""Template helpers for the dashboard: status badges, durations, relative times."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from html import escape
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from stepflow.states import STATUS_ICONS

register = template.Library()


@functools.cache
def badge_html(status: str) -> SafeString:
    """The badge of a status without extra classes (a page of 200 steps asks 200 times)."""
    return status_badge(status)


@register.simple_tag
def status_badge(status: str, extra: str = "") -> SafeString:
    """``✓ completed`` in the status's colour; the icon is hidden from screen readers."""
    status = str(status or "pending")
    icon = STATUS_ICONS.get(status, "•")
    return format_html(
        '<span class="badge s-{}{}">'
        '<span class="badge-icon" aria-hidden="true">{}</span> {}</span>',
        status,
        f" {extra}" if extra else "",
        icon,
        status.replace("_", " "),
    )


@register.filter
def status_icon(status: str) -> str:
    return STATUS_ICONS.get(str(status), "•")


def human_duration(seconds: float | None) -> str:
    """850 ms, 4.1 s, 52 s, 1 m 12 s, 1 h 04 m, 2 d 03 h."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    total = round(seconds)
    if total < 3600:
        return f"{total // 60} m {total % 60:02d} s"
    if total < 86400:
        return f"{total // 3600} h {total % 3600 // 60:02d} m"
    return f"{total // 86400} d {total % 86400 // 3600:02d} h"


@register.filter
def duration(seconds: float | None) -> str:
    return human_duration(seconds)


def relative(dt: datetime, now: datetime | None = None) -> str:
    now = now or timezone.now()
    delta = (now - dt).total_seconds()
    future = delta < 0
    delta = abs(delta)
    if delta < 10:
        return "just now"
    if delta < 60:
        text = f"{delta:.0f} s"
    elif delta < 3600:
        text = f"{delta // 60:.0f} min"
    elif delta < 86400:
        text = f"{delta // 3600:.0f} h"
    elif delta < 86400 * 30:
        text = f"{delta // 86400:.0f} d"
    else:
        return timezone.localtime(dt).strftime("%Y-%m-%d")
    return f"in {text}" if future else f"{text} ago"


@register.simple_tag
def reltime(dt: datetime | None) -> SafeString | str:
    """``<time datetime="…" title="exact">3 min ago</time>``."""
    if dt is None:
        return "—"
    local = timezone.localtime(dt)
    exact = local.strftime("%Y-%m-%d %H:%M:%S %Z")
    return _time_html(dt.isoformat(), exact, relative(dt))


@register.simple_tag
def abstime(dt: datetime | None) -> SafeString | str:
    if dt is None:
        return "—"
    local = timezone.localtime(dt)
    return _time_html(dt.isoformat(), relative(dt), local.strftime("%Y-%m-%d %H:%M:%S"))


def _time_html(iso: str, title: str, text: str) -> SafeString:
    # Plain escaping: a page of 500 log lines calls this 500 times.
    return mark_safe(
        f'<time datetime="{escape(iso)}" title="{escape(title)}">{escape(text)}</time>'
    )


@register.filter
def percent(fraction: float | None) -> str:
    if fraction is None:
        return "—"
    value = max(0.0, min(1.0, float(fraction))) * 100
    return f"{int(value)}%" if value < 100 else "100%"


@register.filter
def percent_value(fraction: float | None) -> int:
    return int(max(0.0, min(1.0, float(fraction or 0))) * 100)


@register.filter
def show_value(value: Any) -> str:
    """A parameter or checkpoint value as text (the template escapes it)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def truncate(text: str, limit: int) -> str:
    """As ``truncatechars``: at most ``limit`` characters, the last one an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def error_head(text: str | None) -> str:
    """The message of an error (its last non-empty line: what a traceback ends with)."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@register.filter
def number(value: float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


@register.filter
def run_error(run: Any) -> str:
    """The error part of a run's summary ("build failed: X" -> "X")."""
    summary = run.error_summary or ""
    prefix = f"{run.failed_step} "
    if run.failed_step and summary.startswith(prefix) and ": " in summary:
        return summary.split(": ", 1)[1]
    return summary


@register.filter
def row_eta(run: Any) -> float | None:
    from runs.ui.history import eta_seconds

    return eta_seconds(run)


@register.filter
def step_fraction(step: Any) -> str:
    """In-step progress as text: "1,204 / 5,000"."""
    if step.progress_total:
        return f"{number(step.progress_current or 0)} / {number(step.progress_total)}"
    return ""


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None
