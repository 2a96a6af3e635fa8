"""The confirm panel of the run actions: what a button will do, and doing it.

Every action first shows its plan (``services.preview_resume``) and acts only
on a confirming POST; refusals come back as the service's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepflow import states
from stepflow.errors import InvalidTransition, PlanError, StepflowError, UnknownStep
from stepflow.planner import ResumePlan

from .. import engine, services
from ..errors import ActionRefused, DefinitionChanged, RunNotFound
from ..events import User, actor_name
from ..models import Run
from ..templatetags.stepflow_ui import number
from .detail import workflow_or_none

#: Action name -> button label (the resume modes keep the service's names).
ACTIONS: dict[str, str] = {
    "resume": "Resume",
    "retry_failed": "Retry failed",
    "continue_from": "Continue from",
    "cancel": "Cancel run",
}
DONE_LABELS = {
    "resume": "Resumed",
    "retry_failed": "Retried failed steps",
    "continue_from": "Continued from {step}",
}


@dataclass
class Panel:
    action: str
    run: Run
    step: str | None = None
    steps: list[str] = field(default_factory=list)
    plan: ResumePlan | None = None
    changes: dict[str, Any] | None = None
    error: str = ""
    flash: str = ""
    reason: str = ""
    confirm_definition_change: bool = False
    #: Steps that will run again and have items done already, with how many (continue from).
    items: list[tuple[str, int]] = field(default_factory=list)
    clear_items: bool = False

    @property
    def label(self) -> str:
        return ACTIONS[self.action]

    @property
    def items_label(self) -> str:
        """ "Clear the 1,204 items already done by build (they are processed again)"."""
        total = sum(n for _, n in self.items)
        names = [name for name, _ in self.items]
        who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        what = "item" if total == 1 else "items"
        return f"Clear the {number(total)} {what} already done by {who} (they are processed again)"

    @property
    def can_confirm(self) -> bool:
        if self.flash:
            return False
        if self.action == "cancel":
            return self.run.status in states.RUN_CANCELLABLE
        return self.plan is not None


def available(run: Run, has_failed_step: bool) -> list[str]:
    """The buttons that make sense for the run's status."""
    if run.status in states.RUN_CANCELLABLE:
        return ["cancel"]
    if run.status not in states.RUN_RESUMABLE:
        return []
    actions = []
    if run.status != "completed":
        actions.append("resume")
    if has_failed_step:
        actions.append("retry_failed")
    actions.append("continue_from")
    return actions


def _flag(value: Any) -> bool:
    return value in ("1", "on", "true", True)


def build(run: Run, action: str, step: str | None = None, clear_items: bool = False) -> Panel:
    """The panel before confirmation: the plan, or why nothing can be done. Continue from
    a step whose work has items done offers to clear them (``clear_items``)."""
    panel = Panel(action=action, run=run, step=step or None)
    wf = workflow_or_none(run.workflow)
    if wf is None:
        panel.error = f"Workflow {run.workflow!r} is not registered any more"
        return panel
    if action == "cancel":
        if run.status not in states.RUN_CANCELLABLE:
            panel.error = (
                f"Run #{run.pk} is already {run.status}; only an active run can be cancelled"
            )
        return panel
    if action == "continue_from":
        panel.steps = wf.order()
        if panel.step is None:
            stored = dict(run.steps.order_by().values_list("name", "status"))
            failed = [n for n in panel.steps if stored.get(n) in states.STEP_FAILED]
            panel.step = failed[0] if failed else panel.steps[0]
    if wf.definition_hash != run.definition_hash:
        panel.changes = services.definition_changes(run, wf)
    try:
        panel.plan = services.preview_resume(run, action, panel.step)
        if action == "continue_from":
            panel.items = items_done(run, panel.plan.reset)
            panel.clear_items = clear_items and bool(panel.items)
            if panel.clear_items:
                panel.plan = services.preview_resume(run, action, panel.step, clear_items=True)
    except StepflowError as exc:
        panel.error = exc.message
    return panel


def items_done(run: Run, names: list[str]) -> list[tuple[str, int]]:
    """The steps among ``names`` that have items done, in that order, with how many."""
    done = dict(
        run.steps.filter(name__in=names, items_done__gt=0)
        .order_by()
        .values_list("name", "items_done")
    )
    return [(name, done[name]) for name in names if name in done]


def status_for(exc: Exception) -> int:
    """409 when the run's state refuses, 404 for a missing run, 400 for a bad request."""
    if isinstance(exc, RunNotFound):
        return 404
    if isinstance(exc, ActionRefused | DefinitionChanged | engine.StaleUpdate):
        return 409
    if isinstance(exc, PlanError | UnknownStep):
        return 400
    return 409 if isinstance(exc, InvalidTransition) else 400


def perform(run: Run, action: str, user: User, data: dict[str, Any]) -> tuple[Panel, int]:
    """Carry out a confirmed action; returns the panel to show and the HTTP status."""
    step = (data.get("step") or "").strip() or None
    confirm = _flag(data.get("confirm_definition_change"))
    clear = action == "continue_from" and _flag(data.get("clear_items"))
    who = actor_name(user)
    try:
        if action == "cancel":
            reason = (data.get("reason") or "").strip()
            services.cancel_run(run.pk, user=user, reason=reason)
            panel = Panel(action=action, run=run, reason=reason)
            panel.flash = (
                f"Cancelled by {who}"
                + (f": {reason}" if reason else "")
                + (" — running steps are stopping")
            )
            return panel, 200
        plan = services.resume_run(
            run.pk,
            action,
            step=step,
            user=user,
            confirm_definition_change=confirm,
            clear_items=clear,
        )
    except (StepflowError, engine.StaleUpdate) as exc:
        run.refresh_from_db()
        panel = build(run, action, step, clear) if action != "cancel" else Panel(action, run)
        panel.error = exc.message if isinstance(exc, StepflowError) else str(exc)
        if action == "cancel":
            panel.reason = (data.get("reason") or "").strip()
        if isinstance(exc, DefinitionChanged):
            panel.changes = exc.changes
        panel.confirm_definition_change = confirm
        return panel, status_for(exc)
    panel = Panel(action=action, run=run, step=step, plan=plan)
    panel.flash = f"{DONE_LABELS[action].format(step=step)} by {who} — {plan.summary()}"
    return panel, 200
