"""The WhatsApp connection's state machine. Only this module assigns `status`.

    disconnected --register--> pending_otp --verify ok--> active
                                   |   \\--verify ok, Meta not done--> verifying --poll--> active
                                   \\--Meta refused--> failed <--Meta refused--/
    deregister (from any state) --> disconnected

Every service takes the clinic's `WhatsAppAccount` (the caller scopes it) and
knows nothing of the product above: the clinic's name, the bot and tenancy are
`clinics`' business. Every transition of one account runs under a row lock, so
two parallel requests can never, for example, register the same number twice.
Meta's answers are recorded before any error is raised: a failing Meta loses
nothing we were given. Arguments use the model's field names; `NOT_SENT` leaves
a field as stored, `None` clears it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.masking import is_masked
from common.notsent import NOT_SENT, NotSent

from .exceptions import (
    AttemptsExhaustedError,
    MetaError,
    MetaRefusedError,
    MetaTimeoutError,
    MetaUnavailableError,
    StatusConflictError,
    WhatsAppError,
)
from .meta import MetaClient, PhoneNumberInfo
from .meta_errors import (
    META_ERROR_SENTENCES,
    NOT_REGISTERED,
    TRANSIENT_CODES,
    WRONG_CODE,
    meta_error_sentence,
)
from .models import MetaAttempt, WhatsAppAccount, WhatsAppStatus, WrongCodeAttempt, new_verify_token
from .signals import access_token_saved

logger = logging.getLogger(__name__)

# Meta: 10 register/deregister requests per number per moving 72 hours, then a 72-hour block.
META_ATTEMPT_LIMIT = 10
META_ATTEMPT_WINDOW = timedelta(hours=72)
WRONG_CODE_LIMIT = 5
WRONG_CODE_WINDOW = timedelta(minutes=15)
# An `active` number is re-read from Meta when polled after this long.
ACTIVE_RECHECK_AFTER = timedelta(minutes=5)
META_LANGUAGES = {"es": "es", "en": "en_US"}

# A secret as a caller may send it: a new value, the masked value it read
# (keep the stored one), None (clear it) or nothing at all (keep it).
SecretInput = str | None | NotSent


@dataclass(frozen=True)
class ConnectionReport:
    """What the status endpoint and the page show."""

    status: str
    number: str | None
    detail: str | None


# --- the account ---------------------------------------------------------------------------


def whatsapp_account_create(*, clinic_id: Any) -> WhatsAppAccount:
    """A clinic's connection, with a random verify token so the webhook can be set up at once."""
    account = WhatsAppAccount(clinic_id=clinic_id, verify_token=new_verify_token())
    account.save()
    return account


def whatsapp_account_get_or_create(*, clinic_id: Any) -> WhatsAppAccount:
    """The clinic's connection; one made before it existed (a clinic outside the services) gets it now."""
    account, _created = WhatsAppAccount.objects.get_or_create(
        clinic_id=clinic_id, defaults={"verify_token": new_verify_token()}
    )
    return account


@contextmanager
def _locked(account: WhatsAppAccount) -> Iterator[WhatsAppAccount]:
    """The account re-read and row-locked for the rest of the transaction."""
    with transaction.atomic():
        yield WhatsAppAccount.objects.select_for_update().get(pk=account.pk)


def _client(account: WhatsAppAccount) -> MetaClient:
    if not account.access_token:
        raise StatusConflictError(
            status=account.status,
            detail=_("No access token is stored for this clinic. Save the WhatsApp credentials first."),
        )
    return MetaClient(account.access_token)


def _e164_from_meta(display: str | None) -> str:
    if not display:
        return ""
    text = display if display.strip().startswith("+") else "+" + display
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _set_status(
    account: WhatsAppAccount,
    status: str,
    *,
    detail: str = "",
    meta_code: int | None = None,
) -> None:
    """The one place a status changes; callers save."""
    if status != account.status:
        logger.info(
            "whatsapp status clinic=%s %s -> %s meta_code=%s",
            account.clinic_id,
            account.status,
            status,
            meta_code,
        )
    if status == WhatsAppStatus.ACTIVE and account.status != WhatsAppStatus.ACTIVE:
        account.connected_at = timezone.now()
    account.status = status
    account.detail = detail
    account.meta_code = meta_code


def _explain(exc: MetaError, *, status: str) -> WhatsAppError:
    """The error to raise for a failed Graph call, carrying the status the clinic is in now.

    A refusal keeps Meta's code (400); a refusal Meta calls temporary becomes
    "unavailable" (502, worth a retry); a timeout stays a timeout (504).
    """
    if isinstance(exc, MetaTimeoutError):
        return exc.explained(
            status=status, detail=_("Meta did not answer in time. Nothing was lost; try again in a minute.")
        )
    code, message, details = exc.code, exc.message or "", exc.details
    if isinstance(exc, MetaRefusedError) and exc.code not in TRANSIENT_CODES:
        return exc.explained(status=status, detail=meta_error_sentence(exc.code, message, details))
    if code is not None and code in META_ERROR_SENTENCES:
        detail = meta_error_sentence(code, message, details)
    elif code and (message or details):
        # Meta's own words for its trouble: the clinic (or support) can act on them.
        detail = _(
            "Meta reported a temporary problem (%(code)s): %(message)s Try again in a few minutes."
        ) % {"code": code, "message": (details or message)[:300]}
    else:
        detail = _("Meta could not be reached. Nothing was lost; try again in a few minutes.")
    if isinstance(exc, MetaUnavailableError):
        return exc.explained(status=status, detail=detail)
    unavailable = MetaUnavailableError(
        "Meta reported a temporary problem",
        code=code,
        message=exc.message,
        details=details,
        fbtrace_id=exc.fbtrace_id,
        http_status=exc.http_status,
        subcode=exc.subcode,
    )
    unavailable.__cause__ = exc
    return unavailable.explained(status=status, detail=detail)


def _record_meta_failure(account: WhatsAppAccount, exc: MetaError) -> WhatsAppError:
    """A refusal makes the connection `failed` with Meta's reason; other failures leave the status.

    The caller saves the account and raises (or reports) the returned error.
    """
    error = _explain(exc, status=account.status)
    if isinstance(error, MetaRefusedError):
        _set_status(account, WhatsAppStatus.FAILED, detail=error.detail, meta_code=error.code)
        error.status = account.status
    return error


# --- credentials (endpoint 5, the settings endpoint, admin) --------------------------------


def _secret_change(value: SecretInput) -> SecretInput:
    """The masked value a client read back keeps the stored secret; "" clears like None."""
    if isinstance(value, NotSent) or is_masked(value):
        return NOT_SENT
    return value or None


def _require_access_token(account: WhatsAppAccount, access_token: SecretInput) -> None:
    """Meta cannot be called without a token: one must be sent, or already stored."""
    token = account.access_token if isinstance(access_token, NotSent) else access_token
    if not token:
        raise ValidationError(
            {"access_token": [_("Send the access token: none is stored for this clinic yet.")]}
        )


def _assign_credentials(
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
        "access_token": (_secret_change(access_token), True),
        "verify_token": (verify_token, False),
        "app_secret": (_secret_change(app_secret), False),
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
    return changed, meta_facing


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
    stored one; `None` or "" clears it; any other value replaces it.
    """
    with _locked(account) as locked:
        changed, meta_facing = _assign_credentials(
            locked,
            phone_number_id=phone_number_id,
            business_account_id=business_account_id,
            access_token=access_token,
            verify_token=verify_token,
            app_secret=app_secret,
        )
        if changed:
            locked.full_clean()
            locked.save(update_fields=[*changed, "updated_at"])
            if "access_token" in changed and locked.access_token:
                # A health check reads the new token's expiry (a 24-hour token is flagged).
                access_token_saved.send(sender=WhatsAppAccount, account=locked)
        return locked, meta_facing


def whatsapp_check_connection(*, account: WhatsAppAccount) -> WhatsAppAccount:
    """Read the configured number from Meta and derive the status; never raises for Meta.

    connected -> active, pending -> verifying, refused -> failed with Meta's
    reason; unreachable -> status unchanged and `detail` says so.
    """
    with _locked(account) as locked:
        if not locked.may_check_connection:
            _set_status(
                locked,
                locked.status,
                detail=_("Save the phone number id and the access token to connect WhatsApp."),
            )
            locked.save(update_fields=["detail", "meta_code", "updated_at"])
            return locked
        try:
            info = _client(locked).get_phone_number(locked.phone_number_id)
        except MetaError as exc:
            error = _record_meta_failure(locked, exc)
            if not isinstance(error, MetaRefusedError):
                _set_status(
                    locked,
                    locked.status,
                    detail=_("Credentials saved, but Meta could not be reached to check them: %(why)s")
                    % {"why": error.detail},
                )
        else:
            _apply_phone_info(locked, info)
        locked.status_checked_at = timezone.now()
        locked.save()
    return _subscribe_if_needed(locked)


def whatsapp_configure(
    *,
    account: WhatsAppAccount,
    phone_number_id: str,
    business_account_id: str,
    access_token: SecretInput = NOT_SENT,
    verify_token: str | NotSent = NOT_SENT,
    app_secret: SecretInput = NOT_SENT,
) -> WhatsAppAccount:
    """Endpoint 5: store first (nothing is lost if Meta is unreachable), then ask Meta."""
    _require_access_token(account, _secret_change(access_token))
    stored, _meta_facing = whatsapp_store_credentials(
        account=account,
        phone_number_id=phone_number_id,
        business_account_id=business_account_id,
        access_token=access_token,
        verify_token=verify_token,
        app_secret=app_secret,
    )
    return whatsapp_check_connection(account=stored)


# Meta's number status -> ours, and what the clinic should do.
def _phone_status_outcome(meta_status: str | None) -> tuple[str | None, str]:
    status = (meta_status or "").upper()
    if status == "CONNECTED":
        return WhatsAppStatus.ACTIVE, ""
    if status == "PENDING":
        return WhatsAppStatus.VERIFYING, _(
            "Meta is still setting up the number. This page updates by itself."
        )
    if status == "BANNED":
        return WhatsAppStatus.FAILED, _(
            "Meta has banned this number from WhatsApp. Open WhatsApp Manager to read the notice and request a review."
        )
    if status == "RESTRICTED":
        return WhatsAppStatus.FAILED, _(
            "Meta has restricted this number: it can only answer patients who write first. "
            "See WhatsApp Manager for when the restriction ends."
        )
    if status == "FLAGGED":
        return WhatsAppStatus.FAILED, _(
            "Meta has flagged this number for low quality. Review the messages the bot sends in "
            "WhatsApp Manager; the flag is lifted when quality improves."
        )
    if status in ("DISCONNECTED", "DELETED", "MIGRATED"):
        return WhatsAppStatus.DISCONNECTED, _(
            "Meta reports this number is no longer connected to the Cloud API (%(status)s). Register it again."
        ) % {"status": status}
    if status == "UNVERIFIED":
        return WhatsAppStatus.FAILED, _(
            "Meta has not verified that you own this number. Register it again to receive a new code."
        )
    if status == "RATE_LIMITED":
        return WhatsAppStatus.ACTIVE, _("Meta is temporarily limiting how fast this number can send.")
    return None, _("Meta reported an unexpected status for this number (%(status)s).") % {
        "status": status or "?"
    }


def _apply_phone_info(account: WhatsAppAccount, info: PhoneNumberInfo) -> None:
    new_status, detail = _phone_status_outcome(info.status)
    if account.status == WhatsAppStatus.PENDING_OTP and new_status == WhatsAppStatus.VERIFYING:
        # Meta says PENDING because the code is not entered yet: still waiting for it,
        # so re-saving credentials never takes the code step away from the clinic.
        return
    number = _e164_from_meta(info.display_phone_number)
    if number:
        account.number = number
    _set_status(account, new_status or account.status, detail=detail)


# --- webhook subscription ------------------------------------------------------------------


def _subscribe_if_needed(account: WhatsAppAccount) -> WhatsAppAccount:
    """Subscribe our app to the clinic's WABA once the number is active, or no webhook arrives."""
    if account.status != WhatsAppStatus.ACTIVE or account.subscribed_at or not account.business_account_id:
        return account
    with _locked(account) as locked:
        if locked.subscribed_at or locked.status != WhatsAppStatus.ACTIVE:
            return locked
        try:
            _client(locked).subscribe_app(locked.business_account_id)
        except MetaError as exc:
            reason = _explain(exc, status=locked.status).detail
            locked.detail = _(
                "The number is active, but Meta refused to send its messages to this service, so "
                "the bot cannot hear patients yet: %(why)s Use 'Check connection' to try again."
            ) % {"why": reason}
            locked.save(update_fields=["detail", "updated_at"])
        else:
            locked.subscribed_at = timezone.now()
            locked.save(update_fields=["subscribed_at", "updated_at"])
        return locked


# --- the register/deregister budget and the wrong-code limit -------------------------------


def _attempts_left(phone_number_id: str, now: datetime) -> tuple[int, datetime | None]:
    recent = list(
        MetaAttempt.objects.filter(phone_number_id=phone_number_id, created_at__gt=now - META_ATTEMPT_WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    reopens = recent[0] + META_ATTEMPT_WINDOW if len(recent) >= META_ATTEMPT_LIMIT else None
    return META_ATTEMPT_LIMIT - len(recent), reopens


def whatsapp_attempts_left(*, account: WhatsAppAccount) -> int | None:
    """Register/deregister calls Meta will still accept for the account's number now; None without one."""
    if not account.phone_number_id:
        return None
    left, _reopens = _attempts_left(account.phone_number_id, timezone.now())
    return max(0, left)


def _meta_budget_guard(account: WhatsAppAccount) -> int:
    """Attempts left for the number, or refuse before Meta blocks it for 72 hours."""
    now = timezone.now()
    left, reopens = _attempts_left(account.phone_number_id, now)
    if left <= 0 and reopens is not None:
        raise AttemptsExhaustedError(
            status=account.status,
            detail=_(
                "This number has used all %(limit)d register and deregister attempts Meta allows in "
                "72 hours; one more would make Meta block it for 72 hours. Try again after %(when)s UTC."
            )
            % {"limit": META_ATTEMPT_LIMIT, "when": reopens.strftime("%Y-%m-%d %H:%M")},
            retry_after=int((reopens - now).total_seconds()) + 1,
        )
    return left


def _spend_meta_attempt(account: WhatsAppAccount, kind: str) -> int:
    """Count one register/deregister call before it is made; returns how many remain."""
    left = _meta_budget_guard(account)
    MetaAttempt.objects.create(
        phone_number_id=account.phone_number_id,
        kind=kind,
        clinic_id=account.clinic_id,
        created_at=timezone.now(),
    )
    return left - 1


def _wrong_codes_guard(account: WhatsAppAccount, now: datetime) -> int:
    recent = list(
        WrongCodeAttempt.objects.filter(clinic_id=account.clinic_id, created_at__gt=now - WRONG_CODE_WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) >= WRONG_CODE_LIMIT:
        reopens = recent[0] + WRONG_CODE_WINDOW
        raise AttemptsExhaustedError(
            status=account.status,
            detail=_(
                "Too many wrong codes. To protect the number, wait %(minutes)d minutes before trying "
                "again, or ask for a new code then."
            )
            % {"minutes": max(1, int((reopens - now).total_seconds() // 60) + 1)},
            retry_after=int((reopens - now).total_seconds()) + 1,
        )
    return WRONG_CODE_LIMIT - len(recent)


# --- register (endpoint 6) and a new code --------------------------------------------------


def _active_number_conflict(account: WhatsAppAccount) -> StatusConflictError:
    return StatusConflictError(
        status=account.status,
        detail=_("This clinic already has an active number. Deregister it first."),
    )


def whatsapp_register_number(
    *,
    account: WhatsAppAccount,
    number: str,
    otp_method: str,
    business_account_id: str,
    access_token: SecretInput = NOT_SENT,
    verified_name: str,
    language: str = "es",
) -> WhatsAppAccount:
    """Store the inputs, put the number on the WABA (or find it there), ask Meta for a code.

    `verified_name` is the display name Meta shows patients when it adds a new number.
    """
    with _locked(account) as locked:
        if not locked.may_register:
            raise _active_number_conflict(locked)
        _require_access_token(locked, _secret_change(access_token))
        # Store first: whatever Meta says next, the clinic's input is kept.
        _assign_credentials(locked, business_account_id=business_account_id, access_token=access_token)
        if locked.number != number:
            # A different number: the old phone number id belongs to the old one.
            locked.phone_number_id = ""
        locked.number = number
        locked.full_clean()
        locked.save()

        client = _client(locked)
        try:
            number_id = locked.phone_number_id or _find_or_add_number(client, locked, verified_name)
            if locked.phone_number_id != number_id:
                locked.phone_number_id = number_id
                locked.save(update_fields=["phone_number_id", "updated_at"])
            # Sending a code is pointless if the number cannot be registered afterwards.
            attempts_left = _meta_budget_guard(locked)
            if locked.pin_phone_number_id != number_id or not locked.registration_pin:
                # Generated and stored before Meta ever sees it: Meta keeps the first
                # PIN of a number and refuses any other (133005).
                locked.registration_pin = f"{secrets.randbelow(1_000_000):06d}"
                locked.pin_phone_number_id = number_id
                locked.save(update_fields=["registration_pin", "pin_phone_number_id", "updated_at"])
            client.request_code(
                number_id,
                method="VOICE" if otp_method == "voice" else "SMS",
                language=META_LANGUAGES.get((language or "es")[:2], "es"),
            )
        except AttemptsExhaustedError as exc:
            pending_error: WhatsAppError | None = exc
        except MetaError as exc:
            pending_error = _record_meta_failure(locked, exc)
            locked.save()
        else:
            how = _("by voice call") if otp_method == "voice" else _("by SMS")
            detail = _("Meta is sending a code %(how)s to %(number)s. Enter it to continue.") % {
                "how": how,
                "number": number,
            }
            if attempts_left <= 3:
                detail += " " + _(
                    "Careful: Meta allows only %(left)d more register attempts for this number in "
                    "the next 72 hours."
                ) % {"left": attempts_left}
            _set_status(locked, WhatsAppStatus.PENDING_OTP, detail=detail)
            locked.subscribed_at = None
            locked.save()
            pending_error = None
    if pending_error is not None:
        raise pending_error
    return locked


def whatsapp_resend_code(
    *, account: WhatsAppAccount, otp_method: str, verified_name: str, language: str = "es"
) -> WhatsAppAccount:
    """A new code for the number being registered, with the stored number, WABA and token."""
    if not account.may_resend_code:
        if not account.may_register:
            raise _active_number_conflict(account)
        raise StatusConflictError(status=account.status, detail=_("Register the number first."))
    return whatsapp_register_number(
        account=account,
        number=account.number,
        otp_method=otp_method,
        business_account_id=account.business_account_id,
        verified_name=verified_name,
        language=language,
    )


def _find_or_add_number(client: MetaClient, account: WhatsAppAccount, verified_name: str) -> str:
    digits = account.number.lstrip("+")
    for info in client.list_phone_numbers(account.business_account_id):
        if info.display_digits == digits:
            return info.id
    parsed = phonenumbers.parse(account.number, None)
    return client.add_phone_number(
        account.business_account_id,
        cc=str(parsed.country_code),
        phone_number=str(phonenumbers.national_significant_number(parsed)),
        verified_name=verified_name,
    )


# --- verify (endpoint 7) -------------------------------------------------------------------


def whatsapp_verify_code(*, account: WhatsAppAccount, code: str) -> WhatsAppAccount:
    """Check the code with Meta, register the number with our stored PIN, read its status."""
    with _locked(account) as locked:
        if not locked.may_verify:
            raise StatusConflictError(
                status=locked.status,
                detail=_("There is no code to verify now (status: %(status)s). Register the number first.")
                % {"status": locked.status},
            )
        now = timezone.now()
        codes_left = _wrong_codes_guard(locked, now)
        client = _client(locked)
        try:
            client.verify_code(locked.phone_number_id, code)
        except MetaRefusedError as exc:
            if exc.code == WRONG_CODE:
                WrongCodeAttempt.objects.create(clinic_id=locked.clinic_id, created_at=now)
                left = codes_left - 1
                detail = meta_error_sentence(exc.code, exc.message or "", exc.details)
                if left > 0:
                    detail += " " + _("%(left)d attempts left.") % {"left": left}
                _set_status(locked, WhatsAppStatus.PENDING_OTP, detail=detail, meta_code=exc.code)
                locked.save()
                pending_error: WhatsAppError | None = exc.explained(status=locked.status, detail=detail)
            else:
                pending_error = _explain(exc, status=locked.status)
        except MetaError as exc:
            pending_error = _explain(exc, status=locked.status)
        else:
            pending_error = _register_verified_number(locked, client)
    if pending_error is not None:
        raise pending_error
    return _subscribe_if_needed(locked)


def _register_verified_number(account: WhatsAppAccount, client: MetaClient) -> WhatsAppError | None:
    """After a right code: register with the stored PIN, then read the number's status."""
    WrongCodeAttempt.objects.filter(clinic_id=account.clinic_id).delete()
    number_id = account.phone_number_id
    try:
        _spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
    except AttemptsExhaustedError as exc:
        _set_status(account, WhatsAppStatus.FAILED, detail=exc.detail)
        account.save()
        exc.status = account.status
        return exc
    try:
        client.register(number_id, account.registration_pin or "")
    except MetaError as exc:
        error = _record_meta_failure(account, exc)
        if not isinstance(error, MetaRefusedError):
            # The code was right; Meta may or may not have registered the number.
            # `verifying` lets polling find out instead of spending another attempt.
            _set_status(
                account,
                WhatsAppStatus.VERIFYING,
                detail=_("The code was right, but Meta did not confirm the registration yet: %(why)s")
                % {"why": error.detail},
            )
        account.status_checked_at = None
        account.save()
        error.status = account.status
        return error
    try:
        info = client.get_phone_number(number_id)
    except MetaError:
        _set_status(
            account,
            WhatsAppStatus.VERIFYING,
            detail=_("Registered. Waiting for Meta to confirm the number; this page updates by itself."),
        )
    else:
        new_status, detail = _phone_status_outcome(info.status)
        if new_status not in (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING):
            new_status = WhatsAppStatus.VERIFYING
            detail = _("Registered. Waiting for Meta to confirm the number; this page updates by itself.")
        number = _e164_from_meta(info.display_phone_number)
        if number:
            account.number = number
        _set_status(account, new_status, detail=detail)
    account.status_checked_at = timezone.now()
    account.save()
    return None


# --- refresh (endpoint 8) ------------------------------------------------------------------


def _report(account: WhatsAppAccount, detail: str | None = None) -> ConnectionReport:
    return ConnectionReport(
        status=account.status,
        number=account.number or None,
        detail=(detail if detail is not None else account.detail) or None,
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
    many servers and browsers poll, Meta sees one call per interval.
    """
    now = timezone.now()
    if not _needs_refresh(account, now):
        return _report(account)
    gate = f"whatsapp:refresh:{account.pk}"
    if not cache.add(gate, 1, timeout=settings.WHATSAPP_STATUS_REFRESH_SECONDS):
        return _report(account)
    unreachable: str | None = None
    with _locked(account) as locked:
        if not _needs_refresh(locked, timezone.now()):
            return _report(locked)
        try:
            info = _client(locked).get_phone_number(locked.phone_number_id)
        except MetaError as exc:
            if isinstance(_record_meta_failure(locked, exc), MetaRefusedError):
                locked.status_checked_at = timezone.now()
                locked.save()
            else:
                unreachable = _("Meta could not be reached just now; this is the last known status.")
        else:
            _apply_phone_info(locked, info)
            locked.status_checked_at = timezone.now()
            locked.save()
    if unreachable:
        return _report(locked, detail=unreachable)
    return _report(_subscribe_if_needed(locked))


# --- deregister (endpoint 9) ---------------------------------------------------------------


def whatsapp_deregister(*, account: WhatsAppAccount) -> WhatsAppAccount:
    """Take the number off the Cloud API and forget it; the credentials are kept."""
    with _locked(account) as locked:
        needs_meta = locked.status not in (WhatsAppStatus.DISCONNECTED, WhatsAppStatus.PENDING_OTP)
        pending_error: WhatsAppError | None = None
        if needs_meta and locked.phone_number_id:
            _spend_meta_attempt(locked, MetaAttempt.Kind.DEREGISTER)
            try:
                _client(locked).deregister(locked.phone_number_id)
            except MetaRefusedError as exc:
                if exc.code != NOT_REGISTERED:  # already off the platform: what we wanted
                    pending_error = _explain(exc, status=locked.status)
            except MetaError as exc:
                pending_error = _explain(exc, status=locked.status)
        if pending_error is None:
            _set_status(locked, WhatsAppStatus.DISCONNECTED)
            locked.number = ""
            locked.subscribed_at = None
            locked.status_checked_at = None
            locked.save()
    if pending_error is not None:
        raise pending_error
    return locked


# --- webhook events ------------------------------------------------------------------------

# The webhook changes that report on the account or its number (other fields,
# such as messages, are stored and need nothing applied).
ACCOUNT_EVENT_FIELDS = frozenset(
    {"account_update", "phone_number_quality_update", "phone_number_name_update"}
)
_STATUS_EVENTS = frozenset({"DISABLED_UPDATE", "ACCOUNT_DELETED", "PARTNER_APP_UNINSTALLED"})
_REPORTED_EVENTS = frozenset({"ACCOUNT_RESTRICTION", "ACCOUNT_VIOLATION"})


@dataclass(frozen=True)
class AccountEvent:
    """One change Meta reported about an account or a number: its `field` and Meta's `value`."""

    field: str
    value: Mapping[str, Any]

    @property
    def event(self) -> str:
        return str(self.value.get("event") or "").upper()

    @property
    def ban_state(self) -> str:
        ban_info = self.value.get("ban_info")
        state = ban_info.get("waba_ban_state") if isinstance(ban_info, dict) else None
        return str(state or self.value.get("waba_ban_state") or "").upper()

    @property
    def disconnects(self) -> bool:
        """Whether Meta took the number away (the clinic's admins are warned)."""
        if self.field != "account_update":
            return False
        return self.event in ("ACCOUNT_DELETED", "PARTNER_APP_UNINSTALLED") or (
            self.event == "DISABLED_UPDATE" and self.ban_state == "DISABLE"
        )

    @property
    def is_applied(self) -> bool:
        """Whether this event changes anything of ours (else the delivery is only stored)."""
        if self.field == "account_update":
            return self.event in _STATUS_EVENTS or self.event in _REPORTED_EVENTS
        return self.field in ACCOUNT_EVENT_FIELDS


def _event_sentence(event: AccountEvent) -> str:
    """What Meta reported, as a sentence for the settings page (restrictions, quality, names)."""
    value = event.value
    if event.event == "ACCOUNT_RESTRICTION":
        types = [
            str(r.get("restriction_type", ""))
            for r in value.get("restriction_info") or []
            if isinstance(r, dict)
        ]
        if types:
            return _("Meta restricted this account: %(types)s.") % {"types": ", ".join(types)}
        return _("Meta restricted this account: see WhatsApp Manager.")
    if event.event == "ACCOUNT_VIOLATION":
        violation = value.get("violation_info")
        if not isinstance(violation, dict):
            violation = {}
        return _("Meta reported a policy violation (%(type)s). Read the notice in WhatsApp Manager.") % {
            "type": violation.get("violation_type") or _("unspecified")
        }
    if event.field == "phone_number_quality_update":
        return _("Meta updated the number's messaging limit: %(event)s %(limit)s.") % {
            "event": value.get("event", ""),
            "limit": value.get("current_limit", ""),
        }
    if event.field == "phone_number_name_update":
        return _("Meta's decision on the display name '%(name)s': %(decision)s.") % {
            "name": value.get("requested_verified_name", ""),
            "decision": value.get("decision", ""),
        }
    return ""


def whatsapp_apply_account_event(*, account: WhatsAppAccount, event: AccountEvent) -> str:
    """Apply what Meta reported about the account; returns what was done (stored on the delivery)."""
    if not event.is_applied:
        return "stored"
    name = event.event if event.field == "account_update" else event.field.upper()
    with _locked(account) as locked:
        if name == "DISABLED_UPDATE" and event.ban_state == "DISABLE":
            _set_status(
                locked,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Meta disabled this WhatsApp Business Account. Open WhatsApp Manager to read "
                    "why and request a review."
                ),
            )
        elif name == "ACCOUNT_DELETED":
            _set_status(
                locked,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Meta reports this WhatsApp Business Account was deleted. Connect another "
                    "account with new credentials."
                ),
            )
        elif name == "PARTNER_APP_UNINSTALLED":
            _set_status(
                locked,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Access for this service was removed from the WhatsApp Business Account. "
                    "Grant it again in Meta Business Settings and save a new access token."
                ),
            )
            locked.subscribed_at = None
        elif name == "DISABLED_UPDATE" and event.ban_state == "REINSTATE":
            # Meta gave the account back: read the number's real status on the next poll.
            locked.status_checked_at = None
            if locked.status == WhatsAppStatus.FAILED and locked.phone_number_id:
                _set_status(
                    locked,
                    WhatsAppStatus.VERIFYING,
                    detail=_("Meta reinstated the account; checking the number's status."),
                )
            else:
                locked.detail = _("Meta reinstated the account.")
        elif sentence := _event_sentence(event):
            # Restrictions, violations, quality and name updates: the status stays,
            # the clinic sees what Meta reported.
            locked.detail = sentence
        else:
            return "stored"
        locked.save()
        return f"{name.lower() or 'event'} -> {locked.status}"
