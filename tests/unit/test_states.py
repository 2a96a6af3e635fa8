from __future__ import annotations

import pytest

from stepflow import InvalidTransition, states
from stepflow.states import RunStatus, StepStatus


def test_transition__returns_the_target_value():
    assert states.transition("pending", StepStatus.QUEUED, "Step 'x'") == "queued"
    assert states.transition(StepStatus.RUNNING, StepStatus.COMPLETED, "Step 'x'") == "completed"
    assert states.transition("failed", RunStatus.RUNNING, "Run 7") == "running"


def test_transition__refused_names_current_target_and_what():
    with pytest.raises(InvalidTransition) as exc:
        states.transition("completed", StepStatus.RUNNING, "Step 'x'")
    assert exc.value.args == ("Step 'x' cannot go from completed to running",)
    assert (exc.value.current, exc.value.target, exc.value.what) == (
        "completed",
        "running",
        "Step 'x'",
    )


def test_transition__run_refusal_message():
    with pytest.raises(InvalidTransition) as exc:
        states.transition(RunStatus.CANCELLING, RunStatus.RUNNING, "Run 42")
    assert exc.value.args == ("Run 42 cannot go from cancelling to running",)


def test_transition__unknown_current_status_is_refused():
    with pytest.raises(InvalidTransition) as exc:
        states.transition("exploded", StepStatus.PENDING, "Step 'x'")
    assert exc.value.args == ("Step 'x' cannot go from exploded to pending",)
    assert states.can_transition("exploded", StepStatus.PENDING) is False


def test_transition__table_is_chosen_by_the_target_type():
    # "cancelling" is a run status only, so it is no step's source.
    assert states.can_transition("cancelling", RunStatus.CANCELLED) is True
    assert states.can_transition("cancelling", StepStatus.CANCELLED) is False


def test_tables__cover_every_status():
    assert set(states.STEP_TRANSITIONS) == set(StepStatus)
    assert set(states.RUN_TRANSITIONS) == set(RunStatus)
    for targets in states.STEP_TRANSITIONS.values():
        assert targets <= set(StepStatus)
    for targets in states.RUN_TRANSITIONS.values():
        assert targets <= set(RunStatus)
    every_step_target = set().union(*states.STEP_TRANSITIONS.values())
    assert every_step_target == set(StepStatus)  # every status can be reached
    every_run_target = set().union(*states.RUN_TRANSITIONS.values())
    assert every_run_target == set(RunStatus) - {RunStatus.PENDING}


def test_step_table__exact():
    S = StepStatus
    assert {
        S.PENDING: {S.QUEUED, S.SKIPPED, S.CANCELLED, S.FAILED},
        S.QUEUED: {S.RUNNING, S.CANCELLED},
        S.RUNNING: {
            S.COMPLETED,
            S.RETRYING,
            S.FAILED,
            S.TIMED_OUT,
            S.SKIPPED,
            S.CANCELLED,
            S.WAITING,
        },
        S.WAITING: {S.COMPLETED, S.FAILED, S.CANCELLED},
        S.RETRYING: {S.QUEUED, S.CANCELLED},
        S.FAILED: {S.PENDING, S.SKIPPED},
        S.TIMED_OUT: {S.PENDING, S.SKIPPED},
        S.CANCELLED: {S.PENDING, S.SKIPPED},
        S.COMPLETED: {S.PENDING},
        S.SKIPPED: {S.PENDING},
    } == states.STEP_TRANSITIONS


def test_run_table__exact():
    R = RunStatus
    assert {
        R.PENDING: {R.RUNNING, R.CANCELLED},
        R.RUNNING: {R.COMPLETED, R.FAILED, R.CANCELLING},
        R.CANCELLING: {R.CANCELLED, R.TIMED_OUT, R.COMPLETED},
        R.FAILED: {R.RUNNING},
        R.CANCELLED: {R.RUNNING},
        R.TIMED_OUT: {R.RUNNING},
        R.COMPLETED: {R.RUNNING},
    } == states.RUN_TRANSITIONS


def test_terminal_sets():
    R, S = RunStatus, StepStatus
    assert {R.COMPLETED, R.FAILED, R.CANCELLED, R.TIMED_OUT} == states.RUN_FINISHED
    assert {R.COMPLETED, R.FAILED, R.CANCELLED, R.TIMED_OUT} == states.RUN_RESUMABLE
    assert {R.FAILED, R.CANCELLED, R.TIMED_OUT} == states.RUN_UNFINISHED
    assert {R.PENDING, R.RUNNING} == states.RUN_CANCELLABLE
    assert {S.COMPLETED, S.FAILED, S.TIMED_OUT, S.SKIPPED, S.CANCELLED} == states.STEP_FINISHED
    assert {S.QUEUED, S.RUNNING, S.WAITING, S.RETRYING} == states.STEP_ACTIVE
    assert {S.QUEUED, S.RUNNING, S.RETRYING} == states.STEP_HOLDS_SLOT
    assert {S.FAILED, S.TIMED_OUT} == states.STEP_FAILED
    assert {S.COMPLETED, S.SKIPPED} == states.STEP_DONE
    # Every step status is either finished, active, or pending.
    assert states.STEP_FINISHED | states.STEP_ACTIVE | {S.PENDING} == set(StepStatus)
    assert not states.STEP_FINISHED & states.STEP_ACTIVE


def test_reset_transitions__exact():
    assert {
        ("failed", "pending"),
        ("failed", "skipped"),
        ("timed_out", "pending"),
        ("timed_out", "skipped"),
        ("cancelled", "pending"),
        ("cancelled", "skipped"),
        ("completed", "pending"),
        ("skipped", "pending"),
        ("completed", "running"),
        ("failed", "running"),
        ("cancelled", "running"),
        ("timed_out", "running"),
    } == states.RESET_TRANSITIONS


def test_allowed_sources():
    assert states.allowed_sources(StepStatus.PENDING) == {
        "failed",
        "timed_out",
        "cancelled",
        "completed",
        "skipped",
    }
    assert states.allowed_sources(StepStatus.RUNNING) == {"queued"}
    assert states.allowed_sources(RunStatus.RUNNING) == {
        "pending",
        "failed",
        "cancelled",
        "completed",
        "timed_out",
    }
    assert states.allowed_sources(RunStatus.PENDING) == frozenset()


def test_status_values_are_plain_strings():
    assert [s.value for s in RunStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelling",
        "cancelled",
        "timed_out",
    ]
    assert [s.value for s in StepStatus] == [
        "pending",
        "queued",
        "running",
        "waiting",
        "retrying",
        "completed",
        "failed",
        "timed_out",
        "skipped",
        "cancelled",
    ]
    assert [s.value for s in states.AttemptStatus] == [
        "running",
        "waiting",
        "completed",
        "skipped",
        "failed",
        "timed_out",
        "worker_lost",
        "cancelled",
    ]


def test_every_status_has_an_icon():
    from stepflow.states import AttemptStatus

    names = {m.value for enum in (RunStatus, StepStatus, AttemptStatus) for m in enum}
    assert set(states.STATUS_ICONS) == names
