from __future__ import annotations

import signal
import threading
import time

import pytest

from stepflow import (
    InvalidParams,
    InvalidTransition,
    LocalRunner,
    Param,
    PlanError,
    Retry,
    StepResult,
    Workflow,
    planner,
    run_local,
    step,
)
from stepflow.states import AttemptStatus, RunStatus, StepStatus

from .factories import deploy_workflow, recording_step

A, R, S = AttemptStatus, RunStatus, StepStatus


def attempts(result, name):
    return [(a.number, a.status, a.error) for a in result[name].attempts]


def skip_reasons(result):
    return {n: r.skip_reason for n, r in result.steps.items() if r.skip_reason}


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


# -- the reference scenario: prepare -> build -> template -> deploy -------------------------


@pytest.fixture
def failed_at_build():
    calls: list[str] = []
    runner = LocalRunner(deploy_workflow(calls, fail={"build": 1}), sleep=no_sleep)
    result = runner.run()
    return runner, result, calls


def test_run__fails_at_build(failed_at_build):
    _, result, calls = failed_at_build
    assert result.status == R.FAILED
    assert result.statuses == {
        "prepare": "completed",
        "build": "failed",
        "template": "pending",
        "deploy": "pending",
    }
    assert result["build"].error == "RuntimeError: build broke"
    assert attempts(result, "build") == [(1, A.FAILED, "RuntimeError: build broke")]
    assert result["build"].attempts[0].traceback.endswith("RuntimeError: build broke\n")
    assert result["prepare"].output == {"step": "prepare"}
    assert result["template"].attempts == []
    assert result.executed == ["prepare", "build"]
    assert calls == ["prepare", "build"]
    assert result.progress == 0.25
    assert result.rollbacks == []


def test_resume_retry_failed__reruns_from_build(failed_at_build):
    runner, _, calls = failed_at_build
    result = runner.resume("retry_failed")
    assert result.status == R.COMPLETED
    assert set(result.statuses.values()) == {"completed"}
    assert result.executed == ["prepare", "build", "build", "template", "deploy"]
    assert calls.count("prepare") == 1
    assert attempts(result, "build") == [
        (1, A.FAILED, "RuntimeError: build broke"),
        (2, A.COMPLETED, ""),
    ]
    assert result["build"].error == ""
    assert result.progress == 1.0


def test_resume__plain_resume_also_reruns_from_build(failed_at_build):
    runner, _, calls = failed_at_build
    assert runner.resume().status == R.COMPLETED
    assert calls == ["prepare", "build", "build", "template", "deploy"]


def test_resume_continue_from__reruns_template_and_deploy(failed_at_build):
    runner, _, calls = failed_at_build
    runner.resume("retry_failed")
    del calls[:]
    result = runner.resume("continue_from", "template")
    assert result.status == R.COMPLETED
    assert calls == ["template", "deploy"]
    assert result.executed[-2:] == ["template", "deploy"]
    assert len(result.executed) == 7
    assert attempts(result, "template") == [(1, A.COMPLETED, ""), (2, A.COMPLETED, "")]


def test_resume_only__runs_only_template(failed_at_build):
    runner, _, calls = failed_at_build
    runner.resume("retry_failed")
    del calls[:]
    result = runner.resume("only", "template")
    assert result.status == R.COMPLETED
    assert calls == ["template"]
    assert set(result.statuses.values()) == {"completed"}
    assert runner.scope == frozenset({"template"})


def test_resume_only__on_a_failed_run_leaves_it_failed(failed_at_build):
    runner, _, calls = failed_at_build
    result = runner.resume("only", "build")
    assert calls == ["prepare", "build", "build"]
    assert result.status == R.FAILED
    assert result.statuses == {
        "prepare": "completed",
        "build": "completed",
        "template": "pending",
        "deploy": "pending",
    }


def test_resume_skip__skips_on_request(failed_at_build):
    runner, _, calls = failed_at_build
    result = runner.resume(skip=["deploy"])
    assert result.status == R.COMPLETED
    assert result.statuses == {
        "prepare": "completed",
        "build": "completed",
        "template": "completed",
        "deploy": "skipped",
    }
    assert skip_reasons(result) == {"deploy": "skipped on request"}
    assert calls == ["prepare", "build", "build", "template"]


def test_resume_skip__dependants_of_a_skipped_step_run_as_previewed(failed_at_build):
    runner, _, calls = failed_at_build
    plan = runner.preview(skip=["build"])
    assert plan.will_run == ["template", "deploy"]
    del calls[:]
    result = runner.resume(skip=["build"])
    assert calls == ["template", "deploy"]
    assert result.status == R.COMPLETED
    assert result.statuses == {
        "prepare": "completed",
        "build": "skipped",
        "template": "completed",
        "deploy": "completed",
    }
    assert skip_reasons(result) == {"build": "skipped on request"}
    assert result["template"].output == {"step": "template"}


def test_resume__refused_while_nothing_is_left(failed_at_build):
    runner, _, _ = failed_at_build
    runner.resume()
    with pytest.raises(PlanError) as exc:
        runner.resume()
    assert exc.value.args == ("Nothing to resume: no step is left to run",)
    assert runner.status == R.COMPLETED


def test_run__inputs_and_params_reach_the_steps():
    seen = {}

    @step()
    def fetch(ctx):
        return {"rows": ctx.params["rows"]}

    @step(depends_on="fetch")
    def count(ctx):
        seen.update(inputs=dict(ctx.inputs), params=dict(ctx.params), run_id=ctx.run_id)
        return StepResult(data=ctx.inputs["fetch"]["rows"] * 2)

    wf = Workflow("w", [fetch, count], params=[Param("rows", type="int", default=1)])
    result = run_local(wf, {"rows": "21"})
    assert result.status == R.COMPLETED
    assert result["count"].output == 42
    assert seen == {"inputs": {"fetch": {"rows": 21}}, "params": {"rows": 21}, "run_id": "local"}


def test_run__invalid_params_are_refused_before_anything_runs():
    wf = Workflow("w", [recording_step("a", calls=[])], params=[Param("n", type="int")])
    with pytest.raises(InvalidParams) as exc:
        LocalRunner(wf, {"n": "many"})
    assert exc.value.args == ("Invalid parameters: n: expected a whole number, got 'many'",)


@pytest.mark.parametrize(
    ("returned", "status", "error"),
    [
        (StepResult(success=False, error="disk full"), S.FAILED, "disk full"),
        (StepResult(success=False), S.FAILED, "the step reported failure"),
        (StepResult(skipped=True), S.SKIPPED, ""),
        (ValueError(), S.FAILED, "ValueError"),
        (
            17,
            S.FAILED,
            "TypeError: a step must return a StepResult, a dict or None, not int",
        ),
    ],
)
def test_run__what_a_step_returns(returned, status, error):
    def body(ctx):
        if isinstance(returned, Exception):
            raise returned
        return returned

    result = run_local(Workflow("w", [step(name="a")(body)]))
    assert (result["a"].status, result["a"].error) == (status, error)


def test_run__diamond():
    calls: list[str] = []
    wf = Workflow(
        "diamond",
        [
            recording_step("a", calls=calls),
            recording_step("b", ["a"], calls=calls),
            recording_step("c", ["a"], calls=calls),
            recording_step("d", ["b", "c"], calls=calls),
        ],
    )
    assert wf.levels() == [["a"], ["b", "c"], ["d"]]
    result = run_local(wf)
    assert (result.status, calls) == (R.COMPLETED, ["a", "b", "c", "d"])


def test_run__twice_is_harmless():
    calls: list[str] = []
    runner = LocalRunner(deploy_workflow(calls))
    runner.run()
    assert runner.run().status == R.COMPLETED
    assert calls == ["prepare", "build", "template", "deploy"]


def test_run__max_parallel_still_runs_everything():
    calls: list[str] = []
    wf = Workflow("w", [recording_step(x, calls=calls) for x in "abc"], max_parallel=1)
    assert run_local(wf).status == R.COMPLETED
    assert calls == ["a", "b", "c"]


# -- retries ---------------------------------------------------------------------------


def flaky(fail_times: int, retry: Retry, name: str = "flaky"):
    seen: list[int] = []

    @step(name=name, retry=retry)
    def body(ctx):
        seen.append(ctx.attempt)
        if len(seen) <= fail_times:
            raise ConnectionError(f"attempt {len(seen)}")
        return {"ok": True}

    return body, seen


def test_retry__fails_twice_then_succeeds():
    body, seen = flaky(2, Retry(max_attempts=3, backoff_base=1, backoff_factor=2))
    sleeps: list[float] = []
    result = run_local(Workflow("w", [body]), sleep=sleeps.append)
    assert result.status == R.COMPLETED
    assert attempts(result, "flaky") == [
        (1, A.FAILED, "ConnectionError: attempt 1"),
        (2, A.FAILED, "ConnectionError: attempt 2"),
        (3, A.COMPLETED, ""),
    ]
    assert sleeps == [1.0, 2.0]
    assert seen == [1, 2, 3]
    assert result.executed == ["flaky", "flaky", "flaky"]


def test_retry__exhausted():
    body, _ = flaky(5, Retry(max_attempts=3, backoff_base=1, backoff_factor=2))
    sleeps: list[float] = []
    result = run_local(Workflow("w", [body]), sleep=sleeps.append)
    assert (result.status, result["flaky"].status) == (R.FAILED, S.FAILED)
    assert [a.status for a in result["flaky"].attempts] == [A.FAILED] * 3
    assert result["flaky"].error == "ConnectionError: attempt 3"
    assert sleeps == [1.0, 2.0]


def test_retry__not_retryable_error():
    body, _ = flaky(5, Retry(max_attempts=3, retry_on=(TimeoutError,)))
    result = run_local(Workflow("w", [body]), sleep=no_sleep)
    assert attempts(result, "flaky") == [(1, A.FAILED, "ConnectionError: attempt 1")]


def test_retry__a_resumed_step_gets_its_attempts_again():
    body, seen = flaky(3, Retry(max_attempts=2, backoff_base=1))
    sleeps: list[float] = []
    runner = LocalRunner(Workflow("w", [body]), sleep=sleeps.append)
    assert runner.run().status == R.FAILED
    result = runner.resume("retry_failed")
    assert result.status == R.COMPLETED
    assert [(a.number, a.status) for a in result["flaky"].attempts] == [
        (1, A.FAILED),
        (2, A.FAILED),
        (3, A.FAILED),
        (4, A.COMPLETED),
    ]
    assert seen == [1, 2, 3, 4]
    assert sleeps == [1.0, 1.0]


# -- rollback ----------------------------------------------------------------------------


def test_rollback__reverse_order_over_completed_steps_only():
    undone: list[tuple[str, object]] = []

    def make(name, deps=(), fail=False):
        def body(ctx):
            if fail:
                raise ValueError(f"{name} failed")
            return StepResult(data=name, rollback_data={"created": name})

        def undo(ctx, result):
            undone.append((name, result.rollback_data))

        return step(name=name, depends_on=list(deps), rollback=undo)(body)

    wf = Workflow(
        "w",
        [
            make("a"),
            step(name="plain", depends_on="a")(lambda ctx: None),
            make("b", ["plain"]),
            make("c", ["b"], fail=True),
            make("d", ["c"]),
        ],
    )
    result = run_local(wf)
    assert result.status == R.FAILED
    assert undone == [("b", {"created": "b"}), ("a", {"created": "a"})]
    assert result.rollbacks == ["b", "a"]
    assert {n: r.rolled_back for n, r in result.steps.items()} == {
        "a": True,
        "plain": False,
        "b": True,
        "c": False,
        "d": False,
    }
    assert result.statuses == {
        "a": "completed",
        "plain": "completed",
        "b": "completed",
        "c": "failed",
        "d": "pending",
    }


def test_rollback__resume_reruns_the_rolled_back_steps():
    calls: list[str] = []
    undone: list[str] = []
    wf = Workflow(
        "w",
        [
            recording_step("a", calls=calls, rollback=lambda ctx, r: undone.append("a")),
            recording_step("b", ["a"], calls=calls, rollback=lambda ctx, r: undone.append("b")),
            recording_step("c", ["b"], calls=calls, fail_times=2),
        ],
    )
    runner = LocalRunner(wf)
    runner.run()
    assert (calls, undone) == (["a", "b", "c"], ["b", "a"])
    assert runner.preview("retry_failed").reset == ["a", "b", "c"]
    result = runner.resume("retry_failed")
    assert calls == ["a", "b", "c", "a", "b", "c"]
    assert undone == ["b", "a", "b", "a"]  # the second failure undoes the redone work again
    assert result.rollbacks == ["b", "a", "b", "a"]


def test_rollback__a_failing_rollback_is_recorded_and_the_others_still_run():
    undone: list[str] = []

    def broken(ctx, result):
        raise OSError("cannot undo")

    wf = Workflow(
        "w",
        [
            step(name="a", rollback=lambda ctx, r: undone.append("a"))(lambda ctx: None),
            step(name="b", depends_on="a", rollback=broken)(lambda ctx: None),
            step(name="c", depends_on="b")(lambda ctx: StepResult(success=False, error="no")),
        ],
    )
    result = run_local(wf)
    assert result.rollbacks == ["a"]
    assert undone == ["a"]
    assert (result["b"].rolled_back, result["b"].rollback_error) == (False, "OSError: cannot undo")


def test_rollback__not_on_success_nor_for_an_optional_failure():
    undone: list[str] = []
    wf = Workflow(
        "w",
        [
            step(name="a", rollback=lambda ctx, r: undone.append("a"))(lambda ctx: None),
            step(name="b", depends_on="a", on_failure="continue")(
                lambda ctx: StepResult(success=False, error="meh")
            ),
        ],
    )
    result = run_local(wf)
    assert (result.status, result.rollbacks, undone) == (R.COMPLETED, [], [])


# -- timeouts ----------------------------------------------------------------------------


def test_timeout__a_sleeping_step_times_out():
    @step(timeout=0.2)
    def slow(ctx):
        time.sleep(5)

    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    result = run_local(Workflow("w", [slow]), sleep=no_sleep)
    assert time.monotonic() - started < 2
    assert (result.status, result["slow"].status) == (R.FAILED, S.TIMED_OUT)
    assert attempts(result, "slow") == [(1, A.TIMED_OUT, "timed out after 0.2s")]
    assert "StepTimeout: timed out after 0.2s" in result["slow"].attempts[0].traceback
    assert signal.getsignal(signal.SIGALRM) == handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_timeout__is_not_swallowed_by_except_exception():
    @step(timeout=0.2)
    def stubborn(ctx):
        try:
            time.sleep(5)
        except Exception:
            return {"swallowed": True}

    result = run_local(Workflow("w", [stubborn]))
    assert attempts(result, "stubborn") == [(1, A.TIMED_OUT, "timed out after 0.2s")]
    assert result["stubborn"].output is None


def test_timeout__an_outer_alarm_is_kept_and_re_armed():
    fired: list[int] = []

    def outer(signum, frame):
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        result = run_local(Workflow("w", [step(name="quick", timeout=5)(lambda ctx: None)]))
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert result.status == R.COMPLETED
    assert 25 < left <= 30
    assert (handler, fired) == (outer, [])


def test_timeout__is_retried():
    calls: list[int] = []

    @step(timeout=0.2, retry=Retry(max_attempts=2, backoff_base=0.5))
    def slow_once(ctx):
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            time.sleep(5)
        return {"attempt": ctx.attempt}

    sleeps: list[float] = []
    result = run_local(Workflow("w", [slow_once]), sleep=sleeps.append)
    assert result.status == R.COMPLETED
    assert attempts(result, "slow_once") == [
        (1, A.TIMED_OUT, "timed out after 0.2s"),
        (2, A.COMPLETED, ""),
    ]
    assert (sleeps, result["slow_once"].output) == ([0.5], {"attempt": 2})


def test_timeout__not_retried_when_the_policy_says_so():
    @step(timeout=0.2, retry=Retry(max_attempts=3, retry_timeouts=False))
    def slow(ctx):
        time.sleep(5)

    result = run_local(Workflow("w", [slow]), sleep=no_sleep)
    assert attempts(result, "slow") == [(1, A.TIMED_OUT, "timed out after 0.2s")]


def test_timeout__cooperative_outside_the_main_thread():
    @step(timeout=0.2)
    def busy(ctx):
        for i in range(500):
            ctx.progress(i, 500)
            time.sleep(0.01)

    box = {}
    thread = threading.Thread(target=lambda: box.update(result=run_local(Workflow("w", [busy]))))
    thread.start()
    thread.join(10)
    result = box["result"]
    assert attempts(result, "busy") == [(1, A.TIMED_OUT, "timed out after 0.2s")]


def test_timeout__deadline_follows_the_injected_clock():
    now = [100.0]

    @step(timeout=30)
    def batch(ctx):
        for _ in range(10):
            now[0] += 20
            ctx.progress(1)

    result = run_local(Workflow("w", [batch]), clock=lambda: now[0])
    assert attempts(result, "batch") == [(1, A.TIMED_OUT, "timed out after 30s")]
    assert now[0] == 140.0


# -- conditions, can_skip, optional steps --------------------------------------------------


def branches(calls: list[str]) -> Workflow:
    def rec(name, deps=(), **kw):
        return recording_step(name, deps, calls=calls, **kw)

    return Workflow(
        "branches",
        [
            rec("a"),
            rec("b", ["a"], when=lambda ctx: ctx.params["x"]),
            rec("c", ["a"], when=lambda ctx: not ctx.params["x"]),
            rec("only_b", ["b"]),
            rec("after_only_b", ["only_b"]),
            rec("d", ["b", "c"]),
        ],
        params=[Param("x", type="bool")],
    )


def test_condition__false_skips_the_branch_and_the_join_runs():
    calls: list[str] = []
    result = run_local(branches(calls), {"x": False})
    assert result.status == R.COMPLETED
    assert result.statuses == {
        "a": "completed",
        "b": "skipped",
        "c": "completed",
        "only_b": "skipped",
        "after_only_b": "skipped",
        "d": "completed",
    }
    assert skip_reasons(result) == {
        "b": "condition is false",
        "only_b": "upstream skipped: b",
        "after_only_b": "upstream skipped: only_b",
    }
    assert calls == ["a", "c", "d"]
    assert result.progress == 1.0


def test_condition__the_other_branch():
    calls: list[str] = []
    result = run_local(branches(calls), {"x": "true"})
    assert skip_reasons(result) == {"c": "condition is false"}
    assert calls == ["a", "b", "only_b", "d", "after_only_b"]


def test_condition__sees_params_inputs_and_statuses():
    seen = {}

    def cond(ctx):
        seen.update(inputs=dict(ctx.inputs), statuses=dict(ctx.statuses), attempt=ctx.attempt)
        return True

    wf = Workflow(
        "w",
        [
            step(name="a")(lambda ctx: {"n": 1}),
            step(name="b", depends_on="a", when=cond)(lambda ctx: None),
        ],
    )
    run_local(wf)
    assert seen == {
        "inputs": {"a": {"n": 1}},
        "statuses": {"a": "completed", "b": "pending"},
        "attempt": 0,
    }


def test_condition__that_raises_fails_the_step():
    wf = Workflow(
        "w",
        [
            step(name="a")(lambda ctx: None),
            step(name="b", depends_on="a", when=lambda ctx: ctx.params["missing"])(
                lambda ctx: None
            ),
        ],
    )
    result = run_local(wf)
    assert (result.status, result["b"].status) == (R.FAILED, S.FAILED)


def test_can_skip__skips_the_work():
    calls: list[str] = []
    checked: list[int] = []

    def already_done(ctx):
        checked.append(ctx.attempt)
        return True

    wf = Workflow(
        "w",
        [
            recording_step("a", calls=calls, can_skip=already_done),
            recording_step("b", calls=calls),
            recording_step("c", ["a", "b"], calls=calls),
        ],
    )
    result = run_local(wf)
    assert result.status == R.COMPLETED
    assert result.statuses == {"a": "skipped", "b": "completed", "c": "completed"}
    assert attempts(result, "a") == [(1, A.SKIPPED, "")]
    assert (checked, calls) == ([1], ["b", "c"])
    assert result["a"].result == StepResult(skipped=True)
    assert skip_reasons(result) == {"a": planner.REASON_CAN_SKIP}


def test_can_skip__dependants_still_run():
    calls: list[str] = []
    wf = Workflow(
        "w",
        [
            recording_step("a", calls=calls, can_skip=lambda ctx: True),
            recording_step("b", ["a"], calls=calls),
        ],
    )
    result = run_local(wf)
    assert result.statuses == {"a": "skipped", "b": "completed"}
    assert calls == ["b"]


def test_optional_step__failure_does_not_fail_the_run():
    calls: list[str] = []
    wf = Workflow(
        "w",
        [
            recording_step("a", calls=calls),
            recording_step("notify", ["a"], calls=calls, fail_times=9, on_failure="continue"),
            recording_step("b", ["notify"], calls=calls),
        ],
    )
    result = run_local(wf)
    assert result.status == R.COMPLETED
    assert result.statuses == {"a": "completed", "notify": "failed", "b": "completed"}
    assert result["notify"].error == "RuntimeError: notify broke"
    assert result["b"].output == {"step": "b"}
    assert result.progress == 1.0


# -- cancellation ------------------------------------------------------------------------


def test_cancel__cooperative_then_resume():
    calls: list[str] = []
    holder: dict[str, LocalRunner] = {}

    def build(ctx):
        calls.append("build")
        if calls.count("build") == 1:
            holder["runner"].cancel()
            ctx.progress(1, 2, "halfway")
            calls.append("not reached")
        return {"built": True}

    wf = Workflow(
        "deploy",
        [
            recording_step("prepare", calls=calls),
            step(name="build", depends_on="prepare")(build),
            recording_step("template", ["build"], calls=calls),
            recording_step("deploy", ["template"], calls=calls),
        ],
    )
    runner = holder["runner"] = LocalRunner(wf)
    result = runner.run()
    assert result.status == R.CANCELLED
    assert result.statuses == {
        "prepare": "completed",
        "build": "cancelled",
        "template": "cancelled",
        "deploy": "cancelled",
    }
    assert attempts(result, "build") == [(1, A.CANCELLED, "cancelled")]
    assert runner.stores["build"].progress == (1, 2, "halfway")
    assert calls == ["prepare", "build"]

    result = runner.resume()
    assert result.status == R.COMPLETED
    assert set(result.statuses.values()) == {"completed"}
    assert calls == ["prepare", "build", "build", "template", "deploy"]
    assert runner.cancel_requested is False


def test_cancel__before_run_cancels_everything():
    calls: list[str] = []
    runner = LocalRunner(deploy_workflow(calls))
    runner.cancel()
    result = runner.run()
    assert result.status == R.CANCELLED
    assert set(result.statuses.values()) == {"cancelled"}
    assert calls == []


def test_cancel__retry_failed_is_refused_after_a_cancel():
    runner = LocalRunner(deploy_workflow([]))
    runner.cancel()
    runner.run()
    with pytest.raises(PlanError) as exc:
        runner.resume("retry_failed")
    assert exc.value.args == ("Nothing to retry: no step failed",)


# -- progress -------------------------------------------------------------------------------


def test_progress__weighted():
    seen: list[tuple[str, float]] = []

    @step(weight=1)
    def a(ctx):
        return None

    @step(weight=3, depends_on="a")
    def b(ctx):
        ctx.progress(1, 2)

    result = run_local(Workflow("w", [a, b]), on_progress=lambda p, name: seen.append((name, p)))
    assert seen == [
        ("a", 0.0),  # queued
        ("a", 0.0),  # running
        ("a", 0.25),  # completed
        ("b", 0.25),
        ("b", 0.25),
        ("b", 0.625),  # in-step progress 1/2
        ("b", 1.0),
    ]
    assert result.progress == 1.0


# -- the state rules hold in the runner --------------------------------------------------


def test_runner__refuses_a_transition_the_table_does_not_allow():
    runner = LocalRunner(deploy_workflow([]))
    runner.run()
    with pytest.raises(InvalidTransition) as exc:
        runner._set_step("build", S.RUNNING)
    assert exc.value.args == ("Step 'build' cannot go from completed to running",)


def test_cancel__after_the_last_step_completed_the_run_is_completed():
    holder: dict[str, LocalRunner] = {}

    @step()
    def last(ctx):
        holder["runner"].cancel()  # the cancel arrives as the step finishes

    runner = holder["runner"] = LocalRunner(Workflow("w", [last]))
    result = runner.run()
    assert result.statuses == {"last": "completed"}
    assert result.status == R.COMPLETED
