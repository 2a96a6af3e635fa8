"""Pure planning: what runs next, what a resume resets, how far a run has got.

Nothing here does I/O. The local runner and the Django engine both call
these functions with the stored step statuses and apply what they return.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from .errors import PlanError, UnknownStep
from .execution import describe_error
from .states import (
    STEP_ACTIVE,
    STEP_DONE,
    STEP_FAILED,
    AttemptStatus,
    RunStatus,
    StepStatus,
)
from .step import Step
from .workflow import Workflow

S = StepStatus

MODES = ("resume", "retry_failed", "continue_from", "only")

#: Skip reasons (stored with the step and shown to users).
REASON_CONDITION = "condition is false"
REASON_USER = "skipped on request"
REASON_CAN_SKIP = "can_skip: already done"


def upstream_reason(deps: Iterable[str]) -> str:
    return "upstream skipped: " + ", ".join(deps)


@dataclass(frozen=True)
class Advance:
    """What to do now: enqueue ``ready``, mark ``skipped`` (name -> reason), and
    if ``run_status`` is set the run is finished with that status."""

    ready: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    run_status: RunStatus | None = None
    not_run: list[str] = field(default_factory=list)
    #: Steps whose condition raised: they fail with this error.
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.run_status is not None


def _settled(step: Step, status: str) -> bool:
    """Whether dependants of ``step`` may go ahead given its status."""
    return status in STEP_DONE or (step.optional and status in STEP_FAILED)


def blocking_failure(workflow: Workflow, statuses: Mapping[str, str]) -> str | None:
    """The first required step that failed (which stops the run), if any."""
    for name in workflow.order():
        if statuses[name] in STEP_FAILED and not workflow.steps[name].optional:
            return name
    return None


def advance(
    workflow: Workflow,
    statuses: Mapping[str, str],
    *,
    condition: Callable[[str], bool] | None = None,
    scope: Collection[str] | None = None,
    cancelling: bool = False,
    limit: int | None = None,
    skip_reasons: Mapping[str, str] | None = None,
    frontier: Collection[str] | None = None,
    active: int | None = None,
) -> Advance:
    """Given the current step statuses, decide what becomes ready or skipped,
    and whether the run is finished.

    ``condition(name)`` evaluates a step's ``when`` (only called for steps
    that declare one, once their dependencies are settled); ``scope`` limits
    which pending steps may start (``only=``); ``cancelling`` starts nothing;
    ``limit`` caps how many steps may be active at once (``max_parallel``);
    ``skip_reasons`` tells why skipped steps were skipped: only a branch ruled
    out by a condition skips its dependants, a step skipped on request or by
    ``can_skip`` lets them run (without reasons, every skip rules them out).

    With ``frontier`` (the dependants of a step that just completed) only
    those steps, and what their skips reach, are examined: ``statuses`` is
    only read for them and their dependencies, ``active`` gives the number of
    active steps for ``limit``, and the run's end is not decided (the caller
    asks again without a frontier once nothing is active). The caller must
    not use a frontier while a required step has failed.
    """
    current = _Statuses(statuses)
    reasons = _Statuses(skip_reasons or {}, default="")
    ready: list[str] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}

    def holds(name: str) -> bool:
        try:
            return bool(condition(name)) if condition is not None else True
        except Exception as exc:
            failed[name] = f"its condition raised {describe_error(exc)}"
            return False

    def rules_out(dep: str) -> bool:
        if current[dep] != S.SKIPPED:
            return False
        if skip_reasons is None:
            return True
        reason = reasons[dep]
        return reason == REASON_CONDITION or reason.startswith("upstream skipped")

    if frontier is None:
        halted = cancelling or blocking_failure(workflow, current) is not None
        todo = deque(workflow.order())
    else:
        halted = cancelling
        rank = workflow.rank
        todo = deque(sorted(frontier, key=rank.__getitem__))
    if not halted:
        while todo:
            name = todo.popleft()
            if current[name] != S.PENDING or name in ready:
                continue
            if scope is not None and name not in scope:
                continue
            step = workflow.steps[name]
            deps = step.depends_on
            if not all(_settled(workflow.steps[d], current[d]) for d in deps):
                continue
            if deps and all(rules_out(d) for d in deps):
                skipped[name] = reasons[name] = upstream_reason(deps)
            elif step.has_condition and not holds(name):
                if name in failed:
                    current[name] = S.FAILED
                    if not step.optional:
                        break
                    todo.extend(workflow.dependants[name])
                    continue
                skipped[name] = reasons[name] = REASON_CONDITION
            else:
                ready.append(name)
                continue
            current[name] = S.SKIPPED
            todo.extend(workflow.dependants[name])
        if limit is not None:
            if active is None:
                active = sum(1 for n in workflow.steps if current[n] in STEP_ACTIVE)
            ready = ready[: max(0, limit - active)]
    if failed and any(not workflow.steps[n].optional for n in failed):
        ready = []  # a required step failed: nothing new starts
    if frontier is not None:
        if failed:
            # Whether the run is over needs every status: decide it without a frontier.
            return Advance(ready, skipped, failed=failed)
        return Advance(ready, skipped)
    for name in ready:
        current[name] = S.QUEUED
    if any(current[n] in STEP_ACTIVE for n in workflow.steps):
        return Advance(ready, skipped, failed=failed)
    return Advance(ready, skipped, *_final_status(workflow, current, cancelling), failed=failed)


class _Statuses(dict[str, str]):
    """A writable view over the given statuses, read only as far as asked."""

    def __init__(self, source: Mapping[str, str], default: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.default = default

    def __missing__(self, name: str) -> str:
        if self.default is not None and name not in self.source:
            return self.default
        value = str(self.source[name])
        self[name] = value
        return value


def _final_status(
    workflow: Workflow, current: Mapping[str, str], cancelling: bool
) -> tuple[RunStatus, list[str]]:
    not_run = [n for n in workflow.order() if current[n] in (S.PENDING, S.CANCELLED)]
    if cancelling and (not_run or blocking_failure(workflow, current) is None):
        # Unless the cancel came too late: everything had already completed.
        return (RunStatus.CANCELLED if not_run else RunStatus.COMPLETED), not_run
    if blocking_failure(workflow, current) is not None or not_run:
        return RunStatus.FAILED, not_run
    return RunStatus.COMPLETED, not_run


def plan_start(workflow: Workflow, condition: Callable[[str], bool] | None = None) -> Advance:
    """The first steps of a new run."""
    return advance(
        workflow,
        dict.fromkeys(workflow.steps, S.PENDING.value),
        condition=condition,
        limit=workflow.max_parallel,
    )


@dataclass(frozen=True)
class ResumePlan:
    """What a resume request will do, shown to the user before it acts.

    ``reset`` go back to pending; ``skip`` become skipped; ``kept`` are
    completed or skipped steps left as they are; ``will_run`` are the steps
    that will execute (as their dependencies allow); ``scope`` limits which
    steps may start (``only``), None for all.
    """

    mode: str
    step: str | None
    reset: list[str]
    skip: list[str]
    kept: list[str]
    will_run: list[str]
    scope: frozenset[str] | None
    clear_items: bool = False

    def summary(self) -> str:
        parts = []
        if self.will_run:
            parts.append(f"Will run {', '.join(self.will_run)}.")
        if self.skip:
            parts.append(f"Will skip {', '.join(self.skip)}.")
        if self.kept:
            parts.append(f"Keeps {', '.join(self.kept)}.")
        if self.clear_items:
            parts.append(f"Clears the items already done by {', '.join(self.reset)}.")
        return " ".join(parts)


def plan_resume(
    workflow: Workflow,
    statuses: Mapping[str, str],
    mode: str = "resume",
    step: str | None = None,
    skip: Iterable[str] = (),
    clear_items: bool = False,
    rerun: Iterable[str] = (),
) -> ResumePlan:
    """Plan a resume of a finished run. Raises PlanError with the reason when
    the request cannot be carried out, UnknownStep for unknown names.

    ``rerun`` names completed steps whose work was undone (rolled back): a
    resume or retry runs them again too."""
    if mode not in MODES:
        raise PlanError(f"Unknown resume mode {mode!r}: use one of {', '.join(MODES)}")
    current = {n: str(statuses[n]) for n in workflow.steps}
    skip = list(dict.fromkeys(skip))
    for name in [*skip, *([step] if step else [])]:
        workflow[name]
    active = [n for n in workflow.order() if current[n] in STEP_ACTIVE]
    if active:
        raise PlanError(f"Step {active[0]!r} is still {current[active[0]]}")
    if mode in ("continue_from", "only"):
        if step is None:
            raise PlanError(f"Mode {mode} needs a step")
        for dep in workflow.steps[step].depends_on:
            if not _settled(workflow.steps[dep], current[dep]):
                raise PlanError(
                    f"Cannot {'continue from' if mode == 'continue_from' else 'run only'} "
                    f"{step!r}: it depends on {dep!r}, which is {current[dep]}"
                )
    elif step is not None:
        raise PlanError(f"Mode {mode} does not take a step")
    if clear_items and mode not in ("continue_from", "only"):
        raise PlanError("Clearing done items is offered only with continue_from and only")

    scope: frozenset[str] | None = None
    undone = set(rerun)
    if mode == "resume":
        reset = [
            n for n in workflow.order() if current[n] in (*STEP_FAILED, S.CANCELLED) or n in undone
        ]
    elif mode == "retry_failed":
        failed = [n for n in workflow.order() if current[n] in STEP_FAILED]
        if not failed:
            raise PlanError("Nothing to retry: no step failed")
        below = set().union(*(workflow.downstream(n) for n in failed))
        reset = [
            n
            for n in workflow.order()
            if n in failed or n in undone or (n in below and current[n] == S.CANCELLED)
        ]
    elif mode == "continue_from":
        assert step is not None
        chosen = {step} | workflow.downstream(step)
        reset = [n for n in workflow.order() if n in chosen and current[n] != S.PENDING]
    else:
        assert step is not None
        reset = [step] if current[step] != S.PENDING else []
        scope = frozenset({step})

    after = dict(current)
    for n in reset:
        after[n] = S.PENDING
    for n in skip:
        if after[n] == S.COMPLETED:
            raise PlanError(f"Cannot skip {n!r}: it already completed")
        after[n] = S.SKIPPED
    will_run = [
        n
        for n in workflow.order()
        if after[n] == S.PENDING
        and (scope is None or n in scope)
        and not _blocked(workflow, after, n)
    ]
    if not will_run and not [n for n in skip if current[n] != S.SKIPPED]:
        if mode == "resume":
            raise PlanError("Nothing to resume: no step is left to run")
        raise PlanError("Nothing would run")
    kept = [n for n in workflow.order() if after[n] in STEP_DONE and n not in skip]
    return ResumePlan(
        mode=mode,
        step=step,
        reset=reset,
        skip=[n for n in skip if current[n] != S.SKIPPED],
        kept=kept,
        will_run=will_run,
        scope=scope,
        clear_items=clear_items,
    )


def _blocked(workflow: Workflow, statuses: Mapping[str, str], name: str) -> bool:
    """Whether a pending step can never run because something upstream failed or was cancelled."""
    for up in workflow.upstream(name):
        st = statuses[up]
        if st == S.CANCELLED or (st in STEP_FAILED and not workflow.steps[up].optional):
            return True
    return False


@dataclass(frozen=True)
class AttemptDecision:
    """The step's next status after an attempt, and the wait before the next attempt."""

    status: StepStatus
    retry_in: float | None = None


def after_attempt(
    step: Step,
    attempt: int,
    outcome: AttemptStatus,
    error: BaseException | None = None,
    rng: object = None,
) -> AttemptDecision:
    """Apply the step's retry policy to an attempt's outcome."""
    if outcome == AttemptStatus.COMPLETED:
        return AttemptDecision(S.COMPLETED)
    if outcome == AttemptStatus.SKIPPED:
        return AttemptDecision(S.SKIPPED)
    if outcome == AttemptStatus.CANCELLED:
        return AttemptDecision(S.CANCELLED)
    policy = step.retry
    if attempt < policy.max_attempts and policy.is_retryable(error):
        return AttemptDecision(S.RETRYING, policy.delay(attempt, rng))  # type: ignore[arg-type]
    return AttemptDecision(S.TIMED_OUT if outcome == AttemptStatus.TIMED_OUT else S.FAILED)


def rollback_order(workflow: Workflow, completed_in_order: Iterable[str]) -> list[str]:
    """Completed steps that declare a rollback, most recently completed first."""
    return [n for n in reversed(list(completed_in_order)) if workflow[n].has_rollback]


def weighted_progress(
    workflow: Workflow,
    statuses: Mapping[str, str],
    fractions: Mapping[str, float] | None = None,
) -> float:
    """Overall progress 0..1: each step's weight times how far it got (finished
    steps count fully, running ones by their in-step progress)."""
    total = workflow.total_weight
    if total <= 0:
        finished = sum(1 for n in workflow.steps if statuses[n] in STEP_DONE | STEP_FAILED)
        return finished / len(workflow.steps)
    done = 0.0
    for name, s in workflow.steps.items():
        st = statuses[name]
        if st in STEP_DONE or (s.optional and st in STEP_FAILED):
            done += s.weight
        elif fractions and st in STEP_ACTIVE:
            done += s.weight * min(1.0, max(0.0, fractions.get(name, 0.0)))
    return min(1.0, done / total)


def unknown_steps(workflow: Workflow, names: Iterable[str]) -> None:
    """Raise UnknownStep for the first name the workflow does not have."""
    for n in names:
        if n not in workflow.steps:
            raise UnknownStep(workflow.name, n)


@dataclass(frozen=True)
class ChildSummary:
    """How a child run ended, as its parent step sees it."""

    run_id: int | str
    workflow: str
    status: str
    error: str = ""
    outputs: Mapping[str, object] | None = None


@dataclass(frozen=True)
class ChildrenDecision:
    status: StepStatus
    output: object
    error: str = ""


def after_children(data: object, children: Iterable[ChildSummary]) -> ChildrenDecision:
    """The waiting step's end once every child run has ended: completed when all
    completed, failed naming the first that did not. Its output is what the
    step returned plus ``children``: each child's id, workflow, status and the
    outputs of its last steps."""
    children = list(children)
    listed = [
        {
            "run": c.run_id,
            "workflow": c.workflow,
            "status": c.status,
            **({"outputs": dict(c.outputs)} if c.outputs is not None else {}),
        }
        for c in children
    ]
    if data is None:
        output: object = {"children": listed}
    elif isinstance(data, Mapping):
        output = {**data, "children": listed}
    else:
        output = {"result": data, "children": listed}
    bad = [c for c in children if c.status != RunStatus.COMPLETED.value]
    if not bad:
        return ChildrenDecision(S.COMPLETED, output)
    first = bad[0]
    detail = f": {first.error}" if first.error else ""
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    error = (
        f"child run #{first.run_id} ({first.workflow}) "
        f"{first.status.replace('_', ' ')}{detail}{more}"
    )
    return ChildrenDecision(S.FAILED, output, error)


def leaf_steps(workflow: Workflow) -> list[str]:
    """Steps no other step depends on: their outputs are a run's result."""
    return [n for n in workflow.order() if not workflow.dependants[n]]
