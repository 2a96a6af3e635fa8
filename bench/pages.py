"""Server time of the dashboard pages on a large history (prints figures; not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/stepflow_bench \\
        .venv/bin/python bench/pages.py --runs 100000

Seeds N runs x 10 steps (once; ``--reseed`` starts over) in the database named by
DATABASE_URL, plus one run with 200 steps, then renders each page through the
test client and prints p50/p95 of the server time.
"""

from __future__ import annotations

import argparse
import gc
import html
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")  # no HTTPS redirect for the test client

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from runs.models import Run, RunEvent, StepAttempt, StepRun  # noqa: E402

STEPS = 10
WORKFLOWS = ["deploy", "dataset", "upload", "branches", "payment"]
STATUSES = ["completed"] * 7 + ["failed"] * 2 + ["cancelled"]
BIG_STEPS = 200


def seed_postgres(n: int) -> None:
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO runs_run (workflow, definition_hash, params, params_hash, status, progress,
                origin, created_at, started_at, finished_at, updated_at, attempt, error_summary,
                failed_step, note, stop_reason)
            SELECT (ARRAY['deploy','dataset','upload','branches','payment'])[1 + g %% 5], 'bench',
                jsonb_build_object('env', CASE WHEN g %% 2 = 0 THEN 'staging' ELSE 'production' END,
                                   'version', '1.' || (g %% 97) || '.' || (g %% 13)),
                md5(g::text),
                (ARRAY['completed','completed','completed','completed','completed','completed',
                       'completed','failed','failed','cancelled'])[1 + g %% 10],
                1.0, 'bench', now() - make_interval(secs => (%s - g) * 60),
                now() - make_interval(secs => (%s - g) * 60),
                now() - make_interval(secs => (%s - g) * 60 - 75), now(), 1,
                CASE WHEN g %% 10 IN (7, 8) THEN 's3 failed: RuntimeError: boom ' || g ELSE '' END,
                CASE WHEN g %% 10 IN (7, 8) THEN 's3' ELSE '' END, '', ''
            FROM generate_series(1, %s) AS g
            """,
            [n, n, n, n],
        )
        cur.execute(
            """
            INSERT INTO runs_steprun (run_id, name, position, status, queue, attempts, round_start,
                job_id, worker, progress_message, items_done, error, skip_reason, metrics,
                started_at, finished_at)
            SELECT r.id, 's' || s, s, 'completed', 'default', 1, 0, '', 'bench', '', 0, '', '',
                '{}'::jsonb, r.started_at, r.finished_at
            FROM runs_run r CROSS JOIN generate_series(0, %s) AS s
            WHERE r.definition_hash = 'bench'
            """,
            [STEPS - 1],
        )


def seed_orm(n: int) -> None:
    now = timezone.now()
    batch = 2000
    for start in range(0, n, batch):
        runs = [
            Run(
                workflow=WORKFLOWS[g % 5],
                definition_hash="bench",
                params_hash=str(g),
                params={"env": "staging" if g % 2 == 0 else "production", "version": f"1.{g % 97}"},
                status=STATUSES[g % 10],
                progress=1.0,
                origin="bench",
                started_at=now,
                finished_at=now,
            )
            for g in range(start, min(n, start + batch))
        ]
        Run.objects.bulk_create(runs)
        StepRun.objects.bulk_create(
            [
                StepRun(run=r, name=f"s{i}", position=i, status="completed")
                for r in runs
                for i in range(STEPS)
            ]
        )


def seed_big() -> Run:
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            workflow="deploy",
            definition_hash="bench-big",
            params_hash="big",
            status="running",
            progress=0.5,
            origin="bench",
            started_at=now,
        )
        steps = StepRun.objects.bulk_create(
            [
                StepRun(
                    run=run,
                    name=f"step-{i:03d}",
                    position=i,
                    status="completed",
                    attempts=2,
                    started_at=now,
                    finished_at=now,
                    error="",
                )
                for i in range(BIG_STEPS)
            ]
        )
        StepAttempt.objects.bulk_create(
            [
                StepAttempt(
                    step=s,
                    number=k,
                    status="failed" if k == 1 else "completed",
                    started_at=now,
                    finished_at=now,
                    error="E: first attempt" if k == 1 else "",
                )
                for s in steps
                for k in (1, 2)
            ]
        )
        RunEvent.objects.bulk_create(
            [
                RunEvent(run=run, kind="log", step=s.name, message=f"line {i}")
                for i, s in enumerate(steps)
            ]
        )
    return run


def measure(client: Client, url: str, reps: int, headers: dict[str, str] | None = None) -> str:
    times = []
    client.get(url, headers=headers or {})  # warm up
    for _ in range(reps):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers or {})
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code in (200, 204, 286), (url, response.status_code)
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return f"p50 {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    settings.DEBUG = False  # no query log growing during the measurements
    if args.reseed:
        Run.objects.filter(definition_hash__startswith="bench").delete()
    have = Run.objects.filter(definition_hash="bench").count()
    if have < args.runs:
        t0 = time.perf_counter()
        Run.objects.filter(definition_hash__startswith="bench").delete()
        if connection.vendor == "postgresql":
            seed_postgres(args.runs)
            with connection.cursor() as cur:
                cur.execute("ANALYZE runs_run; ANALYZE runs_steprun")
        else:
            seed_orm(args.runs)
        print(f"seeded {args.runs:,} runs x {STEPS} steps in {time.perf_counter() - t0:.1f} s")
    big = Run.objects.filter(definition_hash="bench-big").first() or seed_big()
    user, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True})
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    ids = list(
        Run.objects.filter(definition_hash="bench").order_by("pk").values_list("pk", flat=True)[:1]
    )
    deep = ids[0] + 1000 if ids else 1000
    total = Run.objects.count()
    print(f"{total:,} runs in {connection.vendor}; {args.reps} repetitions each")
    # The URL the run page's head polls (with the token of the version it shows); the same
    # with an older token where step 5 was running (its row comes again); and where step 5
    # has finished since (a step event: the timeline and the graph are drawn again too).
    event = RunEvent.objects.filter(run=big, kind="step_completed").order_by("-pk").first()
    if event is None:
        event = RunEvent.objects.create(run=big, kind="step_completed", step="step-005")
    page = client.get(f"/runs/{big.pk}/").content.decode()
    poll = html.unescape(re.search(r'id="run-head"[^>]* hx-get="([^"]+)"', page).group(1))
    key, last, _digest, _moving = poll.split("v=", 1)[1].split(".")
    moved = f"/runs/{big.pk}/live/?v={key}.{last}.old.5"
    finished = f"/runs/{big.pk}/live/?v={key}.{event.pk - 1}.old.5"
    cases = [
        ("history, first page", "/", None),
        ("history, deep page (?before=)", f"/?before={deep}", None),
        ("history, status + workflow", "/?status=failed&workflow=upload", None),
        ("history, search a param value", "/?q=1.42.5", None),
        ("history, search a run id", f"/?q={deep}", None),
        (f"run detail, {BIG_STEPS} steps", f"/runs/{big.pk}/", None),
        ("run detail, poll, nothing changed", poll, {"HX-Request": "true"}),
        ("run detail, poll, a step moved", moved, {"HX-Request": "true"}),
        ("run detail, poll, a step finished", finished, {"HX-Request": "true"}),
        (
            "run detail, whole live region",
            f"/runs/{big.pk}/",
            {"HX-Request": "true", "HX-Target": "run-live"},
        ),
        (
            "history row, polling fragment",
            f"/?row={big.pk}",
            {"HX-Request": "true", "HX-Target": f"run-{big.pk}"},
        ),
        ("workflows", "/workflows/", None),
    ]
    for label, url, headers in cases:
        # Start each case from a collected heap: a full collection of the garbage the
        # earlier cases left (~50 ms here) otherwise lands in whichever case comes next.
        gc.collect()
        print(f"{label:<34} {measure(client, url, args.reps, headers)}")


if __name__ == "__main__":
    main()
