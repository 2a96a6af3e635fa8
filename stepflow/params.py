"""Declared run parameters: types, defaults, validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParams, WorkflowDefinitionError

TYPES = ("str", "int", "float", "bool", "json", "choice")
MASK = "••••••"


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``type`` is one of str, int, float, bool, json, choice."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    secret: bool = False
    min: float | None = None
    max: float | None = None
    label: str = field(default="")

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise WorkflowDefinitionError(
                f"Parameter {self.name!r} has an unknown type {self.type!r}: "
                f"use one of {', '.join(TYPES)}"
            )
        if self.type == "choice" and not self.choices:
            raise WorkflowDefinitionError(f"Parameter {self.name!r} is a choice without choices")
        if self.default is not None:
            try:
                object.__setattr__(self, "default", self.clean(self.default))
            except (ValueError, TypeError) as exc:
                raise WorkflowDefinitionError(
                    f"Parameter {self.name!r} has an invalid default {self.default!r}: {exc}"
                ) from None

    def clean(self, raw: Any) -> Any:
        """Convert a raw value (from JSON, a form or the command line) or raise ValueError."""
        t = self.type
        if t == "str":
            if not isinstance(raw, str | int | float) or isinstance(raw, bool):
                raise ValueError("expected text")
            return str(raw)
        if t == "int":
            if isinstance(raw, bool):
                raise ValueError("expected a whole number")
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            if isinstance(raw, str):
                try:
                    raw = int(raw.strip())
                except ValueError:
                    raise ValueError(f"expected a whole number, got {raw!r}") from None
            if not isinstance(raw, int):
                raise ValueError(f"expected a whole number, got {raw!r}")
            return self._bounded(raw)
        if t == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            try:
                value = float(raw.strip() if isinstance(raw, str) else raw)
            except (TypeError, ValueError):
                raise ValueError(f"expected a number, got {raw!r}") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return self._bounded(value)
        if t == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if t == "choice":
            if str(raw) not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {raw!r}")
            return str(raw)
        # json
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON: {exc.msg}") from None
        json.dumps(raw)
        return raw

    def _bounded(self, value: float) -> Any:
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max:g}")
        return value

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "default": MASK if self.secret and self.default is not None else self.default,
            "required": self.required,
            "choices": list(self.choices),
            "secret": self.secret,
            "min": self.min,
            "max": self.max,
        }


def validate_params(
    declared: Mapping[str, Param], raw: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """Clean ``raw`` against the declared parameters: defaults filled in,
    types converted; unknown names refused when ``strict``.

    Raises InvalidParams naming every bad field at once.
    """
    if not isinstance(raw, Mapping):
        raise InvalidParams({"__all__": "parameters must be a JSON object"})
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    for name, param in declared.items():
        if name in raw and raw[name] is not None and raw[name] != "":
            try:
                cleaned[name] = param.clean(raw[name])
            except (ValueError, TypeError) as exc:
                errors[name] = str(exc)
        elif param.required:
            errors[name] = "this parameter is required"
        elif param.default is not None:
            cleaned[name] = param.default
        elif param.type == "bool":
            cleaned[name] = False
        else:
            cleaned[name] = None
    if strict:
        for name in raw:
            if name not in declared:
                errors[name] = "unknown parameter" + (
                    f" (declared: {', '.join(declared)})" if declared else " (none are declared)"
                )
    if errors:
        raise InvalidParams(errors)
    return cleaned


def mask_params(declared: Mapping[str, Param], params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as they may be shown: secret values replaced by a mask."""
    return {
        k: (MASK if k in declared and declared[k].secret and v is not None else v)
        for k, v in params.items()
    }
