"""Run and step statuses and the one table of allowed transitions.

Every status change anywhere (the local runner, the Django services, the
worker jobs, the admin) is checked by :func:`transition`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from .errors import InvalidTransition


class RunStatus(StrEnum):
    PENDING = "pending"  # created, first steps not yet started
    RUNNING = "running"  # steps are being executed
    COMPLETED = "completed"  # every step completed or was skipped
    FAILED = "failed"  # a required step failed; can be resumed
    CANCELLING = "cancelling"  # cancel asked; running steps are stopping
    CANCELLED = "cancelled"  # stopped by a user; can be resumed
    TIMED_OUT = "timed_out"  # stopped at the workflow's deadline; can be resumed


class StepStatus(StrEnum):
    PENDING = "pending"  # waiting for its dependencies
    QUEUED = "queued"  # an attempt is on the queue
    RUNNING = "running"  # a worker is executing an attempt
    WAITING = "waiting"  # its attempt started child runs and waits for them (no worker held)
    RETRYING = "retrying"  # an attempt failed; the next waits for its backoff
    COMPLETED = "completed"  # succeeded
    FAILED = "failed"  # failed with no attempts left
    TIMED_OUT = "timed_out"  # its last attempt ran past the timeout
    SKIPPED = "skipped"  # not run: condition false, can_skip, user skip, upstream skipped
    CANCELLED = "cancelled"  # stopped by a cancel of the run


class AttemptStatus(StrEnum):
    RUNNING = "running"  # being executed
    WAITING = "waiting"  # started child runs; ends when they end
    COMPLETED = "completed"  # succeeded
    SKIPPED = "skipped"  # can_skip said the work was already done
    FAILED = "failed"  # raised or returned a failure
    TIMED_OUT = "timed_out"  # ran past the step's timeout
    WORKER_LOST = "worker_lost"  # its worker died (heartbeat went stale)
    CANCELLED = "cancelled"  # stopped by a cancel


R, S = RunStatus, StepStatus

#: The icon shown beside every run, step and attempt status (with its word, never
#: colour alone), in the pages, the admin and the terminal.
STATUS_ICONS: dict[str, str] = {
    "pending": "◌",
    "queued": "◌",
    "running": "●",
    "waiting": "◔",
    "retrying": "↻",
    "completed": "✓",
    "failed": "✕",
    "timed_out": "◷",
    "worker_lost": "✕",
    "skipped": "⤼",
    "cancelling": "⊘",
    "cancelled": "⊘",
}

#: Run statuses in which no step is executing and none will start by itself.
RUN_FINISHED: frozenset[RunStatus] = frozenset({R.COMPLETED, R.FAILED, R.CANCELLED, R.TIMED_OUT})
#: Run statuses from which a resume, retry or continue may start.
RUN_RESUMABLE: frozenset[RunStatus] = frozenset({R.COMPLETED, R.FAILED, R.CANCELLED, R.TIMED_OUT})
#: Finished run statuses that mean the run stopped before its work was done.
RUN_UNFINISHED: frozenset[RunStatus] = frozenset({R.FAILED, R.CANCELLED, R.TIMED_OUT})
#: Run statuses that a cancel applies to.
RUN_CANCELLABLE: frozenset[RunStatus] = frozenset({R.PENDING, R.RUNNING})

#: Step statuses that end the step's work for this run attempt.
STEP_FINISHED: frozenset[StepStatus] = frozenset(
    {S.COMPLETED, S.FAILED, S.TIMED_OUT, S.SKIPPED, S.CANCELLED}
)
#: Step statuses in which an attempt is on the queue, running, or waiting to be retried.
STEP_ACTIVE: frozenset[StepStatus] = frozenset({S.QUEUED, S.RUNNING, S.WAITING, S.RETRYING})
#: Step statuses that hold a slot of the step's queue (a queue limit counts these):
#: on the queue, executing, or waiting to be retried. A step waiting for child runs
#: holds none.
STEP_HOLDS_SLOT: frozenset[StepStatus] = frozenset({S.QUEUED, S.RUNNING, S.RETRYING})
#: Step statuses that count as a failure of the step.
STEP_FAILED: frozenset[StepStatus] = frozenset({S.FAILED, S.TIMED_OUT})
#: Step statuses whose dependants may run (the dependency's work is done).
STEP_DONE: frozenset[StepStatus] = frozenset({S.COMPLETED, S.SKIPPED})

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.CANCELLED}),
    # cancelling: a user's cancel, or the workflow's deadline passed (ends timed_out).
    R.RUNNING: frozenset({R.COMPLETED, R.FAILED, R.CANCELLING}),
    # A cancel that came after the last step finished lets the run complete.
    R.CANCELLING: frozenset({R.CANCELLED, R.TIMED_OUT, R.COMPLETED}),
    R.FAILED: frozenset({R.RUNNING}),
    R.CANCELLED: frozenset({R.RUNNING}),
    R.TIMED_OUT: frozenset({R.RUNNING}),
    R.COMPLETED: frozenset({R.RUNNING}),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    # pending -> failed: its condition raised.
    S.PENDING: frozenset({S.QUEUED, S.SKIPPED, S.CANCELLED, S.FAILED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset(
        {S.COMPLETED, S.RETRYING, S.FAILED, S.TIMED_OUT, S.SKIPPED, S.CANCELLED, S.WAITING}
    ),
    # The child runs ended: all completed / one did not / the run was cancelled.
    S.WAITING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RETRYING: frozenset({S.QUEUED, S.CANCELLED}),
    # Reset by resume / retry-failed / continue-from / only, or skipped by an explicit skip.
    S.FAILED: frozenset({S.PENDING, S.SKIPPED}),
    S.TIMED_OUT: frozenset({S.PENDING, S.SKIPPED}),
    S.CANCELLED: frozenset({S.PENDING, S.SKIPPED}),
    # Reset only by an explicit re-run (continue-from, only).
    S.COMPLETED: frozenset({S.PENDING}),
    S.SKIPPED: frozenset({S.PENDING}),
}

#: Transitions that leave a finished state: allowed only for an explicit reset.
RESET_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {(src.value, dst.value) for src in STEP_FINISHED for dst in STEP_TRANSITIONS[src]}
    | {(src.value, R.RUNNING.value) for src in RUN_RESUMABLE}
)


def allowed_sources(target: StepStatus | RunStatus) -> frozenset[str]:
    """Every status from which ``target`` may be reached (for guarded updates)."""
    return frozenset(src.value for src, targets in _table(target).items() if target in targets)


def _table(target: RunStatus | StepStatus) -> Mapping[Any, frozenset[Any]]:
    return RUN_TRANSITIONS if isinstance(target, RunStatus) else STEP_TRANSITIONS


def can_transition(current: str, target: RunStatus | StepStatus) -> bool:
    try:
        return target in _table(target)[type(target)(current)]
    except ValueError:
        return False


def transition(current: str, target: RunStatus | StepStatus, what: str) -> str:
    """Check one status change and return the new status (its value).

    The table is chosen by the type of ``target``; ``what`` names the object
    in the error ("Run 42", "Step 'build' of run 42").
    """
    if not can_transition(current, target):
        raise InvalidTransition(str(current), target.value, what)
    return target.value
