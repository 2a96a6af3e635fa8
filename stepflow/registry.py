"""The registry of workflows, looked up by name."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from .errors import RegistryError, UnknownWorkflow
from .workflow import Workflow


class Registry:
    """Workflows by name. Registration is atomic: a batch that fails any
    check leaves the registry as it was."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._lock = threading.Lock()

    def register(self, *workflows: Workflow, replace: bool = False) -> None:
        with self._lock:
            staged = dict(self._workflows)
            for wf in workflows:
                if not isinstance(wf, Workflow):
                    raise RegistryError(f"Only a Workflow can be registered, not {wf!r}")
                existing = staged.get(wf.name)
                if (
                    existing is not None
                    and existing.definition_hash != wf.definition_hash
                    and not replace
                ):
                    raise RegistryError(
                        f"A workflow named {wf.name!r} is already registered "
                        "(pass replace=True to replace it)"
                    )
                staged[wf.name] = wf
            self._workflows = staged

    def unregister(self, name: str) -> None:
        with self._lock:
            if name not in self._workflows:
                raise UnknownWorkflow(name, list(self._workflows))
            staged = dict(self._workflows)
            del staged[name]
            self._workflows = staged

    def get(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflow(name, list(self._workflows)) from None

    def names(self) -> list[str]:
        return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter([self._workflows[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._workflows)

    def clear(self) -> None:
        with self._lock:
            self._workflows = {}

    def snapshot(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    def restore(self, snapshot: Iterable[Workflow] | dict[str, Workflow]) -> None:
        items = snapshot.values() if isinstance(snapshot, dict) else snapshot
        with self._lock:
            self._workflows = {wf.name: wf for wf in items}


#: The process-wide registry that ``register`` and the Django app use.
registry = Registry()


def register(*workflows: Workflow, replace: bool = False) -> Workflow:
    """Register workflows in the default registry; returns the first (usable as a statement)."""
    registry.register(*workflows, replace=replace)
    return workflows[0]


def get_workflow(name: str) -> Workflow:
    return registry.get(name)
