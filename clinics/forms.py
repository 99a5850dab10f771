"""Forms of the settings page and sign-in. Every field's rule comes from clinics.validators."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.template import loader
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from common.forms import NormalizedFormMixin

from . import choices, validators
from .mail import clinic_language, email_queue
from .models import OutgoingEmail, User, canonical_email


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


class InvitationForm(forms.Form):
    """The team page's invitation: an e-mail address and a role."""

    email = CanonicalEmailField(label=_("Email"), max_length=254)
    role = forms.ChoiceField(label=_("Role"), choices=User.Role.choices, initial=User.Role.STAFF)


class AcceptInvitationForm(forms.Form):
    """The invited person's name and password (Django's password validators)."""

    full_name = forms.CharField(
        label=_("Your name"), max_length=150, validators=[validators.validate_plain_text], strip=True
    )
    password1 = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label=_("Password again"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            self.add_error("password2", _("The two passwords differ."))
        elif first:
            candidate = User(email=self.email, full_name=data.get("full_name", ""))
            try:
                password_validation.validate_password(first, candidate)
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return data


class QueuedPasswordResetForm(PasswordResetForm):
    """Django's reset form, with a canonical e-mail and its mail queued in the outbox, in the clinic's language.

    Django sends the mail inside the request; here it is a row of `clinics.mail.EMAILS`,
    sent by a worker with retries, so the answer does not wait on (or reveal anything
    through) the mail server.
    """

    email = CanonicalEmailField(
        label=_("Email"), max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )

    def get_users(self, email: str) -> Any:
        return (
            user
            for user in User.objects.filter(email=canonical_email(email), is_active=True)
            if user.has_usable_password()
        )

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        user = context["user"]
        clinic = user.clinic
        with translation.override(clinic_language(clinic)):
            subject = loader.render_to_string(subject_template_name, context)
            body = loader.render_to_string(email_template_name, context)
        email_queue(
            kind=OutgoingEmail.Kind.PASSWORD_RESET, to=to_email, subject=subject, body=body, clinic=clinic
        )
