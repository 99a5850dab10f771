"""Every rule and state change of a clinic. The API, the settings page, admin and the commands call these.

The WhatsApp connection's own rules live in `whatsapp.services`; what the
product adds on top (the bot goes off with the number, the credentials are
checked with Meta when they change alongside the profile) lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from common.audit import audit_changes, audit_record, current_context
from common.models import AuditEvent
from common.validators import validate_plain_text
from whatsapp.models import WhatsAppAccount
from whatsapp.services import (
    whatsapp_account_create,
    whatsapp_check_connection,
    whatsapp_deregister,
    whatsapp_store_credentials,
)

from . import token_cache
from .models import ApiToken, Clinic, User, canonical_email
from .selectors import whatsapp_account_of

# The clinic's own fields, by who may change them. Every front door takes its field lists from here.
PROFILE_FIELDS = ("name", "phone", "address", "city", "timezone", "currency")
SETTINGS_CLINIC_FIELDS = (*PROFILE_FIELDS, "bot_enabled")
# Only superusers change these (Django admin); the API shows them read-only.
PLATFORM_FIELDS = (
    "country",
    "logo_url",
    "language",
    "is_active",
    "subscription_plan",
    "subscription_expires_at",
)
# The WhatsApp credentials the settings endpoint and admin may change (WhatsAppAccount's names).
CREDENTIAL_FIELDS = ("phone_number_id", "business_account_id", "access_token", "verify_token", "app_secret")


def clinic_create(
    *,
    name: str,
    country: str = "El Salvador",
    timezone: str = "America/El_Salvador",
    currency: str = "USD",
    **extra: Any,
) -> Clinic:
    """A new clinic with its WhatsApp state (and a random webhook verify token)."""
    for _attempt in range(5):
        clinic = Clinic(name=name, country=country, timezone=timezone, currency=currency, **extra)
        clinic.full_clean(exclude=["slug"])
        try:
            with transaction.atomic():
                clinic.save()
                clinic.whatsapp = whatsapp_account_create(clinic_id=clinic.pk)
                audit_record(clinic_id=clinic.pk, action="clinic.created", changes={"name": [None, name]})
        except IntegrityError:
            # Two clinics drew the same 6-character suffix: draw again.
            if Clinic.objects.filter(slug=clinic.slug).exists():
                continue
            raise
        return clinic
    raise RuntimeError("Could not find a free slug for the clinic.")


def _apply_clinic_fields(
    clinic: Clinic, data: Mapping[str, Any], allowed: tuple[str, ...], *, action: str
) -> Clinic:
    """Write the fields whose value changes, in one UPDATE with its audit row; returns the clinic.

    Only those columns are written, so two admins editing different fields at the
    same time both keep their change (no read-modify-write of the whole row), and
    a body sent back unchanged writes nothing at all (and records nothing). A
    change of the bot switch is recorded as `bot.enabled` or `bot.disabled`.
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
    if "bot_enabled" in sent:
        action = "bot.enabled" if sent["bot_enabled"] else "bot.disabled"
    with transaction.atomic():
        Clinic.objects.filter(pk=clinic.pk).update(**sent, updated_at=clinic.updated_at)
        audit_record(clinic_id=clinic.pk, action=action, changes=audit_changes(Clinic, previous, sent))
        clinic_tokens_forget(clinic.pk)
    return clinic


def clinic_update_profile(*, clinic: Clinic, data: Mapping[str, Any]) -> Clinic:
    """Name, contact and location. `data` holds already-validated values; omitted keys stay."""
    return _apply_clinic_fields(clinic, data, PROFILE_FIELDS, action="clinic.profile_updated")


def clinic_update_platform_fields(*, clinic: Clinic, data: Mapping[str, Any]) -> Clinic:
    """Plan, expiry, activity, country and logo: the platform's side of a clinic (superusers only)."""
    return _apply_clinic_fields(clinic, data, PLATFORM_FIELDS, action="clinic.platform_updated")


def clinic_update_settings(
    *, clinic: Clinic, data: Mapping[str, Any], credentials: Mapping[str, Any] | None = None
) -> Clinic:
    """Profile, bot switch and WhatsApp credentials in one change; the one writer of `bot_enabled`.

    `data` holds clinic fields, `credentials` WhatsAppAccount fields (omitted keys
    stay). Both are stored in one transaction; when a credential Meta sees
    changed, the number is then read from Meta (outside the transaction, so the
    credentials are kept whatever Meta answers). The masked-secret rule is the
    WhatsApp service's.
    """
    credentials = {key: value for key, value in (credentials or {}).items() if key in CREDENTIAL_FIELDS}
    if not credentials:
        # One UPDATE at most: no transaction needed around a single statement.
        return _apply_clinic_fields(clinic, data, SETTINGS_CLINIC_FIELDS, action="clinic.settings_updated")
    with transaction.atomic():
        updated = _apply_clinic_fields(clinic, data, SETTINGS_CLINIC_FIELDS, action="clinic.settings_updated")
        updated.whatsapp, meta_facing = whatsapp_store_credentials(
            account=whatsapp_account_of(updated), **credentials
        )
    if meta_facing:
        updated.whatsapp = whatsapp_check_connection(account=updated.whatsapp)
    return updated


def clinic_whatsapp_deregister(*, clinic: Clinic) -> WhatsAppAccount:
    """Take the clinic's number off the Cloud API; with no number the bot cannot answer, so it goes off."""
    account = whatsapp_deregister(account=whatsapp_account_of(clinic))
    clinic.whatsapp = account
    clinic_update_settings(clinic=clinic, data={"bot_enabled": False})
    return account


def user_check_new_email(email: str, *, exclude: User | None = None) -> str:
    """The canonical form of a new user's e-mail, or a ValidationError when it is taken."""
    canonical = canonical_email(email)
    taken = User.objects.filter(email=canonical)
    if exclude is not None and exclude.pk is not None:
        taken = taken.exclude(pk=exclude.pk)
    if taken.exists():
        raise ValidationError({"email": [_("A user with this email already exists.")]}, code="unique")
    return canonical


def clinic_add_user(
    *, clinic: Clinic, email: str, password: str | None, role: str = User.Role.STAFF, full_name: str = ""
) -> User:
    if role not in User.Role.values:
        raise ValueError(f"Role must be one of {', '.join(User.Role.values)}.")
    full_name = full_name.strip()
    try:
        validate_plain_text(full_name)  # free text, shown to the clinic's people
    except ValidationError as refused:
        raise ValidationError({"full_name": refused}) from None
    with transaction.atomic():
        user = User.objects.create_user(
            email=user_check_new_email(email),
            password=password,
            clinic=clinic,
            role=role,
            full_name=full_name,
        )
        audit_record(
            clinic_id=clinic.pk, action="member.added", changes={"member": user.email, "role": [None, role]}
        )
    return user


def api_token_issue(*, user: User) -> str:
    """A new API key for the user; only its hash is stored, so it is shown once."""
    with transaction.atomic():
        token, key = ApiToken.issue(user)
        # Issued at sign-in, before the request has a user: the actor is the one signing in.
        _audit_token(token, "api_token.issued", actor=user.email)
    return key


def _audit_token(token: ApiToken, action: str, *, actor: str | None = None) -> None:
    """A token is named by its owner and the prefix admin shows, never by its key."""
    audit_record(
        clinic_id=token.user.clinic_id,
        action=action,
        changes={"user": token.user.email, "token": f"{token.prefix}…"},
        actor=actor,
    )


def api_token_revoke(*, token: ApiToken) -> None:
    api_tokens_end(ApiToken.objects.filter(pk=token.pk))


def api_tokens_revoke(*, user: User, token_id: int | None = None) -> int:
    """End one of the user's own tokens (by id), or all of them; returns how many ended.

    Scoped by `user` first: an id of someone else's token ends nothing.
    """
    tokens = ApiToken.objects.filter(user=user).select_related("user")
    if token_id is not None:
        tokens = tokens.filter(pk=token_id)
    return api_tokens_end(tokens)


def api_tokens_end(tokens: QuerySet[ApiToken]) -> int:
    """Delete these tokens, each with its audit row, and every cached copy of them: the next
    request with one is refused."""
    with transaction.atomic():
        for token in tokens.select_related("user"):
            _audit_token(token, "api_token.revoked")
        token_cache.forget(tokens.values_list("digest", flat=True))
        deleted, _by_model = tokens.delete()
    return deleted


def clinic_tokens_forget(clinic_id: Any) -> None:
    """End the cached copies of the tokens of the clinic's members: their clinic (or its connection) changed."""
    if token_cache.enabled():
        token_cache.forget(
            ApiToken.objects.filter(user__clinic_id=clinic_id).values_list("digest", flat=True)
        )


# A token's last use is written at most once per this long. A write on every
# request would add a write to the commonest request (which otherwise reads only
# its token, from the cache or in one query) and queue one client's parallel
# requests on the row's lock; "last used" a minute off serves someone deciding
# what to revoke as well.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def api_token_record_use(*, token: ApiToken, now: datetime) -> None:
    """Note that the token was used now, unless that was noted less than a minute ago."""
    stale = now - TOKEN_USE_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    # Conditional: of two workers that both read an old value, only one writes.
    ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=token.pk).update(
        last_used_at=now
    )
    token.last_used_at = now
    # Whoever wrote it, the cached copy's last use is old: the next request reads the token again.
    token_cache.forget_use(token.digest)


# A reader refreshing the activity page is one reading, not one row per refresh.
ACTIVITY_READ_RESOLUTION = timedelta(minutes=1)
ACTIVITY_PAGE_SIZE = 50


def clinic_activity_record_reading(*, clinic: Clinic) -> None:
    """Record that the current reader opened the clinic's trail (at most once a minute per reader)."""
    who = current_context().who()
    since = timezone.now() - ACTIVITY_READ_RESOLUTION
    with transaction.atomic():
        recent = AuditEvent.objects.filter(
            clinic_id=clinic.pk, action="audit.viewed", actor=who, at__gte=since
        )
        if not recent.exists():
            audit_record(clinic_id=clinic.pk, action="audit.viewed")


def clinic_activity(
    *, clinic: Clinic, before: int | None = None, limit: int = ACTIVITY_PAGE_SIZE
) -> list[AuditEvent]:
    """The clinic's audit rows, newest first, older than row `before`; the reading is recorded too.

    Reading who changed what is itself a fact the clinic may need later, so it
    is written to the trail (once a minute per reader) before the rows are read.
    """
    clinic_activity_record_reading(clinic=clinic)
    rows = AuditEvent.objects.filter(clinic_id=clinic.pk).order_by("-id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    return list(rows[: max(1, min(limit, ACTIVITY_PAGE_SIZE))])
