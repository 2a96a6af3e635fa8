"""Item checkpoints at scale: a crash re-processes at most the last unflushed
batch, a cancel re-processes nothing, un-marking re-processes exactly what was un-marked."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings

from runs import services
from runs.models import RunEvent, StepRun
from runs.store import load_items, mark_items, unmark_items
from tests.conftest import wait_for, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

N = 100_000
#: The documented re-processing bound: STEPFLOW_ITEM_BATCH_SIZE (the workers' default).
BATCH = settings.STEPFLOW["ITEM_BATCH_SIZE"]


def processed(ledger: Path) -> Counter[str]:
    return Counter(ledger.read_text().split())


def items_done(run_id: int) -> int:
    return StepRun.objects.get(run_id=run_id).items_done


@pytest.mark.parametrize("keys", ["int", "str"])
def test_sigkill_at_a_random_item_then_resume(start_worker, redis_conn, tmp_path, keys):
    ledger = tmp_path / "ledger.txt"
    worker = start_worker(simple=False)
    run = services.start_run(
        "t_bigitems", {"count": N, "item_delay": 0.0001, "keys": keys, "ledger": str(ledger)}
    )
    target = random.Random(keys).randrange(5_000, 40_000)
    wait_for(
        lambda: ledger.exists() and ledger.stat().st_size > target * 4,
        60,
        0.01,
        message=f"about {target} items",
    )
    worker.kill()
    start_worker(simple=False)  # the step is retried on another worker after the reaper
    run = wait_run(run.pk, timeout=120)
    assert run.status == "completed"
    counts = processed(ledger)
    expected = {f"k{i}" if keys == "str" else str(i) for i in range(N)}
    assert set(counts) == expected
    again = sum(c - 1 for c in counts.values())
    assert 0 <= again <= BATCH
    step = StepRun.objects.get(run=run)
    assert step.items_done == N
    assert list(step.attempt_set.values_list("status", flat=True)) == ["worker_lost", "completed"]


def test_cancel_then_resume_reprocesses_nothing(start_worker, redis_conn, tmp_path):
    ledger = tmp_path / "ledger.txt"
    start_worker()
    run = services.start_run(
        "t_bigitems", {"count": 20_000, "item_delay": 0.0002, "ledger": str(ledger)}
    )
    wait_for(
        lambda: ledger.exists() and ledger.stat().st_size > 20_000, 30, 0.01, message="some items"
    )
    services.cancel_run(run.pk)
    assert wait_run(run.pk).status == "cancelled"
    done_at_cancel = items_done(run.pk)
    assert 0 < done_at_cancel < 20_000
    assert sum(processed(ledger).values()) == done_at_cancel
    services.resume_run(run.pk, "resume")
    assert wait_run(run.pk).status == "completed"
    counts = processed(ledger)
    assert len(counts) == 20_000
    assert set(counts.values()) == {1}


def test_unmarked_items_are_processed_again_exactly(start_worker, redis_conn, tmp_path):
    ledger = tmp_path / "ledger.txt"
    start_worker()
    run = services.start_run("t_bigitems", {"count": 5000, "ledger": str(ledger)})
    assert wait_run(run.pk).status == "completed"
    step = StepRun.objects.get(run=run)
    assert services.unmark(run.pk, "items", [7, 4242, 4999], origin="test") == 3
    assert items_done(run.pk) == 4997
    event = RunEvent.objects.get(run=run, kind="items_unmarked")
    assert event.message == "test un-marked 3 item(s) of items (3 were done)"
    services.resume_run(run.pk, "only", step="items")
    assert wait_run(run.pk).status == "completed"
    counts = processed(ledger)
    assert {k: c for k, c in counts.items() if c > 1} == {"7": 2, "4242": 2, "4999": 2}
    assert sum(counts.values()) == 5003
    step.refresh_from_db()
    assert step.items_done == 5000


def test_marking_is_idempotent_and_compact(redis_conn):
    run = services.start_run("t_bigitems", {"ledger": "/dev/null"})
    services.cancel_run(run.pk)
    step = StepRun.objects.get(run=run)
    assert mark_items(step.pk, list(range(0, 200_000))) == 200_000
    assert mark_items(step.pk, list(range(100_000, 300_000))) == 100_000
    assert mark_items(step.pk, ["a", "b", "a"]) == 2
    assert mark_items(step.pk, ["a", 5]) == 0
    done = load_items(step.pk)
    assert len(done) == 300_002
    assert (0 in done, 299_999 in done, 300_000 in done, "a" in done, "c" in done) == (
        True,
        True,
        False,
        True,
        False,
    )
    assert step.item_chunks.count() == 5  # 65,536 keys per chunk row
    assert unmark_items(step.pk, [5, "a", "zzz", 10**9]) == 2
    assert unmark_items(step.pk, None) == 300_000
    step.refresh_from_db()
    assert step.items_done == 0
