"""Forms of the dashboard: the start-run form built from a workflow's declared params."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from stepflow.errors import InvalidParams
from stepflow.params import Param
from stepflow.workflow import Workflow

PREFIX = "p_"


def _initial(param: Param) -> Any:
    if param.default is None:
        return None
    if param.type == "json":
        return json.dumps(param.default, indent=2)
    return param.default


def param_field(param: Param) -> forms.Field:
    """A form field that keeps the raw value: ``Workflow.validate_params`` does the checking,
    so the form and the API refuse exactly the same input with the same messages."""
    common: dict[str, Any] = {
        "label": param.label or param.name.replace("_", " "),
        "help_text": param.help,
        "required": False,
        "initial": _initial(param),
    }
    if param.type == "bool":
        return forms.BooleanField(**common)
    if param.type == "choice":
        choices = [(c, c) for c in param.choices]
        if not param.required and param.default is None:
            choices.insert(0, ("", "—"))
        return forms.ChoiceField(choices=choices, **common)
    attrs: dict[str, Any] = {"autocomplete": "off"}
    if param.required:
        attrs["aria-required"] = "true"
    if param.type in ("int", "float"):
        attrs["inputmode"] = "numeric" if param.type == "int" else "decimal"
        if param.min is not None:
            attrs["data-min"] = f"{param.min:g}"
        widget: forms.Widget = forms.TextInput(attrs=attrs)
    elif param.type == "json":
        widget = forms.Textarea(attrs={**attrs, "rows": 3, "class": "mono"})
    elif param.secret:
        widget = forms.PasswordInput(attrs=attrs, render_value=True)
    else:
        widget = forms.TextInput(attrs=attrs)
    return forms.CharField(widget=widget, strip=False, **common)


class StartRunForm(forms.Form):
    idempotency_key = forms.CharField(
        required=False,
        max_length=200,
        label="Idempotency key",
        help_text="Optional. Starting again with the same key and parameters opens the same run.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, workflow: Workflow, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workflow = workflow
        fields = {PREFIX + p.name: param_field(p) for p in workflow.params.values()}
        for name, f in fields.items():
            self.fields[name] = f
        # Parameters first, the key last.
        self.order_fields([*fields, "idempotency_key"])
        self.cleaned_params: dict[str, Any] = {}

    def param_fields(self) -> list[forms.BoundField]:
        return [self[n] for n in self.fields if n.startswith(PREFIX)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        raw: dict[str, Any] = {}
        for name, param in self.workflow.params.items():
            value = data.get(PREFIX + name)
            if param.type == "bool":
                raw[name] = bool(value)
            elif value not in (None, ""):
                raw[name] = value
        try:
            self.cleaned_params = self.workflow.validate_params(raw)
        except InvalidParams as exc:
            for field, message in exc.errors.items():
                key = PREFIX + field
                self.add_error(key if key in self.fields else None, message)
        return data

    @property
    def key(self) -> str | None:
        return (self.cleaned_data.get("idempotency_key") or "").strip() or None
