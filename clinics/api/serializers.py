"""Bodies of the settings, profile and token endpoints.

Input: serializers whose fields normalise with the clinic's one rule per field
(`CLINIC_NORMALIZERS`) and the WhatsApp validators, and whose `source` is the
model field each key feeds. Output: one field list per body (`OutputShape`),
which both renders the body and documents it.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from clinics import validators
from clinics.models import Clinic, canonical_email
from clinics.selectors import whatsapp_account_of
from common.api.fields import NormalizedCharField, StrictBooleanField
from common.api.shapes import OutputField, OutputShape, utc_iso
from whatsapp import validators as whatsapp_validators
from whatsapp.models import WhatsAppStatus


def _clinic_text(name: str, *, max_length: int, optional: bool = False) -> NormalizedCharField:
    return NormalizedCharField(
        validators.CLINIC_NORMALIZERS[name],
        required=False,
        allow_blank=optional,
        allow_null=optional,
        max_length=max_length,
    )


class ClinicProfileInputSerializer(serializers.Serializer):
    """Fields of PUT/PATCH /api/clinics/me/; every one optional, unknown keys ignored."""

    name = _clinic_text("name", max_length=validators.NAME_MAX_LENGTH)
    phone = _clinic_text("phone", max_length=40, optional=True)
    address = _clinic_text("address", max_length=validators.ADDRESS_MAX_LENGTH, optional=True)
    city = _clinic_text("city", max_length=validators.CITY_MAX_LENGTH, optional=True)
    timezone = _clinic_text("timezone", max_length=64)
    currency = _clinic_text("currency", max_length=3)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # `null` for an optional text field means "clear it".
        return {key: ("" if value is None else value) for key, value in attrs.items()}


class ClinicSettingsInputSerializer(ClinicProfileInputSerializer):
    """Fields of PUT/PATCH /api/clinics/settings/. Read-only keys sent by a client are ignored.

    The `whatsapp_*` keys feed the WhatsApp account (their `source` is its field):
    `validated_data` keeps them apart from the clinic's own fields.
    """

    whatsapp_phone_number_id = NormalizedCharField(
        whatsapp_validators.normalize_optional_meta_id,
        source="whatsapp.phone_number_id",
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=whatsapp_validators.META_ID_MAX_LENGTH,
    )
    whatsapp_business_account_id = NormalizedCharField(
        whatsapp_validators.normalize_optional_meta_id,
        source="whatsapp.business_account_id",
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=whatsapp_validators.META_ID_MAX_LENGTH,
    )
    whatsapp_access_token = NormalizedCharField(
        whatsapp_validators.normalize_secret_or_masked,
        source="whatsapp.access_token",
        required=False,
        allow_null=True,
        max_length=whatsapp_validators.SECRET_MAX_LENGTH,
        help_text="A new token replaces the stored one; the masked value (`...****`) keeps it; null clears it.",
        style={"input_type": "password"},
    )
    whatsapp_verify_token = NormalizedCharField(
        whatsapp_validators.normalize_verify_token,
        source="whatsapp.verify_token",
        required=False,
        max_length=whatsapp_validators.VERIFY_TOKEN_MAX_LENGTH,
    )
    bot_enabled = StrictBooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        credentials = dict(attrs.pop("whatsapp", None) or {})
        attrs = super().validate(attrs)
        for key in ("phone_number_id", "business_account_id"):
            if key in credentials and credentials[key] is None:
                credentials[key] = ""
        # A null access token stays None: the service clears the stored token.
        if credentials:
            attrs["whatsapp"] = credentials
        return attrs


def _text_or_null(value: str | None) -> str | None:
    # The contract's rule: an unset text value is `null`, never "".
    return value or None


def _text(name: str) -> OutputField:
    return OutputField(
        name,
        lambda clinic: _text_or_null(getattr(clinic, name)),
        serializers.CharField(read_only=True, allow_null=True),
    )


def _whatsapp_id(name: str) -> OutputField:
    return OutputField(
        f"whatsapp_{name}",
        lambda clinic: _text_or_null(getattr(whatsapp_account_of(clinic), name)),
        serializers.CharField(read_only=True, allow_null=True),
    )


_ID = OutputField("id", lambda clinic: str(clinic.id), serializers.UUIDField(read_only=True))
_NAME = OutputField("name", lambda clinic: clinic.name, serializers.CharField(read_only=True))
_SLUG = OutputField("slug", lambda clinic: clinic.slug, serializers.SlugField(read_only=True))
_TIMEZONE = OutputField("timezone", lambda clinic: clinic.timezone, serializers.CharField(read_only=True))
_CURRENCY = OutputField("currency", lambda clinic: clinic.currency, serializers.CharField(read_only=True))
_IS_ACTIVE = OutputField(
    "is_active", lambda clinic: clinic.is_active, serializers.BooleanField(read_only=True)
)
_PLAN = OutputField(
    "subscription_plan",
    lambda clinic: clinic.subscription_plan,
    serializers.ChoiceField(choices=Clinic.SubscriptionPlan.choices, read_only=True),
)
_CLINIC_HEAD = (
    _ID,
    _NAME,
    _SLUG,
    _text("phone"),
    _text("address"),
    _text("city"),
    _text("country"),
    _TIMEZONE,
    _CURRENCY,
    _text("logo_url"),
)

PROFILE_SHAPE = OutputShape(
    "ClinicProfile",
    [
        *_CLINIC_HEAD,
        _IS_ACTIVE,
        _PLAN,
        _whatsapp_id("phone_number_id"),
        _whatsapp_id("business_account_id"),
    ],
)

SETTINGS_SHAPE = OutputShape(
    "ClinicSettings",
    [
        *_CLINIC_HEAD,
        _whatsapp_id("phone_number_id"),
        _whatsapp_id("business_account_id"),
        OutputField(
            "whatsapp_access_token",
            lambda clinic: whatsapp_account_of(clinic).masked_access_token,
            serializers.CharField(
                read_only=True,
                allow_null=True,
                help_text=_(
                    "First 8 characters followed by ...****; ...**** alone for short tokens; null when none."
                ),
            ),
        ),
        OutputField(
            "whatsapp_verify_token",
            lambda clinic: _text_or_null(whatsapp_account_of(clinic).verify_token),
            serializers.CharField(read_only=True, allow_null=True),
        ),
        OutputField(
            "whatsapp_status",
            lambda clinic: whatsapp_account_of(clinic).status,
            serializers.ChoiceField(choices=WhatsAppStatus.choices, read_only=True),
        ),
        OutputField(
            "bot_enabled", lambda clinic: clinic.bot_enabled, serializers.BooleanField(read_only=True)
        ),
        _IS_ACTIVE,
        _PLAN,
        OutputField(
            "subscription_expires_at",
            lambda clinic: utc_iso(clinic.subscription_expires_at),
            serializers.DateTimeField(read_only=True, allow_null=True),
        ),
    ],
)


def _sign_in_email(value: str) -> str:
    # Canonical first, like every other door (a full-width spelling is the same
    # account), then the format: a string that is no e-mail costs no password hashing.
    email = canonical_email(value)
    validate_email(email)
    return email


class TokenInputSerializer(serializers.Serializer):
    email = NormalizedCharField(_sign_in_email, max_length=254)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


TOKEN_SHAPE = OutputShape(
    "TokenOutput", [OutputField("token", lambda key: key, serializers.CharField(read_only=True))]
)
