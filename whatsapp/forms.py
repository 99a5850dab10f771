"""WhatsApp forms of the settings page. Formats come from whatsapp.validators; rules from the services.

Field names are the services' (the model's), so a service's ValidationError lands
next to its field. Secrets are write-only: their inputs never carry a value back
to the browser, and a blank input means "keep what is stored" (NOT_SENT).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from common.forms import NormalizedFormMixin
from common.notsent import NOT_SENT, NotSent

from . import validators


def _secret_input(autocomplete: str = "off") -> forms.PasswordInput:
    # render_value=False: a stored or submitted secret is never written into the page.
    return forms.PasswordInput(
        render_value=False, attrs={"autocomplete": autocomplete, "spellcheck": "false"}
    )


def optional_secret(value: str) -> str | NotSent:
    """A blank secret input keeps what is stored."""
    return validators.normalize_secret(value) if value else NOT_SENT


# One plain sentence for each of Meta's words, then where to find the value.
WABA_HELP = _(
    "The account at Meta that holds your clinic's WhatsApp numbers. In Meta Business Settings: "
    "Accounts > WhatsApp accounts, the account's id."
)
TOKEN_HELP = _(
    "A long password from Meta that lets this service use your WhatsApp account: a permanent "
    "system user token from Meta Business Settings > System users."
)


def _optional_verify_token(value: str) -> str | NotSent:
    return validators.normalize_verify_token(value) if value else NOT_SENT


class CredentialsForm(NormalizedFormMixin, forms.Form):
    phone_number_id = forms.CharField(
        label=_("Phone number id"),
        help_text=_(
            "Meta's own number for your WhatsApp number (about 15 digits, not the phone number). "
            "In WhatsApp Manager: Phone numbers, the number's id (also under WhatsApp > API Setup)."
        ),
    )
    business_account_id = forms.CharField(
        label=_("WhatsApp Business Account id"),
        help_text=WABA_HELP,
    )
    access_token = forms.CharField(
        label=_("Access token"),
        required=False,
        strip=False,
        widget=_secret_input(),
        help_text=_("Leave blank to keep the stored token."),
    )
    verify_token = forms.CharField(
        label=_("Webhook verify token"),
        required=False,
        strip=False,
        widget=_secret_input(),
        help_text=_(
            "A word Meta repeats once, when the webhook address is pasted there, to prove the address "
            "is yours. Leave blank to keep the current one (shown above)."
        ),
    )
    app_secret = forms.CharField(
        label=_("App secret"),
        required=False,
        strip=False,
        widget=_secret_input(),
        help_text=_(
            "The key Meta signs each delivery with, so this service knows it really comes from Meta; "
            "in the Meta app's settings, Basic. Leave blank to keep the stored one."
        ),
    )
    clear_app_secret = forms.BooleanField(label=_("Remove the stored app secret"), required=False)

    normalizers = {
        "phone_number_id": validators.normalize_meta_id,
        "business_account_id": validators.normalize_meta_id,
        "access_token": optional_secret,
        "verify_token": _optional_verify_token,
        "app_secret": optional_secret,
    }

    def __init__(self, *args: Any, has_token: bool = False, **kwargs: Any) -> None:
        # Own ids: several forms on one page have an access token or a phone field.
        kwargs.setdefault("auto_id", "cred_%s")
        super().__init__(*args, **kwargs)
        if not has_token:
            self.fields["access_token"].help_text = TOKEN_HELP

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("clear_app_secret"):
            data["app_secret"] = None
        return data

    def credentials(self) -> dict[str, Any]:
        """The cleaned values as the credentials service takes them."""
        names = ("phone_number_id", "business_account_id", "access_token", "verify_token", "app_secret")
        return {name: self.cleaned_data[name] for name in names}


class AccountForm(NormalizedFormMixin, forms.Form):
    """The WhatsApp Business Account and the token, for a number that is new to the Cloud API."""

    business_account_id = forms.CharField(label=_("WhatsApp Business Account id"), help_text=WABA_HELP)
    access_token = forms.CharField(
        label=_("Access token"),
        strip=False,
        widget=_secret_input(),
        help_text=TOKEN_HELP,
    )
    normalizers = {
        "business_account_id": validators.normalize_meta_id,
        "access_token": validators.normalize_secret,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "acct_%s")
        super().__init__(*args, **kwargs)


class RegisterForm(NormalizedFormMixin, forms.Form):
    number = forms.CharField(
        label=_("WhatsApp number"),
        help_text=_("International format with the country code, e.g. +503 7765-4321."),
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
    )
    otp_method = forms.ChoiceField(
        label=_("Receive the code by"),
        choices=[("sms", _("SMS")), ("voice", _("Voice call"))],
        initial="sms",
        widget=forms.RadioSelect,
    )
    # Blank: the stored account and token (the guided page asks for them once, in step 1).
    business_account_id = forms.CharField(
        label=_("WhatsApp Business Account id"), required=False, help_text=WABA_HELP
    )
    access_token = forms.CharField(
        label=_("Access token"),
        required=False,
        strip=False,
        widget=_secret_input(),
        help_text=_("Leave blank to use the stored token."),
    )

    normalizers = {
        "number": validators.normalize_whatsapp_phone,
        "otp_method": validators.normalize_otp_method,
        "business_account_id": lambda value: validators.normalize_meta_id(value) if value else NOT_SENT,
        "access_token": optional_secret,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "reg_%s")
        super().__init__(*args, **kwargs)


class ResendForm(NormalizedFormMixin, forms.Form):
    """Register again with what is stored: Meta sends a new code."""

    otp_method = forms.ChoiceField(choices=[("sms", "sms"), ("voice", "voice")])
    normalizers = {"otp_method": validators.normalize_otp_method}


class VerifyForm(NormalizedFormMixin, forms.Form):
    code = forms.CharField(
        label=_("Code"),
        help_text=_("The 6 digits Meta sent by SMS or call."),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    normalizers = {"code": validators.normalize_code}


class PinForm(NormalizedFormMixin, forms.Form):
    """The number's existing two-step PIN (after Meta's 133005), or a new one for an active number."""

    pin = forms.CharField(
        label=_("Two-step verification PIN"),
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "inputmode": "numeric", "maxlength": 6}
        ),
        help_text=_("The 6 digits set for this number in WhatsApp Manager or its previous provider."),
    )
    normalizers = {"pin": validators.normalize_pin}

    def __init__(self, *args: Any, new_pin: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "pin_%s")
        super().__init__(*args, **kwargs)
        if new_pin:
            # Changing the PIN of an active number: the old one is ours, the person chooses the next.
            self.fields["pin"].label = _("New two-step verification PIN")
            self.fields["pin"].help_text = _(
                "6 digits of your choice; Meta asks for them when the number is registered again."
            )


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value or "")


class DeregisterForm(forms.Form):
    """A typed confirmation: the registered number, or the word the page asks for."""

    confirmation = forms.CharField(label=_("Confirmation"), strip=True)

    def __init__(self, *args: Any, number: str = "", **kwargs: Any) -> None:
        self.number = number
        super().__init__(*args, **kwargs)
        self.fields["confirmation"].help_text = self.prompt()

    def confirmation_word(self) -> str:
        return str(_("DISCONNECT"))

    def prompt(self) -> str:
        if self.number:
            return str(_("Type the number %(number)s to confirm.") % {"number": self.number})
        return str(_("Type %(word)s to confirm.") % {"word": self.confirmation_word()})

    def clean_confirmation(self) -> str:
        value = str(self.cleaned_data["confirmation"])
        if self.number:
            ok = _digits(value) == _digits(self.number)
        else:
            ok = value.strip().upper() == self.confirmation_word().upper()
        if not ok:
            raise ValidationError(_("That does not match. %(prompt)s"), params={"prompt": self.prompt()})
        return value
