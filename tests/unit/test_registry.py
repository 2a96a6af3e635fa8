from __future__ import annotations

import pytest

import stepflow
from stepflow import Registry, RegistryError, UnknownWorkflow, Workflow

from .factories import Noop


def wf(name: str, *steps: str) -> Workflow:
    return Workflow(name, [Noop(n) for n in steps or ("only",)])


def test_register_and_get():
    reg = Registry()
    a, b = wf("a"), wf("b")
    reg.register(b, a)
    assert reg.get("a") is a
    assert reg.names() == ["a", "b"]
    assert list(reg) == [a, b]
    assert ("a" in reg, "c" in reg, len(reg)) == (True, False, 2)
    assert reg.snapshot() == {"a": a, "b": b}


def test_get__unknown_name_lists_the_registered_ones():
    reg = Registry()
    reg.register(wf("b"), wf("a"))
    with pytest.raises(UnknownWorkflow) as exc:
        reg.get("nope")
    assert exc.value.args == ("No workflow named 'nope' is registered (registered: a, b)",)
    assert exc.value.name == "nope"


def test_get__empty_registry():
    with pytest.raises(UnknownWorkflow) as exc:
        Registry().get("nope")
    assert exc.value.args == ("No workflow named 'nope' is registered",)


def test_register__same_definition_again_is_a_no_op():
    reg = Registry()
    first = wf("a", "x")
    reg.register(first)
    reg.register(wf("a", "x"))
    assert reg.names() == ["a"]
    assert reg.get("a").definition_hash == first.definition_hash


def test_register__conflicting_definition_is_refused():
    reg = Registry()
    reg.register(wf("a", "x"))
    with pytest.raises(RegistryError) as exc:
        reg.register(wf("a", "y"))
    assert exc.value.args == (
        "A workflow named 'a' is already registered (pass replace=True to replace it)",
    )


def test_register__replace():
    reg = Registry()
    reg.register(wf("a", "x"))
    new = wf("a", "y")
    reg.register(new, replace=True)
    assert reg.get("a") is new


def test_register__batch_is_atomic():
    reg = Registry()
    a = wf("a", "x")
    reg.register(a)
    with pytest.raises(RegistryError) as exc:
        reg.register(wf("b"), wf("c"), wf("a", "changed"))
    assert exc.value.args == (
        "A workflow named 'a' is already registered (pass replace=True to replace it)",
    )
    assert reg.snapshot() == {"a": a}


def test_register__conflict_inside_one_batch_is_refused():
    reg = Registry()
    with pytest.raises(RegistryError) as exc:
        reg.register(wf("b", "x"), wf("b", "y"))
    assert exc.value.args == (
        "A workflow named 'b' is already registered (pass replace=True to replace it)",
    )
    assert len(reg) == 0


def test_register__non_workflow_is_refused_atomically():
    reg = Registry()
    with pytest.raises(RegistryError) as exc:
        reg.register(wf("a"), "b")
    assert exc.value.args == ("Only a Workflow can be registered, not 'b'",)
    assert len(reg) == 0


def test_unregister():
    reg = Registry()
    reg.register(wf("a"), wf("b"))
    reg.unregister("a")
    assert reg.names() == ["b"]
    with pytest.raises(UnknownWorkflow) as exc:
        reg.unregister("a")
    assert exc.value.args == ("No workflow named 'a' is registered (registered: b)",)


def test_clear_and_restore():
    reg = Registry()
    a, b = wf("a"), wf("b")
    reg.register(a, b)
    saved = reg.snapshot()
    reg.clear()
    assert len(reg) == 0
    reg.restore(saved)
    assert reg.snapshot() == {"a": a, "b": b}
    reg.restore([b])
    assert reg.snapshot() == {"b": b}


def test_module_level_register_uses_the_default_registry():
    saved = stepflow.registry.snapshot()
    try:
        first = wf("unit-test-module-level")
        assert stepflow.register(first, wf("unit-test-other")) is first
        assert stepflow.get_workflow("unit-test-module-level") is first
    finally:
        stepflow.registry.restore(saved)
    assert "unit-test-module-level" not in stepflow.registry
