"""Workflows used by the integration, browser and fault tests (also loaded by test workers).

Side effects are counted in Redis (the "ledger") so tests can check that
nothing ran twice; behaviour is switched by Redis flags, so a test can make a
step fail and then let a retry succeed.
"""

from __future__ import annotations

import time

from stepflow import Param, Retry, Step, StepContext, StepResult, Workflow, register, step


def redis():  # type: ignore[no-untyped-def]
    import django_rq

    return django_rq.get_connection("default")


def ledger(ctx: StepContext, name: str | None = None) -> None:
    redis().hincrby(f"ledger:{ctx.run_id}", name or ctx.step_name, 1)


def should_fail(name: str) -> bool:
    return bool(redis().get(f"fail:{name}"))


def _simple(name: str, **settings: object) -> Step:
    def body(ctx: StepContext) -> dict[str, object]:
        ledger(ctx)
        time.sleep(float(ctx.params.get("sleep", 0)))
        if should_fail(name):
            raise RuntimeError(f"{name} exploded")
        return {"step": name, "at": time.time()}

    body.__name__ = name
    return step(name, **settings)(body)  # type: ignore[arg-type]


register(
    Workflow(
        "t_deploy",
        [
            _simple("prepare"),
            _simple("build", depends_on="prepare", weight=3),
            _simple("template", depends_on="build"),
            _simple("deploy", depends_on="template", weight=2),
        ],
        params=[Param("sleep", "float", default=0.0), Param("note", "str", default="")],
    ),
    replace=True,
)


def _timed(name: str, **settings: object) -> Step:
    def body(ctx: StepContext) -> dict[str, object]:
        ledger(ctx)
        start = time.time()
        time.sleep(float(ctx.params.get("sleep", 0.0)))
        return {"start": start, "end": time.time(), "worker": ctx.attempt}

    body.__name__ = name
    return step(name, **settings)(body)  # type: ignore[arg-type]


register(
    Workflow(
        "t_diamond",
        [
            _timed("a"),
            _timed("b", depends_on="a"),
            _timed("c", depends_on="a"),
            _timed("d", depends_on=["b", "c"]),
        ],
        params=[Param("sleep", "float", default=1.0)],
    ),
    replace=True,
)


@step(retry=Retry(max_attempts=3, backoff_base=0.3, backoff_factor=2))
def flaky(ctx: StepContext) -> dict[str, int]:
    ledger(ctx)
    if ctx.attempt <= 2:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


register(Workflow("t_retry", [flaky]), replace=True)


@step(timeout=1.0)
def sleepy(ctx: StepContext) -> None:
    ledger(ctx)
    time.sleep(10)


register(Workflow("t_timeout", [sleepy]), replace=True)


def _record_rollback(ctx: StepContext, result: StepResult) -> None:
    redis().rpush(f"rollback:{ctx.run_id}", ctx.step_name)


def _rb(name: str, **settings: object) -> Step:
    def body(ctx: StepContext) -> StepResult:
        ledger(ctx)
        if should_fail(name):
            raise RuntimeError(f"{name} exploded")
        return StepResult(data={"step": name}, rollback_data={"undo": name})

    body.__name__ = name
    return step(name, rollback=_record_rollback, **settings)(body)  # type: ignore[arg-type]


register(
    Workflow(
        "t_rollback",
        [
            _rb("one"),
            _rb("two", depends_on="one"),
            _simple("plain", depends_on="two"),
            _rb("three", depends_on="plain"),
            _rb("four", depends_on="three"),
        ],
    ),
    replace=True,
)


@step()
def long_loop(ctx: StepContext) -> None:
    ledger(ctx)
    for i in range(600):
        ctx.progress(i, 600, f"tick {i}")
        time.sleep(0.05)


@step(depends_on="long_loop")
def after_loop(ctx: StepContext) -> None:
    ledger(ctx)


register(Workflow("t_cancel", [long_loop, after_loop]), replace=True)


@step()
def stubborn(ctx: StepContext) -> None:
    """Ignores cancellation: stopped by the queue after the grace period."""
    ledger(ctx)
    time.sleep(60)


register(Workflow("t_stubborn", [stubborn]), replace=True)


class Items(Step):
    name = "items"
    retry = Retry(max_attempts=5, backoff_base=0.2)

    def execute(self, ctx: StepContext) -> dict[str, int]:
        r = redis()
        total = int(ctx.params["count"])
        delay = float(ctx.params["delay"])
        pipe_every = 500
        pipe = r.pipeline()
        n = 0
        key_mode = ctx.params["keys"]
        source = range(total) if key_mode == "int" else [f"k{i}" for i in range(total)]
        for item in ctx.items(source, key=None if key_mode == "int" else str):
            pipe.hincrby(f"items:{ctx.run_id}", str(item), 1)
            n += 1
            if n % pipe_every == 0:
                pipe.execute()
            if delay:
                time.sleep(delay)
        pipe.execute()
        return {"processed": n}


register(
    Workflow(
        "t_items",
        [Items()],
        params=[
            Param("count", "int", default=1000),
            Param("delay", "float", default=0.0),
            Param("keys", "choice", default="int", choices=("int", "str")),
        ],
    ),
    replace=True,
)


@step(queue="heavy")
def heavy_step(ctx: StepContext) -> dict[str, str]:
    ledger(ctx)
    return {"queue": "heavy"}


register(Workflow("t_heavy", [heavy_step]), replace=True)


@step()
def busy(ctx: StepContext) -> None:
    """A pure-Python loop that never looks at ctx.cancelled."""
    ledger(ctx)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sum(range(1000))


register(Workflow("t_busy", [busy]), replace=True)


# -- faults: a multi-step workflow whose every effect lands in a ledger ----------------
FAULT_RETRY = Retry(max_attempts=6, backoff_base=0.2, backoff_factor=1.5, backoff_max=2)


def _fault_simple(name: str, **settings: object) -> Step:
    def body(ctx: StepContext) -> dict[str, str]:
        ledger(ctx)
        time.sleep(float(ctx.params["sleep"]))
        return {"step": name}

    body.__name__ = name
    return step(name, retry=FAULT_RETRY, **settings)(body)  # type: ignore[arg-type]


class LedgerItems(Step):
    """Processes N items, each effect counted at once in the ledger, with a checkpoint."""

    name = "items"
    depends_on = ("first",)
    retry = FAULT_RETRY

    def execute(self, ctx: StepContext) -> dict[str, int]:
        r = redis()
        delay = float(ctx.params["item_delay"])
        n = 0
        for i in ctx.items(range(int(ctx.params["count"]))):
            r.hincrby(f"items:{ctx.run_id}", str(i), 1)
            n += 1
            if delay:
                time.sleep(delay)
            if i % 100 == 99:
                ctx.checkpoint("cursor", i)
                r.set(f"ack:{ctx.run_id}", i)  # acknowledged: checkpoint() returned
        return {"processed": n}


register(
    Workflow(
        "t_fault",
        [_fault_simple("first"), LedgerItems(), _fault_simple("last", depends_on="items")],
        params=[
            Param("count", "int", default=600),
            Param("item_delay", "float", default=0.002),
            Param("sleep", "float", default=0.2),
        ],
    ),
    replace=True,
)


@step(retry=Retry(max_attempts=3, backoff_base=0.1))
def poison(ctx: StepContext) -> None:
    """Crashes its process every time."""
    import os

    ledger(ctx)
    os._exit(3)


register(Workflow("t_poison", [poison]), replace=True)


class FileLedgerItems(Step):
    """Appends each processed item to a ledger file (written at once, so a
    SIGKILL loses nothing that was processed)."""

    name = "items"
    retry = Retry(max_attempts=3, backoff_base=0.2)

    def execute(self, ctx: StepContext) -> dict[str, int]:
        total = int(ctx.params["count"])
        delay = float(ctx.params["item_delay"])
        by_text = ctx.params["keys"] == "str"
        source = (f"k{i}" for i in range(total)) if by_text else range(total)
        n = 0
        with open(ctx.params["ledger"], "ab", buffering=0) as out:
            for item in ctx.items(source, key=str if by_text else None):
                out.write(f"{item}\n".encode())
                n += 1
                if delay:
                    time.sleep(delay)
        return {"processed": n}


register(
    Workflow(
        "t_bigitems",
        [FileLedgerItems()],
        params=[
            Param("count", "int", default=100_000),
            Param("item_delay", "float", default=0.0),
            Param("keys", "choice", default="int", choices=("int", "str")),
            Param("ledger", "str", required=True),
        ],
    ),
    replace=True,
)


@step(on_failure="continue")
def nice_to_have(ctx: StepContext) -> None:
    ledger(ctx)
    raise RuntimeError("the optional step failed")


@step(depends_on="nice_to_have", when=lambda ctx: ctx.statuses["nice_to_have"] == "completed")
def use_it(ctx: StepContext) -> None:
    ledger(ctx)


@step(depends_on="nice_to_have")
def carry_on(ctx: StepContext) -> None:
    ledger(ctx)


register(Workflow("t_optional", [nice_to_have, use_it, carry_on]), replace=True)


# -- chaos: the stateful property test drives this one (tests/faults/test_state_machine.py) --
#: How each step of t_chaos behaves is read from Redis at the start of every attempt.
CHAOS_MODES = ("ok", "fail", "slow", "hang")
CHAOS_RETRY = Retry(max_attempts=3, backoff_base=0.2, backoff_factor=2, backoff_max=1)


def chaos_key(name: str) -> str:
    return f"chaos:mode:{name}"


def _chaos(name: str, **settings: object) -> Step:
    def body(ctx: StepContext) -> dict[str, object]:
        ledger(ctx)
        mode = (redis().get(chaos_key(name)) or b"ok").decode()
        if mode == "fail":
            raise RuntimeError(f"{name} failed on purpose (attempt {ctx.attempt})")
        if mode == "slow":  # long, but stops when the run is cancelled
            for i in range(20):
                ctx.progress(i, 20, "slow")
                time.sleep(0.1)
        elif mode == "hang":  # ignores cancellation (and its timeout, where it has one)
            time.sleep(4)
        else:
            time.sleep(float(ctx.params["sleep"]))
        return {"step": name, "attempt": ctx.attempt}

    body.__name__ = name
    return step(name, retry=CHAOS_RETRY, **settings)(body)  # type: ignore[arg-type]


register(
    Workflow(
        "t_chaos",
        [
            _chaos("fetch"),
            _chaos("left", depends_on="fetch"),
            _chaos("right", depends_on="fetch", timeout=2.5),
            _chaos("merge", depends_on=["left", "right"]),
        ],
        params=[Param("sleep", "float", default=0.1)],
    ),
    replace=True,
)


register(
    Workflow(
        "t_limited",
        [
            _timed("a"),
            _timed("b", depends_on="a"),
            _timed("c", depends_on="a"),
            _timed("d", depends_on="a"),
            _timed("e", depends_on=["b", "c", "d"]),
        ],
        params=[Param("sleep", "float", default=0.5)],
        max_parallel=1,
    ),
    replace=True,
)


# -- run timeout, queue limits, child runs ----------------------------------------------


def sleep_until_cancelled(ctx: StepContext, seconds: float) -> None:
    """Sleep ``seconds`` in short ticks, raising as soon as the run stops."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.raise_if_cancelled()
        time.sleep(0.05)


@step()
def patient(ctx: StepContext) -> dict[str, str]:
    """Sleeps ``sleep`` seconds in small steps, stopping when asked to."""
    ledger(ctx)
    sleep_until_cancelled(ctx, float(ctx.params.get("sleep", 0.0)))
    return {"slept": ctx.params.get("sleep", 0.0)}


@step(depends_on="patient")
def after_patient(ctx: StepContext) -> None:
    ledger(ctx)


register(
    Workflow(
        "t_deadline",
        [patient, after_patient],
        params=[Param("sleep", "float", default=30.0)],
        timeout=2,
    ),
    replace=True,
)


@step(queue="gpu")
def on_gpu(ctx: StepContext) -> dict[str, float]:
    ledger(ctx)
    start = time.time()
    time.sleep(float(ctx.params.get("sleep", 0.5)))
    return {"start": start, "end": time.time()}


register(
    Workflow("t_gpu", [on_gpu], params=[Param("sleep", "float", default=0.5)]),
    replace=True,
)


@step()
def child_work(ctx: StepContext) -> dict[str, int]:
    ledger(ctx, f"work-{ctx.params['n']}")
    sleep_until_cancelled(ctx, float(ctx.params.get("sleep", 0.0)))
    if should_fail(f"child-{ctx.params['n']}"):
        raise RuntimeError(f"child {ctx.params['n']} exploded")
    return {"n": int(ctx.params["n"]) * 10}


register(
    Workflow(
        "t_child",
        [child_work],
        params=[Param("n", "int"), Param("sleep", "float", default=0.0)],
    ),
    replace=True,
)


@step()
def fan(ctx: StepContext) -> dict[str, int]:
    ledger(ctx)
    for n in range(int(ctx.params["count"])):
        ctx.start_child("t_child", {"n": n, "sleep": ctx.params["sleep"]})
    return {"asked": int(ctx.params["count"])}


@step(depends_on="fan")
def gather(ctx: StepContext) -> dict[str, object]:
    ledger(ctx)
    children = ctx.inputs["fan"]["children"]
    return {"total": sum(c["outputs"]["child_work"]["n"] for c in children)}


register(
    Workflow(
        "t_parent",
        [fan, gather],
        params=[Param("count", "int", default=2), Param("sleep", "float", default=0.0)],
    ),
    replace=True,
)


@step()
def bad_fan(ctx: StepContext) -> None:
    ctx.start_child("t_child", {"n": "not a number"})


register(Workflow("t_bad_parent", [bad_fan]), replace=True)


@step(retry=Retry(max_attempts=3, backoff_base=0))
def sturdy_work(ctx: StepContext) -> dict[str, int]:
    ledger(ctx, f"work-{ctx.params['n']}")
    sleep_until_cancelled(ctx, float(ctx.params.get("sleep", 0.0)))
    return {"n": int(ctx.params["n"])}


register(
    Workflow(
        "t_sturdy_child",
        [sturdy_work],
        params=[Param("n", "int"), Param("sleep", "float", default=0.0)],
    ),
    replace=True,
)


@step()
def sturdy_fan(ctx: StepContext) -> None:
    ledger(ctx)
    for n in range(int(ctx.params["count"])):
        ctx.start_child("t_sturdy_child", {"n": n, "sleep": ctx.params["sleep"]})


register(
    Workflow(
        "t_sturdy_parent",
        [sturdy_fan],
        params=[Param("count", "int", default=3), Param("sleep", "float", default=2.0)],
    ),
    replace=True,
)


register(
    Workflow(
        "t_parent_deadline",
        [sturdy_fan],
        params=[Param("count", "int", default=2), Param("sleep", "float", default=30.0)],
        timeout=3,
    ),
    replace=True,
)
