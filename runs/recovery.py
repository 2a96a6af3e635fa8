"""Recovery: the reaper (dead workers), the reconciler (lost queue jobs, unfinished runs)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from stepflow import states
from stepflow.execution import AttemptOutcome
from stepflow.states import AttemptStatus, RunStatus, StepStatus

from . import engine, events, queue
from .models import Run, RunEvent, StepRun

log = logging.getLogger("stepflow.recovery")

#: A queued step whose job is missing is re-enqueued only after this many
#: seconds, so a job about to be enqueued by a committing transaction is not doubled.
ENQUEUE_GRACE = 5.0


@dataclass
class Report:
    reaped: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{len(self.reaped)} lost attempt(s) reaped, {len(self.requeued)} step(s) re-enqueued, "
            f"{len(self.finalized)} run(s) advanced, "
            f"{len(self.stopped)} cancelled step(s) stopped, "
            f"{len(self.timed_out)} run(s) timed out, {len(self.settled)} waiting step(s) settled, "
            f"{len(self.dispatched)} waiting step(s) given a queue slot"
        )

    def __bool__(self) -> bool:
        return any(
            (
                self.reaped,
                self.requeued,
                self.finalized,
                self.stopped,
                self.timed_out,
                self.settled,
                self.dispatched,
            )
        )


def lose_attempts_of(worker: str, reason: str) -> list[str]:
    """The attempts a worker was running when its job process died: failed
    ("worker lost"), at once, without waiting for the heartbeat to go stale."""
    lost = []
    for step in StepRun.objects.filter(status=StepStatus.RUNNING, worker=worker):
        outcome = AttemptOutcome(
            AttemptStatus.WORKER_LOST, error=f"worker lost: {worker}: {reason}"
        )
        recorded = engine.record_outcome(step.pk, step.attempts, outcome, worker, step=step)
        if recorded is not None:
            lost.append(f"{step.name} of run #{step.run_id} -> {recorded.status}")
            log.warning("%s attempt %s lost (%s): %s", step, step.attempts, reason, recorded.status)
    return lost


def reap(timeout: float | None = None) -> list[str]:
    """Running steps whose heartbeat is stale: their attempt failed ("worker lost")."""
    timeout = timeout if timeout is not None else engine.engine_setting("HEARTBEAT_TIMEOUT")
    cutoff = timezone.now() - timedelta(seconds=timeout)
    reaped = []
    for step in StepRun.objects.filter(status=StepStatus.RUNNING, heartbeat_at__lt=cutoff):
        outcome = AttemptOutcome(
            AttemptStatus.WORKER_LOST,
            error=f"worker lost: {step.worker or 'unknown worker'} stopped beating its heartbeat",
        )
        # record_outcome re-checks under the lock that this attempt is still the running one.
        recorded = engine.record_outcome(
            step.pk, step.attempts, outcome, "stepflow-reaper", step=step
        )
        if recorded is not None:
            reaped.append(f"{step.name} of run #{step.run_id} -> {recorded.status}")
            log.warning("reaped %s attempt %s: %s", step, step.attempts, recorded.status)
    return reaped


#: A retry whose time passed this many seconds ago is enqueued by the
#: reconciler itself (RQ's scheduler can be held up, e.g. by a lock a killed
#: worker left behind).
RETRY_LATENESS = 2.0


def _job_status(jid: str) -> str | None:
    from rq.job import Job, NoSuchJobError

    try:
        status = Job.fetch(jid, connection=queue.connection()).get_status()
    except NoSuchJobError:
        return None
    return str(getattr(status, "value", status))


def _delivery_lost(step: StepRun, jid: str, now: datetime) -> bool:
    """Whether the queue no longer holds a live delivery of this queued or
    retrying step's next attempt: the job is gone (Redis flushed), ended
    without starting the attempt (its process was killed before the attempt
    began), was taken by a worker that died before starting it, or is marked
    queued but is on no queue; or a retry is overdue (RQ's scheduler is held up)."""
    from rq.job import Job

    status = _job_status(jid)
    if status is None or status in ("failed", "stopped", "canceled", "finished"):
        return True
    if status == "scheduled":
        return (
            step.status == StepStatus.RETRYING
            and step.retry_at is not None
            and (now - step.retry_at).total_seconds() > RETRY_LATENESS
        )
    if status == "started":
        job = Job.fetch(jid, connection=queue.connection())
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        # Starting an attempt takes milliseconds: a job "started" this long ago
        # whose attempt never began belongs to a dead worker.
        limit = engine.engine_setting("HEARTBEAT_TIMEOUT")
        return started is None or (now - started).total_seconds() > limit
    if status == "queued":
        return queue.connection().lpos(queue.get_queue(step.queue).key, jid) is None
    return False


def reconcile() -> tuple[list[str], list[int]]:
    """Re-enqueue queued/retrying steps whose job is gone from Redis (or whose
    retry is overdue), and advance active runs that have nothing active left."""
    now = timezone.now()
    requeued = []
    for step in StepRun.objects.filter(
        status__in=[StepStatus.QUEUED, StepStatus.RETRYING],
        run__status__in=[RunStatus.RUNNING, RunStatus.CANCELLING],
    ).select_related("run"):
        attempt = step.attempts + 1
        jid = queue.job_id(step.pk, attempt)
        if step.enqueued_at and (now - step.enqueued_at).total_seconds() < ENQUEUE_GRACE:
            continue
        if not _delivery_lost(step, jid, now):
            continue
        status = _job_status(jid)
        delay = 0.0
        if step.status == StepStatus.RETRYING and step.retry_at and step.retry_at > now:
            delay = (step.retry_at - now).total_seconds()
        try:
            spec = engine.workflow_of(step.run).steps.get(step.name)
        except Exception:
            spec = None
        q = queue.get_queue(step.queue)
        if status == "scheduled":
            q.scheduled_job_registry.remove(jid)
        queue.enqueue_step(step.pk, attempt, step.queue, spec.timeout if spec else None, delay)
        StepRun.objects.filter(pk=step.pk).update(enqueued_at=now)
        requeued.append(f"{step.name} of run #{step.run_id}")
        why = "its retry was overdue" if status == "scheduled" else f"its job was lost ({status})"
        log.warning("re-enqueued %s attempt %s (%s)", step, attempt, why)
    finalized = []
    active = list(states.STEP_ACTIVE)
    for run_id in (
        Run.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.PENDING])
        .exclude(steps__status__in=active)
        .exclude(steps__waiting_since__isnull=False)  # waiting for a queue slot
        .values_list("pk", flat=True)
    ):
        with transaction.atomic():
            run = engine.lock_run(run_id)
            if run.status not in (RunStatus.RUNNING, RunStatus.CANCELLING):
                continue
            if run.steps.filter(status__in=active).exists():
                continue
            engine.advance_run(run, actor="stepflow-reconciler")
            finalized.append(run_id)
    return requeued, finalized


def enforce_cancels(grace: float | None = None) -> list[str]:
    """Steps still running in a run cancelled more than the grace period ago:
    ask the queue to stop their job (which kills a forked job process; the
    reaper then records the attempt)."""
    from rq.command import send_stop_job_command

    grace = grace if grace is not None else engine.engine_setting("CANCEL_GRACE")
    cutoff = timezone.now() - timedelta(seconds=grace)
    stopped = []
    for step in StepRun.objects.filter(
        status=StepStatus.RUNNING,
        run__status=RunStatus.CANCELLING,
        run__cancel_requested_at__lt=cutoff,
    ):
        already = RunEvent.objects.filter(
            run_id=step.run_id,
            kind="stop_requested",
            step=step.name,
            data__attempt=step.attempts,
        ).exists()
        if already:
            continue
        try:
            send_stop_job_command(queue.connection(), step.job_id)
        except Exception as exc:  # the job may be gone already
            log.info("could not stop job %s: %s", step.job_id, exc)
        events.record(
            step.run_id,
            "stop_requested",
            f"{step.name} did not stop within {grace:g}s of the cancel; stopping it",
            step=step.name,
            actor="stepflow",
            attempt=step.attempts,
        )
        stopped.append(f"{step.name} of run #{step.run_id}")
    return stopped


def enforce_deadlines() -> list[int]:
    """Running runs past their workflow's deadline: stopped as on a cancel, ending timed_out."""
    stopped = []
    now = timezone.now()
    for run_id in Run.objects.filter(status=RunStatus.RUNNING, deadline__lte=now).values_list(
        "pk", flat=True
    ):
        with transaction.atomic(), events.batch():
            run = engine.lock_run(run_id)
            if run.status != RunStatus.RUNNING or not engine.past_deadline(run):
                continue
            try:
                wf = engine.workflow_of(run)
            except Exception:
                wf = None
            engine.stop_run(
                run,
                reason="timeout",
                actor="stepflow",
                message=engine.timeout_message(run, wf),
            )
            stopped.append(run_id)
    return stopped


def dispatch_waiting() -> list[int]:
    """Give free queue slots to waiting steps (a dispatch after commit was lost,
    or a limit was raised or removed)."""
    started = []
    queues = (
        StepRun.objects.filter(waiting_since__isnull=False)
        .values_list("queue", flat=True)
        .distinct()
    )
    for name in sorted(set(queues)):
        started += engine.dispatch_queue(name, actor="stepflow-reconciler")
    return started


def recover() -> Report:
    from .children import settle_all

    report = Report()
    report.timed_out = enforce_deadlines()
    report.stopped = enforce_cancels()
    report.reaped = reap()
    report.requeued, report.finalized = reconcile()
    report.settled = settle_all()
    report.dispatched = dispatch_waiting()
    return report
