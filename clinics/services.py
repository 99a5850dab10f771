"""Every rule and state change of a clinic. The API, the settings page and admin call these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import ApiToken, Clinic, User

PROFILE_FIELDS = ("name", "phone", "address", "city", "timezone", "currency")
# Settings keys that belong to the WhatsApp connection, and the service argument each feeds.
WHATSAPP_SETTINGS_FIELDS = {
    "whatsapp_phone_number_id": "phone_number_id",
    "whatsapp_business_account_id": "business_account_id",
    "whatsapp_access_token": "access_token",
    "whatsapp_verify_token": "verify_token",
}
SETTINGS_FIELDS = (*PROFILE_FIELDS, "bot_enabled", *WHATSAPP_SETTINGS_FIELDS)
# Only superusers change these (Django admin); the API shows them read-only.
PLATFORM_FIELDS = ("country", "logo_url", "is_active", "subscription_plan", "subscription_expires_at")


def clinic_create(
    *,
    name: str,
    country: str = "El Salvador",
    timezone: str = "America/El_Salvador",
    currency: str = "USD",
    **extra: Any,
) -> Clinic:
    """A new clinic with its WhatsApp state (and a random webhook verify token)."""
    from whatsapp.services import whatsapp_account_create

    for _attempt in range(5):
        clinic = Clinic(name=name, country=country, timezone=timezone, currency=currency, **extra)
        clinic.full_clean(exclude=["slug"])
        try:
            with transaction.atomic():
                clinic.save()
                whatsapp_account_create(clinic=clinic)
        except IntegrityError:
            # Two clinics drew the same 6-character suffix: draw again.
            if Clinic.objects.filter(slug=clinic.slug).exists():
                continue
            raise
        return clinic
    raise RuntimeError("Could not find a free slug for the clinic.")


def _apply_clinic_fields(clinic: Clinic, data: Mapping[str, Any], allowed: tuple[str, ...]) -> Clinic:
    """Write the fields whose value changes, in one UPDATE; returns the clinic with them applied.

    Only those columns are written, so two admins editing different fields at the
    same time both keep their change (no read-modify-write of the whole row), and
    a body sent back unchanged writes nothing at all.
    """
    sent = {key: data[key] for key in allowed if key in data and getattr(clinic, key) != data[key]}
    if not sent:
        return clinic
    previous = {key: getattr(clinic, key) for key in sent}
    for key, value in sent.items():
        setattr(clinic, key, value)
    try:
        # Only the sent fields: an unchanged phone is not parsed again on every write.
        clinic.full_clean(exclude=[f.name for f in Clinic._meta.fields if f.name not in sent])
    except ValidationError:
        for key, value in previous.items():
            setattr(clinic, key, value)
        raise
    clinic.updated_at = timezone.now()
    Clinic.objects.filter(pk=clinic.pk).update(**sent, updated_at=clinic.updated_at)
    return clinic


def clinic_update_profile(*, clinic: Clinic, data: Mapping[str, Any]) -> Clinic:
    """Name, contact and location. `data` holds already-validated values; omitted keys stay."""
    return _apply_clinic_fields(clinic, data, PROFILE_FIELDS)


def clinic_update_platform_fields(*, clinic: Clinic, data: Mapping[str, Any]) -> Clinic:
    """Plan, expiry, activity, country and logo: the platform's side of a clinic (superusers only)."""
    return _apply_clinic_fields(clinic, data, PLATFORM_FIELDS)


def clinic_update_settings(*, clinic: Clinic, data: Mapping[str, Any]) -> Clinic:
    """Profile, bot switch and WhatsApp credentials in one change.

    The credentials go through the WhatsApp service, which owns the masked-token
    rule (a value containing `...****` keeps the stored token, `None` clears it)
    and, when they changed, reads the number from Meta after they are stored.
    """
    from whatsapp.services import whatsapp_check_connection, whatsapp_store_credentials

    credentials = {argument: data[key] for key, argument in WHATSAPP_SETTINGS_FIELDS.items() if key in data}
    if not credentials:
        # One UPDATE at most: no transaction needed around a single statement.
        return _apply_clinic_fields(clinic, data, (*PROFILE_FIELDS, "bot_enabled"))
    with transaction.atomic():
        updated = _apply_clinic_fields(clinic, data, (*PROFILE_FIELDS, "bot_enabled"))
        account, credentials_changed = whatsapp_store_credentials(clinic=updated, **credentials)
        updated.whatsapp = account
    if credentials_changed:
        # Outside the transaction: the credentials are kept whatever Meta answers.
        updated.whatsapp = whatsapp_check_connection(clinic=updated)
    return updated


def clinic_add_user(
    *, clinic: Clinic, email: str, password: str | None, role: str = User.Role.STAFF, full_name: str = ""
) -> User:
    if role not in User.Role.values:
        raise ValueError(f"Role must be one of {', '.join(User.Role.values)}.")
    return User.objects.create_user(
        email=email, password=password, clinic=clinic, role=role, full_name=full_name
    )


def api_token_issue(*, user: User) -> str:
    """A new API key for the user; only its hash is stored, so it is shown once."""
    _token, key = ApiToken.issue(user)
    return key


def api_token_revoke(*, token: ApiToken) -> None:
    token.delete()
