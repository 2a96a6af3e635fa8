"""stepflow's RQ workers: close DB connections before forking, and run the
reaper/reconciler in the background so no extra process is needed."""

from __future__ import annotations

import logging
import os
import threading

from django.db import close_old_connections, connections
from rq import SimpleWorker, Worker

from . import engine

log = logging.getLogger("stepflow.worker")

#: Redis key that lets one worker at a time run recovery.
RECOVERY_LOCK = "stepflow:recovery-lock"


class StepflowWorker(Worker):
    """The forking worker: every job in a fresh child, DB connections closed before the fork."""

    def fork_work_horse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        connections.close_all()
        return super().fork_work_horse(*args, **kwargs)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):  # type: ignore[no-untyped-def]
        """The job process died (killed, out of memory, os._exit): its attempt is
        lost now, and the step's retry policy decides what comes next."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        from .recovery import lose_attempts_of

        try:
            lose_attempts_of(self.name, describe_exit(ret_val))
        except Exception:
            log.exception("could not record the lost attempt; the reaper will")
        finally:
            connections.close_all()


class StepflowSimpleWorker(SimpleWorker):
    """Runs jobs in the worker process itself (faster; a crash takes the worker with it)."""

    def execute_job(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        close_old_connections()
        try:
            return super().execute_job(*args, **kwargs)
        finally:
            close_old_connections()


def describe_exit(wait_status: int | None) -> str:
    """Say how a job process ended, from its raw wait status."""
    import signal

    try:
        code = os.waitstatus_to_exitcode(wait_status or 0)
    except ValueError:
        return f"its job process ended (wait status {wait_status})"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its job process was killed by {name}"
    return f"its job process exited with status {code}"


class RecoveryThread(threading.Thread):
    """Every REAPER_INTERVAL seconds, one worker (by a Redis lock) reaps lost
    attempts and re-enqueues lost jobs."""

    def __init__(self, redis, interval: float | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(name="stepflow-recovery", daemon=True)
        self.redis = redis
        self.interval = interval or engine.engine_setting("REAPER_INTERVAL")
        self.stopping = threading.Event()

    def run(self) -> None:
        from .recovery import recover

        while not self.stopping.wait(self.interval):
            try:
                if self.redis.set(RECOVERY_LOCK, "1", nx=True, px=int(self.interval * 900)):
                    report = recover()
                    if report:
                        log.warning("recovery: %s", report)
            except Exception:
                log.exception("recovery pass failed; will try again")
                close_old_connections()
                try:
                    connections.close_all()
                except Exception:
                    pass
        connections.close_all()


class SchedulerThread(threading.Thread):
    """Starts the runs of due schedules (``runs.schedules.fire_due``). Every worker runs
    one: the schedules' idempotency keys and guarded updates make it one run per tick.

    It wakes at the next due tick, but at least every ``max_wait`` seconds (to see new and
    edited schedules) and at most every ``min_wait`` seconds."""

    def __init__(self, min_wait: float = 0.5, max_wait: float = 5.0) -> None:
        super().__init__(name="stepflow-scheduler", daemon=True)
        self.min_wait = min_wait
        self.max_wait = max_wait
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.utils import timezone

        from .schedules import fire_due, next_due

        while not self.stopping.is_set():
            wait = self.max_wait
            try:
                for run in fire_due():
                    log.info("%s started run #%s for %s", run.origin, run.pk, run.scheduled_for)
                due = next_due()
                if due is not None:
                    wait = (due - timezone.now()).total_seconds()
            except Exception:
                log.exception("scheduler pass failed; will try again")
                try:
                    connections.close_all()
                except Exception:
                    pass
            self.stopping.wait(min(self.max_wait, max(self.min_wait, wait)))
        connections.close_all()
