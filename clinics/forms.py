"""Forms of the settings page and sign-in. Every field format comes from clinics.validators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from . import validators


class EmailAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, with an email input: the user model's USERNAME_FIELD is `email`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["username"]
        field.label = _("Email")
        field.widget = forms.EmailInput(attrs={"autofocus": True, "autocomplete": "username"})


class NormalizedFormMixin:
    """Runs `normalizers[field]` on each field's value: the API, page and admin share the rules."""

    normalizers: dict[str, Callable[[Any], Any]] = {}

    def _clean_fields(self) -> None:
        super()._clean_fields()  # type: ignore[misc]
        for name, normalize in self.normalizers.items():
            if name not in self.cleaned_data:  # type: ignore[attr-defined]
                continue
            try:
                self.cleaned_data[name] = normalize(self.cleaned_data[name])  # type: ignore[attr-defined]
            except ValidationError as exc:
                self.add_error(name, exc)  # type: ignore[attr-defined]


def add_service_errors(
    form: forms.Form, exc: ValidationError, field_map: dict[str, str] | None = None
) -> None:
    """Show a service's ValidationError next to the form's fields (API key names mapped)."""
    field_map = field_map or {}
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for key, errors in exc.error_dict.items():
        name = field_map.get(key, key)
        form.add_error(name if name in form.fields else None, errors)


def _address(value: str) -> str:
    return validators.normalize_limited_text(value, limit=validators.ADDRESS_MAX_LENGTH, what=_("address"))


def _city(value: str) -> str:
    return validators.normalize_limited_text(value, limit=validators.CITY_MAX_LENGTH, what=_("city"))


class ClinicProfileForm(NormalizedFormMixin, forms.Form):
    name = forms.CharField(label=_("Name"), strip=False)
    phone = forms.CharField(
        label=_("Phone"),
        required=False,
        help_text=_("International format with the country code, e.g. +503 2222-3333."),
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
    )
    address = forms.CharField(label=_("Address"), required=False)
    city = forms.CharField(label=_("City"), required=False)
    timezone = forms.CharField(label=_("Time zone"), help_text=_("An IANA name such as America/El_Salvador."))
    currency = forms.CharField(label=_("Currency"), help_text=_("ISO 4217 code such as USD."))

    normalizers = {
        "name": validators.normalize_name,
        "phone": validators.normalize_clinic_phone,
        "address": _address,
        "city": _city,
        "timezone": validators.normalize_timezone,
        "currency": validators.normalize_currency,
    }


class BotForm(forms.Form):
    bot_enabled = forms.BooleanField(label=_("Answer patients with the bot"), required=False)
