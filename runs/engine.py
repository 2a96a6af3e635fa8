"""Applying stepflow's rules to stored runs: every status change of a run or a
step goes through here, as a guarded update, inside a transaction that holds
the run's row lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from stepflow import planner, states
from stepflow.context import ContextSettings, StepContext
from stepflow.execution import AttemptOutcome
from stepflow.registry import registry
from stepflow.states import AttemptStatus, RunStatus, StepStatus
from stepflow.workflow import Workflow

from . import events, queue
from .models import Run, StepAttempt, StepRun

log = logging.getLogger("stepflow.engine")
S = StepStatus


class StaleUpdate(Exception):
    """A guarded update matched no row: someone else changed the status first."""


def engine_setting(name: str) -> Any:
    return settings.STEPFLOW[name]


def context_settings() -> ContextSettings:
    return ContextSettings(
        item_batch_size=engine_setting("ITEM_BATCH_SIZE"),
        item_flush_seconds=engine_setting("ITEM_FLUSH_SECONDS"),
        progress_interval=engine_setting("PROGRESS_INTERVAL"),
    )


def lock_run(run_id: int) -> Run:
    """The run, with its row locked until the transaction ends."""
    return Run.objects.select_for_update().get(pk=run_id)


def load_steps(run: Run) -> dict[str, StepRun]:
    qs: QuerySet[StepRun] = run.steps.defer("output", "rollback_data", "metrics")
    return {s.name: s for s in qs}


def set_step(step: StepRun, target: StepStatus, what: str | None = None, **fields: Any) -> None:
    """Guarded update of one step's status (``WHERE status = <the status we read>``)."""
    name = what or f"Step {step.name!r} of run #{step.run_id}"
    new = states.transition(step.status, target, name)
    updated = StepRun.objects.filter(pk=step.pk, status=step.status).update(status=new, **fields)
    if not updated:
        raise StaleUpdate(f"{name} is no longer {step.status}")
    step.status = new
    for key, value in fields.items():
        setattr(step, key, value)


def set_run(run: Run, target: RunStatus, **fields: Any) -> None:
    """Guarded update of a run's status."""
    new = states.transition(run.status, target, f"Run #{run.pk}")
    fields["updated_at"] = timezone.now()
    updated = Run.objects.filter(pk=run.pk, status=run.status).update(status=new, **fields)
    if not updated:
        raise StaleUpdate(f"Run #{run.pk} is no longer {run.status}")
    run.status = new
    for key, value in fields.items():
        setattr(run, key, value)


def workflow_of(run: Run) -> Workflow:
    return registry.get(run.workflow)


def statuses_of(wf: Workflow, steps: dict[str, StepRun]) -> dict[str, str]:
    return {name: steps[name].status for name in wf.steps}


def outputs_of(run: Run, names: Iterable[str]) -> dict[str, Any]:
    names = list(names)
    if not names:
        return {}
    return dict(run.steps.filter(name__in=names).values_list("name", "output"))


class _ReadOnlyStore:
    """The store behind a condition's context: conditions read, they do not write."""

    def __init__(self, step: StepRun) -> None:
        self.step = step

    def load_checkpoints(self) -> dict[str, Any]:
        return dict(self.step.checkpoints.values_list("key", "value"))

    def load_done_items(self) -> Any:
        from .store import load_items

        return load_items(self.step.pk)

    def is_cancelled(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a step's condition cannot call {name}()")


def build_context(
    run: Run, step: StepRun, wf: Workflow, attempt: int, store: Any, statuses: dict[str, str]
) -> StepContext:
    spec = wf.steps[step.name]
    return StepContext(
        step_name=step.name,
        run_id=run.pk,
        attempt=attempt,
        params=run.params,
        inputs=outputs_of(run, spec.depends_on),
        store=store,
        settings=context_settings(),
        statuses=statuses,
    )


def advance_run(run: Run, *, actor: str = "stepflow", wf: Workflow | None = None) -> None:
    """Under the run's lock: skip what a condition rules out, queue what is
    ready, and finish the run when nothing is left to do."""
    wf = wf or workflow_of(run)
    steps = load_steps(run)
    statuses = statuses_of(wf, steps)

    def condition(name: str) -> bool:
        ctx = build_context(run, steps[name], wf, 0, _ReadOnlyStore(steps[name]), statuses)
        return bool(wf.steps[name].when(ctx))

    adv = planner.advance(
        wf,
        statuses,
        condition=condition,
        scope=run.scope,
        cancelling=run.status == RunStatus.CANCELLING,
        limit=wf.max_parallel,
        skip_reasons={n: s.skip_reason for n, s in steps.items()},
    )
    now = timezone.now()
    for name, reason in adv.skipped.items():
        set_step(steps[name], S.SKIPPED, skip_reason=reason, finished_at=now)
        events.record(run, "step_skipped", reason, step=name, actor=actor)
    for name in adv.ready:
        queue_step(run, steps[name], wf, actor=actor)
    if adv.run_status is not None:
        finish_run(run, adv.run_status, steps, wf, adv.not_run, actor=actor)
    else:
        update_progress(run, wf, steps)


def queue_step(run: Run, step: StepRun, wf: Workflow, *, actor: str, delay: float = 0.0) -> None:
    """pending -> queued, and put the next attempt on the step's queue after commit."""
    spec = wf.steps[step.name]
    attempt = step.attempts + 1
    jid = queue.job_id(step.pk, attempt)
    set_step(step, S.QUEUED, job_id=jid, enqueued_at=timezone.now(), queue=spec.queue)
    transaction.on_commit(
        lambda: queue.enqueue_step(step.pk, attempt, spec.queue, spec.timeout, delay)
    )


def update_progress(run: Run, wf: Workflow, steps: dict[str, StepRun]) -> None:
    fractions = {}
    for name, s in steps.items():
        if s.fraction is not None:
            fractions[name] = s.fraction
    progress = planner.weighted_progress(wf, statuses_of(wf, steps), fractions)
    if abs(progress - run.progress) > 1e-9:
        Run.objects.filter(pk=run.pk).update(progress=progress)
        run.progress = progress


def finish_run(
    run: Run,
    status: RunStatus,
    steps: dict[str, StepRun],
    wf: Workflow,
    not_run: list[str],
    *,
    actor: str,
) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"finished_at": now, "scope": None}
    message = ""
    if status == RunStatus.FAILED:
        failed = planner.blocking_failure(wf, statuses_of(wf, steps))
        if failed:
            err = (steps[failed].error or "").strip().splitlines()
            message = f"{failed} {steps[failed].status.replace('_', ' ')}: {err[-1] if err else ''}"
            fields["failed_step"] = failed
        else:
            message = f"Stopped with steps not run: {', '.join(not_run)}"
            fields["failed_step"] = ""
        fields["error_summary"] = message.strip().rstrip(":")
    else:
        fields["error_summary"] = ""
        fields["failed_step"] = ""
    if status == RunStatus.CANCELLING:
        raise AssertionError("a run finishes as cancelled, not cancelling")
    set_run(run, status, **fields)
    update_progress(run, wf, steps)
    events.record(run, status.value, fields["error_summary"], actor=actor)
    if status == RunStatus.FAILED:
        to_roll = [
            s
            for s in steps.values()
            if s.status == S.COMPLETED
            and s.rolled_back_at is None
            and s.name in wf.steps
            and wf.steps[s.name].has_rollback
        ]
        if to_roll:
            run_id, attempt = run.pk, run.attempt
            transaction.on_commit(
                lambda: queue.enqueue_call("runs.jobs.rollback_run", run_id, attempt)
            )


# -- attempts, on the worker side -----------------------------------------------------


@dataclass
class Started:
    run: Run
    step: StepRun
    attempt: StepAttempt


def begin_attempt(step_run_id: int, attempt: int, worker: str, job_id: str) -> Started | None:
    """queued (or retrying) -> running for exactly this attempt; None when the
    delivery is a duplicate or late (the step is no longer waiting for it)."""
    now = timezone.now()
    with transaction.atomic():
        step = StepRun.objects.select_for_update().filter(pk=step_run_id).first()
        if step is None or step.attempts != attempt - 1:
            return None
        if step.status not in (S.QUEUED, S.RETRYING):
            return None
        run = Run.objects.get(pk=step.run_id)
        if run.status != RunStatus.RUNNING:
            return None
        if step.status == S.RETRYING:
            set_step(step, S.QUEUED)
        set_step(
            step,
            S.RUNNING,
            attempts=attempt,
            worker=worker,
            heartbeat_at=now,
            started_at=step.started_at or now,
            job_id=job_id,
            retry_at=None,
            progress_current=None,
            progress_total=None,
            progress_message="",
        )
        row = StepAttempt.objects.create(
            step=step,
            number=attempt,
            run_attempt=run.attempt,
            status=AttemptStatus.RUNNING,
            worker=worker,
            job_id=job_id,
            started_at=now,
        )
        events.record(
            run, "step_started", f"attempt {attempt}", step=step.name, actor=worker, attempt=attempt
        )
    return Started(run, step, row)


def _jsonable(value: Any) -> str | None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def record_outcome(
    step_run_id: int, attempt: int, outcome: AttemptOutcome, worker: str
) -> StepStatus | None:
    """Record how an attempt ended, apply the retry policy, and advance the run.
    Returns the step's new status, or None when the attempt was no longer current."""
    with transaction.atomic():
        step_row = StepRun.objects.filter(pk=step_run_id).values("run_id").first()
        if step_row is None:
            return None
        run = lock_run(step_row["run_id"])
        step = StepRun.objects.select_for_update().get(pk=step_run_id)
        if step.status != S.RUNNING or step.attempts != attempt:
            log.info("outcome of %s attempt %s ignored: step is %s", step, attempt, step.status)
            return None
        result = outcome.result
        if outcome.succeeded and result is not None:
            problem = _jsonable(result.data) or _jsonable(result.rollback_data)
            if problem:
                outcome = AttemptOutcome(
                    AttemptStatus.FAILED,
                    error=f"the step's output is not JSON-serializable: {problem}",
                )
        try:
            spec = workflow_of(run).steps[step.name]
        except Exception:
            spec = None
        now = timezone.now()
        if spec is None:
            target = S.TIMED_OUT if outcome.status == AttemptStatus.TIMED_OUT else S.FAILED
            if outcome.succeeded:
                target = S.COMPLETED if outcome.status == AttemptStatus.COMPLETED else S.SKIPPED
            decision = planner.AttemptDecision(target)
        else:
            decision = planner.after_attempt(
                spec, attempt - step.round_start, outcome.status, outcome.exception
            )
        target = decision.status
        if run.status == RunStatus.CANCELLING and (
            target == S.RETRYING
            or outcome.status in (AttemptStatus.WORKER_LOST, AttemptStatus.CANCELLED)
        ):
            target = S.CANCELLED
        fields: dict[str, Any] = {"heartbeat_at": None}
        if target in states.STEP_FINISHED:
            fields["finished_at"] = now
        if outcome.succeeded and outcome.result is not None:
            fields["output"] = outcome.result.data
            fields["rollback_data"] = outcome.result.rollback_data
            fields["error"] = ""
            if outcome.status == AttemptStatus.SKIPPED:
                fields["skip_reason"] = planner.REASON_CAN_SKIP
        elif outcome.status != AttemptStatus.CANCELLED:
            fields["error"] = outcome.error
        if target == S.RETRYING:
            fields["retry_at"] = now + timezone.timedelta(seconds=decision.retry_in or 0)
        set_step(step, target, **fields)
        StepAttempt.objects.filter(step=step, number=attempt).update(
            status=outcome.status.value,
            finished_at=now,
            error=outcome.error,
            traceback=outcome.traceback,
        )
        kind = {
            S.COMPLETED: "step_completed",
            S.SKIPPED: "step_skipped",
            S.RETRYING: "step_retrying",
            S.FAILED: "step_failed",
            S.TIMED_OUT: "step_timed_out",
            S.CANCELLED: "step_cancelled",
        }[target]
        message = outcome.error
        if target == S.RETRYING:
            message = f"{outcome.error} — retry in {decision.retry_in or 0:.1f}s"
        events.record(
            run,
            kind,
            message,
            step=step.name,
            actor=worker,
            attempt=attempt,
            level="error" if target in states.STEP_FAILED else "info",
        )
        if target == S.RETRYING:
            spec_queue = spec.queue if spec else step.queue
            timeout = spec.timeout if spec else None
            delay = decision.retry_in or 0.0
            transaction.on_commit(
                lambda: queue.enqueue_step(step.pk, attempt + 1, spec_queue, timeout, delay)
            )
            StepRun.objects.filter(pk=step.pk).update(job_id=queue.job_id(step.pk, attempt + 1))
        advance_run(run, actor=worker)
        return target
