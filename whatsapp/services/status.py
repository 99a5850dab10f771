"""The number's status at Meta: what it means for ours, the status poll, and the webhook subscription."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from ..details import EVENT_KEYS, NO_DETAIL, Detail
from ..exceptions import MetaError, MetaRefusedError
from ..meta import PhoneNumberInfo
from ..models import WhatsAppAccount, WhatsAppStatus
from .failures import apply_meta_failure, explain
from .state import client_for, leased, save, set_status

# An `active` number is re-read from Meta when polled after this long.
ACTIVE_RECHECK_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class ConnectionReport:
    """What the status endpoint and the page show; `detail` is rendered for the reader."""

    status: str
    number: str | None
    detail: str | None


def e164_from_meta(display: str | None) -> str:
    """The number as Meta prints it ("+503 7765-4321"), in E.164; "" when it is not one."""
    if not display:
        return ""
    text = display if display.strip().startswith("+") else "+" + display
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Meta's number status -> ours, and what the clinic should do.
def phone_status_outcome(meta_status: str | None) -> tuple[str | None, Detail]:
    status = (meta_status or "").upper()
    if status == "CONNECTED":
        return WhatsAppStatus.ACTIVE, NO_DETAIL
    if status == "PENDING":
        return WhatsAppStatus.VERIFYING, Detail.of("number.pending")
    if status == "BANNED":
        return WhatsAppStatus.FAILED, Detail.of("number.banned")
    if status == "RESTRICTED":
        return WhatsAppStatus.FAILED, Detail.of("number.restricted")
    if status == "FLAGGED":
        return WhatsAppStatus.FAILED, Detail.of("number.flagged")
    if status in ("DISCONNECTED", "DELETED", "MIGRATED"):
        return WhatsAppStatus.DISCONNECTED, Detail.of("number.gone", status=status)
    if status == "UNVERIFIED":
        return WhatsAppStatus.FAILED, Detail.of("number.unverified")
    if status == "RATE_LIMITED":
        return WhatsAppStatus.ACTIVE, Detail.of("number.rate_limited")
    return None, Detail.of("number.unexpected", status=status or "?")


def apply_phone_info(account: WhatsAppAccount, info: PhoneNumberInfo) -> None:
    """What Meta says of the number becomes the connection's status and number (unsaved)."""
    new_status, detail = phone_status_outcome(info.status)
    if account.status == WhatsAppStatus.PENDING_OTP and new_status == WhatsAppStatus.VERIFYING:
        # Meta says PENDING because the code is not entered yet: still waiting for it,
        # so re-saving credentials never takes the code step away from the clinic.
        return
    number = e164_from_meta(info.display_phone_number)
    if number:
        account.number = number
    status = new_status or account.status
    if status == account.status and not detail and set(account.detail_keys) <= EVENT_KEYS:
        # Nothing new: what a webhook event reported stays until something newer happens.
        detail = Detail.from_json(account.detail_parts)
    set_status(account, status, detail=detail)


def subscribe_if_needed(account: WhatsAppAccount) -> WhatsAppAccount:
    """Subscribe our app to the clinic's WABA once the number is active, or no webhook arrives.

    Called by an action under its lease, after its own result is recorded.
    """
    if account.status != WhatsAppStatus.ACTIVE or account.subscribed_at or not account.business_account_id:
        return account
    try:
        client_for(account).subscribe_app(account.business_account_id)
    except MetaError as exc:
        reason = explain(exc, status=account.status).reason
        account.detail_parts = Detail.of("subscribe.refused", why=reason).as_json()
        save(account, ["detail_parts"])
    else:
        account.subscribed_at = timezone.now()
        if "subscribe.refused" in account.detail_keys:
            account.detail_parts = []
        save(account, ["subscribed_at", "detail_parts"])
    return account


# --- the status poll (endpoint 8) ------------------------------------------------------------


def _report(account: WhatsAppAccount, detail: Detail | None = None) -> ConnectionReport:
    return ConnectionReport(
        status=account.status,
        number=account.number or None,
        detail=(detail.render() if detail is not None else account.detail) or None,
    )


def _needs_refresh(account: WhatsAppAccount, now: datetime) -> bool:
    if not account.may_check_connection:
        return False
    if account.status == WhatsAppStatus.VERIFYING:
        return True
    if account.status == WhatsAppStatus.ACTIVE:
        checked = account.status_checked_at
        return checked is None or now - checked > ACTIVE_RECHECK_AFTER or account.subscribed_at is None
    return False


def whatsapp_refresh_status(*, account: WhatsAppAccount) -> ConnectionReport:
    """The status, re-read from Meta when it may have moved, at most once per few seconds per clinic.

    The gate is a cache `add` (atomic in Redis and in local memory), so however
    many servers and browsers poll, Meta sees one call per interval. A poll
    never waits for an action and is never refused: while one runs (its lease
    is held), the stored status is the answer.
    """
    now = timezone.now()
    if not _needs_refresh(account, now):
        return _report(account)
    gate = f"whatsapp:refresh:{account.pk}"
    if not cache.add(gate, 1, timeout=settings.WHATSAPP_STATUS_REFRESH_SECONDS):
        return _report(account)
    with leased(account) as held:
        if held is None or not _needs_refresh(held, timezone.now()):
            return _report(held or account)
        try:
            info = client_for(held).get_phone_number(held.phone_number_id)
        except MetaError as exc:
            if not isinstance(apply_meta_failure(held, exc), MetaRefusedError):
                return _report(held, detail=Detail.of("refresh.unreachable"))
        else:
            apply_phone_info(held, info)
        held.status_checked_at = timezone.now()
        save(held)
        return _report(subscribe_if_needed(held))
