"""Item checkpoints at scale against one PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/stepflow_bench \\
    REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python -m bench.items [--naive 100000]

(1) the naive baseline: one INSERT + commit per item; (2) stepflow marking
1,000,000 items through ctx.items(); (3) resume of a 5,000,000-item step with
2,500,000 done (the first half, and every other item): time to the first
remaining item, total time skipping, peak extra memory; (4) bytes of storage
per marked item.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only")


def setup() -> None:
    import django

    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database (it is migrated and written to).")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def new_step() -> object:
    from runs.models import Run, StepRun

    run = Run.objects.create(
        workflow="bench", definition_hash="-", params_hash="-", status="running"
    )
    return StepRun.objects.create(run=run, name="items", status="running", attempts=1)


def naive(n: int) -> float:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_naive (step int, key bigint)")
        cur.execute("TRUNCATE bench_naive")
        start = time.perf_counter()
        for i in range(n):
            cur.execute(
                "INSERT INTO bench_naive VALUES (1, %s)", [i]
            )  # autocommit: one commit each
        return n / (time.perf_counter() - start)


def context_for(step: object, batch: int) -> object:
    from runs.store import DbStepStore
    from stepflow.context import ContextSettings, StepContext

    store = DbStepStore(step, 1, "bench")  # type: ignore[arg-type]
    return StepContext(
        step_name="items",
        run_id=0,
        attempt=1,
        params={},
        inputs={},
        store=store,
        settings=ContextSettings(item_batch_size=batch, item_flush_seconds=2.0),
    )


def mark(n: int, batch: int) -> float:
    step = new_step()
    ctx = context_for(step, batch)
    start = time.perf_counter()
    count = 0
    for _ in ctx.items(range(n)):  # type: ignore[attr-defined]
        count += 1
    ctx.finish(success=True)  # type: ignore[attr-defined]
    assert count == n
    return n / (time.perf_counter() - start)


def resume(total: int, done_keys: range, batch: int) -> tuple[float, float, float, int]:
    """Time to the first remaining item, time of the whole pass, peak traced memory."""
    from runs.store import mark_items

    step = new_step()
    for lo in range(0, len(done_keys), 500_000):
        mark_items(step.pk, list(done_keys[lo : lo + 500_000]))  # type: ignore[attr-defined]

    # Marks of the remaining items are not written: this measures loading what
    # is done and skipping it, not the marking measured in (2).
    def one_pass(trace: bool) -> tuple[float, float, float, int]:
        ctx = context_for(step, batch)
        ctx._store.mark_items = lambda keys, done=None: None  # type: ignore[attr-defined]
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        it = ctx.items(range(total))  # type: ignore[attr-defined]
        remaining = 1 if next(it, None) is not None else 0
        t_first = time.perf_counter() - start
        for _ in it:
            remaining += 1
        t_all = time.perf_counter() - start
        peak = 0
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        return t_first, t_all, peak / 2**20, remaining

    t_first, t_all, _, remaining = one_pass(trace=False)
    _, _, peak, _ = one_pass(trace=True)
    assert remaining == total - len(done_keys), remaining
    return t_first, t_all, peak, remaining


def storage_per_item(n: int) -> tuple[float, float]:
    from django.db import connection

    from runs.models import ItemChunk, ItemKey
    from runs.store import mark_items

    step = new_step()
    for lo in range(0, n, 500_000):
        mark_items(step.pk, list(range(lo, min(n, lo + 500_000))))  # type: ignore[attr-defined]
    with connection.cursor() as cur:
        cur.execute(
            "SELECT sum(pg_column_size(bits) + 28) FROM runs_itemchunk WHERE step_id = %s",
            [step.pk],  # type: ignore[attr-defined]
        )
        int_bytes = cur.fetchone()[0] / n
    strs = 100_000
    step2 = new_step()
    mark_items(step2.pk, [f"order-{i:08d}" for i in range(strs)])  # type: ignore[attr-defined]
    with connection.cursor() as cur:
        cur.execute(
            "SELECT sum(pg_column_size(t.*)) FROM runs_itemkey t WHERE step_id = %s",
            [step2.pk],  # type: ignore[attr-defined]
        )
        str_bytes = cur.fetchone()[0] / strs
    assert (
        ItemChunk.objects.filter(step=step).count() and ItemKey.objects.filter(step=step2).count()
    )
    return int_bytes, str_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--naive", type=int, default=100_000, help="items for the baseline")
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    setup()
    base = naive(args.naive)
    print(f"(1) naive, one INSERT + commit per item, {args.naive:,} items: {base:12,.0f} items/s")
    rate = mark(1_000_000, args.batch)
    print(
        f"(2) stepflow ctx.items() marking 1,000,000 items:        {rate:12,.0f} items/s"
        f"  ({rate / base:.0f}x the baseline)"
    )
    for label, done in (
        ("first half done", range(2_500_000)),
        ("every other item done", range(0, 5_000_000, 2)),
    ):
        t_first, t_all, peak, left = resume(5_000_000, done, args.batch)
        print(
            f"(3) resume 5,000,000 items, {label}: first remaining item after "
            f"{t_first * 1000:.0f} ms; whole pass (skipping 2,500,000, yielding {left:,}) "
            f"{t_all:.2f} s; peak extra memory {peak:.1f} MiB"
        )
    t_first, t_all, peak, _ = resume(5_000_000, range(5_000_000), args.batch)
    print(
        f"(3) resume 5,000,000 items, all done: skipping all 5,000,000 took {t_all:.2f} s; "
        f"peak extra memory {peak:.1f} MiB"
    )
    int_bytes, str_bytes = storage_per_item(1_000_000)
    print(
        f"(4) storage: {int_bytes:.3f} bytes per integer item; "
        f"{str_bytes:.0f} bytes per text item ('order-00000001')"
    )


if __name__ == "__main__":
    main()
