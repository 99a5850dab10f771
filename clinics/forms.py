"""Forms of the settings page and sign-in. Every field's rule comes from clinics.validators."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from common.forms import NormalizedFormMixin

from . import choices, validators
from .models import canonical_email


class CanonicalEmailField(forms.EmailField):
    """An e-mail made canonical before it is checked, as every door stores and looks it up."""

    def to_python(self, value: Any) -> str:
        return canonical_email(super().to_python(value))


class EmailAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, with an email input: the user model's USERNAME_FIELD is `email`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["username"]
        field.label = _("Email")
        field.widget = forms.EmailInput(attrs={"autofocus": True, "autocomplete": "username"})


class PickerField(forms.ChoiceField):
    """A select over a known list whose value the field's normaliser checks (same message as the API).

    The list is for people; the rule is the normaliser's, so `usd` from a script is `USD`, and
    `Mars/Olympus` is refused with the sentence the API gives.
    """

    def valid_value(self, value: Any) -> bool:
        return True


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
    timezone = PickerField(label=_("Time zone"), help_text=_("Your clinic's country comes first."))
    currency = PickerField(label=_("Currency"))

    normalizers = validators.CLINIC_NORMALIZERS

    def __init__(
        self,
        *args: Any,
        country: str = "",
        current_timezone: str = "",
        current_currency: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Pickers instead of free text, named in the reader's language; the normalisers still
        # check whatever is posted.
        self.fields["timezone"].choices = choices.timezone_choices(country, current_timezone)  # type: ignore[attr-defined]
        self.fields["currency"].choices = choices.currency_choices(country, current_currency)  # type: ignore[attr-defined]


class BotForm(forms.Form):
    bot_enabled = forms.BooleanField(label=_("Answer patients with the bot"), required=False)


class RevokeTokensForm(forms.Form):
    """One of the user's own API tokens by id, or (no id) all of them."""

    token = forms.IntegerField(required=False, min_value=1)
