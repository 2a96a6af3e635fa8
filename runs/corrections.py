"""Staff corrections of what is stored: parameters, notes, checkpoints, deletion.

Like the services, each correction is one transaction that holds the run's row
lock, refuses with :class:`ActionRefused` (one sentence) what the state rules do
not allow, and leaves a RunEvent naming who did it. The admin calls these; so
can the dashboard and the API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from stepflow import states
from stepflow.params import MASK, mask_params
from stepflow.registry import registry

from . import engine, events
from .errors import ActionRefused, RunNotFound
from .events import User, actor_name
from .models import Checkpoint, Run, StepRun
from .services import params_hash

#: Longest run note accepted, in characters.
NOTE_MAX_LENGTH = 10_000
#: Run statuses in which parameters cannot change (a step may read them at any moment).
PARAMS_LOCKED = frozenset(
    {states.RunStatus.PENDING, states.RunStatus.RUNNING, states.RunStatus.CANCELLING}
)


def parse_json(text: str, what: str) -> Any:
    """``text`` decoded as JSON, or ActionRefused naming ``what`` and the problem."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActionRefused(
            f"Invalid JSON in {what}: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def parse_item_keys(text: str) -> list[int | str]:
    """Item keys typed one per line; integer-looking lines (``42``, not ``042``) become ints."""
    keys: list[int | str] = []
    for line in text.splitlines():
        key = line.strip()
        if not key:
            continue
        keys.append(int(key) if re.fullmatch(r"0|[1-9][0-9]*", key) else key)
    return keys


def _lock(run_id: int | str) -> Run:
    try:
        return engine.lock_run(int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise RunNotFound(f"No run with id {run_id!r}") from None


# -- parameters ---------------------------------------------------------------------


def params_refusal(run: Run) -> str | None:
    """Why the run's parameters cannot be changed now, or None."""
    if run.status in PARAMS_LOCKED:
        return f"Run #{run.pk} is {run.status}; its parameters can be changed once it has stopped"
    return None


def masked_params(run: Run) -> dict[str, Any]:
    """The run's parameters as they may be shown (secrets masked)."""
    declared = registry.get(run.workflow).params if run.workflow in registry else {}
    return mask_params(declared, run.params or {})


def clean_params(run: Run, raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """Validate new parameters for ``run`` without saving them.

    ``raw`` is a JSON object (text or mapping). A secret parameter given as the
    mask keeps its stored value, so a form showing masked values can be saved.
    Raises ActionRefused (bad JSON, run active) or InvalidParams.
    """
    if isinstance(raw, str):
        raw = parse_json(raw, f"the parameters of run #{run.pk}")
    if not isinstance(raw, Mapping):
        raise ActionRefused(f"The parameters of run #{run.pk} must be a JSON object")
    wf = registry.get(run.workflow)
    current = run.params or {}
    unmasked = {
        k: (current.get(k) if k in wf.params and wf.params[k].secret and v == MASK else v)
        for k, v in raw.items()
    }
    return wf.validate_params(unmasked)


def update_params(
    run_id: int | str, raw_params: str | Mapping[str, Any], user: User, *, origin: str = "admin"
) -> Run:
    """Replace the parameters of a stopped run (validated against the workflow's
    declared parameters); records ``params_changed`` with the masked diff."""
    actor = actor_name(user, origin)
    with transaction.atomic():
        run = _lock(run_id)
        refusal = params_refusal(run)
        if refusal:
            raise ActionRefused(refusal)
        cleaned = clean_params(run, raw_params)
        before = run.params or {}
        changed = sorted(
            k
            for k in {*before, *cleaned}
            if before.get(k) != cleaned.get(k) or (k in before) != (k in cleaned)
        )
        if not changed:
            return run
        declared = registry.get(run.workflow).params
        new_hash = params_hash(cleaned)
        Run.objects.filter(pk=run.pk).update(
            params=cleaned, params_hash=new_hash, updated_at=timezone.now()
        )
        run.params, run.params_hash = cleaned, new_hash
        events.record(
            run,
            "params_changed",
            f"{actor} changed parameters: {', '.join(changed)}",
            user=user,
            actor=actor,
            before=mask_params(declared, {k: before.get(k) for k in changed}),
            after=mask_params(declared, {k: cleaned.get(k) for k in changed}),
        )
    return run


# -- note -----------------------------------------------------------------------------


def clean_note(note: str) -> str:
    note = (note or "").replace("\r\n", "\n").strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise ActionRefused(f"A run note can be at most {NOTE_MAX_LENGTH:,} characters long")
    return note


def update_note(run_id: int | str, note: str, user: User, *, origin: str = "admin") -> Run:
    """Set the run's annotation (any status); records ``note_changed``."""
    actor = actor_name(user, origin)
    note = clean_note(note)
    with transaction.atomic():
        run = _lock(run_id)
        if note == run.note:
            return run
        before = run.note
        Run.objects.filter(pk=run.pk).update(note=note, updated_at=timezone.now())
        run.note = note
        message = f"{actor} {'cleared the note' if not note else 'changed the note'}"
        events.record(
            run, "note_changed", message, user=user, actor=actor, before=before, after=note
        )
    return run


# -- checkpoints ----------------------------------------------------------------------


def checkpoint_refusal(step: StepRun) -> str | None:
    """Why the step's checkpoints cannot be changed now, or None."""
    if step.status in states.STEP_ACTIVE:
        return (
            f"Step {step.name!r} of run #{step.run_id} is {step.status}; "
            "its checkpoints can be changed once it has stopped"
        )
    return None


def _lock_step(step_run_id: int | str) -> tuple[Run, StepRun]:
    row = StepRun.objects.filter(pk=step_run_id).values("run_id").first()
    if row is None:
        raise ActionRefused(f"No step run with id {step_run_id!r}")
    run = _lock(row["run_id"])
    step = StepRun.objects.select_for_update().get(pk=step_run_id)
    refusal = checkpoint_refusal(step)
    if refusal:
        raise ActionRefused(refusal)
    return run, step


def set_checkpoint(
    step_run_id: int | str, key: str, value: Any, user: User, *, origin: str = "admin"
) -> Checkpoint:
    """Create or replace one checkpoint of a stopped step; records ``checkpoint_changed``."""
    actor = actor_name(user, origin)
    key = (key or "").strip()
    if not key or len(key) > 200:
        raise ActionRefused("A checkpoint key must be 1 to 200 characters long")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ActionRefused(f"The value of checkpoint {key!r} is not JSON: {exc}") from None
    with transaction.atomic():
        run, step = _lock_step(step_run_id)
        existing = Checkpoint.objects.filter(step=step, key=key).first()
        if existing is not None and existing.value == value:
            return existing
        cp, created = Checkpoint.objects.update_or_create(
            step=step, key=key, defaults={"value": value}
        )
        data: dict[str, Any] = {"key": key, "created": created, "after": value}
        if existing is not None:
            data["before"] = existing.value
        events.record(
            run,
            "checkpoint_changed",
            f"{actor} set checkpoint {key!r} of {step.name}",
            step=step.name,
            user=user,
            actor=actor,
            **data,
        )
    return cp


def delete_checkpoint(
    step_run_id: int | str, key: str, user: User, *, origin: str = "admin"
) -> None:
    """Delete one checkpoint of a stopped step; records ``checkpoint_deleted``."""
    actor = actor_name(user, origin)
    with transaction.atomic():
        run, step = _lock_step(step_run_id)
        existing = Checkpoint.objects.filter(step=step, key=key).first()
        if existing is None:
            raise ActionRefused(f"Step {step.name!r} of run #{run.pk} has no checkpoint {key!r}")
        existing.delete()
        events.record(
            run,
            "checkpoint_deleted",
            f"{actor} deleted checkpoint {key!r} of {step.name}",
            step=step.name,
            user=user,
            actor=actor,
            key=key,
            before=existing.value,
        )


# -- deletion -------------------------------------------------------------------------


def delete_refusal(run: Run) -> str | None:
    """Why the run cannot be deleted now, or None."""
    if run.status not in states.RUN_FINISHED:
        return (
            f"Run #{run.pk} is {run.status}; only a finished run "
            "(completed, failed or cancelled) can be deleted"
        )
    active = _active_descendant(run)
    if active is not None:
        return f"Run #{run.pk} has an active child run #{active}; cancel it or wait for it first"
    return None


def _active_descendant(run: Run) -> int | None:
    ids = [run.pk]
    while ids:
        children = Run.objects.filter(parent_id__in=ids)
        active = (
            children.exclude(status__in=list(states.RUN_FINISHED))
            .values_list("pk", flat=True)
            .first()
        )
        if active is not None:
            return active
        ids = list(children.values_list("pk", flat=True))
    return None


def delete_run(run_id: int | str, user: User = None) -> None:
    """Delete a finished run with its steps, attempts, checkpoints, items and events."""
    with transaction.atomic():
        run = _lock(run_id)
        refusal = delete_refusal(run)
        if refusal:
            raise ActionRefused(refusal)
        run.delete()
