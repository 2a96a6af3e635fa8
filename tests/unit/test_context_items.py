from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from stepflow import (
    Cancelled,
    ContextSettings,
    LocalRunner,
    MemoryStore,
    StepContext,
    StepTimeout,
    Workflow,
    step,
)
from stepflow.items import CHUNK_BITS, CHUNK_BYTES, ItemSet, chunks_of
from stepflow.states import AttemptStatus, RunStatus, StepStatus

A = AttemptStatus
BATCH10 = ContextSettings(item_batch_size=10, item_flush_seconds=1e9)


class Crash(BaseException):
    """Stands for the worker process dying in the middle of a step."""


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_ctx(store=None, *, settings=None, clock=None, deadline=None) -> StepContext:
    return StepContext(
        step_name="s",
        run_id=1,
        attempt=1,
        params={},
        inputs={},
        store=store if store is not None else MemoryStore(),
        settings=settings,
        clock=clock or Clock(),
        deadline=deadline,
    )


def hard_crash(monkeypatch) -> None:
    """Make the crash lose what is buffered, as a killed process would (no finally runs)."""
    monkeypatch.setattr(StepContext, "finish", lambda self, success: None)


# -- items surviving a crash through the local runner ------------------------------------


def items_runner(processed: list, iterable, crash_at, key=None) -> LocalRunner:
    left = {"crash": crash_at}

    @step()
    def load(ctx):
        for item in ctx.items(iterable, key=key):
            if item == left["crash"]:
                left["crash"] = None
                raise Crash()
            processed.append(item)

    return LocalRunner(Workflow("items", [load]), settings=BATCH10)


def test_items__crash_flushes_what_was_done_and_resume_goes_on():
    processed: list[int] = []
    runner = items_runner(processed, range(50), crash_at=25)
    with pytest.raises(Crash):
        runner.run()
    assert processed == list(range(25))
    assert (runner.status, runner.steps["load"].status) == (RunStatus.RUNNING, StepStatus.RUNNING)
    store = runner.stores["load"]
    assert list(store.items) == list(range(25))  # two full batches, then the rest on the way out
    assert store.item_flushes == 3

    result = runner.resume()
    assert processed == list(range(50))  # nothing processed twice
    assert result.status == RunStatus.COMPLETED
    assert [(a.number, a.status, a.error) for a in result["load"].attempts] == [
        (1, A.WORKER_LOST, "worker lost"),
        (2, A.COMPLETED, ""),
    ]
    assert list(store.items) == list(range(50))


def test_items__hard_crash_reprocesses_at_most_the_unflushed_batch(monkeypatch):
    processed: list[int] = []
    runner = items_runner(processed, range(50), crash_at=25)
    hard_crash(monkeypatch)
    with pytest.raises(Crash):
        runner.run()
    monkeypatch.undo()
    store = runner.stores["load"]
    assert list(store.items) == list(range(20))
    assert store.item_flushes == 2

    del processed[:]
    assert runner.resume().status == RunStatus.COMPLETED
    assert processed == list(range(20, 50))  # 20..24 again: the batch that was not flushed


def test_items__hard_crash_with_string_keys(monkeypatch):
    rows = [f"row-{i:02d}" for i in range(30)]
    processed: list[str] = []
    runner = items_runner(processed, rows, crash_at="row-17", key=lambda row: row)
    hard_crash(monkeypatch)
    with pytest.raises(Crash):
        runner.run()
    monkeypatch.undo()
    assert list(runner.stores["load"].items) == rows[:10]

    del processed[:]
    runner.resume()
    assert processed == rows[10:]
    assert list(runner.stores["load"].items) == rows


def test_items__a_failed_attempt_keeps_what_it_finished():
    seen: list[int] = []
    bad = {4}

    @step()
    def load(ctx):
        for i in ctx.items(range(10)):
            if i in bad:
                bad.clear()
                raise ValueError("bad row 4")
            seen.append(i)

    runner = LocalRunner(Workflow("w", [load]), settings=BATCH10)
    assert runner.run().status == RunStatus.FAILED
    assert list(runner.stores["load"].items) == [0, 1, 2, 3]
    runner.resume()
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(("fails", "done"), [(False, [0, 1, 2, 3]), (True, [0, 1, 2])])
def test_items__break_marks_the_item_only_if_the_step_succeeds(fails, done):
    seen: list[int] = []

    @step()
    def pick(ctx):
        for i in ctx.items(range(10)):
            seen.append(i)
            if i == 3:
                break
        if fails:
            raise ValueError("after the loop")

    runner = LocalRunner(Workflow("w", [pick]), settings=BATCH10)
    runner.run()
    assert seen == [0, 1, 2, 3]
    assert list(runner.stores["pick"].items) == done


def test_items__clear_items_on_continue_from():
    seen: list[int] = []

    @step()
    def load(ctx):
        seen.extend(ctx.items(range(3)))

    runner = LocalRunner(Workflow("w", [load]))
    runner.run()
    runner.resume("continue_from", "load")
    assert seen == [0, 1, 2]  # everything was done already
    runner.resume("continue_from", "load", clear_items=True)
    assert seen == [0, 1, 2, 0, 1, 2]


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoints__persist_across_attempts_and_resume():
    seen: list[dict] = []

    @step()
    def sync(ctx):
        seen.append(dict(ctx.checkpoints))
        ctx.checkpoint("cursor", len(seen) * 10)
        if len(seen) < 3:
            raise RuntimeError("stop")

    runner = LocalRunner(Workflow("w", [sync]))
    runner.run()
    runner.resume()
    runner.resume()
    assert seen == [{}, {"cursor": 10}, {"cursor": 20}]
    assert runner.stores["sync"].checkpoints == {"cursor": 30}


def test_checkpoint__value_must_be_json():
    store = MemoryStore()
    ctx = make_ctx(store)
    with pytest.raises(TypeError) as exc:
        ctx.checkpoint("when", dt.date(2024, 1, 2))
    assert exc.value.args == (
        "checkpoint 'when' must be JSON-serializable: Object of type date is not JSON serializable",
    )
    assert store.checkpoints == {}


def test_checkpoint__non_json_value_fails_the_step():
    @step()
    def bad(ctx):
        ctx.checkpoint("when", {1, 2})

    runner = LocalRunner(Workflow("w", [bad]))
    result = runner.run()
    assert result["bad"].error == (
        "TypeError: checkpoint 'when' must be JSON-serializable: "
        "Object of type set is not JSON serializable"
    )


@pytest.mark.parametrize("key", ["", "k" * 201, 3])
def test_checkpoint__key_must_be_a_short_string(key):
    with pytest.raises(ValueError) as exc:
        make_ctx().checkpoint(key, 1)
    assert exc.value.args == (
        "a checkpoint key must be a non-empty string of at most 200 characters",
    )


def test_checkpoint__visible_at_once_and_read_only():
    ctx = make_ctx()
    assert dict(ctx.checkpoints) == {}
    ctx.checkpoint("a", [1, 2])
    assert dict(ctx.checkpoints) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        ctx.checkpoints["b"] = 1


# -- the context on its own ---------------------------------------------------------------


def test_items__by_position_skips_the_done_ones():
    store = MemoryStore()
    store.items = ItemSet([0, 1, 2, 5, *range(8, 30)])
    ctx = make_ctx(store)
    assert list(ctx.items(x * 10 for x in range(32))) == [30, 40, 60, 70, 300, 310]


def test_items__done_beyond_the_end():
    store = MemoryStore()
    store.items = ItemSet(range(100))
    assert list(make_ctx(store).items(range(40))) == []


def test_items__keys_are_normalized_and_duplicates_run_once():
    store = MemoryStore()
    store.items = ItemSet(["-1", 7])
    ctx = make_ctx(store)
    got = list(ctx.items([-1, 7, "7", 8, 8, True], key=lambda x: x))
    assert got == ["7", 8, True]
    ctx.finish(success=True)
    assert list(store.items) == [7, 8, "-1", "7", "True"]


def test_items__flushed_by_batch_size():
    store = MemoryStore()
    ctx = make_ctx(store, settings=ContextSettings(item_batch_size=3, item_flush_seconds=1e9))
    it = ctx.items(range(10))
    for _ in range(7):
        next(it)
    # item 6 is still in its loop body; 0..5 finished, flushed in two batches
    assert (list(store.items), store.item_flushes) == ([0, 1, 2, 3, 4, 5], 2)
    it.close()
    ctx.finish(success=False)  # nothing pending: no write
    assert (list(store.items), store.item_flushes) == ([0, 1, 2, 3, 4, 5], 2)


def test_items__flushed_by_time():
    store = MemoryStore()
    clock = Clock()
    ctx = make_ctx(store, clock=clock, settings=ContextSettings(item_flush_seconds=2))
    for _ in ctx.items(range(5)):
        clock.now += 1
    assert (list(store.items), store.item_flushes) == ([0, 1, 2, 3], 2)
    ctx.finish(success=True)
    assert (list(store.items), store.item_flushes) == ([0, 1, 2, 3, 4], 3)


def test_progress__throttled():
    store = MemoryStore()
    clock = Clock()
    ctx = make_ctx(store, clock=clock)
    ctx.progress(1, 10, "one")
    assert store.progress == (1, 10, "one")
    clock.now = 0.5
    ctx.progress(2, 10, "two")
    assert store.progress == (1, 10, "one")
    clock.now = 1.2
    ctx.progress(3, 10, "x" * 600)
    assert store.progress == (3, 10, "x" * 500)
    clock.now = 1.5
    ctx.progress(4, 10, "four")
    ctx.finish(success=True)
    assert store.progress == (4, 10, "four")


def test_log_and_metric():
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    store = MemoryStore()
    ctx = make_ctx(store)
    ctx.log("hello", rows=3)
    ctx.log("careful", level="warning", obj=Thing())
    assert store.logs == [
        ("info", "hello", {"rows": 3}),
        ("warning", "careful", {"obj": "<thing>"}),
    ]
    with pytest.raises(ValueError) as exc:
        ctx.log("x", level="trace")
    assert exc.value.args == ("log level must be one of debug, info, warning, error, not 'trace'",)
    ctx.metric("rows", 3)
    assert store.metrics == {"rows": 3.0}
    for value, kind in (("3", "str"), (True, "bool")):
        with pytest.raises(TypeError) as exc:
            ctx.metric("rows", value)
        assert exc.value.args == (f"metric 'rows' must be a number, not {kind}",)


def test_cancelled__checked_at_most_every_interval():
    flag = SimpleNamespace(cancel_requested=False, _notify=lambda name: None)
    clock = Clock()
    ctx = make_ctx(MemoryStore(flag), clock=clock)
    assert ctx.cancelled is False
    flag.cancel_requested = True
    clock.now = 0.3
    assert ctx.cancelled is False
    ctx.raise_if_cancelled()
    clock.now = 0.5
    assert ctx.cancelled is True
    with pytest.raises(Cancelled):
        ctx.raise_if_cancelled()


def test_checkpoint__refused_once_cancelled():
    flag = SimpleNamespace(cancel_requested=True, _notify=lambda name: None)
    store = MemoryStore(flag)
    with pytest.raises(Cancelled):
        make_ctx(store).checkpoint("k", 1)
    assert store.checkpoints == {}


def test_deadline__raises_step_timeout():
    clock = Clock(9.9)
    ctx = make_ctx(clock=clock, deadline=10.0)
    ctx.raise_if_cancelled()
    clock.now = 10.0
    with pytest.raises(StepTimeout) as exc:
        ctx.raise_if_cancelled()
    assert str(exc.value) == "timed out"
    assert str(StepTimeout(2.5)) == "timed out after 2.5s"


def test_context__params_and_inputs_are_read_only():
    ctx = StepContext(
        step_name="s", run_id=1, attempt=2, params={"a": 1}, inputs={"x": 2}, store=MemoryStore()
    )
    with pytest.raises(TypeError):
        ctx.params["a"] = 2
    with pytest.raises(TypeError):
        ctx.inputs["x"] = 3
    assert (dict(ctx.params), dict(ctx.inputs), dict(ctx.statuses)) == ({"a": 1}, {"x": 2}, {})


# -- ItemSet -------------------------------------------------------------------------------


def test_itemset__integers():
    items = ItemSet()
    assert (items.add(3), items.add(3), items.add(0), items.add(100_000)) == (
        True,
        False,
        True,
        True,
    )
    assert (3 in items, 4 in items, 100_000 in items, 99_999 in items, 10**9 in items) == (
        True,
        False,
        True,
        False,
        False,
    )
    assert len(items) == 3
    assert list(items) == [0, 3, 100_000]
    assert (items.discard(3), items.discard(3), items.discard(10**9)) == (True, False, False)
    assert (len(items), list(items)) == (2, [0, 100_000])


def test_itemset__strings_and_other_keys():
    items = ItemSet(["b", "a", -1, 2.5, True])
    assert len(items) == 5
    assert list(items) == ["-1", "2.5", "True", "a", "b"]
    assert ("-1" in items, -1 in items, True in items, 1 in items, "c" in items) == (
        True,
        True,
        True,
        False,
        False,
    )
    assert (items.add("a"), items.discard("b"), items.discard("b")) == (False, True, False)
    assert len(items) == 4


def test_itemset__int_and_its_text_are_different_keys():
    items = ItemSet([5, "5"])
    assert (len(items), list(items)) == (2, [5, "5"])
    assert ItemSet.normalize(5) == 5
    assert ItemSet.normalize("5") == "5"
    assert ItemSet.normalize(-5) == "-5"
    assert ItemSet.normalize(False) == "False"


def test_itemset__or_chunk():
    items = ItemSet([1, CHUNK_BITS + 7])
    for chunk_no, data in chunks_of([1, 2, CHUNK_BITS + 7, 3 * CHUNK_BITS]).items():
        items.or_chunk(chunk_no, data)
    assert list(items) == [1, 2, CHUNK_BITS + 7, 3 * CHUNK_BITS]
    assert len(items) == 4
    items.or_chunk(0, bytes([0b110]))
    assert len(items) == 4


def test_chunks_of__round_trip():
    keys = [0, 7, 8, CHUNK_BITS - 1, CHUNK_BITS, 5 * CHUNK_BITS + 3]
    chunks = chunks_of(keys)
    assert sorted(chunks) == [0, 1, 5]
    assert {len(b) for b in chunks.values()} == {CHUNK_BYTES}
    assert chunks[0][0] == 0b1000_0001
    restored = ItemSet()
    for chunk_no, data in chunks.items():
        restored.or_chunk(chunk_no, data)
    assert (list(restored), len(restored)) == (keys, 6)


def test_first_missing_from():
    items = ItemSet([*range(20), 21, *range(24, 40)])
    assert [items.first_missing_from(n) for n in (0, 5, 20, 21, 22, 24, 40, 1000)] == [
        20,
        20,
        20,
        22,
        22,
        40,
        40,
        1000,
    ]
    assert ItemSet().first_missing_from(3) == 3
    assert ItemSet(["x"]).first_missing_from(0) == 0


def test_log__masks_secret_parameter_values():
    from stepflow import Param, Workflow, step
    from stepflow.local import LocalRunner

    @step()
    def pay(ctx):
        ctx.log(f"charging card {ctx.params['card']}", token=ctx.params["card"], amount=3)

    runner = LocalRunner(
        Workflow("w", [pay], params=[Param("card", secret=True)]), {"card": "tok_123"}
    )
    assert runner.run().status == "completed"
    assert runner.stores["pay"].logs == [
        ("info", "charging card ••••••", {"token": "••••••", "amount": 3})
    ]


def test_items__progress_from_the_items_when_the_step_reports_none():
    store = MemoryStore()
    ctx = make_ctx(store, settings=ContextSettings(item_batch_size=4, item_flush_seconds=1e9))
    for _ in ctx.items(list(range(10))):
        pass
    assert store.progress == (8, 10, "8 of 10 items")
    ctx.finish(success=True)
    assert store.progress == (10, 10, "10 of 10 items")


def test_items__the_steps_own_progress_wins():
    store = MemoryStore()
    ctx = make_ctx(store, settings=ContextSettings(item_batch_size=4, item_flush_seconds=1e9))
    ctx.progress(1, 3, "phase 1 of 3")
    for _ in ctx.items(list(range(10))):
        pass
    ctx.finish(success=True)
    assert store.progress == (1, 3, "phase 1 of 3")
