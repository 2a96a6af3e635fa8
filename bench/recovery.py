"""How long a step is down when its worker dies, with the default recovery settings.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/stepflow_recovery_bench \\
    REDIS_URL=redis://127.0.0.1:6379/7 .venv/bin/python -m bench.recovery \\
    [--kills 20] [--horse-kills 10]

Two forking workers (``manage.py stepflow worker bench_recovery``, each with its
recovery thread) run a one-step workflow whose step sleeps ~60 s, with
``Retry(max_attempts=30, backoff_base=0)``. Then, ``--kills`` times: start a
run, wait until the step is running, SIGKILL the worker that runs it together
with its job process (a crash of the machine or an OOM kill of the whole
worker) at a random moment 0.5-6.5 s into the step, start a replacement, and
measure from the kill to the start of the step's next attempt
(``StepAttempt.started_at`` of attempt 2) on the other worker; then cancel the
run. The lost worker is only noticed by its stale heartbeat, so this is
about ``HEARTBEAT_TIMEOUT`` plus up to ``REAPER_INTERVAL`` (the defaults: beat
every 3 s, stale after 15 s, reaper every 5 s; none of the STEPFLOW_HEARTBEAT_*
/ STEPFLOW_REAPER_INTERVAL variables are passed on).

Then ``--horse-kills`` times the same with only the job process killed: the
worker sees its child die (``StepflowWorker.handle_work_horse_killed``) and
records the attempt as lost at once, without waiting for the heartbeat.

The database is migrated and written to; the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench_recovery"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("STEPFLOW_WORKFLOW_MODULES", "bench.flows")
os.environ["STEPFLOW_QUEUES"] = ",".join(
    dict.fromkeys([*os.environ.get("STEPFLOW_QUEUES", "default,heavy").split(","), QUEUE])
)
#: Left out of the workers' environment: the point is the default settings.
RECOVERY_VARS = (
    "STEPFLOW_HEARTBEAT_INTERVAL",
    "STEPFLOW_HEARTBEAT_TIMEOUT",
    "STEPFLOW_REAPER_INTERVAL",
    "STEPFLOW_CANCEL_GRACE",
)
for var in RECOVERY_VARS:
    os.environ.pop(var, None)

LOG_DIR = Path(tempfile.mkdtemp(prefix="stepflow-recovery-bench-"))


def setup() -> None:
    import django

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database (it is migrated and written to).")
    if not os.environ.get("REDIS_URL"):
        sys.exit("Set REDIS_URL to a Redis database number of its own (it is flushed).")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from runs.queue import connection

    connection().flushdb()


class Worker:
    """One ``stepflow worker`` process in a session of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.log = LOG_DIR / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "stepflow", "worker", QUEUE, "--name", name],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def family(self) -> list:  # type: ignore[type-arg]
        import psutil

        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def job_process(self):  # type: ignore[no-untyped-def]
        """The forked job process (RQ puts it in a process group of its own)."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                if os.getpgid(child.pid) == child.pid:
                    return child
            except ProcessLookupError:
                continue
        return None

    def kill(self) -> float:
        """SIGKILL the worker and everything it forked; the time of the kill."""
        import psutil

        family = self.family()
        at = time.time()
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)
        return at

    def stop(self) -> None:
        import psutil

        if self.proc.poll() is None:
            family = self.family()
            for p in family:
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(family, timeout=10)
            for p in alive:
                p.kill()
        self.proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


def wait_workers(n: int) -> None:
    from rq import Worker as RqWorker

    from runs.queue import get_queue

    q = get_queue(QUEUE)
    wait_for(lambda: RqWorker.count(queue=q) >= n, 60, f"{n} workers", 0.2)


def running_step(run_id: int, attempt: int):  # type: ignore[no-untyped-def]
    from runs.models import StepRun

    s = StepRun.objects.filter(run_id=run_id).first()
    if s is not None and s.status == "running" and s.attempts == attempt:
        return s
    return None


def next_attempt(step_id: int, number: int):  # type: ignore[no-untyped-def]
    from runs.models import StepAttempt

    return StepAttempt.objects.filter(step_id=step_id, number=number).first()


def finish(run_id: int) -> None:
    from runs import services
    from runs.models import Run

    services.cancel_run(run_id, origin="bench")
    wait_for(
        lambda: Run.objects.get(pk=run_id).status in ("cancelled", "completed", "failed"),
        60,
        f"run #{run_id} to stop",
        0.1,
    )


def one_kill(
    workers: dict[str, Worker], horse_only: bool, rng: random.Random
) -> tuple[float, float, str]:
    """Kill what runs a fresh run's step; (seconds to detection, seconds to the
    next attempt's start, where it ran)."""
    from runs import services
    from runs.models import StepAttempt

    run = services.start_run("bench_recovery", {}, origin="bench")
    step = wait_for(lambda: running_step(run.pk, 1), 60, f"run #{run.pk} to run")
    # Somewhere inside the step, at a random point of the heartbeat and reaper cycles.
    time.sleep(rng.uniform(0.5, 6.5))
    victim = workers[step.worker]
    if horse_only:
        horse = wait_for(victim.job_process, 10, f"the job process of {victim.name}")
        killed_at = time.time()
        horse.kill()
    else:
        killed_at = victim.kill()
        del workers[victim.name]
        replacement = Worker(f"bench-rec-{time.monotonic_ns()}")
        workers[replacement.name] = replacement
    second = wait_for(lambda: next_attempt(step.pk, 2), 120, f"attempt 2 of run #{run.pk}")
    first = StepAttempt.objects.get(step_id=step.pk, number=1)
    detected = first.finished_at.timestamp() - killed_at
    restarted = second.started_at.timestamp() - killed_at
    finish(run.pk)
    return detected, restarted, f"{first.status}; attempt 2 on {second.worker}"


def report(title: str, rows: list[tuple[float, float, str]]) -> None:
    print(f"\n{title}")
    for i, (detected, restarted, what) in enumerate(rows, 1):
        print(
            f"  {i:2d}. attempt 1 lost after {detected:6.2f} s, attempt 2 started after "
            f"{restarted:6.2f} s ({what})"
        )
    times = [r for _, r, _ in rows]
    if not times:
        print("  (none)")
        return
    print(
        f"  kill -> step running again: median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s, min {min(times):.2f} s (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--horse-kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    setup()
    from django.conf import settings

    conf = settings.STEPFLOW
    print(
        f"settings: heartbeat every {conf['HEARTBEAT_INTERVAL']:g} s, stale after "
        f"{conf['HEARTBEAT_TIMEOUT']:g} s, reaper every {conf['REAPER_INTERVAL']:g} s; "
        f"2 forking workers; worker logs in {LOG_DIR}"
    )
    workers: dict[str, Worker] = {}
    for _ in range(2):
        w = Worker(f"bench-rec-{time.monotonic_ns()}")
        workers[w.name] = w
    try:
        wait_workers(2)
        whole = []
        for i in range(args.kills):
            whole.append(one_kill(workers, horse_only=False, rng=rng))
            _, r, what = whole[-1]
            print(f"  kill {i + 1}/{args.kills}: {r:.2f} s ({what})", flush=True)
            wait_workers(2)
        horse = []
        for i in range(args.horse_kills):
            horse.append(one_kill(workers, horse_only=True, rng=rng))
            _, r, what = horse[-1]
            print(f"  job-process kill {i + 1}/{args.horse_kills}: {r:.2f} s ({what})", flush=True)
        report(
            f"SIGKILL of the worker and its job process ({args.kills} kills): found by the "
            "stale heartbeat",
            whole,
        )
        report(
            f"SIGKILL of the job process only ({args.horse_kills} kills): the worker records "
            "the lost attempt at once (StepflowWorker.handle_work_horse_killed)",
            horse,
        )
    finally:
        for w in workers.values():
            w.stop()


if __name__ == "__main__":
    main()
