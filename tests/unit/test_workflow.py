from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepflow import Param, Retry, Step, StepResult, UnknownStep, Workflow, WorkflowDefinitionError
from stepflow.step import FunctionStep, step

from .factories import Noop, hashed_workflow

ROOT = Path(__file__).resolve().parents[2]


def s(name: str, *deps: str, **settings) -> Noop:
    return Noop(name, depends_on=deps, **settings)


def graph(wf: Workflow) -> dict[str, tuple[str, ...]]:
    return {n: st.depends_on for n, st in wf.steps.items()}


def definition_error(build) -> str:
    with pytest.raises(WorkflowDefinitionError) as exc:
        build()
    return exc.value.args[0]


# -- validation -------------------------------------------------------------------------


def test_workflow__duplicate_step_names_are_refused():
    msg = definition_error(lambda: Workflow("x", [s("a"), s("b"), s("a"), s("b"), s("a")]))
    assert msg == "Workflow 'x' has duplicate step names: a, b"


def test_workflow__unknown_dependencies_are_refused():
    msg = definition_error(lambda: Workflow("x", [s("a"), s("b", "nope")]))
    assert msg == "Workflow 'x' has unknown dependencies: b -> nope"


def test_workflow__every_unknown_dependency_is_named():
    msg = definition_error(lambda: Workflow("x", [s("a", "zz"), s("b", "a", "nope")]))
    assert msg == "Workflow 'x' has unknown dependencies: a -> zz, b -> nope"


def test_workflow__cycle_is_refused_with_its_path():
    msg = definition_error(lambda: Workflow("x", [s("a", "c"), s("b", "a"), s("c", "b")]))
    assert msg == "Workflow 'x' has a dependency cycle: a -> b -> c -> a"


def test_workflow__two_step_cycle_behind_a_valid_step():
    msg = definition_error(lambda: Workflow("x", [s("root"), s("p", "root", "q"), s("q", "p")]))
    assert msg == "Workflow 'x' has a dependency cycle: p -> q -> p"


def test_step__depending_on_itself_is_refused():
    assert definition_error(lambda: s("a", "a")) == "Step 'a' depends on itself"


@pytest.mark.parametrize("name", ["Build", "1st", "", "has space", "_x", "bé"])
def test_step__invalid_name_is_refused(name):
    assert definition_error(lambda: s(name)) == (
        f"Step name {name!r} is invalid: use lowercase letters, digits, '_' and '-', "
        "starting with a letter"
    )


@pytest.mark.parametrize("name", ["Deploy", "", "a b", 7])
def test_workflow__invalid_name_is_refused(name):
    assert definition_error(lambda: Workflow(name, [s("a")])) == (
        f"Workflow name {name!r} is invalid: use lowercase letters, digits, '_' and '-', "
        "starting with a letter"
    )


def test_workflow__empty_is_refused():
    assert definition_error(lambda: Workflow("x", [])) == "Workflow 'x' has no steps"


def test_workflow__non_step_is_refused():
    assert definition_error(lambda: Workflow("x", [s("a"), "b"])) == (
        "Workflow 'x': 'b' is not a Step (use a Step subclass or @step)"
    )


def test_workflow__duplicate_param_is_refused():
    msg = definition_error(lambda: Workflow("x", [s("a")], params=[Param("n"), Param("n")]))
    assert msg == "Workflow 'x' declares the parameter 'n' twice"


@pytest.mark.parametrize("value", [0, -1, 2.5, "3"])
def test_workflow__invalid_max_parallel_is_refused(value):
    msg = definition_error(lambda: Workflow("x", [s("a")], max_parallel=value))
    assert msg == f"Workflow 'x' has an invalid max_parallel {value!r}: use an integer >= 1"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight": -1}, "Step 'a' has an invalid weight -1: use a number >= 0"),
        ({"weight": "2"}, "Step 'a' has an invalid weight '2': use a number >= 0"),
        ({"timeout": 0}, "Step 'a' has an invalid timeout 0: use seconds > 0"),
        ({"timeout": -2.5}, "Step 'a' has an invalid timeout -2.5: use seconds > 0"),
        (
            {"on_failure": "ignore"},
            "Step 'a' has an invalid on_failure 'ignore': use one of fail, continue",
        ),
        ({"queue": "a queue"}, "Step 'a' has an invalid queue 'a queue'"),
    ],
)
def test_step__invalid_settings_are_refused(settings, message):
    assert definition_error(lambda: s("a", **settings)) == message


def test_step__nan_weight_is_refused():
    assert definition_error(lambda: s("a", weight=float("nan"))) == (
        "Step 'a' has an invalid weight nan: use a number >= 0"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_attempts": 0}, "Retry max_attempts must be at least 1, not 0"),
        ({"backoff_base": -1}, "Retry backoff must not be negative"),
        ({"backoff_max": -1}, "Retry backoff must not be negative"),
        ({"backoff_factor": 0.5}, "Retry backoff_factor must be at least 1, not 0.5"),
        ({"jitter": 1.5}, "Retry jitter must be between 0 and 1, not 1.5"),
    ],
)
def test_retry__invalid_settings_are_refused(settings, message):
    assert definition_error(lambda: Retry(**settings)) == message


def test_step__replace_with_unknown_setting_is_refused():
    assert definition_error(lambda: s("a").replace(colour="red")) == "Step has no setting 'colour'"


def test_step__replace_is_validated():
    assert definition_error(lambda: s("a").replace(weight=-3)) == (
        "Step 'a' has an invalid weight -3: use a number >= 0"
    )


# -- steps ----------------------------------------------------------------------------


def test_step__class_defaults_and_overrides():
    class FetchDataStep(Step):
        """Fetch the data.

        More text."""

        weight = 2
        depends_on = ("prepare",)

        def execute(self, ctx):
            return None

    default = FetchDataStep()
    assert (default.name, default.weight, default.depends_on, default.description) == (
        "fetch_data",
        2,
        ("prepare",),
        "Fetch the data.",
    )
    assert default.has_rollback is False
    assert default.has_condition is False
    assert repr(default) == "<FetchDataStep 'fetch_data' after prepare>"
    other = FetchDataStep("other", weight=5, depends_on="x", retry=3, version=4)
    assert (other.name, other.weight, other.depends_on, other.retry, other.version) == (
        "other",
        5,
        ("x",),
        Retry(max_attempts=3),
        "4",
    )


def test_step__base_execute_is_not_implemented():
    with pytest.raises(NotImplementedError) as exc:
        Step("plain").execute(None)
    assert exc.value.args == ("Step 'plain' does not define execute()",)


def test_step_decorator__builds_a_function_step():
    def undo(ctx, result):
        return None

    @step(weight=3, depends_on=["a"], rollback=undo, when=lambda ctx: True)
    def deploy(ctx):
        """Ship it."""
        return None

    assert isinstance(deploy, FunctionStep)
    assert (deploy.name, deploy.weight, deploy.depends_on, deploy.description) == (
        "deploy",
        3,
        ("a",),
        "Ship it.",
    )
    assert (deploy.has_rollback, deploy.has_condition) == (True, True)
    assert deploy.optional is False
    assert step("renamed", on_failure="continue")(lambda ctx: None).optional is True


def test_step_result__coerce():
    result = StepResult(data=1)
    assert StepResult.coerce(result) is result
    assert StepResult.coerce(None) == StepResult()
    assert StepResult.coerce({"n": 1}) == StepResult(data={"n": 1})
    with pytest.raises(TypeError) as exc:
        StepResult.coerce([1])
    assert exc.value.args == ("a step must return a StepResult, a dict or None, not list",)


# -- reading --------------------------------------------------------------------------


def test_levels__diamond_puts_the_branches_together():
    wf = Workflow("diamond", [s("a"), s("b", "a"), s("c", "a"), s("d", "b", "c")])
    assert wf.levels() == [["a"], ["b", "c"], ["d"]]
    assert wf.order() == ["a", "b", "c", "d"]
    assert wf.dependants == {"a": ("b", "c"), "b": ("d",), "c": ("d",), "d": ()}
    assert wf.upstream("d") == {"a", "b", "c"}
    assert wf.downstream("a") == {"b", "c", "d"}
    assert wf.downstream("d") == set()


def test_levels__declaration_order_does_not_matter():
    wf = Workflow("x", [s("d", "b", "c"), s("c", "a"), s("b", "a"), s("a"), s("e")])
    assert wf.levels() == [["a", "e"], ["c", "b"], ["d"]]
    wf.levels()[0].append("mutated")
    assert wf.levels()[0] == ["a", "e"]


def test_workflow__lookup_and_container_protocol():
    wf = Workflow("deploy", [s("a", weight=2), s("b", "a", weight=0.5)])
    assert wf["b"].depends_on == ("a",)
    assert ("a" in wf, "nope" in wf, len(wf), [x.name for x in wf]) == (True, False, 2, ["a", "b"])
    assert wf.total_weight == 2.5
    assert repr(wf) == "<Workflow 'deploy' v1 steps=['a', 'b']>"
    with pytest.raises(UnknownStep) as exc:
        wf["nope"]
    assert exc.value.args == ("Workflow 'deploy' has no step named 'nope'",)
    with pytest.raises(UnknownStep):
        wf.downstream("nope")


# -- deriving ---------------------------------------------------------------------------


def chain() -> Workflow:
    return Workflow("chain", [s("a"), s("b", "a"), s("c", "b"), s("d", "b")], version=3)


def test_insert_after():
    wf = chain().insert_after("b", s("lint"))
    assert graph(wf) == {
        "a": (),
        "b": ("a",),
        "lint": ("b",),
        "c": ("lint",),
        "d": ("lint",),
    }
    assert (wf.name, wf.version) == ("chain", "3")
    assert wf.definition_hash != chain().definition_hash


def test_insert_after__keeps_the_new_steps_own_dependencies():
    wf = chain().insert_after("c", s("report", "a"), name="chain2", version=4)
    assert graph(wf) == {
        "a": (),
        "b": ("a",),
        "c": ("b",),
        "report": ("c", "a"),
        "d": ("b",),
    }
    assert (wf.name, wf.version) == ("chain2", "4")


def test_insert_before():
    wf = chain().insert_before("b", s("check"))
    assert graph(wf) == {"a": (), "check": ("a",), "b": ("check",), "c": ("b",), "d": ("b",)}


def test_insert_before__a_root_step():
    wf = chain().insert_before("a", s("setup"))
    assert graph(wf) == {"setup": (), "a": ("setup",), "b": ("a",), "c": ("b",), "d": ("b",)}


def test_remove__dependants_inherit_dependencies():
    wf = chain().remove("b")
    assert graph(wf) == {"a": (), "c": ("a",), "d": ("a",)}
    diamond = Workflow("d", [s("a"), s("b", "a"), s("c", "a"), s("d", "b", "c")])
    assert graph(diamond.remove("b")) == {"a": (), "c": ("a",), "d": ("c", "a")}


def test_remove__the_only_step_leaves_an_empty_workflow():
    assert definition_error(lambda: Workflow("x", [s("a")]).remove("a")) == (
        "Workflow 'x' has no steps"
    )


def test_replace__keeps_dependencies_and_rewires_dependants():
    wf = chain().replace("b", s("build"))
    assert graph(wf) == {"a": (), "build": ("a",), "c": ("build",), "d": ("build",)}
    wf2 = chain().replace("c", s("c2", "a"))
    assert graph(wf2) == {"a": (), "b": ("a",), "c2": ("a",), "d": ("b",)}


def test_derived_workflows_are_validated():
    assert definition_error(lambda: chain().replace("b", s("build", "nope"))) == (
        "Workflow 'chain' has unknown dependencies: build -> nope"
    )
    assert definition_error(lambda: chain().insert_after("c", s("d"))) == (
        "Workflow 'chain' has duplicate step names: d"
    )
    assert definition_error(lambda: chain().insert_before("b", s("loop", "c"))) == (
        "Workflow 'chain' has a dependency cycle: loop -> b -> c -> loop"
    )


def test_insert_after__duplicate_of_a_dependant_names_the_duplicate():
    assert definition_error(lambda: chain().insert_after("b", s("c"))) == (
        "Workflow 'chain' has duplicate step names: c"
    )


def test_derivation__unknown_target():
    for derive in (
        lambda wf: wf.insert_after("nope", s("x")),
        lambda wf: wf.insert_before("nope", s("x")),
        lambda wf: wf.remove("nope"),
        lambda wf: wf.replace("nope", s("x")),
    ):
        with pytest.raises(UnknownStep) as exc:
            derive(chain())
        assert exc.value.args == ("Workflow 'chain' has no step named 'nope'",)


def test_derivation__leaves_the_original_alone():
    original = chain()
    before = (graph(original), original.definition_hash)
    original.insert_after("a", s("x"))
    original.insert_before("c", s("y"))
    original.remove("b")
    original.replace("d", s("z"))
    assert (graph(original), original.definition_hash) == before


# -- definition hash ---------------------------------------------------------------------


def test_definition_hash__same_in_another_process():
    code = (
        "from tests.unit.factories import hashed_workflow; print(hashed_workflow().definition_hash)"
    )
    hashes = set()
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        hashes.add(out.stdout.strip())
    assert hashes == {hashed_workflow().definition_hash}
    assert len(hashed_workflow().definition_hash) == 16


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "2"},
        {"retry": Retry(max_attempts=4, retry_on=(OSError, ValueError))},
        {"retry": Retry(max_attempts=3, retry_on=(OSError,))},
        {"weight": 3},
        {"ship_deps": ["build", "fetch"]},
        {"params": [Param("target", type="choice", choices=("staging", "prod"))]},
        {"params": [Param("target", type="choice", choices=("staging", "prod"), default="prod")]},
    ],
    ids=["version", "retry-attempts", "retry-on", "weight", "edge", "param-removed", "default"],
)
def test_definition_hash__changes_with_the_definition(changes):
    assert hashed_workflow(**changes).definition_hash != hashed_workflow().definition_hash


def test_definition_hash__ignores_descriptions_and_order_of_declaration():
    base = hashed_workflow().definition_hash
    assert hashed_workflow(description="Builds the thing").definition_hash == base
    retry = Retry(max_attempts=3, retry_on=(ValueError, OSError))
    assert hashed_workflow(retry=retry).definition_hash == base
    a = Workflow("x", [s("a"), s("b", "a")], description="one")
    b = Workflow("x", [s("b", "a"), s("a")], description="two")
    assert a.definition_hash == b.definition_hash


def test_describe():
    wf = Workflow(
        "x", [s("a", weight=2), s("b", "a")], params=[Param("key", secret=True, default="k")]
    )
    info = wf.describe()
    assert [st["name"] for st in info["steps"]] == ["a", "b"]
    assert info["steps"][1] == {
        "name": "b",
        "weight": 1.0,
        "depends_on": ["a"],
        "queue": "default",
        "retry": {
            "max_attempts": 1,
            "backoff_base": 1.0,
            "backoff_factor": 2.0,
            "backoff_max": 300.0,
            "jitter": 0.0,
            "retry_on": ["builtins.Exception"],
            "retry_timeouts": True,
        },
        "timeout": None,
        "version": "1",
        "on_failure": "fail",
        "kind": "tests.unit.factories.Noop",
    }
    assert info["params"] == [
        {
            "name": "key",
            "type": "str",
            "default": "••••••",
            "required": False,
            "choices": [],
            "secret": True,
            "min": None,
            "max": None,
        }
    ]
    assert info["definition_hash"] == wf.definition_hash
