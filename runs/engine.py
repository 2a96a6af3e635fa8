"""Applying stepflow's rules to stored runs: every status change of a run or a
step goes through here, as a guarded update, inside a transaction that holds
the run's row lock.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Count, Q
from django.utils import timezone

from stepflow import planner, states
from stepflow.context import ContextSettings, StepContext
from stepflow.errors import StepflowError
from stepflow.execution import AttemptOutcome
from stepflow.registry import registry
from stepflow.states import AttemptStatus, RunStatus, StepStatus
from stepflow.workflow import Workflow

from . import events, queue
from .models import Checkpoint, QueueLimit, Run, StepAttempt, StepRun

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
    """The run, with its row locked until the transaction ends.

    FOR NO KEY UPDATE: it serializes every change of the run's state, yet does
    not block inserting rows that point at the run (events, attempts), whose
    foreign keys take a KEY SHARE lock; a plain FOR UPDATE would make a cancel
    and a starting attempt deadlock."""
    return Run.objects.select_for_update(no_key=True).get(pk=run_id)


@dataclass
class StepState:
    """What the engine needs of a step run, read without building model instances
    (advance_run reads every step of the run after every step)."""

    pk: int
    run_id: int
    name: str
    status: str
    attempts: int
    skip_reason: str
    error: str
    progress_current: float | None
    progress_total: float | None
    round_start: int
    waiting_since: Any
    rolled_back: bool
    #: Loaded only when needed (the inputs of a step this worker runs next).
    output: Any = None
    has_output: bool = False

    FIELDS = (
        "pk",
        "run_id",
        "name",
        "status",
        "attempts",
        "skip_reason",
        "error",
        "progress_current",
        "progress_total",
        "round_start",
        "waiting_since",
        "rolled_back_at",
    )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StepState:
        return cls(*row[:11], rolled_back=row[11] is not None)

    @classmethod
    def from_row_with_output(cls, row: tuple[Any, ...]) -> StepState:
        return cls(*row[:11], rolled_back=row[11] is not None, output=row[12], has_output=True)

    @property
    def fraction(self) -> float | None:
        if self.progress_total:
            return min(1.0, max(0.0, (self.progress_current or 0) / self.progress_total))
        return None


def load_steps(run: Run) -> dict[str, StepState]:
    rows = StepRun.objects.filter(run_id=run.pk).values_list(*StepState.FIELDS)
    return {row[2]: StepState.from_row(row) for row in rows}


def set_step(
    step: StepRun | StepState,
    target: StepStatus,
    what: str | None = None,
    *,
    via: StepStatus | None = None,
    guard: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Guarded update of one step's status (``WHERE status = <the status we read>``
    and the ``guard`` conditions); ``via`` checks a two-step change (retrying ->
    queued -> running) made in one update."""
    name = what or f"Step {step.name!r} of run #{step.run_id}"
    new = states.transition(step.status, via, name) if via is not None else step.status
    new = states.transition(new, target, name)
    updated = StepRun.objects.filter(pk=step.pk, status=step.status, **(guard or {})).update(
        status=new, **fields
    )
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


def dependency_rows(run_id: int, names: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """{name: (status, output)} of the given steps, in one query."""
    names = list(names)
    if not names:
        return {}
    rows = StepRun.objects.filter(run_id=run_id, name__in=names).values_list(
        "name", "status", "output"
    )
    return {name: (status, output) for name, status, output in rows}


class _ReadOnlyStore:
    """The store behind a condition's context: conditions read, they do not write."""

    def __init__(self, step: StepRun | StepState) -> None:
        self.step = step

    def load_checkpoints(self) -> dict[str, Any]:
        return dict(Checkpoint.objects.filter(step_id=self.step.pk).values_list("key", "value"))

    def load_done_items(self) -> Any:
        from .store import load_items

        return load_items(self.step.pk)

    def is_cancelled(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a step's condition cannot call {name}()")


def build_context(
    run: Run,
    step: StepRun | StepState,
    wf: Workflow,
    attempt: int,
    store: Any,
    deps: Mapping[str, tuple[str, Any]] | None = None,
) -> StepContext:
    """The context for ``step``: the run's parameters, and the outputs and
    statuses of the step's dependencies (``deps``: already read)."""
    if deps is None:
        deps = dependency_rows(run.pk, wf.steps[step.name].depends_on)
    secrets = [
        str(run.params.get(n)) for n, p in wf.params.items() if p.secret and run.params.get(n)
    ]
    return StepContext(
        step_name=step.name,
        run_id=run.pk,
        attempt=attempt,
        params=run.params,
        inputs={n: output for n, (_, output) in deps.items()},
        store=store,
        settings=context_settings(),
        statuses={n: status for n, (status, _) in deps.items()},
        secrets=secrets,
    )


def advance_run(
    run: Run,
    *,
    actor: str = "stepflow",
    wf: Workflow | None = None,
    changed: str | None = None,
    chain_queue: str | None = None,
    frontier_rows: dict[str, StepState] | None = None,
) -> StepState | None:
    """Under the run's lock: skip what a condition rules out, queue what is
    ready, and finish the run when nothing is left to do.

    ``changed`` names the step that just finished: when it completed, only
    its dependants are examined (cost independent of the run's size).
    ``chain_queue``: when exactly one step became ready, on that queue (and the
    queue has no limit), it is returned, still pending, for the caller to start
    at once (start_chained). ``frontier_rows``: the steps ``frontier_names``
    names and the failed ones, already read.
    """
    wf = wf or workflow_of(run)
    if run.status == RunStatus.RUNNING and past_deadline(run):
        stop_run(run, reason="timeout", actor=actor, message=timeout_message(run, wf))
        return None
    if changed is not None and run.status == RunStatus.RUNNING:
        chained = _advance_frontier(run, wf, changed, actor, chain_queue, frontier_rows)
        if chained is not _FULL:
            return chained  # type: ignore[no-any-return]
    return _advance_all(run, wf, actor, chain_queue)


#: _advance_frontier's answer when the whole run must be looked at.
_FULL: Any = object()


def _advance_all(run: Run, wf: Workflow, actor: str, chain_queue: str | None) -> StepState | None:
    steps = load_steps(run)
    statuses = statuses_of(wf, steps)
    adv = planner.advance(
        wf,
        statuses,
        condition=_condition(run, wf, steps, statuses),
        scope=run.scope,
        cancelling=run.status == RunStatus.CANCELLING,
        limit=wf.max_parallel,
        skip_reasons={n: s.skip_reason for n, s in steps.items()},
    )
    chained = _apply(run, wf, steps, adv, actor, chain_queue)
    if adv.run_status is not None:
        finish_run(run, adv.run_status, steps, wf, adv.not_run, actor=actor)
    else:
        update_progress(run, wf, steps)
    return chained


class _LazySteps(dict[str, StepState]):
    """Step states of one run, loaded in batches and on demand."""

    def __init__(
        self, run: Run, names: set[str], also_failed: bool = False, outputs: bool = False
    ) -> None:
        super().__init__()
        self.run = run
        if names or also_failed:
            self.load(names, also_failed, outputs)

    def load(self, names: set[str], also_failed: bool = False, outputs: bool = False) -> None:
        where = Q(name__in=names)
        if also_failed:
            where |= Q(status__in=list(states.STEP_FAILED))
        qs = StepRun.objects.filter(where, run_id=self.run.pk)
        if outputs:
            for row in qs.values_list(*StepState.FIELDS, "output"):
                self[row[2]] = StepState.from_row_with_output(row)
        else:
            for row in qs.values_list(*StepState.FIELDS):
                self[row[2]] = StepState.from_row(row)

    def __missing__(self, name: str) -> StepState:
        self.load({name})
        return dict.__getitem__(self, name)


class _StatusView(Mapping[str, str]):
    def __init__(self, steps: dict[str, StepState], attr: str) -> None:
        self.steps = steps
        self.attr = attr

    def __getitem__(self, name: str) -> str:
        return str(getattr(self.steps[name], self.attr))

    def __iter__(self) -> Iterator[str]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)


def frontier_names(wf: Workflow, changed: str) -> set[str]:
    """The steps advancing after ``changed`` completed reads: its dependants and
    their dependencies (and, in the query, every failed step of the run)."""
    frontier = set(wf.dependants[changed])
    needed = set(frontier)
    for name in frontier:
        needed.update(wf.steps[name].depends_on)
    return needed


def _advance_frontier(
    run: Run,
    wf: Workflow,
    changed: str,
    actor: str,
    chain_queue: str | None,
    rows: dict[str, StepState] | None = None,
) -> StepState | None:
    frontier = set(wf.dependants[changed])
    if rows is not None:
        steps = _LazySteps(run, set())
        steps.update(rows)
    else:
        # When this worker may run the next step itself, read the outputs too:
        # they are that step's inputs (saves a query when it starts).
        steps = _LazySteps(
            run, frontier_names(wf, changed), also_failed=True, outputs=chain_queue is not None
        )
    if any(
        s.status in states.STEP_FAILED and (s.name not in wf.steps or not wf.steps[s.name].optional)
        for s in steps.values()
    ):
        return _FULL  # a required step failed: the run is ending
    statuses = _StatusView(steps, "status")
    active = None
    if wf.max_parallel is not None:
        active = StepRun.objects.filter(run_id=run.pk, status__in=list(states.STEP_ACTIVE)).count()
    adv = planner.advance(
        wf,
        statuses,
        condition=_condition(run, wf, steps, statuses),
        scope=run.scope,
        limit=wf.max_parallel,
        skip_reasons=_StatusView(steps, "skip_reason"),
        frontier=frontier,
        active=active,
    )
    chained = _apply(run, wf, steps, adv, actor, chain_queue)
    if adv.failed or not adv.ready:
        still_active = StepRun.objects.filter(
            run_id=run.pk, status__in=list(states.STEP_ACTIVE)
        ).exists()
        if not still_active:
            return advance_run(run, actor=actor, wf=wf)  # decide the run's end on every status
    maybe_update_progress(run, wf)
    return chained


def _condition(
    run: Run, wf: Workflow, steps: dict[str, StepState], statuses: Mapping[str, str]
) -> Callable[[str], bool]:
    def condition(name: str) -> bool:
        ctx = build_context(run, steps[name], wf, 0, _ReadOnlyStore(steps[name]))
        return bool(wf.steps[name].when(ctx))

    return condition


def _apply(
    run: Run,
    wf: Workflow,
    steps: dict[str, StepState],
    adv: planner.Advance,
    actor: str,
    chain_queue: str | None,
) -> StepState | None:
    now = timezone.now()
    for name, reason in adv.skipped.items():
        set_step(steps[name], S.SKIPPED, skip_reason=reason, finished_at=now)
        events.record(run, "step_skipped", reason, step=name, actor=actor)
    for name, error in adv.failed.items():
        set_step(steps[name], S.FAILED, error=error, finished_at=now)
        events.record(run, "step_failed", error, step=name, actor=actor, level="error")
    chain = (
        chain_queue is not None
        and len(adv.ready) == 1
        and wf.steps[adv.ready[0]].queue == chain_queue
        and chain_queue not in queue_limits()
    )
    if chain:
        chained = steps[adv.ready[0]]
        chained.inputs = {  # type: ignore[attr-defined]
            d: (steps[d].status, steps[d].output)
            for d in wf.steps[chained.name].depends_on
            if d in steps and steps[d].has_output
        }
        return chained
    for name in adv.ready:
        queue_step(run, steps[name], wf, actor=actor)
    return None


def queue_step(
    run: Run,
    step: StepRun | StepState,
    wf: Workflow,
    *,
    actor: str,
    delay: float = 0.0,
    from_dispatch: bool = False,
) -> None:
    """pending -> queued, and put the next attempt on the step's queue after commit.

    A step whose queue has a limit (QueueLimit) is not queued here: it is marked
    waiting for a slot, and dispatch_queue queues the oldest waiting steps as
    slots free (``from_dispatch``: it is dispatch_queue calling)."""
    spec = wf.steps[step.name]
    if not from_dispatch and spec.queue in queue_limits():
        _wait_for_slot(run, step, spec.queue, actor)
        return
    attempt = step.attempts + 1
    jid = queue.job_id(step.pk, attempt)
    extra: dict[str, Any] = {}
    if step.waiting_since is not None:
        extra = {"waiting_since": None, "progress_message": ""}
    set_step(step, S.QUEUED, job_id=jid, enqueued_at=timezone.now(), queue=spec.queue, **extra)
    transaction.on_commit(
        lambda: queue.enqueue_step(step.pk, attempt, spec.queue, spec.timeout, delay)
    )


# -- queue limits ------------------------------------------------------------------------

#: Seconds a process keeps the queue limits it read (edits reach every worker within this).
LIMITS_TTL = 2.0
_limits: tuple[float, dict[str, int]] = (float("-inf"), {})


def queue_limits() -> dict[str, int]:
    """{queue: limit} of the queues that have a limit (cached for LIMITS_TTL seconds)."""
    global _limits
    read_at, limits = _limits
    now = time.monotonic()
    if now - read_at >= LIMITS_TTL:
        limits = dict(QueueLimit.objects.values_list("queue", "limit"))
        _limits = (now, limits)
    return limits


def forget_queue_limits() -> None:
    """Read the limits again at the next use (after an edit in this process)."""
    global _limits
    _limits = (float("-inf"), {})


def _wait_for_slot(run: Run, step: StepRun | StepState, queue_name: str, actor: str) -> None:
    if step.waiting_since is None:
        now = timezone.now()
        message = f"waiting for a free slot on queue {queue_name}"
        StepRun.objects.filter(pk=step.pk, status=S.PENDING).update(
            waiting_since=now, progress_message=message
        )
        step.waiting_since = now
        events.record(run, "step_waiting", message, step=step.name, actor=actor)
    transaction.on_commit(lambda: dispatch_queue(queue_name))


def slot_freed(queue_name: str) -> None:
    """A step of ``queue_name`` stopped being active: after commit, start the next waiting one."""
    if queue_name in queue_limits():
        transaction.on_commit(lambda: dispatch_queue(queue_name))


def queue_usage() -> dict[str, tuple[int, int]]:
    """{queue: (steps holding a slot, steps waiting for one)} of every queue with either."""
    holding = Q(status__in=list(states.STEP_HOLDS_SLOT))
    rows = (
        StepRun.objects.filter(holding | Q(waiting_since__isnull=False))
        .values("queue")
        .annotate(
            active=Count("pk", filter=holding),
            waiting=Count("pk", filter=Q(waiting_since__isnull=False)),
        )
        .values_list("queue", "active", "waiting")
    )
    return {name: (active, waiting) for name, active, waiting in rows}


def dispatch_queue(queue_name: str, actor: str = "stepflow") -> list[int]:
    """Queue the oldest steps waiting for a slot of ``queue_name``, as many as
    its limit leaves free, one per transaction. The queue's limit row is locked
    while counting, so two dispatchers never hand out the same slot; then the
    one run's row (a run's own transactions never take a limit's lock)."""
    started: list[int] = []
    seen: set[int] = set()
    while True:
        with transaction.atomic(), events.batch():
            row = QueueLimit.objects.select_for_update().filter(queue=queue_name).first()
            if row is not None:
                active = StepRun.objects.filter(
                    queue=queue_name, status__in=list(states.STEP_HOLDS_SLOT)
                ).count()
                if active >= row.limit:
                    return started
            candidate = (
                StepRun.objects.filter(queue=queue_name, waiting_since__isnull=False)
                .exclude(pk__in=seen)
                .order_by("waiting_since", "id")
                .values_list("pk", "run_id")
                .first()
            )
            if candidate is None:
                return started
            pk, run_id = candidate
            seen.add(pk)
            run = lock_run(run_id)
            found = StepRun.objects.filter(pk=pk).values_list(*StepState.FIELDS).first()
            if found is None:
                continue
            st = StepState.from_row(found)
            if st.waiting_since is None:
                continue
            if run.status != RunStatus.RUNNING or st.status != S.PENDING:
                StepRun.objects.filter(pk=pk).update(waiting_since=None, progress_message="")
                continue
            queue_step(run, st, workflow_of(run), actor=actor, from_dispatch=True)
            events.record(
                run, "step_slot", f"got a slot on queue {queue_name}", step=st.name, actor=actor
            )
            started.append(pk)


#: Seconds between two progress updates of a run while its steps finish.
PROGRESS_EVERY = 1.0


def maybe_update_progress(run: Run, wf: Workflow) -> None:
    """Recompute the run's progress if it was last done over a second ago
    (it reads every step, so not after each one of a long run)."""
    now = timezone.now()
    if run.progress_at is None or (now - run.progress_at).total_seconds() >= PROGRESS_EVERY:
        update_progress(run, wf, load_steps(run))


def update_progress(run: Run, wf: Workflow, steps: dict[str, StepState]) -> None:
    fractions = {}
    for name, s in steps.items():
        if s.fraction is not None:
            fractions[name] = s.fraction
    progress = planner.weighted_progress(wf, statuses_of(wf, steps), fractions)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(progress=progress, progress_at=now)
    run.progress, run.progress_at = progress, now


def finish_run(
    run: Run,
    status: RunStatus,
    steps: dict[str, StepState],
    wf: Workflow,
    not_run: list[str],
    *,
    actor: str,
) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"finished_at": now, "scope": None}
    message = ""
    if status == RunStatus.CANCELLED and run.stop_reason == "timeout":
        status = RunStatus.TIMED_OUT
    if status == RunStatus.TIMED_OUT:
        fields["error_summary"] = timeout_message(run, wf)
        fields["failed_step"] = ""
    elif status == RunStatus.FAILED:
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
        # Optional steps (on_failure="continue") may have failed in a completed run.
        failed_optional = [
            n for n in wf.order() if n in steps and steps[n].status in states.STEP_FAILED
        ]
        fields["error_summary"] = (
            f"completed with failures: {', '.join(failed_optional)}"
            if status == RunStatus.COMPLETED and failed_optional
            else ""
        )
        fields["failed_step"] = ""
    if status == RunStatus.CANCELLING:
        raise AssertionError("a run finishes as cancelled, not cancelling")
    set_run(run, status, **fields)
    update_progress(run, wf, steps)
    events.record(run, status.value, fields["error_summary"], actor=actor)
    StepRun.objects.filter(run_id=run.pk, waiting_since__isnull=False).update(
        waiting_since=None, progress_message=""
    )
    if run.parent_step_id is not None:
        parent_step = run.parent_step_id
        transaction.on_commit(lambda: _notify_parent(parent_step))
    if status == RunStatus.FAILED:
        to_roll = [
            s
            for s in steps.values()
            if s.status == S.COMPLETED
            and not s.rolled_back
            and s.name in wf.steps
            and wf.steps[s.name].has_rollback
        ]
        if to_roll:
            run_id, attempt = run.pk, run.attempt
            transaction.on_commit(
                lambda: queue.enqueue_call("runs.jobs.rollback_run", run_id, attempt)
            )


def _notify_parent(step_run_id: int) -> None:
    from .children import settle_waiting

    try:
        settle_waiting(step_run_id)
    except Exception:
        log.exception("could not settle waiting step run %s; the reconciler will", step_run_id)


# -- stopping: cancel and timeout ----------------------------------------------------


def past_deadline(run: Run) -> bool:
    return run.deadline is not None and timezone.now() >= run.deadline


def deadline_for(wf: Workflow) -> Any:
    """When a run of ``wf`` started (or resumed) now must stop, or None."""
    if wf.timeout is None:
        return None
    return timezone.now() + timezone.timedelta(seconds=wf.timeout)


def timeout_message(run: Run, wf: Workflow | None) -> str:
    if wf is not None and wf.timeout is not None:
        return f"Timed out: the workflow's timeout of {_seconds(wf.timeout)} passed"
    if run.deadline is not None:
        return f"Timed out: its deadline {run.deadline:%Y-%m-%d %H:%M:%S} UTC passed"
    return "Timed out"


def _seconds(secs: float) -> str:
    if secs >= 3600 and secs % 60 == 0:
        h, m = divmod(int(secs) // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    if secs >= 60 and secs % 1 == 0:
        m, sec = divmod(int(secs), 60)
        return f"{m}m {sec}s" if sec else f"{m}m"
    return f"{secs:g}s"


def stop_run(
    run: Run,
    *,
    reason: str,
    actor: str,
    message: str,
    user: Any = None,
    cancel_reason: str | None = None,
) -> None:
    """Under the run's lock: cancel the steps that wait, ask running steps to
    stop (they see ctx.cancelled; recovery stops those that ignore it), and
    stop the run's child runs. ``reason``: "cancel" (a user) or "timeout" (the
    deadline passed; the run ends timed_out)."""
    # Lock the step rows too: a worker may be starting a queued step right now
    # (begin_attempt locks the step's row); what it started keeps running and
    # sees ctx.cancelled.
    list(StepRun.objects.select_for_update(no_key=True).filter(run_id=run.pk).values("pk"))
    steps = load_steps(run)
    now = timezone.now()
    freed = set(
        StepRun.objects.filter(run_id=run.pk, status__in=[S.QUEUED, S.RETRYING]).values_list(
            "queue", flat=True
        )
    )  # the slot holders this stop cancels (running ones free theirs when they end)
    for st in steps.values():
        if st.status in (S.PENDING, S.QUEUED, S.RETRYING):
            extra = {"waiting_since": None, "progress_message": ""} if st.waiting_since else {}
            set_step(st, S.CANCELLED, finished_at=now, retry_at=None, **extra)
        elif st.status == S.WAITING:
            set_step(st, S.CANCELLED, finished_at=now, error="cancelled while waiting")
            StepAttempt.objects.filter(step_id=st.pk, number=st.attempts).update(
                status=AttemptStatus.CANCELLED, finished_at=now, error="cancelled"
            )
            events.record(
                run,
                "step_cancelled",
                "cancelled while waiting for child runs",
                step=st.name,
                actor=actor,
            )
    for name in freed:
        slot_freed(name)
    if reason == "timeout":
        events.record(run, "timeout", message, actor=actor, deadline=str(run.deadline))
    else:
        events.record(
            run, "cancel_requested", message, user=user, actor=actor, reason=cancel_reason or None
        )
    stop_children(run, actor)
    if run.status == RunStatus.PENDING:
        set_run(run, RunStatus.CANCELLED, finished_at=now)
        events.record(run, "cancelled", message, actor=actor)
        return
    set_run(run, RunStatus.CANCELLING, cancel_requested_at=now, stop_reason=reason)
    advance_run(run, actor=actor)


def stop_children(run: Run, actor: str) -> list[int]:
    """Cancel the active child runs of ``run`` (and theirs), locking parent before child."""
    stopped = []
    for child_id in Run.objects.filter(
        parent_id=run.pk, status__in=list(states.RUN_CANCELLABLE)
    ).values_list("pk", flat=True):
        child = lock_run(child_id)
        if child.status not in states.RUN_CANCELLABLE:
            continue
        stop_run(
            child,
            reason="cancel",
            actor=actor,
            message=f"Cancelled with its parent run #{run.pk}",
        )
        stopped.append(child_id)
    return stopped


# -- attempts, on the worker side -----------------------------------------------------


@dataclass
class Started:
    run: Run
    step: StepRun
    attempt: StepAttempt
    #: {dependency: (status, output)} when already read (a chained step).
    inputs: dict[str, tuple[str, Any]] | None = None


def begin_attempt(step_run_id: int, attempt: int, worker: str, job_id: str) -> Started | None:
    """queued (or retrying) -> running for exactly this attempt; None when the
    delivery is a duplicate or late (the step is no longer waiting for it)."""
    with transaction.atomic(), events.batch():
        step = (
            StepRun.objects.select_related("run")
            .select_for_update(of=("self",), no_key=True)
            .filter(pk=step_run_id)
            .first()
        )
        if step is None or step.attempts != attempt - 1:
            return None
        if step.status not in (S.QUEUED, S.RETRYING):
            return None
        if step.run.status != RunStatus.RUNNING:
            return None
        return _start(step.run, step, attempt, worker, job_id)


def _start(
    run: Run,
    step: StepRun,
    attempt: int,
    worker: str,
    job_id: str,
) -> Started:
    """queued (or retrying, or -- for a chained step -- pending) -> running, and
    the attempt's row. On PostgreSQL both are one statement."""
    now = timezone.now()
    what = f"Step {step.name!r} of run #{run.pk}"
    via = S.QUEUED if step.status in (S.RETRYING, S.PENDING) else None
    fields: dict[str, Any] = {
        "attempts": attempt,
        "worker": worker,
        "heartbeat_at": now,
        "started_at": step.started_at or now,
        "job_id": job_id,
        "retry_at": None,
        "progress_current": None,
        "progress_total": None,
        "progress_message": "",
    }
    if step.status == S.PENDING:  # what queue_step writes when a job is enqueued
        fields.update(enqueued_at=now, queue=step.queue, waiting_since=None)
    row = StepAttempt(
        step=step,
        number=attempt,
        run_attempt=run.attempt,
        status=AttemptStatus.RUNNING,
        worker=worker,
        job_id=job_id,
        started_at=now,
    )
    # Both callers batch events: on PostgreSQL the ones recorded so far in this
    # transaction go in the same statement (a stale update raises, and the
    # transaction rolls them back with it).
    events.record(
        run, "step_started", f"attempt {attempt}", step=step.name, actor=worker, attempt=attempt
    )
    if connection.vendor != "postgresql":
        set_step(step, S.RUNNING, via=via, **fields)
        row.save(force_insert=True)
        return Started(run, step, row)
    new = states.transition(step.status, via, what) if via is not None else step.status
    new = states.transition(new, S.RUNNING, what)
    set_sql, params = _set_clause(StepRun, {"status": new, **fields})
    buffered = events.take_buffered()
    events_sql, events_params = events.insert_sql(buffered) if buffered else ("", [])
    sql = (
        f"WITH s AS (UPDATE {_table(StepRun)} SET {set_sql} "
        "WHERE id = %s AND status = %s RETURNING id) "
        + (f", e AS ({events_sql}) " if buffered else "")
        + f"INSERT INTO {_table(StepAttempt)} (step_id, number, run_attempt, status, worker, "
        "job_id, started_at, finished_at, error, traceback) "
        "SELECT id, %s, %s, %s, %s, %s, %s, NULL, '', '' FROM s RETURNING id"
    )
    with connection.cursor() as cur:
        cur.execute(
            sql,
            [
                *params,
                step.pk,
                step.status,
                *events_params,
                attempt,
                run.attempt,
                AttemptStatus.RUNNING.value,
                worker,
                job_id,
                now,
            ],
        )
        found = cur.fetchone()
    if found is None:
        raise StaleUpdate(f"{what} is no longer {step.status}")
    step.status = new
    for key, value in fields.items():
        setattr(step, key, value)
    row.pk = found[0]
    return Started(run, step, row)


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _set_clause(model: type[models.Model], fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``col = %s, ...`` and the values prepared as the ORM would save them."""
    parts, params = [], []
    for name, value in fields.items():
        field = model._meta.get_field(name)
        parts.append(f"{connection.ops.quote_name(field.column)} = %s")  # type: ignore[union-attr]
        params.append(field.get_db_prep_save(value, connection))  # type: ignore[union-attr]
    return ", ".join(parts), params


def _end_attempt(
    step: StepRun,
    target: StepStatus,
    attempt: int,
    attempt_fields: dict[str, Any],
    *,
    read: set[str] | None = None,
    outputs: bool = False,
    **fields: Any,
) -> dict[str, StepState] | None:
    """Guarded update of the step (still running this attempt) and the update of
    its attempt's row; StaleUpdate if it moved on.

    On PostgreSQL this is one statement, which also reads the steps named in
    ``read`` and the run's failed steps (what advancing needs next), as they are
    after the update; returned as step states (None elsewhere)."""
    if connection.vendor != "postgresql":
        set_step(step, target, guard={"attempts": attempt}, **fields)
        StepAttempt.objects.filter(step_id=step.pk, number=attempt).update(**attempt_fields)
        return None
    what = f"Step {step.name!r} of run #{step.run_id}"
    new = states.transition(step.status, target, what)
    step_sql, step_params = _set_clause(StepRun, {"status": new, **fields})
    attempt_sql, attempt_params = _set_clause(StepAttempt, attempt_fields)
    sql = (
        f"WITH s AS (UPDATE {_table(StepRun)} SET {step_sql} "
        "WHERE id = %s AND status = %s AND attempts = %s RETURNING id), "
        f"a AS (UPDATE {_table(StepAttempt)} SET {attempt_sql} "
        "WHERE step_id IN (SELECT id FROM s) AND number = %s RETURNING 1) "
    )
    params = [*step_params, step.pk, step.status, attempt, *attempt_params, attempt]
    if read is None:
        sql += "SELECT count(*) FROM s"
    else:
        columns = ", ".join(_STATE_COLUMNS + (["output::text"] if outputs else []))
        sql += (
            f"SELECT c.n, t.* FROM (SELECT count(*) AS n FROM s) c LEFT JOIN ("
            f"SELECT {columns} FROM {_table(StepRun)} WHERE run_id = %s AND "
            f"(name = ANY(%s) OR status IN ({_FAILED_SQL}))) t ON true"
        )
        params += [step.run_id, sorted(read)]
    with connection.cursor() as cur:
        cur.execute(sql, params)
        result = cur.fetchall()
    if not result or not result[0][0]:
        raise StaleUpdate(f"{what} is no longer {step.status}")
    step.status = new
    for key, value in fields.items():
        setattr(step, key, value)
    if read is None:
        return None
    found = {}
    for row in result:
        if row[1] is None:
            continue  # no step matched
        if outputs:
            output = json.loads(row[-1]) if row[-1] is not None else None
            state = StepState.from_row_with_output((*row[1:-1], output))
        else:
            state = StepState.from_row(row[1:])
        if state.pk == step.pk:  # read before the update: as it is now
            state.status = new
            state.output = fields.get("output", state.output)
        found[state.name] = state
    return found


#: STEP_FAILED as SQL literals (literals, so the partial index steprun_run_failed applies).
_FAILED_SQL = ", ".join(f"'{s.value}'" for s in sorted(states.STEP_FAILED))

#: The columns of StepState.FIELDS.
_STATE_COLUMNS = ["id" if name == "pk" else name for name in StepState.FIELDS]


def start_chained(run: Run, state: StepState, worker: str) -> Started:
    """Start the step this worker runs next itself (see advance_run's chain_queue),
    in the transaction that found it ready: recorded exactly as if it had been
    queued and dequeued."""
    spec = workflow_of(run).steps[state.name]
    step = StepRun(
        pk=state.pk,
        run_id=run.pk,
        name=state.name,
        status=state.status,
        attempts=state.attempts,
        round_start=state.round_start,
        queue=spec.queue,
    )
    step.run = run
    attempt = state.attempts + 1
    started = _start(run, step, attempt, worker, queue.job_id(state.pk, attempt))
    inputs = getattr(state, "inputs", None)
    if inputs is not None and len(inputs) == len(spec.depends_on):
        started.inputs = inputs
    return started


def _jsonable(value: Any) -> str | None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


@dataclass
class Recorded:
    """What recording an attempt did: the step's new status, and the step this
    worker should run next itself (see ``advance_run(chain_queue=)``)."""

    status: StepStatus
    chained: Started | None = None


def record_outcome(
    step_run_id: int,
    attempt: int,
    outcome: AttemptOutcome,
    worker: str,
    *,
    step: StepRun | None = None,
    chain_queue: str | None = None,
) -> Recorded | None:
    """Record how an attempt ended, apply the retry policy, and advance the run.
    None when the attempt was no longer the current one (nothing is changed).

    ``step`` is the step run as this attempt started it (saves a query); the
    update is guarded on the attempt still being the running one either way.
    """
    with transaction.atomic(), events.batch():
        if step is None:
            step = StepRun.objects.filter(pk=step_run_id).first()
            if step is None:
                return None
        else:
            step = copy.copy(step)  # a retried call (database restart) starts from the same state
        run = lock_run(step.run_id)
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
        waiting_for: list[int] = []
        if target == S.COMPLETED and outcome.children:
            from .children import start_children

            try:
                with transaction.atomic():
                    waiting_for = start_children(run, step, outcome.children)
            except StepflowError as exc:
                error = f"could not start its child runs: {exc}"
                outcome = AttemptOutcome(AttemptStatus.FAILED, error=error, exception=exc)
                decision = (
                    planner.after_attempt(
                        spec, attempt - step.round_start, outcome.status, outcome.exception
                    )
                    if spec is not None
                    else planner.AttemptDecision(S.FAILED)
                )
                target = decision.status
            else:
                target = S.WAITING
        fields: dict[str, Any] = {"heartbeat_at": None}
        if target == S.WAITING:
            fields.update(
                waiting_for=waiting_for,
                progress_current=0,
                progress_total=len(waiting_for),
                progress_message=f"waiting for {len(waiting_for)} child run(s)",
            )
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
        attempt_fields = {
            "status": AttemptStatus.WAITING.value if target == S.WAITING else outcome.status.value,
            "finished_at": None if target == S.WAITING else now,
            "error": outcome.error,
            "traceback": outcome.traceback,
        }
        settled = target in states.STEP_DONE or (
            spec is not None and spec.optional and target in states.STEP_FAILED
        )
        read = None
        if settled and spec is not None and run.status == RunStatus.RUNNING:
            read = frontier_names(workflow_of(run), step.name)
        try:
            rows = _end_attempt(
                step,
                target,
                attempt,
                attempt_fields,
                read=read,
                outputs=chain_queue is not None,
                **fields,
            )
        except StaleUpdate:
            log.info("outcome of %s attempt %s ignored: no longer running", step, attempt)
            transaction.set_rollback(True)
            return None
        if target != S.RETRYING:
            slot_freed(step.queue)
        kind = {
            S.WAITING: "step_waiting",
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
        if target == S.WAITING:
            message = "waiting for child runs " + ", ".join(f"#{pk}" for pk in waiting_for)
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
        if target == S.RETRYING:
            return Recorded(target)
        if target == S.WAITING:
            # Children reused from an earlier attempt may all have ended already.
            step_pk = step.pk
            transaction.on_commit(lambda: _notify_parent(step_pk))
            return Recorded(target)
        chained = advance_run(
            run,
            actor=worker,
            changed=step.name if settled else None,
            chain_queue=chain_queue,
            frontier_rows=rows,
        )
        if chained is None:
            return Recorded(target)
        return Recorded(target, start_chained(run, chained, worker))
