"""Child runs and the workflow timeout, in the library (local runner, planner)."""

from __future__ import annotations

import pytest

from stepflow import Param, StepContext, Workflow, WorkflowDefinitionError, run_local, step
from stepflow.planner import ChildSummary, after_children, leaf_steps
from stepflow.states import RunStatus, StepStatus


def test_workflow_timeout_is_validated():
    @step()
    def a(ctx: StepContext) -> None:
        pass

    assert Workflow("w", [a], timeout=90).timeout == 90.0
    assert Workflow("w", [a]).timeout is None
    for bad in (0, -1, "10", True):
        with pytest.raises(WorkflowDefinitionError) as exc:
            Workflow("w", [a], timeout=bad)  # type: ignore[arg-type]
        assert str(exc.value) == f"Workflow 'w' has an invalid timeout {bad!r}: use seconds > 0"
    # The timeout is not part of the definition: changing it needs no confirmation.
    assert Workflow("w", [a], timeout=5).definition_hash == Workflow("w", [a]).definition_hash
    assert Workflow("w", [a], timeout=5).insert_after("a", step("b")(lambda c: None)).timeout == 5


def test_after_children_all_completed():
    children = [
        ChildSummary(7, "etl", "completed", outputs={"load": {"rows": 3}}),
        ChildSummary(8, "etl", "completed", outputs={"load": {"rows": 4}}),
    ]
    decision = after_children({"asked": 2}, children)
    assert decision.status == StepStatus.COMPLETED
    assert decision.error == ""
    assert decision.output == {
        "asked": 2,
        "children": [
            {"run": 7, "workflow": "etl", "status": "completed", "outputs": {"load": {"rows": 3}}},
            {"run": 8, "workflow": "etl", "status": "completed", "outputs": {"load": {"rows": 4}}},
        ],
    }
    assert after_children(None, []).output == {"children": []}
    assert after_children(5, []).output == {"result": 5, "children": []}


def test_after_children_names_the_first_that_did_not_complete():
    children = [
        ChildSummary(7, "etl", "completed"),
        ChildSummary(8, "etl", "timed_out", "Timed out: the workflow's timeout of 1m passed"),
        ChildSummary(9, "etl", "cancelled"),
    ]
    decision = after_children(None, children)
    assert decision.status == StepStatus.FAILED
    assert decision.error == (
        "child run #8 (etl) timed out: Timed out: the workflow's timeout of 1m passed (and 1 more)"
    )


def _child_workflow(fail: set[int]) -> Workflow:
    @step()
    def work(ctx: StepContext) -> dict[str, int]:
        calls.append(ctx.params["n"])
        if ctx.params["n"] in fail:
            raise RuntimeError(f"n={ctx.params['n']} failed")
        return {"n": ctx.params["n"] * 2}

    @step(depends_on="work")
    def report(ctx: StepContext) -> dict[str, int]:
        return {"double": ctx.inputs["work"]["n"]}

    return Workflow("child", [work, report], params=[Param("n", "int")])


calls: list[int] = []


def _parent() -> Workflow:
    @step()
    def fan(ctx: StepContext) -> None:
        for n in range(3):
            assert ctx.start_child("child", {"n": n}) == n

    @step(depends_on="fan")
    def total(ctx: StepContext) -> dict[str, int]:
        children = ctx.inputs["fan"]["children"]
        return {"sum": sum(c["outputs"]["report"]["double"] for c in children)}

    return Workflow("parent", [fan, total])


def test_local_runner_runs_child_runs_and_passes_their_outputs():
    calls.clear()
    child = _child_workflow(set())
    assert leaf_steps(child) == ["report"]
    result = run_local(_parent(), workflows=[child])
    assert result.status == RunStatus.COMPLETED
    assert result["total"].output == {"sum": 6}
    assert [c["status"] for c in result["fan"].output["children"]] == ["completed"] * 3
    assert calls == [0, 1, 2]


def test_local_resume_reuses_completed_children_and_resumes_the_failed_one():
    from stepflow.local import LocalRunner

    calls.clear()
    fail = {1}
    child = _child_workflow(fail)
    runner = LocalRunner(_parent(), workflows=[child])
    result = runner.run()
    assert result.status == RunStatus.FAILED
    assert result["fan"].status == StepStatus.FAILED
    assert result["fan"].error == (
        "child run #local-fan-1 (child) failed: work: RuntimeError: n=1 failed"
    )
    fail.clear()
    result = runner.resume("retry_failed")
    assert result.status == RunStatus.COMPLETED
    assert calls == [0, 1, 2, 1]  # only the failed child ran again
    assert result["total"].output == {"sum": 6}


def test_local_child_of_an_unknown_workflow_fails_the_step():
    @step()
    def fan(ctx: StepContext) -> None:
        ctx.start_child("nope")

    result = run_local(Workflow("p", [fan]), workflows=[])
    assert result.status == RunStatus.FAILED
    assert result["fan"].error.startswith("child run 0 (nope): ")
