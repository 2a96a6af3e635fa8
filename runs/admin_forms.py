"""Admin forms for staff corrections: they validate with the corrections
service's rules and never save rows themselves (the ModelAdmins call the service)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from stepflow.errors import StepflowError

from . import corrections
from .models import Checkpoint, Run

_MONO = {"class": "sf-mono vLargeTextField", "spellcheck": "false"}


class RunAdminForm(forms.ModelForm):
    """The parameters (as masked JSON) and the note of a run."""

    params_json = forms.CharField(
        label="Parameters",
        required=False,
        widget=forms.Textarea(attrs={**_MONO, "rows": 8}),
        help_text="A JSON object checked against the workflow's declared parameters. "
        "Secret values are shown masked; leave the mask to keep them. "
        "Locked while the run is pending, running or cancelling.",
    )

    class Meta:
        model = Run
        fields = ["note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params_changed = False
        self.note_changed = False
        if "params_json" in self.fields and self.instance.pk:
            self.initial["params_json"] = json.dumps(
                corrections.masked_params(self.instance),
                indent=2,
                sort_keys=True,
                ensure_ascii=False,
            )

    def clean_params_json(self) -> dict[str, Any]:
        run = self.instance
        text = self.cleaned_data["params_json"].strip() or "{}"
        try:
            raw = corrections.parse_json(text, f"the parameters of run #{run.pk}")
            if raw in (run.params, corrections.masked_params(run)):
                return run.params
            refusal = corrections.params_refusal(run)
            if refusal:
                raise ValidationError(refusal)
            cleaned = corrections.clean_params(run, raw)
        except StepflowError as exc:
            raise ValidationError(exc.message) from None
        self.params_changed = cleaned != run.params
        return cleaned

    def clean_note(self) -> str:
        try:
            note = corrections.clean_note(self.cleaned_data.get("note") or "")
        except StepflowError as exc:
            raise ValidationError(exc.message) from None
        self.note_changed = note != self.initial.get("note", "")
        return note


class CheckpointAdminForm(forms.ModelForm):
    """A checkpoint's value as JSON text (and its step and key when adding one)."""

    value_json = forms.CharField(
        label="Value",
        widget=forms.Textarea(attrs={**_MONO, "rows": 6}),
        help_text='Any JSON value: 42, "text", [1, 2], {"cursor": "2026-01-01"}, null.',
    )

    class Meta:
        model = Checkpoint
        fields = ["step", "key"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["value_json"] = json.dumps(
                self.instance.value, indent=2, ensure_ascii=False
            )

    def clean_value_json(self) -> Any:
        key = self.cleaned_data.get("key") or self.instance.key
        try:
            return corrections.parse_json(self.cleaned_data["value_json"], f"checkpoint {key!r}")
        except StepflowError as exc:
            raise ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        step = cleaned.get("step") or (self.instance.step if self.instance.step_id else None)
        if step is not None:
            refusal = corrections.checkpoint_refusal(step)
            if refusal:
                raise ValidationError(refusal)
        return cleaned


class UnmarkItemsForm(forms.Form):
    keys = forms.CharField(
        label="Item keys",
        required=False,
        widget=forms.Textarea(attrs={**_MONO, "rows": 8}),
        help_text="One key per line; whole numbers such as 42 are integer keys.",
    )
    all_items = forms.BooleanField(label="All items of this step", required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("all_items"):
            cleaned["item_keys"] = None
            return cleaned
        keys = corrections.parse_item_keys(cleaned.get("keys") or "")
        if not keys:
            raise ValidationError("Enter the item keys to un-mark, one per line, or tick all items")
        cleaned["item_keys"] = keys
        return cleaned
