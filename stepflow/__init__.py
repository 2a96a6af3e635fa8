"""stepflow: define multi-step workflows in Python; run them locally or on RQ workers."""

from __future__ import annotations

from .context import ContextSettings, StepContext, StepStore
from .errors import (
    Cancelled,
    InvalidParams,
    InvalidTransition,
    PlanError,
    RegistryError,
    StepflowError,
    StepTimeout,
    UnknownStep,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from .local import LocalResult, LocalRunner, MemoryStore, run_local
from .params import Param
from .registry import Registry, get_workflow, register, registry
from .retry import Retry
from .states import AttemptStatus, RunStatus, StepStatus
from .step import Step, StepResult, step
from .workflow import Workflow

__all__ = [
    "AttemptStatus",
    "Cancelled",
    "ContextSettings",
    "InvalidParams",
    "InvalidTransition",
    "LocalResult",
    "LocalRunner",
    "MemoryStore",
    "Param",
    "PlanError",
    "Registry",
    "RegistryError",
    "Retry",
    "RunStatus",
    "Step",
    "StepContext",
    "StepResult",
    "StepStatus",
    "StepStore",
    "StepTimeout",
    "StepflowError",
    "UnknownStep",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDefinitionError",
    "get_workflow",
    "register",
    "registry",
    "run_local",
    "step",
]
