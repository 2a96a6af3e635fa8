"""Workflows and jobs used by the benchmarks (imported by the benchmark workers too)."""

from __future__ import annotations

from django.db import connection

from stepflow import Retry, StepContext, Workflow, register, step


def noop() -> None:
    """A bare RQ job that does nothing."""


def one_update(i: int) -> None:
    """A bare RQ job that does one UPDATE and commit over the worker's kept connection."""
    with connection.cursor() as cur:
        cur.execute("UPDATE bench_counter SET n = n + 1 WHERE id = 1")


def _noop(ctx: object) -> None:
    return None


def linear(n: int) -> Workflow:
    steps = []
    for i in range(n):
        deps = [f"s{i - 1}"] if i else []
        steps.append(step(f"s{i}", depends_on=deps, queue="bench")(_noop))
    return Workflow(f"bench_linear_{n}", steps)


def fan(n: int) -> Workflow:
    steps = [step("start", queue="bench")(_noop)]
    steps += [step(f"f{i}", depends_on="start", queue="bench")(_noop) for i in range(n)]
    steps.append(step("join", depends_on=[f"f{i}" for i in range(n)], queue="bench")(_noop))
    return Workflow(f"bench_fan_{n}", steps)


register(linear(500), fan(100), replace=True)


# -- bench/recovery.py: one long step, retried at once after a lost worker ----------------
def _long(ctx: StepContext) -> None:
    """Sleeps ~60 s in short ticks (stops within half a second of a cancel)."""
    import time

    for i in range(600):
        ctx.progress(i, 600)
        time.sleep(0.1)


register(
    Workflow(
        "bench_recovery",
        [step("long", queue="bench_recovery", retry=Retry(max_attempts=30, backoff_base=0))(_long)],
    ),
    replace=True,
)
