from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from clinics import validators
from clinics.models import Clinic
from whatsapp.models import MASK_SUFFIX, WhatsAppStatus

from .fields import EmptyAsNullCharField, NormalizedCharField, StrictBooleanField


def _optional_text(limit: int, what: str) -> Any:
    return lambda value: validators.normalize_limited_text(value, limit=limit, what=what)


def _optional_meta_id(value: str) -> str:
    return validators.normalize_meta_id(value) if value else ""


def _token_or_masked(value: str) -> str:
    # The masked value from a GET comes back unchanged: the service keeps the stored token.
    if MASK_SUFFIX in value:
        return value
    return validators.normalize_secret(value)


class ClinicProfileInputSerializer(serializers.Serializer):
    """Fields of PUT/PATCH /api/clinics/me/; every one optional, unknown keys ignored."""

    name = NormalizedCharField(
        validators.normalize_name, required=False, max_length=validators.NAME_MAX_LENGTH
    )
    phone = NormalizedCharField(
        validators.normalize_clinic_phone, required=False, allow_blank=True, allow_null=True, max_length=40
    )
    address = NormalizedCharField(
        _optional_text(validators.ADDRESS_MAX_LENGTH, "address"),
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=validators.ADDRESS_MAX_LENGTH,
    )
    city = NormalizedCharField(
        _optional_text(validators.CITY_MAX_LENGTH, "city"),
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=validators.CITY_MAX_LENGTH,
    )
    timezone = NormalizedCharField(validators.normalize_timezone, required=False, max_length=64)
    currency = NormalizedCharField(validators.normalize_currency, required=False, max_length=3)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # `null` for an optional text field means "clear it".
        return {key: ("" if value is None else value) for key, value in attrs.items()}


class ClinicSettingsInputSerializer(ClinicProfileInputSerializer):
    """Fields of PUT/PATCH /api/clinics/settings/. Read-only keys sent by a client are ignored."""

    whatsapp_phone_number_id = NormalizedCharField(
        _optional_meta_id,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=validators.META_ID_MAX_LENGTH,
    )
    whatsapp_business_account_id = NormalizedCharField(
        _optional_meta_id,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=validators.META_ID_MAX_LENGTH,
    )
    whatsapp_access_token = NormalizedCharField(
        _token_or_masked,
        required=False,
        allow_null=True,
        max_length=validators.SECRET_MAX_LENGTH,
        help_text="A new token replaces the stored one; the masked value (`...****`) keeps it; null clears it.",
        style={"input_type": "password"},
    )
    whatsapp_verify_token = NormalizedCharField(
        validators.normalize_verify_token, required=False, max_length=validators.VERIFY_TOKEN_MAX_LENGTH
    )
    bot_enabled = StrictBooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        keep_null = {"whatsapp_access_token"}
        return {key: (value if value is not None or key in keep_null else "") for key, value in attrs.items()}


class ClinicProfileOutputSerializer(serializers.ModelSerializer):
    """The profile object: no token of any kind."""

    phone = EmptyAsNullCharField()
    address = EmptyAsNullCharField()
    city = EmptyAsNullCharField()
    country = EmptyAsNullCharField()
    logo_url = EmptyAsNullCharField()
    whatsapp_phone_number_id = EmptyAsNullCharField(source="whatsapp.phone_number_id")
    whatsapp_business_account_id = EmptyAsNullCharField(source="whatsapp.business_account_id")

    class Meta:
        model = Clinic
        fields = [
            "id",
            "name",
            "slug",
            "phone",
            "address",
            "city",
            "country",
            "timezone",
            "currency",
            "logo_url",
            "is_active",
            "subscription_plan",
            "whatsapp_phone_number_id",
            "whatsapp_business_account_id",
        ]
        read_only_fields = fields

    # The declared fields document the schema; the body itself is built directly,
    # because DRF's per-field machinery (deep-copying ~20 fields on every request)
    # cost more than the rest of a settings read (see bench/README.md).
    def to_representation(self, clinic: Clinic) -> dict[str, Any]:
        return profile_data(clinic)


def _utc_iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clinic_fields(clinic: Clinic) -> dict[str, Any]:
    return {
        "id": str(clinic.id),
        "name": clinic.name,
        "slug": clinic.slug,
        "phone": clinic.phone or None,
        "address": clinic.address or None,
        "city": clinic.city or None,
        "country": clinic.country or None,
        "timezone": clinic.timezone,
        "currency": clinic.currency,
        "logo_url": clinic.logo_url or None,
    }


def profile_data(clinic: Clinic) -> dict[str, Any]:
    whatsapp = clinic.whatsapp
    return {
        **_clinic_fields(clinic),
        "is_active": clinic.is_active,
        "subscription_plan": clinic.subscription_plan,
        "whatsapp_phone_number_id": whatsapp.phone_number_id or None,
        "whatsapp_business_account_id": whatsapp.business_account_id or None,
    }


def settings_data(clinic: Clinic) -> dict[str, Any]:
    whatsapp = clinic.whatsapp
    return {
        **_clinic_fields(clinic),
        "whatsapp_phone_number_id": whatsapp.phone_number_id or None,
        "whatsapp_business_account_id": whatsapp.business_account_id or None,
        "whatsapp_access_token": whatsapp.masked_access_token,
        "whatsapp_verify_token": whatsapp.verify_token or None,
        "whatsapp_status": whatsapp.status,
        "bot_enabled": clinic.bot_enabled,
        "is_active": clinic.is_active,
        "subscription_plan": clinic.subscription_plan,
        "subscription_expires_at": _utc_iso(clinic.subscription_expires_at),
    }


class ClinicSettingsOutputSerializer(ClinicProfileOutputSerializer):
    """The settings object: exactly the seed's keys; the access token only masked."""

    whatsapp_access_token = EmptyAsNullCharField(
        source="whatsapp.masked_access_token",
        help_text=_(
            "First 8 characters followed by ...****; ...**** alone for short tokens; null when none."
        ),
    )
    whatsapp_verify_token = EmptyAsNullCharField(source="whatsapp.verify_token")
    whatsapp_status = serializers.ChoiceField(
        source="whatsapp.status", choices=WhatsAppStatus.choices, read_only=True
    )
    subscription_expires_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta(ClinicProfileOutputSerializer.Meta):
        fields = [
            "id",
            "name",
            "slug",
            "phone",
            "address",
            "city",
            "country",
            "timezone",
            "currency",
            "logo_url",
            "whatsapp_phone_number_id",
            "whatsapp_business_account_id",
            "whatsapp_access_token",
            "whatsapp_verify_token",
            "whatsapp_status",
            "bot_enabled",
            "is_active",
            "subscription_plan",
            "subscription_expires_at",
        ]
        read_only_fields = fields

    def to_representation(self, clinic: Clinic) -> dict[str, Any]:
        return settings_data(clinic)


class TokenInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
