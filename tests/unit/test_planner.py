from __future__ import annotations

import random

import pytest

from stepflow import PlanError, Retry, UnknownStep, Workflow, step
from stepflow.errors import StepTimeout
from stepflow.planner import (
    REASON_CAN_SKIP,
    REASON_CONDITION,
    REASON_USER,
    Advance,
    AttemptDecision,
    ResumePlan,
    advance,
    after_attempt,
    blocking_failure,
    plan_resume,
    plan_start,
    rollback_order,
    unknown_steps,
    weighted_progress,
)
from stepflow.states import AttemptStatus, RunStatus, StepStatus

from .factories import Noop

S = StepStatus


def n(name: str, *deps: str, **settings) -> Noop:
    return Noop(name, depends_on=deps, **settings)


def deploy() -> Workflow:
    return Workflow(
        "deploy",
        [n("prepare"), n("build", "prepare"), n("template", "build"), n("deploy", "template")],
    )


def st(prepare="completed", build="failed", template="pending", deploy="pending"):
    return {"prepare": prepare, "build": build, "template": template, "deploy": deploy}


def plan_error(*args, **kwargs) -> str:
    with pytest.raises(PlanError) as exc:
        plan_resume(*args, **kwargs)
    return exc.value.args[0]


# -- plan_resume: refusals -------------------------------------------------------------


def test_plan_resume__retry_failed_with_nothing_failed():
    assert plan_error(deploy(), st(build="cancelled", template="cancelled"), "retry_failed") == (
        "Nothing to retry: no step failed"
    )


def test_plan_resume__continue_from_a_step_whose_dependency_failed():
    assert plan_error(deploy(), st(), "continue_from", "template") == (
        "Cannot continue from 'template': it depends on 'build', which is failed"
    )


def test_plan_resume__only_a_step_whose_dependency_is_pending():
    assert plan_error(deploy(), st(), "only", "deploy") == (
        "Cannot run only 'deploy': it depends on 'template', which is pending"
    )


def test_plan_resume__unknown_step():
    for kwargs in ({"mode": "only", "step": "nope"}, {"skip": ["nope"]}):
        with pytest.raises(UnknownStep) as exc:
            plan_resume(deploy(), st(), **kwargs)
        assert exc.value.args == ("Workflow 'deploy' has no step named 'nope'",)
        assert (exc.value.workflow, exc.value.name) == ("deploy", "nope")


@pytest.mark.parametrize(
    ("statuses", "kwargs", "message"),
    [
        (
            st(),
            {"mode": "restart"},
            "Unknown resume mode 'restart': use one of resume, retry_failed, continue_from, only",
        ),
        (st(), {"mode": "only"}, "Mode only needs a step"),
        (st(), {"mode": "continue_from"}, "Mode continue_from needs a step"),
        (st(), {"mode": "resume", "step": "build"}, "Mode resume does not take a step"),
        (st(), {"mode": "retry_failed", "step": "build"}, "Mode retry_failed does not take a step"),
        (st(build="running"), {}, "Step 'build' is still running"),
        (st(build="retrying"), {"mode": "retry_failed"}, "Step 'build' is still retrying"),
        (
            st(),
            {"clear_items": True},
            "Clearing done items is offered only with continue_from and only",
        ),
        (st(), {"skip": ["prepare"]}, "Cannot skip 'prepare': it already completed"),
        (
            st(build="completed", template="completed", deploy="completed"),
            {},
            "Nothing to resume: no step is left to run",
        ),
        (
            st(build="completed", template="completed", deploy="skipped"),
            {"skip": ["deploy"]},
            "Nothing to resume: no step is left to run",
        ),
        (
            st(build="completed", template="completed", deploy="completed"),
            {"mode": "retry_failed"},
            "Nothing to retry: no step failed",
        ),
    ],
)
def test_plan_resume__refusals(statuses, kwargs, message):
    assert plan_error(deploy(), statuses, **kwargs) == message


def test_plan_resume__nothing_would_run():
    # c is pending but can never start: a required step upstream of it failed.
    wf = Workflow("x", [n("a"), n("b", "a"), n("c", "b")])
    statuses = {"a": "failed", "b": "completed", "c": "pending"}
    assert plan_error(wf, statuses, "only", "c") == "Nothing would run"
    assert plan_error(wf, statuses, "continue_from", "c") == "Nothing would run"


# -- plan_resume: plans ------------------------------------------------------------------


def test_plan_resume__resume_after_failure():
    plan = plan_resume(deploy(), st())
    assert plan == ResumePlan(
        mode="resume",
        step=None,
        reset=["build"],
        skip=[],
        kept=["prepare"],
        will_run=["build", "template", "deploy"],
        scope=None,
        clear_items=False,
    )
    assert plan.summary() == "Will run build, template, deploy. Keeps prepare."


def test_plan_resume__resume_after_cancel_resets_failed_and_cancelled():
    plan = plan_resume(deploy(), st(build="timed_out", template="cancelled", deploy="cancelled"))
    assert (plan.reset, plan.will_run, plan.kept) == (
        ["build", "template", "deploy"],
        ["build", "template", "deploy"],
        ["prepare"],
    )


def test_plan_resume__retry_failed_resets_failed_and_cancelled_below_it():
    wf = Workflow("x", [n("a"), n("b", "a"), n("c", "b"), n("other")])
    plan = plan_resume(
        wf,
        {"a": "completed", "b": "failed", "c": "cancelled", "other": "cancelled"},
        "retry_failed",
    )
    assert plan == ResumePlan("retry_failed", None, ["b", "c"], [], ["a"], ["b", "c"], None)
    assert plan.summary() == "Will run b, c. Keeps a."


def test_plan_resume__continue_from():
    done = st(build="completed", template="completed", deploy="completed")
    plan = plan_resume(deploy(), done, "continue_from", "template")
    assert plan == ResumePlan(
        mode="continue_from",
        step="template",
        reset=["template", "deploy"],
        skip=[],
        kept=["prepare", "build"],
        will_run=["template", "deploy"],
        scope=None,
    )
    assert plan.summary() == "Will run template, deploy. Keeps prepare, build."


def test_plan_resume__continue_from_with_clear_items():
    done = st(build="completed", template="completed", deploy="completed")
    plan = plan_resume(deploy(), done, "continue_from", "build", clear_items=True)
    assert (plan.reset, plan.clear_items) == (["build", "template", "deploy"], True)
    assert plan.summary() == (
        "Will run build, template, deploy. Keeps prepare. "
        "Clears the items already done by build, template, deploy."
    )


def test_plan_resume__continue_from_a_failed_step():
    plan = plan_resume(deploy(), st(), "continue_from", "build")
    assert (plan.reset, plan.will_run) == (["build"], ["build", "template", "deploy"])


def test_plan_resume__only():
    done = st(build="completed", template="completed", deploy="completed")
    plan = plan_resume(deploy(), done, "only", "template")
    assert plan == ResumePlan(
        mode="only",
        step="template",
        reset=["template"],
        skip=[],
        kept=["prepare", "build", "deploy"],
        will_run=["template"],
        scope=frozenset({"template"}),
    )
    assert plan.summary() == "Will run template. Keeps prepare, build, deploy."


def test_plan_resume__skip():
    plan = plan_resume(deploy(), st(), skip=["deploy", "deploy"])
    assert plan == ResumePlan(
        mode="resume",
        step=None,
        reset=["build"],
        skip=["deploy"],
        kept=["prepare"],
        will_run=["build", "template"],
        scope=None,
    )
    assert plan.summary() == "Will run build, template. Will skip deploy. Keeps prepare."


def test_plan_resume__skipping_the_only_failure_is_a_plan():
    wf = Workflow("x", [n("a"), n("b", "a")])
    plan = plan_resume(wf, {"a": "completed", "b": "failed"}, skip=["b"])
    assert (plan.reset, plan.skip, plan.will_run, plan.kept) == (["b"], ["b"], [], ["a"])
    assert plan.summary() == "Will skip b. Keeps a."


def test_plan_resume__blocked_steps_are_not_in_will_run():
    wf = Workflow("x", [n("a"), n("b", "a"), n("c")])
    plan = plan_resume(wf, {"a": "completed", "b": "cancelled", "c": "failed"}, "retry_failed")
    # b is cancelled but not below the failed c, so it stays cancelled.
    assert (plan.reset, plan.will_run) == (["c"], ["c"])


def test_plan_resume__rerun_resets_rolled_back_steps():
    statuses = {
        "prepare": "completed",
        "build": "completed",
        "template": "failed",
        "deploy": "pending",
    }
    for mode in ("resume", "retry_failed"):
        plan = plan_resume(deploy(), statuses, mode, rerun=["prepare", "build"])
        assert (plan.reset, plan.kept, plan.will_run) == (
            ["prepare", "build", "template"],
            [],
            ["prepare", "build", "template", "deploy"],
        )
    plan = plan_resume(deploy(), statuses, "resume")
    assert (plan.reset, plan.kept) == (["template"], ["prepare", "build"])


def test_plan_resume__does_not_modify_statuses():
    statuses = st()
    plan_resume(deploy(), statuses, skip=["deploy"])
    assert statuses == st()


# -- advance --------------------------------------------------------------------------


def diamond(**settings) -> Workflow:
    return Workflow("diamond", [n("a"), n("b", "a"), n("c", "a"), n("d", "b", "c")], **settings)


def test_plan_start():
    assert plan_start(diamond()) == Advance(ready=["a"])
    wide = Workflow("wide", [n("a"), n("b"), n("c")], max_parallel=2)
    assert plan_start(wide) == Advance(ready=["a", "b"])


def test_advance__ready_after_dependencies():
    wf = diamond()
    assert advance(wf, {"a": "completed", "b": "pending", "c": "pending", "d": "pending"}) == (
        Advance(ready=["b", "c"])
    )
    assert advance(wf, {"a": "completed", "b": "completed", "c": "running", "d": "pending"}) == (
        Advance()
    )
    assert advance(wf, {"a": "completed", "b": "completed", "c": "skipped", "d": "pending"}) == (
        Advance(ready=["d"])
    )


def test_advance__finished():
    wf = diamond()
    done = dict.fromkeys("abcd", "completed")
    assert advance(wf, done) == Advance(run_status=RunStatus.COMPLETED)
    assert advance(wf, done).finished is True
    failed = {"a": "completed", "b": "failed", "c": "completed", "d": "pending"}
    assert advance(wf, failed) == Advance(run_status=RunStatus.FAILED, not_run=["d"])


def test_advance__failure_halts_but_waits_for_active_steps():
    wf = diamond()
    statuses = {"a": "completed", "b": "failed", "c": "running", "d": "pending"}
    assert advance(wf, statuses) == Advance()
    assert blocking_failure(wf, statuses) == "b"


def test_advance__cancelling_starts_nothing():
    wf = diamond()
    statuses = {"a": "completed", "b": "pending", "c": "pending", "d": "pending"}
    assert advance(wf, statuses, cancelling=True) == Advance(
        run_status=RunStatus.CANCELLED, not_run=["b", "c", "d"]
    )


def test_advance__conditions_and_upstream_skips():
    wf = Workflow(
        "x",
        [
            n("a"),
            step(name="b", depends_on="a", when=lambda ctx: False)(lambda ctx: None),
            n("e", "b"),
            n("f", "e"),
            n("g", "b", "a"),
        ],
    )
    asked = []

    def condition(name):
        asked.append(name)
        return False

    statuses = {"a": "completed", "b": "pending", "e": "pending", "f": "pending", "g": "pending"}
    assert advance(wf, statuses, condition=condition) == Advance(
        ready=["g"],
        skipped={"b": REASON_CONDITION, "e": "upstream skipped: b", "f": "upstream skipped: e"},
    )
    assert asked == ["b"]  # only steps that declare a condition are asked


RULED_OUT = Advance(
    skipped={"b": "upstream skipped: a", "c": "upstream skipped: b"},
    run_status=RunStatus.COMPLETED,
)


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (None, RULED_OUT),
        ({"a": REASON_CONDITION}, RULED_OUT),
        ({"a": "upstream skipped: x"}, RULED_OUT),
        ({"a": REASON_USER}, Advance(ready=["b"])),
        ({"a": REASON_CAN_SKIP}, Advance(ready=["b"])),
        ({}, Advance(ready=["b"])),
    ],
    ids=["no-reasons", "condition", "upstream", "user", "can-skip", "unknown-reason"],
)
def test_advance__only_a_ruled_out_branch_skips_its_dependants(reasons, expected):
    wf = Workflow("x", [n("a"), n("b", "a"), n("c", "b")])
    statuses = {"a": "skipped", "b": "pending", "c": "pending"}
    assert advance(wf, statuses, skip_reasons=reasons) == expected


def test_advance__a_join_runs_unless_every_dependency_is_ruled_out():
    wf = Workflow("x", [n("a"), n("b"), n("d", "a", "b")])
    statuses = {"a": "skipped", "b": "skipped", "d": "pending"}
    reasons = {"a": REASON_CONDITION, "b": REASON_USER}
    assert advance(wf, statuses, skip_reasons=reasons) == Advance(ready=["d"])
    reasons = {"a": REASON_CONDITION, "b": "upstream skipped: z"}
    assert advance(wf, statuses, skip_reasons=reasons) == Advance(
        skipped={"d": "upstream skipped: a, b"}, run_status=RunStatus.COMPLETED
    )


def test_advance__skips_decided_in_the_same_call_rule_out_their_dependants():
    wf = Workflow(
        "x",
        [
            n("a"),
            step(name="b", depends_on="a", when=lambda ctx: False)(lambda ctx: None),
            n("c", "b"),
            n("d", "c"),
        ],
    )
    statuses = {"a": "completed", "b": "pending", "c": "pending", "d": "pending"}
    assert advance(wf, statuses, condition=lambda name: False, skip_reasons={}) == Advance(
        skipped={"b": REASON_CONDITION, "c": "upstream skipped: b", "d": "upstream skipped: c"},
        run_status=RunStatus.COMPLETED,
    )


def test_advance__optional_failure_lets_dependants_run():
    wf = Workflow("x", [n("a", on_failure="continue"), n("b", "a")])
    assert advance(wf, {"a": "failed", "b": "pending"}) == Advance(ready=["b"])
    assert advance(wf, {"a": "timed_out", "b": "completed"}) == Advance(
        run_status=RunStatus.COMPLETED
    )


def test_advance__scope():
    wf = diamond()
    statuses = {"a": "completed", "b": "pending", "c": "pending", "d": "pending"}
    assert advance(wf, statuses, scope={"c"}) == Advance(ready=["c"])
    done = {"a": "completed", "b": "pending", "c": "completed", "d": "pending"}
    assert advance(wf, done, scope={"c"}) == Advance(
        run_status=RunStatus.FAILED, not_run=["b", "d"]
    )


def test_advance__limit_caps_active_steps():
    wf = Workflow("wide", [n("a"), n("b"), n("c"), n("d")])
    pending = dict.fromkeys("abcd", "pending")
    assert advance(wf, pending, limit=2) == Advance(ready=["a", "b"])
    assert advance(wf, {**pending, "a": "running"}, limit=2) == Advance(ready=["b"])
    assert advance(wf, {**pending, "a": "running", "b": "queued"}, limit=2) == Advance()
    assert advance(wf, {**pending, "a": "retrying", "b": "queued", "c": "running"}, limit=2) == (
        Advance()
    )
    assert advance(wf, pending, limit=None) == Advance(ready=["a", "b", "c", "d"])


# -- after_attempt ----------------------------------------------------------------------


RETRY3 = Retry(max_attempts=3, backoff_base=1, backoff_factor=2)


@pytest.mark.parametrize(
    ("retry", "attempt", "outcome", "error", "decision"),
    [
        (RETRY3, 1, AttemptStatus.COMPLETED, None, AttemptDecision(S.COMPLETED)),
        (RETRY3, 1, AttemptStatus.SKIPPED, None, AttemptDecision(S.SKIPPED)),
        (RETRY3, 1, AttemptStatus.CANCELLED, None, AttemptDecision(S.CANCELLED)),
        (RETRY3, 1, AttemptStatus.FAILED, ValueError("x"), AttemptDecision(S.RETRYING, 1.0)),
        (RETRY3, 2, AttemptStatus.FAILED, ValueError("x"), AttemptDecision(S.RETRYING, 2.0)),
        (RETRY3, 3, AttemptStatus.FAILED, ValueError("x"), AttemptDecision(S.FAILED)),
        (RETRY3, 1, AttemptStatus.WORKER_LOST, None, AttemptDecision(S.RETRYING, 1.0)),
        (RETRY3, 3, AttemptStatus.WORKER_LOST, None, AttemptDecision(S.FAILED)),
        (RETRY3, 2, AttemptStatus.TIMED_OUT, StepTimeout(5), AttemptDecision(S.RETRYING, 2.0)),
        (RETRY3, 3, AttemptStatus.TIMED_OUT, StepTimeout(5), AttemptDecision(S.TIMED_OUT)),
        (Retry(), 1, AttemptStatus.FAILED, ValueError("x"), AttemptDecision(S.FAILED)),
        (Retry(), 1, AttemptStatus.TIMED_OUT, StepTimeout(), AttemptDecision(S.TIMED_OUT)),
        (
            Retry(max_attempts=3, retry_timeouts=False),
            1,
            AttemptStatus.TIMED_OUT,
            StepTimeout(1),
            AttemptDecision(S.TIMED_OUT),
        ),
        (
            Retry(max_attempts=3, retry_on=(ConnectionError,)),
            1,
            AttemptStatus.FAILED,
            KeyError("k"),
            AttemptDecision(S.FAILED),
        ),
        (
            Retry(max_attempts=3, retry_on=(ConnectionError,)),
            1,
            AttemptStatus.FAILED,
            ConnectionResetError(),
            AttemptDecision(S.RETRYING, 1.0),
        ),
        (
            Retry(max_attempts=9, backoff_base=10, backoff_factor=3, backoff_max=60),
            4,
            AttemptStatus.FAILED,
            None,
            AttemptDecision(S.RETRYING, 60.0),
        ),
    ],
)
def test_after_attempt(retry, attempt, outcome, error, decision):
    assert after_attempt(n("s", retry=retry), attempt, outcome, error) == decision


def test_retry_delay__jitter_stays_in_its_band_and_follows_the_rng():
    policy = Retry(max_attempts=5, backoff_base=4, backoff_factor=2, jitter=0.25)
    delays = [policy.delay(2, random.Random(seed)) for seed in range(50)]
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) == 50
    assert policy.delay(2, random.Random(7)) == policy.delay(2, random.Random(7))


# -- progress and the rest ----------------------------------------------------------------


def test_weighted_progress():
    wf = Workflow("w", [n("a", weight=1), n("b", "a", weight=3)])
    assert weighted_progress(wf, {"a": "pending", "b": "pending"}) == 0.0
    assert weighted_progress(wf, {"a": "completed", "b": "pending"}) == 0.25
    assert weighted_progress(wf, {"a": "completed", "b": "running"}, {"b": 0.5}) == 0.625
    assert weighted_progress(wf, {"a": "completed", "b": "running"}, {"b": 7}) == 1.0
    assert weighted_progress(wf, {"a": "completed", "b": "failed"}, {"b": 0.5}) == 0.25
    assert weighted_progress(wf, {"a": "skipped", "b": "completed"}) == 1.0


def test_weighted_progress__optional_failure_counts_as_done():
    wf = Workflow("w", [n("a", weight=1, on_failure="continue"), n("b", weight=1)])
    assert weighted_progress(wf, {"a": "failed", "b": "pending"}) == 0.5


def test_weighted_progress__zero_weights_count_steps():
    wf = Workflow("w", [n("a", weight=0), n("b", weight=0), n("c", weight=0), n("d", weight=0)])
    assert (
        weighted_progress(wf, {"a": "completed", "b": "skipped", "c": "running", "d": "pending"})
        == 0.5
    )


def test_rollback_order():
    undo = step(name="x", rollback=lambda ctx, result: None)
    wf = Workflow(
        "w",
        [
            undo(lambda ctx: None),
            n("y"),
            step(name="z", rollback=lambda c, r: None)(lambda c: None),
        ],
    )
    assert rollback_order(wf, ["x", "y", "z"]) == ["z", "x"]
    assert rollback_order(wf, ["z", "x"]) == ["x", "z"]


def test_unknown_steps():
    unknown_steps(deploy(), ["build", "deploy"])
    with pytest.raises(UnknownStep) as exc:
        unknown_steps(deploy(), ["build", "nope", "zz"])
    assert exc.value.args == ("Workflow 'deploy' has no step named 'nope'",)
