"""Child runs: a step asks for runs of other workflows (``ctx.start_child``)
and waits for them without holding a worker.

The attempt's outcome starts the children in the transaction that records it
(the parent's run lock is held: parent before child, always); each child that
finishes settles its parent step after its own transaction commits, and the
reconciler settles any waiting step whose children all ended meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from stepflow import planner, states
from stepflow.context import ChildRequest
from stepflow.registry import registry
from stepflow.states import AttemptStatus, StepStatus

from . import engine, events, services
from .models import Run, StepAttempt, StepRun

log = logging.getLogger("stepflow.children")
S = StepStatus


def child_key(step_run_id: int, index: int, workflow: str, params_hash: str) -> str:
    """The idempotency key of a step's index-th child: a later attempt of the
    step asking for the same child (same workflow and parameters) gets the same
    run back; asking for something else starts a new child run."""
    return f"child:{step_run_id}:{index}:{workflow}:{params_hash[:16]}"


def start_children(run: Run, step: StepRun, requests: Iterable[ChildRequest]) -> list[int]:
    """Start (or reuse) the child runs a step's attempt asked for; their ids.
    A child that stopped unfinished (failed, cancelled, timed out) is resumed."""
    origin = f"run #{run.pk} step {step.name}"[:100]
    ids = []
    for index, request in enumerate(requests):
        wf = registry.get(request.workflow)
        phash = services.params_hash(wf.validate_params(request.params))
        key = child_key(step.pk, index, wf.name, phash)
        # The parent's run lock is held: nobody else starts this step's children now.
        child = Run.objects.filter(idempotency_key=key).first()
        if child is None:
            child = services.start_run(
                wf,
                request.params,
                idempotency_key=key,
                origin=origin,
                parent=run,
                parent_step=step,
            )
        elif child.status in states.RUN_UNFINISHED:
            # Its parameters may have been corrected (admin) since: they are kept.
            services.resume_run(child.pk, "resume", origin=origin)
        ids.append(child.pk)
    return ids


def settle_waiting(step_run_id: int, actor: str = "stepflow") -> StepStatus | None:
    """If every child run a waiting step waits for has ended, end the step
    (completed when all completed) and advance its run. None if it still waits."""
    with transaction.atomic(), events.batch():
        run_id = StepRun.objects.filter(pk=step_run_id).values_list("run_id", flat=True).first()
        if run_id is None:
            return None
        run = engine.lock_run(run_id)
        step = StepRun.objects.filter(pk=step_run_id).first()
        if step is None or step.status != S.WAITING:
            return None
        ids = list(step.waiting_for or [])
        children = {c.pk: c for c in Run.objects.filter(pk__in=ids)}
        ended = [c for c in children.values() if c.status in states.RUN_FINISHED]
        if len(ended) < len(ids):
            StepRun.objects.filter(pk=step.pk).update(
                progress_current=len(ended),
                progress_message=f"{len(ended)} of {len(ids)} child runs ended",
            )
            return None
        decision = planner.after_children(
            step.output, [_summary(children[pk]) if pk in children else _gone(pk) for pk in ids]
        )
        now = timezone.now()
        engine.set_step(
            step,
            decision.status,
            output=decision.output,
            error=decision.error,
            finished_at=now,
            progress_current=len(ids),
            progress_message=f"{len(ids)} of {len(ids)} child runs ended",
        )
        StepAttempt.objects.filter(step=step, number=step.attempts).update(
            status=(
                AttemptStatus.COMPLETED if decision.status == S.COMPLETED else AttemptStatus.FAILED
            ),
            finished_at=now,
            error=decision.error,
        )
        done = decision.status == S.COMPLETED
        events.record(
            run,
            "step_completed" if done else "step_failed",
            decision.error or f"{len(ids)} child run(s) completed",
            step=step.name,
            actor=actor,
            attempt=step.attempts,
            level="info" if done else "error",
        )
        wf = engine.workflow_of(run)
        spec = wf.steps.get(step.name)
        settled = done or (spec is not None and spec.optional)
        engine.advance_run(run, actor=actor, wf=wf, changed=step.name if settled else None)
        return decision.status


def _summary(child: Run) -> planner.ChildSummary:
    outputs = None
    try:
        leaves = planner.leaf_steps(engine.workflow_of(child))
    except Exception:
        leaves = []
    if leaves:
        outputs = dict(
            StepRun.objects.filter(run_id=child.pk, name__in=leaves).values_list("name", "output")
        )
    return planner.ChildSummary(
        child.pk, child.workflow, child.status, child.error_summary, outputs=outputs
    )


def _gone(pk: int) -> planner.ChildSummary:
    return planner.ChildSummary(pk, "?", "cancelled", "the child run was deleted")


def settle_all(actor: str = "stepflow-reconciler") -> list[int]:
    """Settle every waiting step whose children have all ended (a notification
    was lost: the worker died between the child's commit and the parent's)."""
    waiting = list(StepRun.objects.filter(status=S.WAITING).values_list("pk", "waiting_for"))
    if not waiting:
        return []
    active = set(
        Run.objects.filter(pk__in={pk for _, ids in waiting for pk in ids or []})
        .exclude(status__in=list(states.RUN_FINISHED))
        .values_list("pk", flat=True)
    )
    settled = []
    for step_pk, ids in waiting:
        if active.intersection(ids or []):
            continue
        if settle_waiting(step_pk, actor) is not None:
            settled.append(step_pk)
    return settled
