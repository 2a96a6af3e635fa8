"""The markup of the long lists of the run page (steps, history, logs), built in Python.

A run of 200 steps made the templates of these rows most of the page's time (about
25 variable lookups a step row, 40 ms in all); ``html`` below costs a tenth of that.
The wrapping elements stay in ``runs/detail.html`` (partial ``step``, the lists),
which also sends them out of band while the run moves.
"""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING, Any

from django.utils.safestring import SafeString, mark_safe

from ..templatetags import stepflow_ui as fmt

if TYPE_CHECKING:
    from .detail import EventRow, StepView


def _escape(value: Any) -> str:
    if hasattr(value, "__html__"):
        return value.__html__()
    return _html.escape(str(value))


def format_html(template: str, *args: Any) -> SafeString:
    """``django.utils.html.format_html`` without its lazy-string checks (5x faster)."""
    return mark_safe(template.format(*map(_escape, args)))


def format_html_join(sep: str, template: str, rows: Any) -> SafeString:
    return mark_safe(sep.join(template.format(*map(_escape, args)) for args in rows))


def _progress(s: StepView) -> SafeString:
    parts = []
    progress = s.progress
    if progress is not None:
        parts.append(
            format_html(
                '<progress max="100" value="{}" aria-label="Progress of {}">{}</progress> '
                '<span class="num">{}</span>',
                progress[0],
                s.name,
                progress[1],
                progress[2],
            )
        )
    if s.row.progress_message:
        parts.append(format_html('<span class="muted">{}</span>', s.row.progress_message))
    if s.items_text:
        parts.append(format_html('<span class="pill">items {}</span>', s.items_text))
    if s.checkpoints:
        n = len(s.checkpoints)
        parts.append(
            format_html('<span class="pill">{} checkpoint{}</span>', n, "" if n == 1 else "s")
        )
    return mark_safe(" ".join(parts))


def _error(s: StepView) -> SafeString:
    copy = s.copy_text
    traceback = ""
    if s.traceback:
        traceback = format_html(
            '<details class="traceback" id="tb-{}-{}" hx-preserve="true">'
            "<summary>Traceback</summary><pre>{}</pre></details>",
            s.row.pk,
            s.row.attempts,
            s.traceback,
        )
    return format_html(
        '<div class="error-block"><div class="error-line"><code class="error-msg">{}</code> '
        '<button type="button" class="copy small" data-copy="{}">Copy</button></div>{}</div>',
        s.error_head,
        copy,
        traceback,
    )


def _earlier(s: StepView) -> SafeString:
    items = format_html_join(
        "",
        '<li><span class="muted">attempt {}</span> {} <code>{}</code>{}{}</li>',
        (
            (
                a.number,
                a.badge,
                a.error_head,
                format_html(' <span class="muted">on {}</span>', a.worker) if a.worker else "",
                format_html(
                    ' <details id="tb-a{}" hx-preserve="true"><summary>traceback</summary>'
                    "<pre>{}</pre></details>",
                    a.pk,
                    a.traceback,
                )
                if a.traceback
                else "",
            )
            for a in s.earlier_failures
        ),
    )
    return format_html(
        '<ul class="attempt-errors" aria-label="Earlier attempts of {}">{}</ul>', s.name, items
    )


def _extra(s: StepView) -> SafeString:
    parts = []
    if s.shows_error:
        parts.append(_error(s))
    if s.earlier_failures:
        parts.append(_earlier(s))
    if s.skip_text:
        parts.append(format_html('<p class="muted">Skipped: {}</p>', s.skip_text))
    if s.checkpoints:
        parts.append(
            format_html(
                '<dl class="checkpoints">{}</dl>',
                format_html_join(
                    "",
                    "<div><dt>{}</dt><dd><code>{}</code></dd></div>",
                    ((c.key, fmt.truncate(fmt.show_value(c.value), 300)) for c in s.checkpoints),
                ),
            )
        )
    return format_html(
        '<tr class="step-extra"><td colspan="5">{}</td></tr>', mark_safe("".join(parts))
    )


def step(s: StepView) -> SafeString:
    """The rows of one step: name, status, attempts, duration, progress; then its
    error, earlier failed attempts, skip reason and checkpoints when it has any."""
    row = format_html(
        '<tr><th scope="row" class="step-name">{}</th><td>{}</td><td class="num">{}</td>'
        '<td class="num nowrap">{}</td><td class="step-progress">{}</td></tr>',
        s.name,
        s.badge,
        s.attempts_text,
        s.duration_text,
        _progress(s),
    )
    return row + _extra(s) if s.has_extra else row


def event(e: EventRow) -> SafeString:
    """One line of the history: when, who, what, which step, the message."""
    return format_html(
        '<li class="event ev-{} lvl-{}">{} <strong class="actor" title="{}">{}</strong> '
        '<span class="kind">{}</span>{}{}</li>',
        e.kind,
        e.level,
        e.time,
        e.actor,
        e.actor_text,
        e.kind_text,
        format_html(' <span class="step-ref">{}</span>', e.step) if e.step else "",
        format_html(' <span class="msg">{}</span>', e.message) if e.message else "",
    )


def log(e: EventRow) -> SafeString:
    """One log line: when, which step, the level, the message and its data."""
    return format_html(
        '<li class="log lvl-{}">{} <span class="step-ref">{}</span> <span class="level">{}</span> '
        '<span class="msg">{}</span>{}</li>',
        e.level,
        e.time,
        e.step,
        e.level,
        e.message,
        format_html(' <code class="data">{}</code>', e.data_text) if e.data else "",
    )
