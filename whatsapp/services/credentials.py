"""The connection's credentials: store them, and check them against Meta (endpoint 5, the settings
endpoint, the page and admin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.masking import is_masked
from common.notsent import NOT_SENT, NotSent

from ..details import Detail
from ..exceptions import MetaError, MetaRefusedError
from ..health import whatsapp_health_queue_check
from ..models import WhatsAppAccount
from .failures import apply_meta_failure
from .state import acting_on, all_fields, client_for, ensure_not_owned_elsewhere, save, set_status, snapshot
from .status import apply_phone_info, subscribe_if_needed

# A secret as a caller may send it: a new value, the masked value it read
# (keep the stored one), None (clear it) or nothing at all (keep it).
SecretInput = str | NotSent | None


def secret_change(value: SecretInput) -> SecretInput:
    """The masked value a client read back keeps the stored secret; "" clears like None."""
    if isinstance(value, NotSent) or is_masked(value):
        return NOT_SENT
    return value or None


def require_access_token(account: WhatsAppAccount, access_token: SecretInput) -> str:
    """Meta cannot be called without a token: one must be sent, or already stored. Returns it."""
    token = account.access_token if isinstance(access_token, NotSent) else access_token
    if not token:
        raise ValidationError(
            {"access_token": [_("Send the access token: none is stored for this clinic yet.")]}
        )
    return token


def require_business_account(account: WhatsAppAccount, business_account_id: str | NotSent) -> str:
    """The number is found or added in a WhatsApp Business Account: the one sent, or the stored one."""
    waba_id = account.business_account_id if isinstance(business_account_id, NotSent) else business_account_id
    if not waba_id:
        raise ValidationError(
            {"business_account_id": [_("Enter the WhatsApp Business Account id the number belongs to.")]}
        )
    return waba_id


def assign_credentials(
    account: WhatsAppAccount,
    *,
    phone_number_id: str | NotSent = NOT_SENT,
    business_account_id: str | NotSent = NOT_SENT,
    access_token: SecretInput = NOT_SENT,
    verify_token: str | NotSent = NOT_SENT,
    app_secret: SecretInput = NOT_SENT,
) -> tuple[list[str], bool]:
    """Set what changes on `account` (unsaved); returns the changed fields and whether Meta sees any."""
    changed: list[str] = []
    meta_facing = False
    values: dict[str, tuple[str | NotSent | None, bool]] = {
        "phone_number_id": (phone_number_id, True),
        "business_account_id": (business_account_id, True),
        "access_token": (secret_change(access_token), True),
        "verify_token": (verify_token, False),
        "app_secret": (secret_change(app_secret), False),
    }
    for field, (value, facing) in values.items():
        if isinstance(value, NotSent):
            continue
        if field in ("phone_number_id", "business_account_id"):
            value = value or ""
        if getattr(account, field) != value:
            setattr(account, field, value)
            changed.append(field)
            meta_facing = meta_facing or facing
    if "business_account_id" in changed and account.subscribed_at is not None:
        # A new WhatsApp Business Account needs its own webhook subscription.
        account.subscribed_at = None
        changed.append("subscribed_at")
    if {"phone_number_id", "business_account_id"} & set(changed) and account.proven_business_account_id:
        # Meta showed the old number in the old WABA; typed ids prove nothing until Meta shows them.
        account.proven_business_account_id = ""
        changed.append("proven_business_account_id")
    return changed, meta_facing


def save_credentials(
    account: WhatsAppAccount,
    changed: list[str],
    *,
    action: str,
    before: Mapping[str, Any],
    everything: bool = False,
) -> None:
    """Save the changed fields (or `everything`) with the `action`'s audit row; a new token is queued
    for a health check in the same transaction (the check reads its expiry: a 24-hour token is
    flagged on the page)."""
    with transaction.atomic():
        save(account, all_fields(*changed) if everything else changed, action=action, before=before)
        if "access_token" in changed and account.access_token:
            whatsapp_health_queue_check(account=account)


def _store(
    account: WhatsAppAccount,
    *,
    phone_number_id: str | NotSent,
    business_account_id: str | NotSent,
    access_token: SecretInput,
    verify_token: str | NotSent,
    app_secret: SecretInput,
) -> bool:
    if isinstance(phone_number_id, str):
        ensure_not_owned_elsewhere(account, phone_number_id=phone_number_id)
    before = snapshot(account)
    changed, meta_facing = assign_credentials(
        account,
        phone_number_id=phone_number_id,
        business_account_id=business_account_id,
        access_token=access_token,
        verify_token=verify_token,
        app_secret=app_secret,
    )
    if changed:
        account.full_clean(validate_constraints=False)
        save_credentials(account, changed, action="whatsapp.credentials_updated", before=before)
    return meta_facing


def whatsapp_store_credentials(
    *,
    account: WhatsAppAccount,
    phone_number_id: str | NotSent = NOT_SENT,
    business_account_id: str | NotSent = NOT_SENT,
    access_token: SecretInput = NOT_SENT,
    verify_token: str | NotSent = NOT_SENT,
    app_secret: SecretInput = NOT_SENT,
) -> tuple[WhatsAppAccount, bool]:
    """Store already-validated credentials; returns the account and whether Meta-facing ones changed.

    A secret that contains `...****` is the masked value sent back and keeps the
    stored one; `None` or "" clears it; any other value replaces it. Another
    clinic's phone number id is refused (409), and so is a change while an
    action on the connection runs (409: it may be using them).
    """
    with acting_on(account) as held:
        meta_facing = _store(
            held,
            phone_number_id=phone_number_id,
            business_account_id=business_account_id,
            access_token=access_token,
            verify_token=verify_token,
            app_secret=app_secret,
        )
    return held, meta_facing


def _check(account: WhatsAppAccount) -> WhatsAppAccount:
    if not account.may_check_connection:
        set_status(account, account.status, detail=Detail.of("check.save_credentials"))
        save(account, ["detail_parts", "meta_code"])
        return account
    try:
        info = client_for(account).get_phone_number(account.phone_number_id)
    except MetaError as exc:
        error = apply_meta_failure(account, exc)
        if not isinstance(error, MetaRefusedError):
            set_status(account, account.status, detail=Detail.of("check.unreachable", why=error.reason))
    else:
        apply_phone_info(account, info)
    account.status_checked_at = timezone.now()
    save(account)
    return subscribe_if_needed(account)


def whatsapp_check_connection(*, account: WhatsAppAccount) -> WhatsAppAccount:
    """Read the configured number from Meta and derive the status; never raises for Meta.

    connected -> active, pending -> verifying, refused -> failed with Meta's
    reason; unreachable -> status unchanged and `detail` says so.
    """
    with acting_on(account) as held:
        return _check(held)


def whatsapp_configure(
    *,
    account: WhatsAppAccount,
    phone_number_id: str,
    business_account_id: str,
    access_token: SecretInput = NOT_SENT,
    verify_token: str | NotSent = NOT_SENT,
    app_secret: SecretInput = NOT_SENT,
) -> WhatsAppAccount:
    """Endpoint 5: store first (nothing is lost if Meta is unreachable), then ask Meta.

    The ids sent always replace the stored ones: this is the way to correct an id.
    """
    with acting_on(account) as held:
        require_access_token(held, secret_change(access_token))
        _store(
            held,
            phone_number_id=phone_number_id,
            business_account_id=business_account_id,
            access_token=access_token,
            verify_token=verify_token,
            app_secret=app_secret,
        )
        return _check(held)
