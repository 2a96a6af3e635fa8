from __future__ import annotations

import pytest

from stepflow import InvalidParams, Param, Workflow, WorkflowDefinitionError
from stepflow.params import MASK, mask_params, validate_params

from .factories import Noop


def errors_of(declared, raw) -> tuple[dict[str, str], str]:
    with pytest.raises(InvalidParams) as exc:
        validate_params({p.name: p for p in declared}, raw)
    return exc.value.errors, exc.value.args[0]


def clean(param: Param, raw):
    return validate_params({param.name: param}, {param.name: raw})[param.name]


def error(param: Param, raw) -> str:
    errors, _ = errors_of([param], {param.name: raw})
    return errors[param.name]


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        (Param("s"), "text", "text"),
        (Param("s"), 12, "12"),
        (Param("n", type="int"), "42", 42),
        (Param("n", type="int"), " 7 ", 7),
        (Param("n", type="int"), 3.0, 3),
        (Param("x", type="float"), "2.5", 2.5),
        (Param("x", type="float"), 3, 3.0),
        (Param("b", type="bool"), "yes", True),
        (Param("b", type="bool"), "Off", False),
        (Param("b", type="bool"), 1, True),
        (Param("b", type="bool"), False, False),
        (Param("j", type="json"), '{"a": [1, 2]}', {"a": [1, 2]}),
        (Param("j", type="json"), [1, "x"], [1, "x"]),
        (Param("c", type="choice", choices=("red", "blue")), "blue", "blue"),
        (Param("n", type="int", min=1, max=10), 10, 10),
    ],
)
def test_clean__accepted_values(param, raw, value):
    cleaned = clean(param, raw)
    assert cleaned == value
    assert type(cleaned) is type(value)


@pytest.mark.parametrize(
    ("param", "raw", "message"),
    [
        (Param("s"), True, "expected text"),
        (Param("s"), ["a"], "expected text"),
        (Param("n", type="int"), "abc", "expected a whole number, got 'abc'"),
        (Param("n", type="int"), 1.5, "expected a whole number, got 1.5"),
        (Param("n", type="int"), True, "expected a whole number"),
        (Param("n", type="int", min=1), 0, "must be at least 1"),
        (Param("n", type="int", max=10), "11", "must be at most 10"),
        (Param("x", type="float"), "fast", "expected a number, got 'fast'"),
        (Param("x", type="float"), "nan", "expected a finite number"),
        (Param("x", type="float"), False, "expected a number"),
        (Param("x", type="float", min=0.5), 0.25, "must be at least 0.5"),
        (Param("x", type="float", max=2.5), "2.75", "must be at most 2.5"),
        (Param("b", type="bool"), "maybe", "expected true or false, got 'maybe'"),
        (
            Param("c", type="choice", choices=("red", "blue")),
            "green",
            "expected one of red, blue, got 'green'",
        ),
        (
            Param("j", type="json"),
            "{oops",
            "invalid JSON: Expecting property name enclosed in double quotes",
        ),
        (Param("j", type="json"), {1, 2}, "Object of type set is not JSON serializable"),
    ],
)
def test_clean__refused_values(param, raw, message):
    assert error(param, raw) == message


def test_defaults_and_missing_values():
    declared = [
        Param("name", default="world"),
        Param("count", type="int", default=3),
        Param("dry_run", type="bool"),
        Param("note"),
    ]
    assert validate_params({p.name: p for p in declared}, {"name": ""}) == {
        "name": "world",
        "count": 3,
        "dry_run": False,
        "note": None,
    }
    assert validate_params({p.name: p for p in declared}, {"count": None, "note": "hi"}) == {
        "name": "world",
        "count": 3,
        "dry_run": False,
        "note": "hi",
    }


def test_invalid_params__lists_every_error():
    declared = [
        Param("target", required=True),
        Param("count", type="int", max=5),
        Param("mode", type="choice", choices=("a", "b")),
    ]
    errors, message = errors_of(declared, {"count": 9, "mode": "c", "colour": "red"})
    assert errors == {
        "target": "this parameter is required",
        "count": "must be at most 5",
        "mode": "expected one of a, b, got 'c'",
        "colour": "unknown parameter (declared: target, count, mode)",
    }
    assert message == (
        "Invalid parameters: colour: unknown parameter (declared: target, count, mode); "
        "count: must be at most 5; mode: expected one of a, b, got 'c'; "
        "target: this parameter is required"
    )


def test_unknown_parameter__when_none_are_declared():
    errors, message = errors_of([], {"x": 1})
    assert errors == {"x": "unknown parameter (none are declared)"}
    assert message == "Invalid parameters: x: unknown parameter (none are declared)"


def test_unknown_parameter__allowed_when_not_strict():
    declared = {"a": Param("a")}
    assert validate_params(declared, {"a": "1", "b": 2}, strict=False) == {"a": "1"}


def test_params_must_be_an_object():
    errors, message = errors_of([Param("a")], ["a"])
    assert errors == {"__all__": "parameters must be a JSON object"}
    assert message == "Invalid parameters: parameters must be a JSON object"


def test_workflow_validate_params():
    declared = Workflow("x", [Noop("a")], params=[Param("n", type="int", default=1)])
    assert declared.validate_params({}) == {"n": 1}
    assert declared.validate_params({"n": "5"}) == {"n": 5}
    with pytest.raises(InvalidParams) as exc:
        declared.validate_params({"m": 1})
    assert exc.value.args == ("Invalid parameters: m: unknown parameter (declared: n)",)
    undeclared = Workflow("y", [Noop("a")])
    assert undeclared.validate_params({"anything": [1]}) == {"anything": [1]}
    with pytest.raises(InvalidParams) as exc:
        undeclared.validate_params("text")
    assert exc.value.args == ("Invalid parameters: parameters must be a JSON object",)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Param("p", type="date"),
            "Parameter 'p' has an unknown type 'date': "
            "use one of str, int, float, bool, json, choice",
        ),
        (lambda: Param("p", type="choice"), "Parameter 'p' is a choice without choices"),
    ],
)
def test_param__invalid_declaration(build, message):
    with pytest.raises(WorkflowDefinitionError) as exc:
        build()
    assert exc.value.args == (message,)


def test_mask_params():
    declared = {"user": Param("user"), "password": Param("password", secret=True)}
    assert mask_params(declared, {"user": "ann", "password": "hunter2", "extra": "x"}) == {
        "user": "ann",
        "password": MASK,
        "extra": "x",
    }
    assert mask_params(declared, {"password": None}) == {"password": None}
    assert MASK == "••••••"


def test_param_describe_masks_a_secret_default():
    assert Param("token", secret=True, default="abc").describe()["default"] == MASK
    assert Param("token", secret=True).describe()["default"] is None
    assert Param("n", type="int", default=3, min=1, max=5).describe() == {
        "name": "n",
        "type": "int",
        "default": 3,
        "required": False,
        "choices": [],
        "secret": False,
        "min": 1,
        "max": 5,
    }


def test_defaults_are_cleaned_like_given_values():
    declared = {
        "n": Param("n", type="int", default="5"),
        "mode": Param("mode", type="choice", choices=("a", "b"), default="b"),
    }
    assert validate_params(declared, {}) == {"n": 5, "mode": "b"}
    assert type(validate_params(declared, {})["n"]) is int
