"""Retry policy: how many attempts a step gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import StepTimeout, WorkflowDefinitionError


@dataclass(frozen=True)
class Retry:
    """At most ``max_attempts`` attempts; the wait before attempt n+1 is
    ``min(backoff_max, backoff_base * backoff_factor ** (n - 1))`` seconds,
    spread by up to ``jitter`` (a fraction, 0..1) either way.

    ``retry_on`` lists the exception types worth retrying (default: any
    Exception); ``retry_timeouts`` says whether a timed-out attempt is retried.
    """

    max_attempts: int = 1
    backoff_base: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    retry_timeouts: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise WorkflowDefinitionError(
                f"Retry max_attempts must be at least 1, not {self.max_attempts}"
            )
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise WorkflowDefinitionError("Retry backoff must not be negative")
        if self.backoff_factor < 1:
            raise WorkflowDefinitionError(
                f"Retry backoff_factor must be at least 1, not {self.backoff_factor}"
            )
        if not 0 <= self.jitter <= 1:
            raise WorkflowDefinitionError(
                f"Retry jitter must be between 0 and 1, not {self.jitter}"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff_max, self.backoff_base * self.backoff_factor ** (attempt - 1))
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(0.0, base)

    def is_retryable(self, exc: BaseException | None) -> bool:
        """Whether this failure may be retried (ignoring the attempt count)."""
        if exc is None:  # a returned failure, or a lost worker
            return True
        if isinstance(exc, StepTimeout):
            return self.retry_timeouts
        return isinstance(exc, self.retry_on)

    def describe(self) -> dict[str, object]:
        """The settings that make up the workflow's definition hash."""
        return {
            "max_attempts": self.max_attempts,
            "backoff_base": self.backoff_base,
            "backoff_factor": self.backoff_factor,
            "backoff_max": self.backoff_max,
            "jitter": self.jitter,
            "retry_on": sorted(f"{t.__module__}.{t.__qualname__}" for t in self.retry_on),
            "retry_timeouts": self.retry_timeouts,
        }


NO_RETRY = Retry()
