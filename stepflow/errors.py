"""Exceptions raised by stepflow. Each one's docstring is its default message."""

from __future__ import annotations


class StepflowError(Exception):
    """A stepflow operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class WorkflowDefinitionError(StepflowError):
    """The workflow definition is invalid."""


class RegistryError(StepflowError):
    """The workflow registry refused the operation."""


class UnknownWorkflow(RegistryError):
    """No workflow is registered under that name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        msg = f"No workflow named {name!r} is registered"
        if known:
            msg += f" (registered: {', '.join(sorted(known))})"
        super().__init__(msg)
        self.name = name


class UnknownStep(StepflowError):
    """The workflow has no step by that name."""

    def __init__(self, workflow: str, name: str) -> None:
        super().__init__(f"Workflow {workflow!r} has no step named {name!r}")
        self.workflow = workflow
        self.name = name


class InvalidParams(StepflowError):
    """The run's parameters are invalid."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        parts = [f"{k}: {v}" if k != "__all__" else v for k, v in sorted(self.errors.items())]
        super().__init__("Invalid parameters: " + "; ".join(parts))


class InvalidTransition(StepflowError):
    """That state change is not allowed."""

    def __init__(self, current: str, target: str, what: str) -> None:
        self.current = current
        self.target = target
        self.what = what
        super().__init__(f"{what} cannot go from {current} to {target}")


class PlanError(StepflowError):
    """The requested resume plan is not possible."""


class Cancelled(BaseException):
    """The run was cancelled; step code should stop.

    A BaseException so that a step's ``except Exception`` does not swallow it.
    """


class StepTimeout(BaseException):
    """The step ran past its timeout."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g}s" if seconds is not None else "timed out")


class CronError(StepflowError):
    """The cron expression or time zone is invalid."""
