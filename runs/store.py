"""The database-backed StepStore that step code writes through (ctx.checkpoint, ctx.items...)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from stepflow.items import CHUNK_BITS, ItemKey, ItemSet, chunks_of

from . import events
from .models import Checkpoint, ItemChunk, RunStatus, StepRun, StepStatus
from .models import ItemKey as ItemKeyRow


class DbStepStore:
    def __init__(self, step_run: StepRun, attempt: int, actor: str) -> None:
        self.step_id = step_run.pk
        self.run_id = step_run.run_id
        self.name = step_run.name
        self.attempt = attempt
        self.actor = actor

    def load_checkpoints(self) -> dict[str, Any]:
        return dict(Checkpoint.objects.filter(step_id=self.step_id).values_list("key", "value"))

    def save_checkpoint(self, key: str, value: Any) -> None:
        Checkpoint.objects.update_or_create(
            step_id=self.step_id, key=key, defaults={"value": value}
        )

    def load_done_items(self) -> ItemSet:
        return load_items(self.step_id)

    def mark_items(self, keys: list[ItemKey], done: ItemSet | None = None) -> None:
        if done is None:
            mark_items(self.step_id, keys)
        else:
            write_items(self.step_id, keys, done)

    def save_progress(self, current: float | None, total: float | None, message: str) -> None:
        StepRun.objects.filter(pk=self.step_id).update(
            progress_current=current, progress_total=total, progress_message=message
        )

    def log(self, level: str, message: str, data: dict[str, Any]) -> None:
        events.record(
            self.run_id,
            "log",
            message,
            step=self.name,
            level=level,
            actor=self.actor,
            attempt=self.attempt,
            **data,
        )

    def save_metric(self, name: str, value: float) -> None:
        with transaction.atomic():
            step = StepRun.objects.select_for_update().only("metrics").get(pk=self.step_id)
            step.metrics = {**(step.metrics or {}), name: value}
            step.save(update_fields=["metrics"])

    def is_cancelled(self) -> bool:
        """True when the run is no longer running or this attempt is no longer the current one."""
        return not StepRun.objects.filter(
            pk=self.step_id,
            status=StepStatus.RUNNING,
            attempts=self.attempt,
            run__status=RunStatus.RUNNING,
        ).exists()


def load_items(step_id: int) -> ItemSet:
    items = ItemSet()
    for chunk, bits in ItemChunk.objects.filter(step_id=step_id).values_list("chunk", "bits"):
        items.or_chunk(chunk, bytes(bits))
    items.update(ItemKeyRow.objects.filter(step_id=step_id).values_list("key", flat=True))
    return items


def mark_items(step_id: int, keys: list[ItemKey]) -> int:
    """Mark keys done (idempotent); returns how many were new."""
    ints = [k for k in keys if isinstance(k, int)]
    strs = list(dict.fromkeys(str(k) for k in keys if not isinstance(k, int)))
    added = 0
    with transaction.atomic():
        for chunk, data in chunks_of(ints).items():
            row = ItemChunk.objects.select_for_update().filter(step_id=step_id, chunk=chunk).first()
            if row is None:
                ItemChunk.objects.create(step_id=step_id, chunk=chunk, bits=data)
                added += int.from_bytes(data, "little").bit_count()
                continue
            before = int.from_bytes(bytes(row.bits), "little")
            merged = before | int.from_bytes(data, "little")
            if merged != before:
                row.bits = merged.to_bytes(len(data), "little")
                row.save(update_fields=["bits"])
                added += merged.bit_count() - before.bit_count()
        if strs:
            existing = set(
                ItemKeyRow.objects.filter(step_id=step_id, key__in=strs).values_list(
                    "key", flat=True
                )
            )
            new = [ItemKeyRow(step_id=step_id, key=k) for k in strs if k not in existing]
            ItemKeyRow.objects.bulk_create(new, ignore_conflicts=True)
            added += len(new)
        if added:
            StepRun.objects.filter(pk=step_id).update(items_done=F("items_done") + added)
    return added


def write_items(step_id: int, keys: list[ItemKey], done: ItemSet) -> None:
    """Make ``keys`` durable by writing the chunks they fall in whole, from
    ``done`` (every key the running attempt knows to be done). No read is
    needed: while a step runs, only its attempt writes its marks."""
    chunks = sorted({k // CHUNK_BITS for k in keys if isinstance(k, int)})
    strs = list(dict.fromkeys(str(k) for k in keys if not isinstance(k, int)))
    with transaction.atomic():
        if chunks:
            ItemChunk.objects.bulk_create(
                [ItemChunk(step_id=step_id, chunk=c, bits=done.chunk_bytes(c)) for c in chunks],
                update_conflicts=True,
                unique_fields=["step", "chunk"],
                update_fields=["bits"],
            )
        if strs:
            ItemKeyRow.objects.bulk_create(
                [ItemKeyRow(step_id=step_id, key=k) for k in strs], ignore_conflicts=True
            )
        StepRun.objects.filter(pk=step_id).update(items_done=len(done))


def unmark_items(step_id: int, keys: list[ItemKey] | None) -> int:
    """Un-mark keys (None: all); returns how many were removed."""
    with transaction.atomic():
        if keys is None:
            removed = StepRun.objects.select_for_update().get(pk=step_id).items_done
            ItemChunk.objects.filter(step_id=step_id).delete()
            ItemKeyRow.objects.filter(step_id=step_id).delete()
            StepRun.objects.filter(pk=step_id).update(items_done=0)
            return removed
        ints = [ItemSet.normalize(k) for k in keys]
        removed = 0
        for chunk, data in chunks_of([k for k in ints if isinstance(k, int)]).items():
            row = ItemChunk.objects.select_for_update().filter(step_id=step_id, chunk=chunk).first()
            if row is None:
                continue
            before = int.from_bytes(bytes(row.bits), "little")
            after = before & ~int.from_bytes(data, "little")
            if after != before:
                row.bits = after.to_bytes(len(data), "little")
                row.save(update_fields=["bits"])
                removed += before.bit_count() - after.bit_count()
        strs = [str(k) for k in ints if not isinstance(k, int)]
        if strs:
            removed += ItemKeyRow.objects.filter(step_id=step_id, key__in=strs).delete()[0]
        if removed:
            StepRun.objects.filter(pk=step_id).update(items_done=F("items_done") - removed)
        return removed
