"""Per-step overhead of stepflow against bare RQ jobs, on the same worker class.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/stepflow_bench \\
    REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python -m bench.step_overhead [--forking]

Prints, for one worker class in one run: (1) 500 bare no-op jobs, (2) 500 bare
jobs doing one UPDATE + commit, (3) a 500-step linear workflow, (4) a 100-step
fan-out/fan-in on two workers; milliseconds per job/step and the ratios
(3)/(2) and (3)/(1). Times run from the first job's start to the last job's
end (worker start-up excluded).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("STEPFLOW_WORKFLOW_MODULES", "bench.flows")
os.environ.setdefault("STEPFLOW_QUEUES", "default,heavy,bench")


def setup() -> None:
    import django

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database (it is migrated and written to).")
    if not os.environ.get("REDIS_URL"):
        sys.exit("Set REDIS_URL to a Redis database number of its own (it is flushed).")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_counter (id int primary key, n bigint)")
        cur.execute("INSERT INTO bench_counter VALUES (1, 0) ON CONFLICT DO NOTHING")


def worker(simple: bool, burst: bool, name: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "manage.py",
        "stepflow",
        "worker",
        "bench",
        "--name",
        name,
        "--no-recovery",
    ]
    if simple:
        cmd.append("--simple")
    if burst:
        cmd.append("--burst")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bare_jobs(func: str, n: int, simple: bool) -> float:
    """Seconds per job for n jobs of ``func`` on one burst worker."""
    from rq.job import Job

    from runs.queue import get_queue

    q = get_queue("bench")
    q.connection.flushdb()
    jobs = [
        q.enqueue(func, i, result_ttl=600)
        if "one_update" in func
        else q.enqueue(func, result_ttl=600)
        for i in range(n)
    ]
    worker(simple, True, f"bench-{time.monotonic_ns()}").wait()
    fetched = Job.fetch_many([j.id for j in jobs], connection=q.connection)
    starts = [j.started_at for j in fetched if j and j.started_at]
    ends = [j.ended_at for j in fetched if j and j.ended_at]
    assert len(ends) == n, f"only {len(ends)} of {n} jobs finished"
    return (max(ends) - min(starts)).total_seconds() / n


def workflow_run(name: str, workers: int, simple: bool) -> tuple[float, int]:
    """Seconds per step for one run of workflow ``name``; also the step count."""
    from runs import services
    from runs.models import Run
    from runs.queue import get_queue

    get_queue("bench").connection.flushdb()
    procs = [worker(simple, False, f"bench-{i}-{time.monotonic_ns()}") for i in range(workers)]
    try:
        time.sleep(3)  # let the workers start
        run = services.start_run(name, {}, origin="bench")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = Run.objects.get(pk=run.pk)
            if run.status in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert run.status == "completed", f"run #{run.pk} ended {run.status}"
        steps = run.steps.count()
        first = run.steps.order_by("started_at").values_list("started_at", flat=True)[0]
        last = run.steps.order_by("-finished_at").values_list("finished_at", flat=True)[0]
        return (last - first).total_seconds() / steps, steps
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forking", action="store_true", help="use the forking Worker")
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    setup()
    simple = not args.forking
    kind = "SimpleWorker" if simple else "forking Worker"
    n = args.n
    t1 = bare_jobs("bench.flows.noop", n, simple)
    t2 = bare_jobs("bench.flows.one_update", n, simple)
    t3, s3 = workflow_run("bench_linear_500", 1, simple)
    t4, s4 = workflow_run("bench_fan_100", 2, simple)
    print(f"worker class: {kind}")
    print(f"(1) {n} bare no-op jobs:              {t1 * 1000:7.2f} ms/job")
    print(f"(2) {n} bare jobs, 1 UPDATE+commit:    {t2 * 1000:7.2f} ms/job")
    print(f"(3) {s3}-step linear workflow:        {t3 * 1000:7.2f} ms/step")
    print(f"(4) {s4}-step fan-out/fan-in, 2 workers: {t4 * 1000:7.2f} ms/step")
    print(f"(3)/(2) = {t3 / t2:.2f}   (3)/(1) = {t3 / t1:.2f}")


if __name__ == "__main__":
    main()
