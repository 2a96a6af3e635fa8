"""What step code sees: parameters, inputs, checkpoints, items, progress, logs, cancellation.

:class:`StepContext` holds every rule (batching of item marks, throttling of
progress and cancel checks); a :class:`StepStore` only persists. The local
runner gives it an in-memory store, the Django engine a database store.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from .errors import Cancelled, StepTimeout
from .items import ItemKey, ItemSet
from .params import MASK

T = TypeVar("T")
LEVELS = ("debug", "info", "warning", "error")
_NOT_FULL = re.compile(b"[^\xff]")


class StepStore(Protocol):
    """Persistence for one step of one run."""

    def load_checkpoints(self) -> dict[str, Any]: ...
    def save_checkpoint(self, key: str, value: Any) -> None: ...
    def load_done_items(self) -> ItemSet: ...
    def mark_items(self, keys: list[ItemKey], done: ItemSet) -> None:
        """Make ``keys`` durable; ``done`` is every key done so far (loaded plus marked)."""
        ...

    def save_progress(self, current: float | None, total: float | None, message: str) -> None: ...
    def log(self, level: str, message: str, data: dict[str, Any]) -> None: ...
    def save_metric(self, name: str, value: float) -> None: ...
    def is_cancelled(self) -> bool: ...


@dataclass(frozen=True)
class ChildRequest:
    """A child run a step asked for: started when the attempt returns."""

    workflow: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ContextSettings:
    """How often the context writes. Item marks are flushed every
    ``item_batch_size`` items or ``item_flush_seconds`` seconds, whichever
    comes first: after a hard crash at most one batch is processed again."""

    item_batch_size: int = 10_000
    item_flush_seconds: float = 2.0
    progress_interval: float = 1.0
    cancel_check_interval: float = 0.5


class StepContext:
    """The context passed to ``execute``, ``when``, ``can_skip`` and ``rollback``."""

    def __init__(
        self,
        *,
        step_name: str,
        run_id: int | str,
        attempt: int,
        params: Mapping[str, Any],
        inputs: Mapping[str, Any],
        store: StepStore,
        settings: ContextSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
        statuses: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.step_name = step_name
        self.run_id = run_id
        self.attempt = attempt
        self.params: Mapping[str, Any] = MappingProxyType(dict(params))
        self.inputs: Mapping[str, Any] = MappingProxyType(dict(inputs))
        #: Statuses of the other steps of the run (for conditions after optional steps).
        self.statuses: Mapping[str, str] = MappingProxyType(dict(statuses or {}))
        #: Values of secret parameters: masked in what the step logs.
        self._secrets = sorted(
            {str(s) for s in secrets if s not in (None, "")}, key=len, reverse=True
        )
        self._store = store
        self._settings = settings or ContextSettings()
        self._clock = clock
        self._deadline = deadline
        self._checkpoints: dict[str, Any] | None = None
        self._done: ItemSet | None = None
        self._pending: list[ItemKey] = []
        self._closed_items: list[ItemKey] = []
        self._last_flush = clock()
        self._progress: tuple[float | None, float | None, str] | None = None
        self._progress_saved_at = float("-inf")
        self._progress_dirty = False
        self._cancel_checked_at = float("-inf")
        self._cancelled = False
        self._own_progress = False  # the step called progress() itself
        self._items_total: int | None = None
        #: Child runs this attempt asked for (see start_child).
        self.children: list[ChildRequest] = []

    # -- cancellation -------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once the run is being cancelled (checked at most every half second)."""
        if not self._cancelled:
            now = self._clock()
            if now - self._cancel_checked_at >= self._settings.cancel_check_interval:
                self._cancel_checked_at = now
                self._cancelled = self._store.is_cancelled()
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the run is being cancelled, StepTimeout past the deadline."""
        if self._deadline is not None and self._clock() >= self._deadline:
            raise StepTimeout()
        if self.cancelled:
            raise Cancelled()

    # -- checkpoints ----------------------------------------------------------------
    @property
    def checkpoints(self) -> Mapping[str, Any]:
        """Saved checkpoint values of this step (kept across attempts and resumes)."""
        if self._checkpoints is None:
            self._checkpoints = self._store.load_checkpoints()
        return MappingProxyType(self._checkpoints)

    def checkpoint(self, key: str, value: Any) -> None:
        """Save a small JSON value durably (done when this returns)."""
        if not isinstance(key, str) or not key or len(key) > 200:
            raise ValueError(
                "a checkpoint key must be a non-empty string of at most 200 characters"
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"checkpoint {key!r} must be JSON-serializable: {exc}") from None
        self.raise_if_cancelled()
        self._store.save_checkpoint(key, value)
        if self._checkpoints is not None:
            self._checkpoints[key] = value

    # -- items --------------------------------------------------------------------
    def done_items(self) -> ItemSet:
        if self._done is None:
            self._done = self._store.load_done_items()
        return self._done

    def items(self, iterable: Iterable[T], key: Callable[[T], Any] | None = None) -> Iterator[T]:
        """Yield only the items not yet done by this step, marking each done once
        the loop body for it has finished. Without ``key`` an item's key is its
        position in ``iterable``.

        When ``iterable`` has a length and the step reports no progress of its
        own, the progress is the count of done items out of that length.
        """
        done = self.done_items()
        if isinstance(iterable, Sized) and not self._own_progress:
            self._items_total = len(iterable)
        if key is None:
            yield from self._items_by_position(iter(iterable), done)
            return
        for item in iterable:
            k = ItemSet.normalize(key(item))
            if k in done:
                continue
            yield from self._one(item, k, done)

    def _items_by_position(self, it: Iterator[T], done: ItemSet) -> Iterator[T]:
        # The hot loop of a big step: no per-item call that can be avoided. Keys
        # are positions, so the marks since the last flush are one range.
        pos = 0
        bits = done._bits
        loaded = len(bits) * 8  # keys below this may have been done by an earlier attempt
        batch = self._settings.item_batch_size
        flush_seconds = self._settings.item_flush_seconds
        clock = self._clock
        check_at = 0.0
        first = -1  # first position marked since the last flush
        try:
            while True:
                if pos < loaded and bits[pos >> 3] >> (pos & 7) & 1:
                    nxt = _first_missing(bits, pos)
                    # Skip the done run without a Python step per item.
                    if next(itertools.islice(it, nxt - pos - 1, None), _END) is _END:
                        return
                    pos = nxt
                item = next(it, _END)
                if item is _END:
                    return
                now = clock()
                if now >= check_at:  # cancel and deadline, a few times a second at most
                    self.raise_if_cancelled()
                    check_at = now + 0.1
                try:
                    yield item
                except GeneratorExit:
                    self._closed_items.append(pos)
                    raise
                i = pos >> 3
                if i >= len(bits):
                    bits.extend(bytes(max(i + 1 - len(bits), len(bits))))
                bits[i] |= 1 << (pos & 7)
                done._count += 1
                if first < 0:
                    first = pos
                if pos - first + 1 >= batch or clock() - self._last_flush >= flush_seconds:
                    self._pending.extend(range(first, pos + 1))
                    first = -1
                    self.flush_items()
                pos += 1
        finally:
            if first >= 0:
                # Every key in the range is done: processed here, or skipped as done
                # before (marking those again changes nothing).
                self._pending.extend(range(first, pos))

    def _one(self, item: T, k: ItemKey, done: ItemSet) -> Iterator[T]:
        self.raise_if_cancelled()
        try:
            yield item
        except GeneratorExit:
            # The loop was left during this item's body (break or an exception):
            # it counts as done only if the step goes on to succeed.
            self._closed_items.append(k)
            raise
        done.add(k)
        self._pending.append(k)
        if (
            len(self._pending) >= self._settings.item_batch_size
            or self._clock() - self._last_flush >= self._settings.item_flush_seconds
        ):
            self.flush_items()

    def flush_items(self) -> None:
        """Write the pending item marks now."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._store.mark_items(batch, self.done_items())
            if self._items_total and not self._own_progress:
                done = len(self.done_items())
                self._progress = (
                    done,
                    self._items_total,
                    f"{done:,} of {self._items_total:,} items",
                )
                self._progress_dirty = True
                self._save_progress(self._clock())
        self._last_flush = self._clock()

    # -- progress, logs, metrics -----------------------------------------------------
    def progress(
        self, current: float | None, total: float | None = None, message: str = ""
    ) -> None:
        """Report in-step progress; stored at most once a second."""
        self._own_progress = True
        self._progress = (current, total, str(message)[:500])
        self._progress_dirty = True
        now = self._clock()
        if now - self._progress_saved_at >= self._settings.progress_interval:
            self._save_progress(now)
        self.raise_if_cancelled()

    def _save_progress(self, now: float) -> None:
        if self._progress is not None and self._progress_dirty:
            self._store.save_progress(*self._progress)
            self._progress_saved_at = now
            self._progress_dirty = False

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        """A log line, kept with the run's history."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
        text = self._mask(str(message))
        clean = {k: _jsonable(v) for k, v in data.items()}
        if self._secrets:
            clean = json.loads(self._mask(json.dumps(clean)))
        self._store.log(level, text, clean)

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    # -- child runs --------------------------------------------------------------------
    def start_child(self, workflow: str, params: Mapping[str, Any] | None = None) -> int:
        """Ask for a child run of ``workflow`` with ``params``; returns its index.

        The child runs start when this attempt returns successfully; the step
        then waits for all of them without holding a worker, and ends
        completed when every child completed (its output lists them, with
        their outputs), failed otherwise. A later attempt of the step that
        asks for the same children (same order, same params) gets the same
        runs back: completed ones are kept, stopped ones are resumed."""
        if not isinstance(workflow, str) or not workflow:
            raise TypeError("start_child needs a workflow name")
        self.children.append(ChildRequest(workflow, dict(params or {})))
        return len(self.children) - 1

    def metric(self, name: str, value: float) -> None:
        """Record a number for this step (rows written, bytes, accuracy...)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
        self._store.save_metric(str(name)[:100], float(value))

    # -- end of attempt ----------------------------------------------------------------
    def finish(self, success: bool) -> None:
        """Flush what is buffered. Called by the engine when the attempt ends."""
        if success and self._closed_items:
            self._pending.extend(self._closed_items)
        self._closed_items = []
        self.flush_items()
        self._save_progress(self._clock())


_END: Any = object()


def _first_missing(bits: bytearray, pos: int) -> int:
    """The first position >= pos whose bit is clear."""
    i = pos >> 3
    while i < len(bits):
        byte = bits[i]
        if byte != 0xFF:
            for b in range(pos - i * 8 if pos > i * 8 else 0, 8):
                if not byte >> b & 1:
                    return i * 8 + b
        m = _NOT_FULL.search(bits, i + 1)
        if m is None:
            return len(bits) * 8
        i = m.start()
    return max(pos, len(bits) * 8)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
