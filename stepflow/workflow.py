"""Workflows: named, versioned, validated DAGs of steps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import UnknownStep, WorkflowDefinitionError
from .params import Param, validate_params
from .step import NAME_RE, Step


class Workflow:
    """A named DAG of steps, validated when built.

    ``params`` declares the run parameters (a list of :class:`Param`);
    ``max_parallel`` caps how many steps of one run execute at once;
    ``timeout`` (seconds) is a deadline for each start or resume of a run:
    when it passes, running steps are stopped as on a cancel and the run ends
    ``timed_out`` (resumable like a failed run).
    """

    def __init__(
        self,
        name: str,
        steps: Iterable[Step],
        *,
        version: str | int = "1",
        description: str = "",
        params: Iterable[Param] = (),
        max_parallel: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise WorkflowDefinitionError(
                f"Workflow name {name!r} is invalid: use lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
        self.name = name
        self.version = str(version)
        self.description = description
        self.max_parallel = max_parallel
        self.steps: dict[str, Step] = {}
        duplicates: list[str] = []
        for s in steps:
            if not isinstance(s, Step):
                raise WorkflowDefinitionError(
                    f"Workflow {name!r}: {s!r} is not a Step (use a Step subclass or @step)"
                )
            if s.name in self.steps:
                duplicates.append(s.name)
            self.steps[s.name] = s
        if duplicates:
            raise WorkflowDefinitionError(
                f"Workflow {name!r} has duplicate step names: {', '.join(sorted(set(duplicates)))}"
            )
        if not self.steps:
            raise WorkflowDefinitionError(f"Workflow {name!r} has no steps")
        self.params: dict[str, Param] = {}
        for p in params:
            if p.name in self.params:
                raise WorkflowDefinitionError(
                    f"Workflow {name!r} declares the parameter {p.name!r} twice"
                )
            self.params[p.name] = p
        if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
            raise WorkflowDefinitionError(
                f"Workflow {name!r} has an invalid max_parallel {max_parallel!r}: "
                "use an integer >= 1"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise WorkflowDefinitionError(
                f"Workflow {name!r} has an invalid timeout {timeout!r}: use seconds > 0"
            )
        self.timeout: float | None = float(timeout) if timeout is not None else None
        self._check_dependencies()
        self._levels = self._compute_levels()
        self.dependants: dict[str, tuple[str, ...]] = {
            n: tuple(m for m, s in self.steps.items() if n in s.depends_on) for n in self.steps
        }
        #: Position of each step in ``order()``.
        self.rank: dict[str, int] = {n: i for i, n in enumerate(self.order())}
        self.definition_hash = self._hash()

    # -- validation ---------------------------------------------------------------
    def _check_dependencies(self) -> None:
        unknown = [
            f"{s.name} -> {dep}"
            for s in self.steps.values()
            for dep in s.depends_on
            if dep not in self.steps
        ]
        if unknown:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has unknown dependencies: {', '.join(unknown)}"
            )
        cycle = self._find_cycle()
        if cycle:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has a dependency cycle: {' -> '.join(cycle)}"
            )

    def _find_cycle(self) -> list[str] | None:
        # Depth-first search along "runs after" edges (dep -> step), in declaration order.
        children = {n: [m for m, s in self.steps.items() if n in s.depends_on] for n in self.steps}
        colour: dict[str, int] = dict.fromkeys(self.steps, 0)  # 0 new, 1 on stack, 2 done
        stack: list[str] = []

        def visit(n: str) -> list[str] | None:
            colour[n] = 1
            stack.append(n)
            for m in children[n]:
                if colour[m] == 1:
                    return [*stack[stack.index(m) :], m]
                if colour[m] == 0 and (found := visit(m)):
                    return found
            stack.pop()
            colour[n] = 2
            return None

        for n in self.steps:
            if colour[n] == 0 and (found := visit(n)):
                return found
        return None

    def _compute_levels(self) -> list[list[str]]:
        indegree = {n: len(set(s.depends_on)) for n, s in self.steps.items()}
        level = [n for n in self.steps if indegree[n] == 0]
        levels: list[list[str]] = []
        while level:
            levels.append(level)
            nxt: list[str] = []
            for n in level:
                for m, s in self.steps.items():
                    if n in s.depends_on:
                        indegree[m] -= 1
                        if indegree[m] == 0:
                            nxt.append(m)
            level = nxt
        return levels

    def _hash(self) -> str:
        payload = {
            "name": self.name,
            "version": self.version,
            "max_parallel": self.max_parallel,
            "steps": [self.steps[n].describe() for n in sorted(self.steps)],
            "params": [self.params[n].describe() for n in sorted(self.params)],
        }
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    # -- reading ------------------------------------------------------------------
    def levels(self) -> list[list[str]]:
        """Kahn topological levels: every step of a level depends only on earlier levels."""
        return [list(level) for level in self._levels]

    def order(self) -> list[str]:
        """Step names in a topological order (level by level, declaration order within)."""
        return [n for level in self._levels for n in level]

    @property
    def total_weight(self) -> float:
        return float(sum(s.weight for s in self.steps.values()))

    def __getitem__(self, name: str) -> Step:
        try:
            return self.steps[name]
        except KeyError:
            raise UnknownStep(self.name, name) from None

    def __contains__(self, name: object) -> bool:
        return name in self.steps

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps.values())

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} v{self.version} steps={list(self.steps)}>"

    def upstream(self, name: str) -> set[str]:
        """Every step that ``name`` depends on, directly or not."""
        seen: set[str] = set()
        todo = list(self[name].depends_on)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.steps[n].depends_on)
        return seen

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or not."""
        self[name]
        seen: set[str] = set()
        todo = list(self.dependants[name])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.dependants[n])
        return seen

    def validate_params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Cleaned parameters, or InvalidParams. A workflow that declares none takes any."""
        if not self.params:
            if not isinstance(raw, Mapping):
                return validate_params({}, raw)
            return dict(raw)
        return validate_params(self.params, raw)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "definition_hash": self.definition_hash,
            "steps": [self.steps[n].describe() for n in self.order()],
            "params": [p.describe() for p in self.params.values()],
            "max_parallel": self.max_parallel,
            "timeout": self.timeout,
        }

    # -- deriving new workflows ---------------------------------------------------
    def _derive(self, steps: list[Step], name: str | None, version: str | int | None) -> Workflow:
        return Workflow(
            name or self.name,
            steps,
            version=self.version if version is None else version,
            description=self.description,
            params=self.params.values(),
            max_parallel=self.max_parallel,
            timeout=self.timeout,
        )

    def _check_new_name(self, name: str) -> None:
        if name in self.steps:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has duplicate step names: {name}"
            )

    def insert_after(
        self, target: str, new: Step, *, name: str | None = None, version: str | int | None = None
    ) -> Workflow:
        """A new workflow with ``new`` running after ``target`` and before target's dependants."""
        self[target]
        self._check_new_name(new.name)
        steps: list[Step] = []
        for s in self.steps.values():
            if target in s.depends_on:
                deps = tuple(new.name if d == target else d for d in s.depends_on)
                s = s.replace(depends_on=deps)
            steps.append(s)
            if s.name == target:
                steps.append(new.replace(depends_on=_merge((target,), new.depends_on)))
        return self._derive(steps, name, version)

    def insert_before(
        self, target: str, new: Step, *, name: str | None = None, version: str | int | None = None
    ) -> Workflow:
        """A new workflow with ``new`` taking target's dependencies and target depending on it."""
        old = self[target]
        self._check_new_name(new.name)
        steps: list[Step] = []
        for s in self.steps.values():
            if s.name == target:
                steps.append(new.replace(depends_on=_merge(old.depends_on, new.depends_on)))
                s = s.replace(depends_on=(new.name,))
            steps.append(s)
        return self._derive(steps, name, version)

    def remove(
        self, target: str, *, name: str | None = None, version: str | int | None = None
    ) -> Workflow:
        """A new workflow without ``target``; its dependants inherit its dependencies."""
        old = self[target]
        steps: list[Step] = []
        for s in self.steps.values():
            if s.name == target:
                continue
            if target in s.depends_on:
                deps = _merge(tuple(d for d in s.depends_on if d != target), old.depends_on)
                s = s.replace(depends_on=deps)
            steps.append(s)
        return self._derive(steps, name, version)

    def replace(
        self, target: str, new: Step, *, name: str | None = None, version: str | int | None = None
    ) -> Workflow:
        """A new workflow with ``new`` in target's place (keeping target's dependencies when
        ``new`` declares none); dependants of ``target`` depend on ``new``."""
        old = self[target]
        if new.name != target:
            self._check_new_name(new.name)
        new = new.replace(depends_on=new.depends_on or old.depends_on)
        steps: list[Step] = []
        for s in self.steps.values():
            if s.name == target:
                steps.append(new)
                continue
            if target in s.depends_on:
                s = s.replace(
                    depends_on=tuple(new.name if d == target else d for d in s.depends_on)
                )
            steps.append(s)
        return self._derive(steps, name, version)


def _merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))
