"""Test helpers for the clinics API tests: a fully filled clinic and a column-by-column snapshot.

factory_boy is not a dependency of the project, so these are plain functions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from clinics.models import Clinic
from whatsapp.models import WhatsAppAccount, WhatsAppStatus

SETTINGS_URL = "/api/clinics/settings/"
PROFILE_URL = "/api/clinics/me/"

# 40 characters: long enough to show its first 8 when masked.
LONG_TOKEN = "EAAOKw1xZZ9fake0token0for0tests0ABCDEFG"
EXPIRES_AT = dt.datetime(2025, 12, 31, tzinfo=dt.UTC)

SETTINGS_KEYS = [
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
PROFILE_KEYS = [
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


def set_whatsapp(clinic: Clinic, **fields: Any) -> WhatsAppAccount:
    """Write WhatsApp fields through save(), so secrets are encrypted as in production."""
    account = WhatsAppAccount.objects.get(clinic=clinic)
    for name, value in fields.items():
        setattr(account, name, value)
    account.save()
    clinic.refresh_from_db()
    return account


def fill_clinic(clinic: Clinic, *, token: str | None = LONG_TOKEN) -> Clinic:
    """Every column set, read-only ones included, as a clinic in production looks."""
    Clinic.objects.filter(pk=clinic.pk).update(
        phone="+50399999999",
        address="Avenida Principal 123",
        city="San Salvador",
        logo_url="https://cdn.example.com/logo.png",
        bot_enabled=True,
        subscription_plan=Clinic.SubscriptionPlan.PRO,
        subscription_expires_at=EXPIRES_AT,
    )
    set_whatsapp(
        clinic,
        phone_number_id="123456789",
        business_account_id="waba_123",
        access_token=token,
        verify_token="verify_abc123",
    )
    clinic.refresh_from_db()
    return clinic


def fill_active_connection(clinic: Clinic, **extra: Any) -> Clinic:
    """`fill_clinic`, and a connected number with every secret stored, checked and subscribed just now."""
    fill_clinic(clinic)
    set_whatsapp(
        clinic,
        status=WhatsAppStatus.ACTIVE,
        number="+50377654321",
        app_secret="app-secret-of-the-clinic",
        registration_pin="123456",
        status_checked_at=timezone.now(),
        subscribed_at=timezone.now(),
        **extra,
    )
    return clinic


def columns_of(instance: Any) -> dict[str, Any]:
    """Every stored column of a model instance by attname (encrypted fields decrypt on access,
    so secrets compare as plaintext)."""
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def snapshot(clinic: Clinic) -> dict[str, dict[str, Any]]:
    """Every stored column of the clinic and of its WhatsApp account, read fresh from the database."""
    fresh = Clinic.objects.get(pk=clinic.pk)
    account = WhatsAppAccount.objects.get(clinic_id=clinic.pk)
    return {"clinic": columns_of(fresh), "whatsapp": columns_of(account)}


def changed_columns(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{table: {column: (old, new)}} for every column that differs."""
    return {
        table: {
            column: (before[table][column], after[table][column])
            for column in before[table]
            if before[table][column] != after[table][column]
        }
        for table in before
    }


# Values the contract's validation table refuses, for the profile fields (endpoints 2 and 4).
BAD_VALUES = [
    ("name", ""),
    ("name", "   "),
    ("name", "x" * 201),
    ("name", None),
    ("name", 42),
    ("phone", "+503 123"),
    ("phone", "+1 555 01"),
    ("phone", "call me maybe"),
    ("phone", "503999999999999999"),
    ("address", "a" * 256),
    ("city", "c" * 101),
    ("timezone", "Mars/Olympus_Mons"),
    ("timezone", "Central America Standard Time"),
    ("timezone", ""),
    ("currency", "ABC"),
    ("currency", "US"),
    ("currency", "dollars"),
    ("currency", ""),
]
SETTINGS_BAD_VALUES = [
    ("whatsapp_phone_number_id", "123/456"),
    ("whatsapp_phone_number_id", "123.456"),
    ("whatsapp_phone_number_id", "123?fields=x"),
    ("whatsapp_phone_number_id", "1" * 65),
    ("whatsapp_business_account_id", "waba/123"),
    ("whatsapp_business_account_id", "waba.123"),
    ("whatsapp_business_account_id", "waba?123"),
    ("whatsapp_business_account_id", "w" * 65),
    ("whatsapp_access_token", "EAA token with spaces"),
    ("whatsapp_access_token", "EAA\ttab"),
    ("whatsapp_access_token", "EAA\nnewline"),
    ("whatsapp_access_token", "t" * 2049),
    ("whatsapp_access_token", ""),
    ("whatsapp_verify_token", "verify token"),
    ("whatsapp_verify_token", "v" * 256),
    ("whatsapp_verify_token", None),
    ("whatsapp_verify_token", ""),
    ("bot_enabled", "yes"),
    ("bot_enabled", 1),
    ("bot_enabled", "true"),
    ("bot_enabled", None),
]


def bad_id(param: tuple[str, Any]) -> str:
    field, value = param
    text = repr(value)
    return f"{field}={text[:12]}" + (
        f"...({len(value)})" if isinstance(value, str) and len(value) > 12 else ""
    )


def first_per_field(cases: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    seen: dict[str, tuple[str, Any]] = {}
    for field, value in cases:
        seen.setdefault(field, (field, value))
    return list(seen.values())
