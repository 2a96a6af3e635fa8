"""The RQ jobs. Each carries ids only; the database says what to do."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from stepflow.errors import Cancelled, StepTimeout
from stepflow.execution import AttemptOutcome, run_attempt
from stepflow.states import AttemptStatus, RunStatus, StepStatus
from stepflow.step import StepResult

from . import engine, events, queue
from .models import Run, StepRun
from .store import DbStepStore

log = logging.getLogger("stepflow.jobs")


def worker_name() -> str:
    job = get_current_job()
    name = getattr(job, "worker_name", None) if job is not None else None
    return str(name or f"{socket.gethostname()}.{os.getpid()}")


def with_db_retry[T](func: Callable[[], T], what: str, attempts: int = 30, wait: float = 2.0) -> T:
    """Run a database transaction again when the connection dropped (a
    PostgreSQL restart). Safe for the guarded updates here: a retry either
    applies once or finds the change already made."""
    for n in range(1, attempts + 1):
        try:
            return func()
        except (OperationalError, InterfaceError) as exc:
            if n == attempts:
                raise
            log.warning("database unavailable during %s (%s); retrying in %.0fs", what, exc, wait)
            close_old_connections()
            try:
                connection.close()
            except Exception:
                pass
            time.sleep(wait)
    raise AssertionError("unreachable")


class Heartbeat:
    """Beats the step's heartbeat from a background thread, whatever the step code
    is doing.

    When the attempt stops being wanted (the run is cancelled, or the attempt
    was reaped) and the step has not stopped by itself within the grace
    period, it raises Cancelled in the step's thread.

    One beating thread per process serves every attempt in it (a worker runs
    many short steps: no thread is started and joined for each).
    """

    def __init__(self, step_run_id: int, attempt: int, interval: float, grace: float) -> None:
        self.step_run_id = step_run_id
        self.attempt = attempt
        self.interval = interval
        self.grace = grace
        self._target = threading.get_ident()
        self._unwanted_since: float | None = None
        self._interrupted = False
        self._lock = threading.Lock()
        self._active = False

    def __enter__(self) -> Heartbeat:
        self._active = True
        _Beater.get(self.interval).add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # never interrupt a step that is already over
            self._active = False
        _Beater.get(self.interval).discard(self)

    def beat(self) -> None:
        wanted = StepRun.objects.filter(
            pk=self.step_run_id,
            status=StepStatus.RUNNING,
            attempts=self.attempt,
            run__status=RunStatus.RUNNING,
        ).update(heartbeat_at=timezone.now())
        if not wanted:
            # Keep beating while the run is cancelling: the step is still alive.
            StepRun.objects.filter(
                pk=self.step_run_id, status=StepStatus.RUNNING, attempts=self.attempt
            ).update(heartbeat_at=timezone.now())
            self._maybe_interrupt()

    def _maybe_interrupt(self) -> None:
        now = time.monotonic()
        if self._unwanted_since is None:
            self._unwanted_since = now
        elif not self._interrupted and now - self._unwanted_since >= self.grace:
            with self._lock:
                if not self._active:
                    return
                self._interrupted = True
                log.warning("step run %s ignored the cancel; interrupting it", self.step_run_id)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(Cancelled)
                )


class _Beater(threading.Thread):
    """The process's heartbeat thread: every interval, beats each attempt running here."""

    _instance: _Beater | None = None
    _pid = 0
    _create = threading.Lock()

    @classmethod
    def get(cls, interval: float) -> _Beater:
        with cls._create:
            if cls._instance is None or cls._pid != os.getpid() or not cls._instance.is_alive():
                cls._instance = cls(interval)
                cls._pid = os.getpid()
                cls._instance.start()
            return cls._instance

    def __init__(self, interval: float) -> None:
        super().__init__(name="stepflow-heartbeat", daemon=True)
        self.interval = interval
        self.beating: dict[int, Heartbeat] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def add(self, hb: Heartbeat) -> None:
        with self.lock:
            self.beating[id(hb)] = hb

    def discard(self, hb: Heartbeat) -> None:
        with self.lock:
            self.beating.pop(id(hb), None)

    def run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            with self.lock:
                current = list(self.beating.values())
            for hb in current:
                if not hb._active:
                    continue
                try:
                    hb.beat()
                except (OperationalError, InterfaceError):
                    close_old_connections()
                    try:
                        connection.close()
                    except Exception:
                        pass
                except Exception:
                    log.exception("heartbeat of step run %s failed", hb.step_run_id)


def execute_step(step_run_id: int, attempt: int) -> str:
    """Run one attempt of a step (a duplicate or late delivery does nothing).

    When the step's completion makes exactly one step ready on the same
    queue, this worker runs that one too, recorded exactly as if it had been
    dequeued, up to CHAIN_LIMIT steps per job so queues stay fair.
    """
    worker = worker_name()
    job = get_current_job()
    jid = job.id if job is not None else queue.job_id(step_run_id, attempt)
    started = with_db_retry(
        lambda: engine.begin_attempt(step_run_id, attempt, worker, jid), "starting a step"
    )
    done = []
    limit = engine.engine_setting("CHAIN_LIMIT")
    while started is not None:
        chain_queue = job.origin if job is not None and len(done) + 1 < limit else None
        recorded = _run_one(started, worker, chain_queue)
        done.append(f"{started.step.name}: {recorded.status if recorded else 'outcome ignored'}")
        started = recorded.chained if recorded is not None else None
    return "; ".join(done) or "ignored: not the current attempt"


def _run_one(
    started: engine.Started, worker: str, chain_queue: str | None
) -> engine.Recorded | None:
    run, step_run, attempt = started.run, started.step, started.attempt.number
    try:
        wf = engine.workflow_of(run)
        spec = wf[step_run.name]
    except Exception as exc:
        outcome = AttemptOutcome(
            AttemptStatus.FAILED, error=f"{type(exc).__name__}: {exc} (in worker {worker})"
        )
    else:
        store = DbStepStore(step_run, attempt, worker)
        ctx = engine.build_context(run, step_run, wf, attempt, store, deps=started.inputs)
        with Heartbeat(
            step_run.pk,
            attempt,
            engine.engine_setting("HEARTBEAT_INTERVAL"),
            engine.engine_setting("CANCEL_GRACE"),
        ):
            outcome = run_attempt(spec, ctx, timeout_errors=(StepTimeout, JobTimeoutException))
    return with_db_retry(
        lambda: engine.record_outcome(
            step_run.pk, attempt, outcome, worker, step=step_run, chain_queue=chain_queue
        ),
        "recording an outcome",
    )


def rollback_run(run_id: int, run_attempt: int) -> str:
    """Roll back the completed steps of a failed run, most recently completed first."""
    run = Run.objects.get(pk=run_id)
    if run.status != RunStatus.FAILED or run.attempt != run_attempt:
        return "ignored: the run moved on"
    wf = engine.workflow_of(run)
    worker = worker_name()
    done = list(
        run.steps.filter(status=StepStatus.COMPLETED, rolled_back_at__isnull=True).order_by(
            "finished_at", "position"
        )
    )
    by_name = {s.name: s for s in done}
    from stepflow import planner

    order = planner.rollback_order(wf, [s.name for s in done if s.name in wf.steps])
    rolled = []
    for name in order:
        run.refresh_from_db(fields=["status", "attempt"])
        if run.status != RunStatus.FAILED or run.attempt != run_attempt:
            break
        s = by_name[name]
        store = DbStepStore(s, s.attempts, worker)
        ctx = engine.build_context(run, s, wf, s.attempts, store)
        result = StepResult(data=s.output, rollback_data=s.rollback_data)
        try:
            wf.steps[name].rollback(ctx, result)
        except Exception as exc:
            events.record(
                run,
                "rollback_failed",
                f"{type(exc).__name__}: {exc}",
                step=name,
                actor=worker,
                level="error",
            )
            continue
        StepRun.objects.filter(pk=s.pk).update(rolled_back_at=timezone.now())
        events.record(run, "rolled_back", f"Rolled back {name}", step=name, actor=worker)
        rolled.append(name)
    return f"rolled back: {', '.join(rolled) or 'nothing'}"
