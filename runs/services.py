"""What users do to runs: start, resume, retry, cancel, un-mark items.

Each service is one transaction with guarded updates, writes RunEvents naming
who acted, and enqueues after commit. The pages, the admin, the CLI and the
API all call these and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from stepflow import planner, states
from stepflow.errors import PlanError
from stepflow.params import mask_params
from stepflow.registry import registry
from stepflow.states import RunStatus, StepStatus
from stepflow.workflow import Workflow

from . import engine, events
from .errors import ActionRefused, DefinitionChanged, IdempotencyConflict, RunNotFound
from .events import User, actor_name
from .models import Run, Schedule, StepRun
from .store import unmark_items

S = StepStatus


def params_hash(params: Mapping[str, Any]) -> str:
    raw = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def get_run(run_id: int | str) -> Run:
    try:
        return Run.objects.get(pk=int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise RunNotFound(f"No run with id {run_id!r}") from None


def start_run(
    workflow: str | Workflow,
    params: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    user: User = None,
    origin: str = "web",
    parent: Run | None = None,
    parent_step: StepRun | None = None,
    schedule: Schedule | None = None,
    scheduled_for: datetime | None = None,
) -> Run:
    """Create a run and queue its first steps. With an idempotency key, the same
    key and parameters return the existing run (``run.created`` is False).

    ``parent``/``parent_step``: a child run started by a step of another run;
    ``schedule``/``scheduled_for``: started by a schedule for that tick."""
    wf = registry.get(workflow) if isinstance(workflow, str) else workflow
    cleaned = wf.validate_params(params or {})
    phash = params_hash(cleaned)
    key = (idempotency_key or "").strip() or None
    if key is not None and len(key) > 200:
        raise IdempotencyConflict("An idempotency key can be at most 200 characters long")
    if key is not None:
        existing = _existing_for_key(key, wf, phash)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            run = Run.objects.create(
                workflow=wf.name,
                definition_hash=wf.definition_hash,
                params=cleaned,
                params_hash=phash,
                idempotency_key=key,
                created_by=user if user is not None and user.is_authenticated else None,
                origin=origin,
                parent=parent,
                parent_step=parent_step,
                schedule=schedule,
                scheduled_for=scheduled_for,
            )
            StepRun.objects.bulk_create(
                [
                    StepRun(run=run, name=name, position=i, queue=wf.steps[name].queue)
                    for i, name in enumerate(wf.order())
                ]
            )
            events.record(
                run,
                "created",
                f"Started by {actor_name(user, origin)}",
                user=user,
                actor=actor_name(user, origin),
                params=mask_params(wf.params, cleaned),
                definition_hash=wf.definition_hash,
            )
            run = engine.lock_run(run.pk)
            engine.set_run(
                run,
                RunStatus.RUNNING,
                started_at=timezone.now(),
                deadline=engine.deadline_for(wf),
            )
            engine.advance_run(run, wf=wf, actor=actor_name(user, origin))
    except IntegrityError:
        if key is None:
            raise
        # Another request created the run for this key between our check and insert.
        existing = _existing_for_key(key, wf, phash)
        if existing is None:
            raise
        return existing
    run.created = True  # type: ignore[attr-defined]
    return run


def _existing_for_key(key: str, wf: Workflow, phash: str) -> Run | None:
    run = Run.objects.filter(idempotency_key=key).first()
    if run is None:
        return None
    if run.workflow != wf.name or run.params_hash != phash:
        raise IdempotencyConflict(
            f"Idempotency key {key!r} was already used for run #{run.pk} "
            f"({run.workflow}) with different parameters"
        )
    run.created = False  # type: ignore[attr-defined]
    return run


def latest_unfinished(workflow: str, params: Mapping[str, Any]) -> Run | None:
    """The most recent failed, cancelled or timed-out run of ``workflow`` with
    the same parameters (after validation, so defaults count), or None."""
    wf = registry.get(workflow)
    phash = params_hash(wf.validate_params(params))
    return (
        Run.objects.filter(
            workflow=wf.name,
            params_hash=phash,
            status__in=list(states.RUN_UNFINISHED),
        )
        .order_by("-id")
        .first()
    )


def definition_changes(run: Run, wf: Workflow) -> dict[str, list[str]]:
    """What changed in the workflow since the run started: steps added, removed, edited."""
    stored = set(run.steps.values_list("name", flat=True))
    current = set(wf.steps)
    return {
        "added": sorted(current - stored),
        "removed": sorted(stored - current),
        "changed_hash": [run.definition_hash, wf.definition_hash],
    }


def _check_definition(run: Run, wf: Workflow, confirm: bool) -> dict[str, list[str]] | None:
    if run.definition_hash == wf.definition_hash:
        return None
    changes = definition_changes(run, wf)
    if not confirm:
        parts = []
        if changes["added"]:
            parts.append(f"steps added: {', '.join(changes['added'])}")
        if changes["removed"]:
            parts.append(f"steps removed: {', '.join(changes['removed'])}")
        if not parts:
            parts.append("steps edited")
        raise DefinitionChanged(
            f"The definition of workflow {wf.name!r} changed since run #{run.pk} started "
            f"({'; '.join(parts)}); confirm to run with the new definition",
            changes,
        )
    return changes


def preview_resume(
    run: Run,
    mode: str = "resume",
    step: str | None = None,
    skip: Iterable[str] = (),
    clear_items: bool = False,
) -> planner.ResumePlan:
    """What a resume would do, without doing it (for the confirm panel)."""
    if run.status not in states.RUN_RESUMABLE:
        raise ActionRefused(_not_resumable(run))
    wf = engine.workflow_of(run)
    statuses = _statuses_for(run, wf)
    extra = _rolled_back(run, wf, statuses)
    return planner.plan_resume(wf, statuses, mode, step, skip, clear_items, rerun=extra)


def _statuses_for(run: Run, wf: Workflow) -> dict[str, str]:
    stored = dict(run.steps.values_list("name", "status"))
    return {name: stored.get(name, S.PENDING.value) for name in wf.steps}


def _rolled_back(run: Run, wf: Workflow, statuses: dict[str, str]) -> list[str]:
    names = run.steps.filter(rolled_back_at__isnull=False).values_list("name", flat=True)
    return [n for n in names if n in wf.steps and statuses[n] == S.COMPLETED]


def _not_resumable(run: Run) -> str:
    if run.status in (RunStatus.RUNNING, RunStatus.PENDING):
        return f"Run #{run.pk} is already running; wait for it to stop or cancel it first"
    if run.status == RunStatus.CANCELLING:
        return f"Run #{run.pk} is being cancelled; resume it once it is cancelled"
    return f"Run #{run.pk} cannot be resumed while {run.status}"


def resume_run(
    run_id: int,
    mode: str = "resume",
    *,
    step: str | None = None,
    skip: Iterable[str] = (),
    user: User = None,
    confirm_definition_change: bool = False,
    clear_items: bool = False,
    origin: str = "web",
) -> planner.ResumePlan:
    """Resume a stopped run: ``resume`` (where it stopped), ``retry_failed``,
    ``continue_from`` a step, or ``only`` one step; ``skip`` marks steps skipped."""
    actor = actor_name(user, origin)
    with transaction.atomic():
        try:
            run = engine.lock_run(int(run_id))
        except (Run.DoesNotExist, ValueError, TypeError):
            raise RunNotFound(f"No run with id {run_id!r}") from None
        if run.status not in states.RUN_RESUMABLE:
            raise ActionRefused(_not_resumable(run))
        wf = engine.workflow_of(run)
        changes = _check_definition(run, wf, confirm_definition_change)
        if changes is not None:
            existing = set(run.steps.values_list("name", flat=True))
            order = wf.order()
            StepRun.objects.bulk_create(
                [
                    StepRun(run=run, name=n, position=order.index(n), queue=wf.steps[n].queue)
                    for n in order
                    if n not in existing
                ]
            )
            for n in order:
                StepRun.objects.filter(run=run, name=n).update(position=order.index(n))
        statuses = _statuses_for(run, wf)
        try:
            plan = planner.plan_resume(
                wf,
                statuses,
                mode,
                step,
                skip,
                clear_items,
                rerun=_rolled_back(run, wf, statuses),
            )
        except PlanError as exc:
            raise ActionRefused(f"Run #{run.pk}: {exc.message}") from None
        steps = engine.load_steps(run)
        for name in plan.reset:
            s = steps[name]
            engine.set_step(
                s,
                S.PENDING,
                round_start=s.attempts,
                error="",
                skip_reason="",
                finished_at=None,
                started_at=None,
                progress_current=None,
                progress_total=None,
                progress_message="",
                rolled_back_at=None,
                heartbeat_at=None,
                retry_at=None,
                waiting_since=None,
                waiting_for=None,
            )
            if plan.clear_items:
                unmark_items(s.pk, None)
        for name in plan.skip:
            engine.set_step(
                steps[name],
                S.SKIPPED,
                skip_reason=f"skipped by {actor}",
                finished_at=timezone.now(),
            )
        engine.set_run(
            run,
            RunStatus.RUNNING,
            attempt=run.attempt + 1,
            finished_at=None,
            error_summary="",
            failed_step="",
            scope=sorted(plan.scope) if plan.scope is not None else None,
            definition_hash=wf.definition_hash,
            deadline=engine.deadline_for(wf),
            stop_reason="",
            cancel_requested_at=None,
        )
        if changes is not None:
            events.record(
                run,
                "definition_changed",
                "Resumed with the new definition (confirmed)",
                user=user,
                actor=actor,
                **changes,
            )
        label = {
            "resume": "Resumed",
            "retry_failed": "Retried failed steps",
            "continue_from": f"Continued from {step}",
            "only": f"Re-ran only {step}",
        }[mode]
        events.record(
            run,
            "resumed",
            f"{label} by {actor}: {plan.summary()}",
            user=user,
            actor=actor,
            mode=mode,
            target_step=step,
            reset=plan.reset,
            skip=plan.skip,
            attempt=run.attempt,
            clear_items=plan.clear_items or None,
        )
        engine.advance_run(run, wf=wf, actor=actor)
    return plan


def retry_step(
    run_id: int, step: str, *, user: User = None, origin: str = "web"
) -> planner.ResumePlan:
    """Retry one failed (or timed-out, or cancelled) step and carry on from it."""
    run = get_run(run_id)
    status = run.steps.filter(name=step).values_list("status", flat=True).first()
    if status is None:
        wf = engine.workflow_of(run)
        wf[step]
    if status not in (S.FAILED, S.TIMED_OUT, S.CANCELLED):
        raise ActionRefused(
            f"Step {step!r} of run #{run.pk} is {status}, not failed; "
            "use continue from to run it again"
        )
    return resume_run(run.pk, "continue_from", step=step, user=user, origin=origin)


def cancel_run(run_id: int, *, user: User = None, reason: str = "", origin: str = "web") -> Run:
    """Cancel a pending or running run: waiting steps are cancelled at once,
    running ones are asked to stop (and stopped after a grace period)."""
    actor = actor_name(user, origin)
    reason = (reason or "").strip()[:500]
    with transaction.atomic():
        try:
            run = engine.lock_run(int(run_id))
        except (Run.DoesNotExist, ValueError, TypeError):
            raise RunNotFound(f"No run with id {run_id!r}") from None
        if run.status == RunStatus.CANCELLING:
            raise ActionRefused(f"Run #{run.pk} is already being cancelled")
        if run.status not in states.RUN_CANCELLABLE:
            raise ActionRefused(
                f"Run #{run.pk} is already {run.status.replace('_', ' ')}; "
                "only an active run can be cancelled"
            )
        message = f"Cancelled by {actor}" + (f": {reason}" if reason else "")
        engine.stop_run(
            run, reason="cancel", actor=actor, message=message, user=user, cancel_reason=reason
        )
    return run


def unmark(
    run_id: int, step: str, keys: list[Any] | None, *, user: User = None, origin: str = "web"
) -> int:
    """Un-mark done items of a step (``keys=None``: all) so a resume processes them again."""
    actor = actor_name(user, origin)
    with transaction.atomic():
        run = engine.lock_run(int(run_id))
        s = run.steps.filter(name=step).first()
        if s is None:
            engine.workflow_of(run)[step]
            raise ActionRefused(f"Run #{run.pk} has no step {step!r}")
        if s.status in states.STEP_ACTIVE:
            raise ActionRefused(
                f"Step {step!r} of run #{run.pk} is {s.status}; un-mark items once it has stopped"
            )
        removed = unmark_items(s.pk, keys)
        what = "all items" if keys is None else f"{len(keys)} item(s)"
        events.record(
            run,
            "items_unmarked",
            f"{actor} un-marked {what} of {step} ({removed} were done)",
            step=step,
            user=user,
            actor=actor,
            keys=None if keys is None else [str(k) for k in keys[:100]],
            removed=removed,
        )
    return removed
