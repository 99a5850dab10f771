"""Form plumbing shared by the settings page and admin: normalisers and service errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError


class NormalizedFormMixin:
    """Runs `normalizers[field]` on each field's value, so the API, page and admin share one rule.

    A normaliser takes the field's cleaned value and returns what is stored, or
    raises ValidationError; the error lands next to its field.
    """

    normalizers: Mapping[str, Callable[[Any], Any]] = {}

    def _clean_fields(self) -> None:
        super()._clean_fields()  # type: ignore[misc]
        for name, normalize in self.normalizers.items():
            if name not in self.cleaned_data:  # type: ignore[attr-defined]
                continue
            try:
                self.cleaned_data[name] = normalize(self.cleaned_data[name])  # type: ignore[attr-defined]
            except ValidationError as exc:
                self.add_error(name, exc)  # type: ignore[attr-defined]


def add_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Show a service's ValidationError next to the form's fields (services use model field names)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for name, errors in exc.error_dict.items():
        form.add_error(name if name in form.fields else None, errors)
