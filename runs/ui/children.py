"""The tree of a run's child runs (started by its steps), for the run page."""

from __future__ import annotations

from dataclasses import dataclass, field

from stepflow import states

from ..models import Run

#: At most this many runs are shown in one tree, at most this deep.
MAX_NODES = 200
MAX_DEPTH = 6


@dataclass
class Node:
    run: Run
    step: str
    children: list[Node] = field(default_factory=list)


@dataclass
class Tree:
    children: list[Node]
    shown: int
    truncated: bool
    active: bool


def child_tree(run: Run) -> Tree:
    """The run's descendants, level by level (one query per level)."""
    roots: list[Node] = []
    by_id: dict[int, Node] = {}
    level = [run.pk]
    shown = 0
    truncated = False
    active = False
    for _ in range(MAX_DEPTH):
        if not level:
            break
        rows = list(
            Run.objects.filter(parent_id__in=level)
            .select_related("parent_step")
            .only(
                "pk",
                "workflow",
                "status",
                "progress",
                "error_summary",
                "parent_id",
                "parent_step__name",
            )
            .order_by("pk")[: MAX_NODES - shown + 1]
        )
        if len(rows) > MAX_NODES - shown:
            rows = rows[: MAX_NODES - shown]
            truncated = True
        next_level = []
        for child in rows:
            node = Node(child, child.parent_step.name if child.parent_step else "")
            by_id[child.pk] = node
            if child.parent_id == run.pk:
                roots.append(node)
            else:
                by_id[child.parent_id].children.append(node)  # type: ignore[index]
            active = active or child.status not in states.RUN_FINISHED
            next_level.append(child.pk)
        shown += len(rows)
        if truncated:
            break
        level = next_level
    return Tree(roots, shown, truncated, active)


def has_children(run: Run) -> bool:
    return Run.objects.filter(parent_id=run.pk).exists()
