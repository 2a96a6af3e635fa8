"""Workflow factories shared by the unit tests (also imported by a subprocess in test_workflow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stepflow import Param, Retry, Step, StepResult, Workflow, step


def recording_step(
    name: str,
    depends_on: Iterable[str] = (),
    *,
    calls: list[str],
    fail_times: int = 0,
    error: str | None = None,
    **settings: Any,
) -> Step:
    """A step that appends its name to ``calls`` on every attempt and raises
    ``RuntimeError`` on its first ``fail_times`` attempts."""
    left = {"fails": fail_times}
    message = error or f"{name} broke"

    def body(ctx: Any) -> dict[str, Any]:
        calls.append(name)
        if left["fails"] > 0:
            left["fails"] -= 1
            raise RuntimeError(message)
        return {"step": name}

    return step(name=name, depends_on=list(depends_on), **settings)(body)


def deploy_workflow(calls: list[str], fail: dict[str, int] | None = None) -> Workflow:
    """prepare -> build -> template -> deploy; ``fail`` maps a step to how many attempts fail."""
    fail = fail or {}
    chain = [
        ("prepare", ()),
        ("build", ("prepare",)),
        ("template", ("build",)),
        ("deploy", ("template",)),
    ]
    return Workflow(
        "deploy",
        [recording_step(n, deps, calls=calls, fail_times=fail.get(n, 0)) for n, deps in chain],
    )


# -- a workflow built the same way in any process (for the definition hash) -------------


def _fetch(ctx: Any) -> None:
    return None


def _build(ctx: Any) -> None:
    return None


def _ship(ctx: Any) -> None:
    return None


def hashed_workflow(**changes: Any) -> Workflow:
    """A fixed workflow; ``changes`` alter one thing (see test_workflow's hash tests)."""
    build_settings: dict[str, Any] = {
        "name": "build",
        "depends_on": ["fetch"],
        "weight": changes.get("weight", 2),
        "version": changes.get("version", "1"),
        "retry": changes.get("retry", Retry(max_attempts=3, retry_on=(OSError, ValueError))),
        "timeout": 30,
    }
    if "description" in changes:
        build_settings["description"] = changes["description"]
    ship_deps = changes.get("ship_deps", ["build"])
    params = changes.get(
        "params",
        [
            Param("target", type="choice", choices=("staging", "prod"), default="staging"),
            Param("token", secret=True),
        ],
    )
    return Workflow(
        "release",
        [
            step(name="fetch")(_fetch),
            step(**build_settings)(_build),
            step(name="ship", depends_on=ship_deps)(_ship),
        ],
        params=params,
    )


class Noop(Step):
    """Does nothing."""

    def execute(self, ctx: Any) -> StepResult:
        return StepResult()
