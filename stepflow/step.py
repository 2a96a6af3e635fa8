"""Steps: the units of work a workflow is made of."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import WorkflowDefinitionError
from .retry import NO_RETRY, Retry

if TYPE_CHECKING:
    from .context import StepContext

NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")
ON_FAILURE = ("fail", "continue")


@dataclass
class StepResult:
    """What a step returns. ``data`` is passed to dependants as ``ctx.inputs[name]``."""

    success: bool = True
    data: Any = None
    error: str | None = None
    rollback_data: Any = None
    skipped: bool = False

    @classmethod
    def coerce(cls, value: object) -> StepResult:
        """Turn what ``execute`` returned into a StepResult."""
        if isinstance(value, StepResult):
            return value
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls(data=value)
        raise TypeError(
            f"a step must return a StepResult, a dict or None, not {type(value).__name__}"
        )


class Step:
    """A unit of work. Subclass and override :meth:`execute` (and optionally
    :meth:`can_skip`, :meth:`when`, :meth:`rollback`), or use :func:`step`.

    Class attributes give the defaults; keyword arguments to ``__init__``
    override them for one instance.
    """

    name: str = ""
    weight: float = 1.0
    depends_on: tuple[str, ...] = ()
    queue: str = "default"
    retry: Retry = NO_RETRY
    timeout: float | None = None
    version: str = "1"
    description: str = ""
    on_failure: str = "fail"

    def __init__(
        self,
        name: str | None = None,
        *,
        weight: float | None = None,
        depends_on: Iterable[str] | str | None = None,
        queue: str | None = None,
        retry: Retry | int | None = None,
        timeout: float | None = None,
        version: str | int | None = None,
        description: str | None = None,
        on_failure: str | None = None,
    ) -> None:
        self.name = name if name is not None else (self.name or _default_name(type(self)))
        if weight is not None:
            self.weight = weight
        if depends_on is not None:
            self.depends_on = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on)
        else:
            self.depends_on = tuple(self.depends_on)
        if queue is not None:
            self.queue = queue
        if retry is not None:
            self.retry = Retry(max_attempts=retry) if isinstance(retry, int) else retry
        if timeout is not None:
            self.timeout = timeout
        if version is not None:
            self.version = str(version)
        if description is not None:
            self.description = description
        if on_failure is not None:
            self.on_failure = on_failure
        if not self.description and type(self).__doc__ and type(self) is not Step:
            self.description = (type(self).__doc__ or "").strip().splitlines()[0]
        self._validate()

    def _validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise WorkflowDefinitionError(
                f"Step name {self.name!r} is invalid: use lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
        if (
            not isinstance(self.weight, int | float)
            or isinstance(self.weight, bool)
            or not math.isfinite(self.weight)
            or self.weight < 0
        ):
            raise WorkflowDefinitionError(
                f"Step {self.name!r} has an invalid weight {self.weight!r}: use a number >= 0"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise WorkflowDefinitionError(
                f"Step {self.name!r} has an invalid timeout {self.timeout!r}: use seconds > 0"
            )
        if self.on_failure not in ON_FAILURE:
            raise WorkflowDefinitionError(
                f"Step {self.name!r} has an invalid on_failure {self.on_failure!r}: "
                f"use one of {', '.join(ON_FAILURE)}"
            )
        if not re.match(r"^[A-Za-z0-9_.:\-]+$", self.queue):
            raise WorkflowDefinitionError(f"Step {self.name!r} has an invalid queue {self.queue!r}")
        if self.name in self.depends_on:
            raise WorkflowDefinitionError(f"Step {self.name!r} depends on itself")

    @property
    def optional(self) -> bool:
        return self.on_failure == "continue"

    # -- what subclasses override -------------------------------------------------
    def execute(self, ctx: StepContext) -> StepResult | dict[str, Any] | None:
        raise NotImplementedError(f"Step {self.name!r} does not define execute()")

    def when(self, ctx: StepContext) -> bool:
        """Evaluated when the step becomes ready; False skips it (and its branch)."""
        return True

    def can_skip(self, ctx: StepContext) -> bool:
        """Evaluated before each attempt; True skips the work (already done elsewhere)."""
        return False

    def rollback(self, ctx: StepContext, result: StepResult) -> None:
        """Undo a completed step when its run fails. ``result.rollback_data`` is what it saved."""

    @property
    def has_rollback(self) -> bool:
        return type(self).rollback is not Step.rollback

    @property
    def has_condition(self) -> bool:
        return type(self).when is not Step.when

    def describe(self) -> dict[str, object]:
        """The settings that make up the workflow's definition hash."""
        return {
            "name": self.name,
            "weight": self.weight,
            "depends_on": sorted(self.depends_on),
            "queue": self.queue,
            "retry": self.retry.describe(),
            "timeout": self.timeout,
            "version": self.version,
            "on_failure": self.on_failure,
            "kind": f"{type(self).__module__}.{type(self).__qualname__}",
        }

    def replace(self, **changes: Any) -> Step:
        """A copy of this step with some settings changed (validated again)."""
        import copy

        new = copy.copy(self)
        for key, value in changes.items():
            if key == "depends_on":
                value = (value,) if isinstance(value, str) else tuple(value)
            if not hasattr(new, key):
                raise WorkflowDefinitionError(f"Step has no setting {key!r}")
            setattr(new, key, value)
        new._validate()
        return new

    def __repr__(self) -> str:
        deps = f" after {', '.join(self.depends_on)}" if self.depends_on else ""
        return f"<{type(self).__name__} {self.name!r}{deps}>"


def _default_name(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower().removesuffix("_step")


class FunctionStep(Step):
    """A step made by the :func:`step` decorator from a function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        when: Callable[[StepContext], bool] | None = None,
        can_skip: Callable[[StepContext], bool] | None = None,
        rollback: Callable[[StepContext, StepResult], None] | None = None,
        **settings: Any,
    ) -> None:
        self.func = func
        self._when = when
        self._can_skip = can_skip
        self._rollback = rollback
        settings.setdefault("name", func.__name__)
        if not settings.get("description") and func.__doc__:
            settings["description"] = func.__doc__.strip().splitlines()[0]
        super().__init__(**settings)

    def execute(self, ctx: StepContext) -> StepResult | dict[str, Any] | None:
        return self.func(ctx)  # type: ignore[no-any-return]

    def when(self, ctx: StepContext) -> bool:
        return True if self._when is None else bool(self._when(ctx))

    def can_skip(self, ctx: StepContext) -> bool:
        return False if self._can_skip is None else bool(self._can_skip(ctx))

    def rollback(self, ctx: StepContext, result: StepResult) -> None:
        if self._rollback is not None:
            self._rollback(ctx, result)

    @property
    def has_rollback(self) -> bool:
        return self._rollback is not None

    @property
    def has_condition(self) -> bool:
        return self._when is not None

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["kind"] = f"{self.func.__module__}.{self.func.__qualname__}"
        return info


def step(
    name: str | None = None,
    **settings: Any,
) -> Callable[[Callable[..., Any]], FunctionStep]:
    """Decorator: ``@step(weight=2, depends_on=["build"], retry=Retry(3))`` on
    ``def deploy(ctx): ...`` makes a Step named ``deploy``.

    ``when=``, ``can_skip=`` and ``rollback=`` take functions.
    """

    def wrap(func: Callable[..., Any]) -> FunctionStep:
        if name is not None:
            settings["name"] = name
        return FunctionStep(func, **settings)

    return wrap
