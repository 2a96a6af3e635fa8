"""Errors of the runs layer: each message is one sentence a user can act on."""

from __future__ import annotations

from stepflow.errors import StepflowError


class ActionRefused(StepflowError):
    """That action is not possible in the run's current state."""


class IdempotencyConflict(StepflowError):
    """That idempotency key was already used with different parameters."""


class DefinitionChanged(StepflowError):
    """The workflow's definition changed since the run started; confirm to go on."""

    def __init__(self, message: str, changes: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.changes = changes


class RunNotFound(StepflowError):
    """No run has that id."""
