"""RunEvents: the history and audit trail of a run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection

from .models import Run, RunEvent

User = AbstractBaseUser | AnonymousUser | None


def actor_name(user: User, fallback: str = "stepflow") -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return fallback


_buffer = threading.local()


@contextmanager
def batch() -> Iterator[None]:
    """Write the events recorded inside in one INSERT when the block ends (they
    keep their order). Use inside the transaction whose changes they describe."""
    if getattr(_buffer, "events", None) is not None:
        yield  # already batching
        return
    _buffer.events = []
    try:
        yield
        if _buffer.events:
            RunEvent.objects.bulk_create(_buffer.events)
    finally:
        _buffer.events = None


def take_buffered() -> list[RunEvent]:
    """The events recorded in the current batch so far, taken out of it: the caller
    writes them (inside the same transaction)."""
    pending = getattr(_buffer, "events", None)
    if not pending:
        return []
    taken = list(pending)
    pending.clear()
    return taken


def insert_sql(rows: list[RunEvent]) -> tuple[str, list[Any]]:
    """``INSERT INTO <events> (...) VALUES (...), ...`` and its parameters, values
    prepared as the ORM would save them (to be sent with another statement)."""
    fields = [f for f in RunEvent._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params: list[Any] = []
    for event in rows:
        for f in fields:
            params.append(f.get_db_prep_save(f.pre_save(event, True), connection))
    table = connection.ops.quote_name(RunEvent._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(rows))}", params


def record(
    run: Run | int,
    kind: str,
    message: str = "",
    *,
    step: str = "",
    user: User = None,
    actor: str | None = None,
    level: str = "info",
    **data: Any,
) -> RunEvent:
    """Append one event. ``actor`` defaults to the user's name, else "stepflow"."""
    run_id = run if isinstance(run, int) else run.pk
    real_user = user if user is not None and getattr(user, "is_authenticated", False) else None
    event = RunEvent(
        run_id=run_id,
        kind=kind,
        message=message,
        step=step,
        level=level,
        actor=actor or actor_name(user),
        user=real_user,
        data={k: v for k, v in data.items() if v is not None},
    )
    pending = getattr(_buffer, "events", None)
    if pending is not None:
        pending.append(event)
    else:
        event.save()
    return event
