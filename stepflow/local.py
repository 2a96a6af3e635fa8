"""Run a workflow in-process, with an in-memory store: for unit tests of step code.

The same rules as the real engine (planner, retry policy, context, states);
no Django, no Redis. Steps run one at a time, in topological order.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import planner, states
from .context import ContextSettings, StepContext
from .errors import StepflowError, UnknownWorkflow
from .execution import AttemptOutcome, run_attempt
from .items import ItemKey, ItemSet
from .states import AttemptStatus, RunStatus, StepStatus
from .step import StepResult
from .workflow import Workflow

S = StepStatus


class MemoryStore:
    """A :class:`~stepflow.context.StepStore` in memory, for one step."""

    def __init__(self, runner: LocalRunner | None = None, step: str = "") -> None:
        self.runner = runner
        self.step = step
        self.checkpoints: dict[str, Any] = {}
        self.items = ItemSet()
        self.progress: tuple[float | None, float | None, str] | None = None
        self.logs: list[tuple[str, str, dict[str, Any]]] = []
        self.metrics: dict[str, float] = {}
        self.item_flushes = 0

    def load_checkpoints(self) -> dict[str, Any]:
        return dict(self.checkpoints)

    def save_checkpoint(self, key: str, value: Any) -> None:
        self.checkpoints[key] = value

    def load_done_items(self) -> ItemSet:
        copy = ItemSet()
        copy._bits = bytearray(self.items._bits)
        copy._strings = set(self.items._strings)
        copy._count = len(self.items)
        return copy

    def mark_items(self, keys: list[ItemKey], done: ItemSet | None = None) -> None:
        self.items.update(keys)
        self.item_flushes += 1

    def save_progress(self, current: float | None, total: float | None, message: str) -> None:
        self.progress = (current, total, message)
        if self.runner is not None:
            self.runner._notify(self.step)

    def log(self, level: str, message: str, data: dict[str, Any]) -> None:
        self.logs.append((level, message, data))

    def save_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value

    def is_cancelled(self) -> bool:
        return self.runner is not None and self.runner.cancel_requested


@dataclass
class AttemptReport:
    number: int
    status: AttemptStatus
    error: str = ""
    traceback: str = ""


@dataclass
class StepReport:
    name: str
    status: StepStatus = S.PENDING
    attempts: list[AttemptReport] = field(default_factory=list)
    round_start: int = 0  # attempts made before the latest reset
    result: StepResult | None = None
    skip_reason: str = ""
    rolled_back: bool = False
    rollback_error: str = ""
    failure: str = ""  # why it failed without an attempt (its condition raised)

    @property
    def output(self) -> Any:
        return self.result.data if self.result else None

    @property
    def error(self) -> str:
        if self.failure:
            return self.failure
        return self.attempts[-1].error if self.attempts else ""


@dataclass
class LocalResult:
    status: RunStatus
    steps: dict[str, StepReport]
    rollbacks: list[str]
    progress: float
    executed: list[str]

    def __getitem__(self, name: str) -> StepReport:
        return self.steps[name]

    @property
    def statuses(self) -> dict[str, str]:
        return {n: r.status.value for n, r in self.steps.items()}


class LocalRunner:
    """One run of a workflow, kept in memory so it can be resumed."""

    def __init__(
        self,
        workflow: Workflow,
        params: Mapping[str, Any] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[float, str], None] | None = None,
        settings: ContextSettings | None = None,
        rng: random.Random | None = None,
        workflows: Iterable[Workflow] | None = None,
    ) -> None:
        self.workflow = workflow
        #: The workflows child runs may use (default: the registered ones).
        self.workflows = list(workflows) if workflows is not None else None
        self.params = workflow.validate_params(params or {})
        self.sleep = sleep
        self.clock = clock
        self.on_progress = on_progress
        self.settings = settings or ContextSettings()
        self.rng = rng or random.Random(0)
        self.status = RunStatus.PENDING
        self.steps = {n: StepReport(n) for n in workflow.order()}
        self.stores = {n: MemoryStore(self, n) for n in workflow.steps}
        self.scope: frozenset[str] | None = None
        self.rollbacks: list[str] = []
        self.executed: list[str] = []  # step names, one entry per attempt, in order
        self._completed_order: list[str] = []
        self._cancel = threading.Event()
        #: Child runs by (step, index, workflow, params), kept so that a retry or
        #: resume asking for the same child reuses it (as the engine does).
        self.children: dict[tuple[str, int, str, str], LocalRunner] = {}

    # -- public -------------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the run to stop (from step code or another thread)."""
        self._cancel.set()

    def run(self) -> LocalResult:
        self._set_run(RunStatus.RUNNING)
        return self._drive()

    def resume(
        self,
        mode: str = "resume",
        step: str | None = None,
        skip: Iterable[str] = (),
        clear_items: bool = False,
    ) -> LocalResult:
        """Resume a finished (or crashed) run, as the engine's resume does."""
        self._recover_lost()
        plan = self.preview(mode, step, skip, clear_items)
        self._set_run(RunStatus.RUNNING)
        self._cancel.clear()
        for name in plan.reset:
            report = self.steps[name]
            self._set_step(name, S.PENDING)
            report.round_start = len(report.attempts)
            report.skip_reason = ""
            report.rolled_back = False
            report.failure = ""
            if plan.clear_items:
                self.stores[name].items = ItemSet()
        for name in plan.skip:
            self._set_step(name, S.SKIPPED)
            self.steps[name].skip_reason = planner.REASON_USER
        self.scope = plan.scope
        return self._drive()

    def preview(
        self,
        mode: str = "resume",
        step: str | None = None,
        skip: Iterable[str] = (),
        clear_items: bool = False,
    ) -> planner.ResumePlan:
        undone = [n for n, r in self.steps.items() if r.rolled_back and r.status == S.COMPLETED]
        return planner.plan_resume(
            self.workflow, self.statuses, mode, step, skip, clear_items, rerun=undone
        )

    @property
    def statuses(self) -> dict[str, str]:
        return {n: r.status.value for n, r in self.steps.items()}

    def result(self) -> LocalResult:
        return LocalResult(
            status=self.status,
            steps=self.steps,
            rollbacks=list(self.rollbacks),
            progress=self.progress(),
            executed=list(self.executed),
        )

    def progress(self) -> float:
        fractions = {}
        for name, store in self.stores.items():
            if store.progress and store.progress[1]:
                fractions[name] = (store.progress[0] or 0) / store.progress[1]
        return planner.weighted_progress(self.workflow, self.statuses, fractions)

    # -- internals ----------------------------------------------------------------
    def _set_run(self, target: RunStatus) -> None:
        if self.status != target:
            self.status = RunStatus(states.transition(self.status, target, "Run (local)"))

    def _set_step(self, name: str, target: StepStatus) -> None:
        report = self.steps[name]
        report.status = StepStatus(states.transition(report.status, target, f"Step {name!r}"))
        self._notify(name)

    def _notify(self, name: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress(), name)

    def _recover_lost(self) -> None:
        """Steps left running or queued by a crash count as a lost attempt."""
        for report in self.steps.values():
            if report.status in (S.RUNNING, S.WAITING):
                report.attempts[-1].status = AttemptStatus.WORKER_LOST
                report.attempts[-1].error = "worker lost"
                report.status = S.FAILED
            elif report.status in (S.QUEUED, S.RETRYING):
                report.status = S.FAILED
        if self.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
            self.status = RunStatus.FAILED

    def _ctx(self, name: str, attempt: int) -> StepContext:
        inputs = {d: self.steps[d].output for d in self.workflow.steps[name].depends_on}
        step = self.workflow.steps[name]
        deadline = self.clock() + step.timeout if step.timeout else None
        return StepContext(
            step_name=name,
            run_id="local",
            attempt=attempt,
            params=self.params,
            inputs=inputs,
            store=self.stores[name],
            settings=self.settings,
            clock=self.clock,
            deadline=deadline,
            statuses=self.statuses,
            secrets=[
                str(self.params[n])
                for n, p in self.workflow.params.items()
                if p.secret and self.params.get(n)
            ],
        )

    def _condition(self, name: str) -> bool:
        return self.workflow.steps[name].when(self._ctx(name, 0))

    def _drive(self) -> LocalResult:
        while True:
            cancelling = self.cancel_requested
            if cancelling and self.status == RunStatus.RUNNING:
                self._set_run(RunStatus.CANCELLING)
            if cancelling:
                for name, report in self.steps.items():
                    if report.status in (S.PENDING, S.QUEUED, S.RETRYING):
                        self._set_step(name, S.CANCELLED)
            adv = planner.advance(
                self.workflow,
                self.statuses,
                condition=self._condition,
                scope=self.scope,
                cancelling=cancelling,
                limit=self.workflow.max_parallel,
                skip_reasons={n: r.skip_reason for n, r in self.steps.items()},
            )
            for name, reason in adv.skipped.items():
                self._set_step(name, S.SKIPPED)
                self.steps[name].skip_reason = reason
            for name, error in adv.failed.items():
                self._set_step(name, S.FAILED)
                self.steps[name].failure = error
            if adv.run_status is not None:
                if adv.run_status == RunStatus.FAILED:
                    self._rollback()
                self._set_run(adv.run_status)
                return self.result()
            for name in adv.ready:
                self._set_step(name, S.QUEUED)
            for name in adv.ready:
                self._execute(name)

    def _execute(self, name: str) -> None:
        step = self.workflow.steps[name]
        report = self.steps[name]
        while True:
            if self.cancel_requested:
                self._set_step(name, S.CANCELLED)
                return
            number = len(report.attempts) + 1
            self._set_step(name, S.RUNNING)
            report.attempts.append(AttemptReport(number, AttemptStatus.RUNNING))
            self.executed.append(name)
            outcome: AttemptOutcome = run_attempt(step, self._ctx(name, number))
            attempt = report.attempts[-1]
            attempt.status, attempt.error, attempt.traceback = (
                outcome.status,
                outcome.error,
                outcome.traceback,
            )
            decision = planner.after_attempt(
                step, number - report.round_start, outcome.status, outcome.exception, self.rng
            )
            if outcome.succeeded:
                report.result = outcome.result
            if decision.status == S.COMPLETED and outcome.children:
                self._set_step(name, S.WAITING)
                waited = self._wait_for_children(name, outcome)
                ok = waited.status == S.COMPLETED
                attempt.status = AttemptStatus.COMPLETED if ok else AttemptStatus.FAILED
                attempt.error = waited.error
                result = outcome.result or StepResult()
                report.result = StepResult(data=waited.output, rollback_data=result.rollback_data)
                self._set_step(name, waited.status)
                if waited.status == S.COMPLETED:
                    self._completed_order.append(name)
                return
            self._set_step(name, decision.status)
            if decision.status == S.COMPLETED:
                self._completed_order.append(name)
            if decision.status == S.SKIPPED:
                report.skip_reason = planner.REASON_CAN_SKIP
            if decision.status != S.RETRYING:
                return
            self.sleep(decision.retry_in or 0.0)
            self._set_step(name, S.QUEUED)

    def _wait_for_children(self, name: str, outcome: AttemptOutcome) -> planner.ChildrenDecision:
        """Run (or resume) the child runs a step asked for, one after the other."""
        summaries = []
        for index, request in enumerate(outcome.children):
            signature = json.dumps(request.params, sort_keys=True, default=str)
            key = (name, index, request.workflow, signature)
            child = self.children.get(key)
            try:
                if child is None:
                    child = LocalRunner(
                        self._find_workflow(request.workflow),
                        request.params,
                        sleep=self.sleep,
                        clock=self.clock,
                        settings=self.settings,
                        rng=self.rng,
                        workflows=self.workflows,
                    )
                    self.children[key] = child
                    child.run()
                elif child.status in states.RUN_UNFINISHED:
                    child.resume()
            except StepflowError as exc:
                return planner.ChildrenDecision(
                    S.FAILED, None, f"child run {index} ({request.workflow}): {exc}"
                )
            summaries.append(
                planner.ChildSummary(
                    f"local-{name}-{index}",
                    request.workflow,
                    child.status.value,
                    error=_first_error(child),
                    outputs={
                        leaf: child.steps[leaf].output
                        for leaf in planner.leaf_steps(child.workflow)
                    },
                )
            )
        data = outcome.result.data if outcome.result is not None else None
        return planner.after_children(data, summaries)

    def _find_workflow(self, name: str) -> Workflow:
        if self.workflows is None:
            from .registry import registry

            return registry.get(name)
        for wf in self.workflows:
            if wf.name == name:
                return wf
        raise UnknownWorkflow(name, [wf.name for wf in self.workflows])

    def _rollback(self) -> None:
        completed = [n for n in self._completed_order if self.steps[n].status == S.COMPLETED]
        for name in planner.rollback_order(self.workflow, completed):
            report = self.steps[name]
            if report.rolled_back:
                continue
            try:
                self.workflow.steps[name].rollback(
                    self._ctx(name, len(report.attempts)), report.result or StepResult()
                )
                report.rolled_back = True
                self.rollbacks.append(name)
            except Exception as exc:  # recorded, the other rollbacks still run
                report.rollback_error = f"{type(exc).__name__}: {exc}"


def _first_error(runner: LocalRunner) -> str:
    for name in runner.workflow.order():
        report = runner.steps[name]
        if report.status in states.STEP_FAILED and report.error:
            return f"{name}: {report.error.strip().splitlines()[-1]}"
    return ""


def run_local(
    workflow: Workflow,
    params: Mapping[str, Any] | None = None,
    **options: Any,
) -> LocalResult:
    """Run ``workflow`` in-process and return what happened to every step."""
    return LocalRunner(workflow, params, **options).run()
