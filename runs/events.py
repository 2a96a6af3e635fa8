"""RunEvents: the history and audit trail of a run."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import Run, RunEvent

User = AbstractBaseUser | AnonymousUser | None


def actor_name(user: User, fallback: str = "stepflow") -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return fallback


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
    return RunEvent.objects.create(
        run_id=run_id,
        kind=kind,
        message=message,
        step=step,
        level=level,
        actor=actor or actor_name(user),
        user=real_user,
        data={k: v for k, v in data.items() if v is not None},
    )
