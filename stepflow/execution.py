"""Running one attempt of a step: the same code path locally and in a worker."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback as tb
from collections.abc import Iterator
from dataclasses import dataclass

from .context import ChildRequest, StepContext
from .errors import Cancelled, StepTimeout
from .states import AttemptStatus
from .step import Step, StepResult


@dataclass
class AttemptOutcome:
    status: AttemptStatus
    result: StepResult | None = None
    error: str = ""
    traceback: str = ""
    exception: BaseException | None = None
    #: Child runs the attempt asked for: the step waits for them (succeeded attempts only).
    children: tuple[ChildRequest, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status in (AttemptStatus.COMPLETED, AttemptStatus.SKIPPED)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise StepTimeout in this thread after ``seconds`` (SIGALRM; main thread only).

    Elsewhere it does nothing: the context's deadline checks stop the step
    cooperatively instead.
    """
    if (
        seconds is None
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise StepTimeout(seconds)

    # Keep an alarm someone else set (RQ's job timeout) and re-arm what is left of it.
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(
                signal.ITIMER_REAL, max(0.001, outer_left - (time.monotonic() - started))
            )


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def run_attempt(
    step: Step,
    ctx: StepContext,
    *,
    timeout_errors: tuple[type[BaseException], ...] = (StepTimeout,),
    enforce_timeout: bool = True,
) -> AttemptOutcome:
    """Run ``can_skip`` and ``execute`` once and classify what happened.

    ``enforce_timeout=False`` leaves the timeout to the caller (an RQ job
    timeout raising one of ``timeout_errors``). Exceptions that are not
    ``Exception`` (a worker shutting down) propagate after the buffers are
    flushed.
    """
    outcome: AttemptOutcome | None = None
    try:
        with time_limit(step.timeout if enforce_timeout else None):
            if step.can_skip(ctx):
                outcome = AttemptOutcome(AttemptStatus.SKIPPED, StepResult(skipped=True))
            else:
                result = StepResult.coerce(step.execute(ctx))
                if result.skipped:
                    outcome = AttemptOutcome(AttemptStatus.SKIPPED, result)
                elif not result.success:
                    outcome = AttemptOutcome(
                        AttemptStatus.FAILED,
                        result,
                        error=result.error or "the step reported failure",
                    )
                else:
                    outcome = AttemptOutcome(
                        AttemptStatus.COMPLETED, result, children=tuple(ctx.children)
                    )
    except Cancelled as exc:
        outcome = AttemptOutcome(AttemptStatus.CANCELLED, error="cancelled", exception=exc)
    except timeout_errors:
        secs = f" after {step.timeout:g}s" if step.timeout else ""
        outcome = AttemptOutcome(
            AttemptStatus.TIMED_OUT,
            error=f"timed out{secs}",
            traceback=tb.format_exc(),
            exception=StepTimeout(step.timeout),
        )
    except Exception as exc:
        outcome = AttemptOutcome(
            AttemptStatus.FAILED,
            error=describe_error(exc),
            traceback=tb.format_exc(),
            exception=exc,
        )
    finally:
        ctx.finish(success=outcome is not None and outcome.succeeded)
    return outcome
