"""Putting step attempts on RQ queues. Jobs carry only ids."""

from __future__ import annotations

import logging
from datetime import timedelta

import django_rq
from django.conf import settings
from redis import Redis
from rq import Queue

log = logging.getLogger("stepflow.queue")

#: Extra seconds RQ allows past a step's own timeout before it kills the job.
TIMEOUT_MARGIN = 30


def connection() -> Redis:
    return django_rq.get_connection("default")


def get_queue(name: str) -> Queue:
    """The RQ queue for a step's queue name (any name works; listed ones use their settings)."""
    if name in settings.RQ_QUEUES:
        return django_rq.get_queue(name)
    return Queue(name, connection=connection(), default_timeout=-1)


def job_id(step_run_id: int, attempt: int) -> str:
    return f"stepflow-step-{step_run_id}-{attempt}"


def enqueue_step(
    step_run_id: int, attempt: int, queue: str, timeout: float | None, delay: float = 0.0
) -> str:
    """Enqueue attempt ``attempt`` of a step run now or after ``delay`` seconds."""
    q = get_queue(queue)
    jid = job_id(step_run_id, attempt)
    options = {
        "job_id": jid,
        "job_timeout": int(timeout + TIMEOUT_MARGIN) if timeout else -1,
        "result_ttl": 600,
        "failure_ttl": 24 * 3600,
        "description": f"stepflow step {step_run_id} attempt {attempt}",
    }
    if delay > 0:
        q.enqueue_in(
            timedelta(seconds=delay), "runs.jobs.execute_step", step_run_id, attempt, **options
        )
    else:
        q.enqueue("runs.jobs.execute_step", step_run_id, attempt, **options)
    return jid


def enqueue_call(func: str, *args: object, queue: str = "default", delay: float = 0.0) -> None:
    """Enqueue one of stepflow's housekeeping jobs (rollback, cancel enforcement)."""
    q = get_queue(queue)
    if delay > 0:
        q.enqueue_in(timedelta(seconds=delay), func, *args, job_timeout=-1, result_ttl=600)
    else:
        q.enqueue(func, *args, job_timeout=-1, result_ttl=600)
