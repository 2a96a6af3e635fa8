"""Properties over random workflows: the planner, the local runner and the state table."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from stepflow import (
    InvalidTransition,
    LocalRunner,
    MemoryStore,
    PlanError,
    Retry,
    StepContext,
    Workflow,
    states,
    step,
)
from stepflow.items import ItemSet, chunks_of
from stepflow.planner import MODES, advance, blocking_failure
from stepflow.states import STEP_ACTIVE, STEP_DONE, STEP_FAILED, RunStatus, StepStatus

from .factories import Noop

S = StepStatus
#: STEPFLOW_PROPERTY_EXAMPLES=5000 searches harder (outside the normal run).
PROPERTY = settings(
    max_examples=int(os.environ.get("STEPFLOW_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    database=None,
)


@dataclass
class Spec:
    """A random workflow: step i depends on a subset of the steps before it."""

    deps: list[list[int]]
    optional: list[bool]
    condition: list[bool | None]  # None: no `when`; else what `when` returns
    fail_times: list[int]
    attempts: list[int]

    @property
    def names(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.deps))]


@st.composite
def specs(draw, max_steps: int = 12, conditions: bool = True) -> Spec:
    n = draw(st.integers(1, max_steps))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    conds = st.lists(
        st.one_of(st.none(), st.booleans()) if conditions else st.none(), min_size=n, max_size=n
    )
    return Spec(
        deps=deps,
        optional=draw(flags),
        condition=draw(conds),
        fail_times=draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 5]), min_size=n, max_size=n)),
        attempts=draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)),
    )


def settled(wf: Workflow, statuses: dict[str, str], name: str) -> bool:
    status = statuses[name]
    return status in STEP_DONE or (wf.steps[name].optional and status in STEP_FAILED)


def planner_workflow(spec: Spec) -> Workflow:
    steps = []
    for i, name in enumerate(spec.names):
        deps = [f"s{d}" for d in spec.deps[i]]
        on_failure = "continue" if spec.optional[i] else "fail"
        if spec.condition[i] is None:
            steps.append(Noop(name, depends_on=deps, on_failure=on_failure))
        else:
            value = spec.condition[i]
            steps.append(
                step(name=name, depends_on=deps, on_failure=on_failure, when=lambda c, v=value: v)(
                    lambda ctx: None
                )
            )
    return Workflow("random", steps)


class Recorder:
    """Builds a runnable workflow from a spec and records what its steps saw."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.events: list[tuple[str, str]] = []
        self.seen_statuses: dict[str, list[dict[str, str]]] = {}
        self.left = dict(zip(spec.names, spec.fail_times, strict=True))

    def body(self, name: str):
        def run(ctx):
            self.events.append(("start", name))
            self.seen_statuses.setdefault(name, []).append(dict(ctx.statuses))
            if self.left[name] > 0:
                self.left[name] -= 1
                raise RuntimeError(f"{name} failed")
            self.events.append(("done", name))
            return {"from": name}

        return run

    def workflow(self) -> Workflow:
        steps = []
        for i, name in enumerate(self.spec.names):
            settings_ = {
                "name": name,
                "depends_on": [f"s{d}" for d in self.spec.deps[i]],
                "on_failure": "continue" if self.spec.optional[i] else "fail",
                "retry": Retry(max_attempts=self.spec.attempts[i]),
            }
            if self.spec.condition[i] is not None:
                value = self.spec.condition[i]
                settings_["when"] = lambda ctx, v=value: v
            steps.append(step(**settings_)(self.body(name)))
        return Workflow("random", steps)

    def runner(self) -> LocalRunner:
        return LocalRunner(self.workflow(), sleep=lambda seconds: None)


# -- (a) advance never starts a step before its dependencies are settled ----------------------


@PROPERTY
@given(
    spec=specs(),
    data=st.data(),
    limit=st.one_of(st.none(), st.integers(1, 4)),
    cancelling=st.booleans(),
)
def test_advance__ready_steps_have_settled_dependencies(spec, data, limit, cancelling):
    wf = planner_workflow(spec)
    statuses = {
        n: data.draw(st.sampled_from([s.value for s in StepStatus]), label=n) for n in wf.steps
    }
    reasons = data.draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    n: st.sampled_from(
                        ["condition is false", "skipped on request", "upstream skipped: x", ""]
                    )
                    for n in wf.steps
                    if statuses[n] == S.SKIPPED
                }
            ),
        ),
        label="skip_reasons",
    )
    adv = advance(
        wf,
        statuses,
        condition=lambda name: wf.steps[name].when(None),
        cancelling=cancelling,
        limit=limit,
        skip_reasons=reasons,
    )
    after = {**statuses, **dict.fromkeys(adv.skipped, S.SKIPPED.value)}
    for name in adv.skipped:
        assert statuses[name] == S.PENDING
        assert all(settled(wf, after, d) for d in wf.steps[name].depends_on)
    for name in adv.ready:
        assert statuses[name] == S.PENDING
        assert name not in adv.skipped
        assert all(settled(wf, after, d) for d in wf.steps[name].depends_on), name
    assert len(set(adv.ready)) == len(adv.ready)
    if cancelling or blocking_failure(wf, statuses) is not None:
        assert adv.ready == []
    if limit is not None and adv.ready:
        active = sum(1 for s in statuses.values() if s in STEP_ACTIVE)
        assert active + len(adv.ready) <= limit
    if adv.run_status is not None:
        assert adv.ready == []
        assert not any(s in STEP_ACTIVE for s in statuses.values())


# -- (b) the local runner respects dependencies ------------------------------------------------


@PROPERTY
@given(spec=specs())
def test_local_runner__steps_start_after_their_dependencies(spec):
    rec = Recorder(spec)
    runner = rec.runner()
    result = runner.run()
    wf = runner.workflow
    first_start = {}
    done_at = {}
    for i, (kind, name) in enumerate(rec.events):
        if kind == "start":
            first_start.setdefault(name, i)
        else:
            done_at.setdefault(name, i)
    for name, start in first_start.items():
        statuses_then = rec.seen_statuses[name][0]
        for dep in wf.steps[name].depends_on:
            assert settled(wf, statuses_then, dep), (name, dep, statuses_then)
            if statuses_then[dep] == S.COMPLETED:
                assert done_at[dep] < start
    # Where the run ended up agrees with the step statuses.
    statuses = result.statuses
    required_failure = [
        n for n in wf.order() if statuses[n] in STEP_FAILED and not wf.steps[n].optional
    ]
    assert result.status == (RunStatus.FAILED if required_failure else RunStatus.COMPLETED)
    if not required_failure:
        assert all(settled(wf, statuses, n) for n in wf.steps)
    for failed in required_failure:
        for below in wf.downstream(failed):
            assert statuses[below] == S.PENDING
            assert below not in first_start
    assert len(result.executed) == sum(1 for kind, _ in rec.events if kind == "start")


# -- (c) a resume leaves completed steps outside plan.reset alone --------------------------------


@PROPERTY
@given(
    spec=specs(),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_resume__completed_steps_outside_the_reset_are_untouched(spec, mode, data):
    rec = Recorder(spec)
    runner = rec.runner()
    runner.run()
    names = spec.names
    target = data.draw(st.sampled_from(names), label="step") if mode in MODES[2:] else None
    skip = data.draw(st.lists(st.sampled_from(names), max_size=2, unique=True), label="skip")
    try:
        plan = runner.preview(mode, target, skip)
    except PlanError:
        event("refused")
        return
    event(f"planned {mode}")
    before = {n: (r.status, len(r.attempts), r.output) for n, r in runner.steps.items()}
    executed_before = len(runner.executed)
    result = runner.resume(mode, target, skip)
    ran_again = set(result.executed[executed_before:])
    for name, (status, n_attempts, output) in before.items():
        if status == S.COMPLETED and name not in plan.reset:
            report = result[name]
            assert (report.status, len(report.attempts), report.output) == (
                S.COMPLETED,
                n_attempts,
                output,
            ), name
            assert name not in ran_again
    for name in plan.skip:
        assert result[name].status == S.SKIPPED
        assert result[name].skip_reason == "skipped on request"
    assert ran_again <= set(plan.reset) | {n for n, (s, _, _) in before.items() if s == S.PENDING}
    assert result.status in states.RUN_FINISHED


# -- (d) the transition table ------------------------------------------------------------------


@PROPERTY
@given(
    table=st.sampled_from([StepStatus, RunStatus]),
    picks=st.lists(st.integers(0, 8), max_size=40),
)
def test_transition__finished_states_are_left_only_by_resets(table, picks):
    members = list(table)
    finished = states.STEP_FINISHED if table is StepStatus else states.RUN_FINISHED
    current = table.PENDING.value
    for pick in picks:
        target = members[pick % len(members)]
        try:
            new = states.transition(current, target, "Thing")
        except InvalidTransition as exc:
            assert exc.args == (f"Thing cannot go from {current} to {target.value}",)
            assert (
                target
                not in (states.STEP_TRANSITIONS if table is StepStatus else states.RUN_TRANSITIONS)[
                    table(current)
                ]
            )
            continue
        assert new == target.value
        if current in finished:
            assert (current, new) in states.RESET_TRANSITIONS
        current = new


# -- items --------------------------------------------------------------------------------


@PROPERTY
@given(done=st.sets(st.integers(0, 300), max_size=200), n=st.integers(0, 320))
def test_items__yield_exactly_the_positions_not_done(done, n):
    store = MemoryStore()
    store.items = ItemSet(done)
    ctx = StepContext(step_name="s", run_id=1, attempt=1, params={}, inputs={}, store=store)
    assert list(ctx.items(iter(range(n)))) == [i for i in range(n) if i not in done]


@PROPERTY
@given(keys=st.sets(st.integers(0, 200_000), max_size=100), start=st.integers(0, 200_100))
def test_itemset__chunks_round_trip_and_first_missing(keys, start):
    items = ItemSet()
    for chunk_no, data in chunks_of(keys).items():
        items.or_chunk(chunk_no, data)
    assert list(items) == sorted(keys)
    assert len(items) == len(keys)
    assert all(k in items for k in keys)
    expected = start
    while expected in keys:
        expected += 1
    assert items.first_missing_from(start) == expected
