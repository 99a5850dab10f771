"""The WhatsApp connection's state machine. Only this module assigns `status`.

    disconnected --register--> pending_otp --verify ok--> active
                                   |   \\--verify ok, Meta not done--> verifying --poll--> active
                                   \\--Meta refused--> failed <--Meta refused--/
    deregister (from any state) --> disconnected

Every service takes the clinic's `WhatsAppAccount` (the caller scopes it) and
knows nothing of the product above: the clinic's name, the bot and tenancy are
`clinics`' business. Every transition of one account runs under a row lock, so
two parallel requests can never, for example, register the same number twice.

Three promises hold for every action:
- a way out of every state: deregister ends in `disconnected` from any status,
  and register never reuses a phone number id Meta does not know;
- nothing lost: a Meta failure leaves every stored field (ids, number, token,
  PIN) as it was; only the status, `detail` and `meta_code` say what happened;
- one owner per number: another clinic's number or phone number id is refused
  (409) before anything reaches Meta, and a database constraint holds the line.
Arguments use the model's field names; `NOT_SENT` leaves a field as stored,
`None` clears it. `detail` is stored as message keys (whatsapp.details) and
rendered in the reader's language.
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
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.masking import is_masked
from common.notsent import NOT_SENT, NotSent

from .details import EVENT_KEYS, NO_DETAIL, Detail, meta_refusal_detail
from .exceptions import (
    AttemptsExhaustedError,
    MetaError,
    MetaRefusedError,
    MetaTimeoutError,
    MetaUnavailableError,
    NumberOwnedElsewhereError,
    StatusConflictError,
    WhatsAppError,
)
from .meta import MetaClient, PhoneNumberInfo
from .meta_errors import (
    META_ERROR_SENTENCES,
    NOT_REGISTERED,
    TRANSIENT_CODES,
    UNKNOWN_OBJECT,
    WRONG_CODE,
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
# Deregister's refusals that mean there is nothing at Meta to undo: not registered,
# no such number, or not ours (Graph's 100/33 "does not exist or missing permissions", 200).
NOTHING_TO_DEREGISTER = frozenset({NOT_REGISTERED, UNKNOWN_OBJECT, 200})

# A secret as a caller may send it: a new value, the masked value it read
# (keep the stored one), None (clear it) or nothing at all (keep it).
SecretInput = str | NotSent | None


@dataclass(frozen=True)
class ConnectionReport:
    """What the status endpoint and the page show; `detail` is rendered for the reader."""

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


def _save(account: WhatsAppAccount, update_fields: list[str] | None = None) -> None:
    """Save; a number another clinic took in the meantime is a 409, never a 500."""
    try:
        with transaction.atomic():
            account.save(update_fields=update_fields)
    except IntegrityError:
        raise NumberOwnedElsewhereError(
            status=account.status, reason=Detail.of("conflict.number_owned")
        ) from None


def _client(account: WhatsAppAccount, access_token: str | None = None) -> MetaClient:
    token = access_token or account.access_token
    if not token:
        raise StatusConflictError(status=account.status, reason=Detail.of("conflict.no_token"))
    return MetaClient(token)


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
    detail: Detail = NO_DETAIL,
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
    account.detail_parts = detail.as_json()
    account.meta_code = meta_code


def _explain(exc: MetaError, *, status: str) -> WhatsAppError:
    """The error to raise for a failed Graph call, carrying the status the clinic is in now.

    A refusal keeps Meta's code (400); a refusal Meta calls temporary becomes
    "unavailable" (502, worth a retry); a timeout stays a timeout (504).
    """
    if isinstance(exc, MetaTimeoutError):
        return exc.explained(status=status, reason=Detail.of("meta.timeout"))
    code, message, details = exc.code, exc.message or "", exc.details
    if isinstance(exc, MetaRefusedError) and exc.code not in TRANSIENT_CODES:
        return exc.explained(status=status, reason=meta_refusal_detail(exc.code, message, details))
    if code is not None and code in META_ERROR_SENTENCES:
        reason = meta_refusal_detail(code, message, details)
    elif code and (message or details):
        # Meta's own words for its trouble: the clinic (or support) can act on them.
        reason = Detail.of("meta.temporary", code=code, message=(details or message)[:300])
    else:
        reason = Detail.of("meta.unreachable")
    if isinstance(exc, MetaUnavailableError):
        return exc.explained(status=status, reason=reason)
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
    return unavailable.explained(status=status, reason=reason)


def _record_meta_failure(account: WhatsAppAccount, exc: MetaError) -> WhatsAppError:
    """A refusal makes the connection `failed` with Meta's reason; other failures leave the status.

    Only status, detail and meta_code change: every other field stays as it was.
    The caller saves the account and raises (or reports) the returned error.
    """
    error = _explain(exc, status=account.status)
    if isinstance(error, MetaRefusedError):
        _set_status(account, WhatsAppStatus.FAILED, detail=error.reason, meta_code=error.code)
        error.status = account.status
    return error


def _ensure_not_owned_elsewhere(
    account: WhatsAppAccount, *, phone_number_id: str = "", number: str = ""
) -> None:
    """Refuse another clinic's number or phone number id before anything reaches Meta."""
    others = WhatsAppAccount.objects.exclude(pk=account.pk)
    if number and others.filter(number=number).exists():
        raise NumberOwnedElsewhereError(status=account.status, reason=Detail.of("conflict.number_owned"))
    if (
        phone_number_id
        and others.filter(phone_number_id=phone_number_id)
        .exclude(status=WhatsAppStatus.DISCONNECTED)
        .exists()
    ):
        raise NumberOwnedElsewhereError(
            status=account.status, reason=Detail.of("conflict.phone_number_id_owned")
        )


# --- credentials (endpoint 5, the settings endpoint, admin) --------------------------------


def _secret_change(value: SecretInput) -> SecretInput:
    """The masked value a client read back keeps the stored secret; "" clears like None."""
    if isinstance(value, NotSent) or is_masked(value):
        return NOT_SENT
    return value or None


def _require_access_token(account: WhatsAppAccount, access_token: SecretInput) -> str:
    """Meta cannot be called without a token: one must be sent, or already stored. Returns it."""
    token = account.access_token if isinstance(access_token, NotSent) else access_token
    if not token:
        raise ValidationError(
            {"access_token": [_("Send the access token: none is stored for this clinic yet.")]}
        )
    return token


def _require_business_account(account: WhatsAppAccount, business_account_id: str | NotSent) -> str:
    """The number is found or added in a WhatsApp Business Account: the one sent, or the stored one."""
    waba_id = account.business_account_id if isinstance(business_account_id, NotSent) else business_account_id
    if not waba_id:
        raise ValidationError(
            {"business_account_id": [_("Enter the WhatsApp Business Account id the number belongs to.")]}
        )
    return waba_id


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
    stored one; `None` or "" clears it; any other value replaces it. Another
    clinic's phone number id is refused (409).
    """
    with _locked(account) as locked:
        if isinstance(phone_number_id, str):
            _ensure_not_owned_elsewhere(locked, phone_number_id=phone_number_id)
        changed, meta_facing = _assign_credentials(
            locked,
            phone_number_id=phone_number_id,
            business_account_id=business_account_id,
            access_token=access_token,
            verify_token=verify_token,
            app_secret=app_secret,
        )
        if changed:
            locked.full_clean(validate_constraints=False)
            _save(locked, update_fields=[*changed, "updated_at"])
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
            _set_status(locked, locked.status, detail=Detail.of("check.save_credentials"))
            _save(locked, update_fields=["detail_parts", "meta_code", "updated_at"])
            return locked
        try:
            info = _client(locked).get_phone_number(locked.phone_number_id)
        except MetaError as exc:
            error = _record_meta_failure(locked, exc)
            if not isinstance(error, MetaRefusedError):
                _set_status(locked, locked.status, detail=Detail.of("check.unreachable", why=error.reason))
        else:
            _apply_phone_info(locked, info)
        locked.status_checked_at = timezone.now()
        _save(locked)
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
    """Endpoint 5: store first (nothing is lost if Meta is unreachable), then ask Meta.

    The ids sent always replace the stored ones: this is the way to correct an id.
    """
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
def _phone_status_outcome(meta_status: str | None) -> tuple[str | None, Detail]:
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


def _apply_phone_info(account: WhatsAppAccount, info: PhoneNumberInfo) -> None:
    new_status, detail = _phone_status_outcome(info.status)
    if account.status == WhatsAppStatus.PENDING_OTP and new_status == WhatsAppStatus.VERIFYING:
        # Meta says PENDING because the code is not entered yet: still waiting for it,
        # so re-saving credentials never takes the code step away from the clinic.
        return
    number = _e164_from_meta(info.display_phone_number)
    if number:
        account.number = number
    status = new_status or account.status
    if status == account.status and not detail and set(account.detail_keys) <= EVENT_KEYS:
        # Nothing new: what a webhook event reported stays until something newer happens.
        detail = Detail.from_json(account.detail_parts)
    _set_status(account, status, detail=detail)


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
            reason = _explain(exc, status=locked.status).reason
            locked.detail_parts = Detail.of("subscribe.refused", why=reason).as_json()
            _save(locked, update_fields=["detail_parts", "updated_at"])
        else:
            locked.subscribed_at = timezone.now()
            if "subscribe.refused" in locked.detail_keys:
                locked.detail_parts = []
            _save(locked, update_fields=["subscribed_at", "detail_parts", "updated_at"])
        return locked


# --- the register/deregister budget and the wrong-code limit -------------------------------


def _attempts_left(
    account: WhatsAppAccount, phone_number_id: str, now: datetime
) -> tuple[int, datetime | None]:
    # Per clinic and number: another clinic saving this id cannot spend this clinic's attempts.
    recent = list(
        MetaAttempt.objects.filter(
            clinic_id=account.clinic_id,
            phone_number_id=phone_number_id,
            created_at__gt=now - META_ATTEMPT_WINDOW,
        )
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    reopens = recent[0] + META_ATTEMPT_WINDOW if len(recent) >= META_ATTEMPT_LIMIT else None
    return META_ATTEMPT_LIMIT - len(recent), reopens


def whatsapp_attempts_left(*, account: WhatsAppAccount) -> int | None:
    """Register/deregister calls Meta will still accept for the account's number now; None without one."""
    if not account.phone_number_id:
        return None
    left, _reopens = _attempts_left(account, account.phone_number_id, timezone.now())
    return max(0, left)


def _meta_budget_guard(account: WhatsAppAccount, phone_number_id: str) -> int:
    """Attempts left for the number, or refuse before Meta blocks it for 72 hours."""
    now = timezone.now()
    left, reopens = _attempts_left(account, phone_number_id, now)
    if left <= 0 and reopens is not None:
        raise AttemptsExhaustedError(
            status=account.status,
            reason=Detail.of(
                "budget.exhausted", limit=META_ATTEMPT_LIMIT, when=reopens.strftime("%Y-%m-%d %H:%M")
            ),
            retry_after=int((reopens - now).total_seconds()) + 1,
        )
    return left


def _spend_meta_attempt(account: WhatsAppAccount, kind: str) -> int:
    """Count one register/deregister call before it is made; returns how many remain.

    Saved in its own savepoint: the attempt stays counted whatever Meta answers.
    """
    left = _meta_budget_guard(account, account.phone_number_id)
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
            reason=Detail.of(
                "limit.wrong_codes", minutes=max(1, int((reopens - now).total_seconds() // 60) + 1)
            ),
            retry_after=int((reopens - now).total_seconds()) + 1,
        )
    return WRONG_CODE_LIMIT - len(recent)


# --- register (endpoint 6) and a new code --------------------------------------------------


def whatsapp_register_number(
    *,
    account: WhatsAppAccount,
    number: str,
    otp_method: str,
    business_account_id: str | NotSent,
    access_token: SecretInput = NOT_SENT,
    verified_name: str,
    language: str = "es",
) -> WhatsAppAccount:
    """Find the number in the WABA (or add it), ask Meta for a code, then store what was sent.

    Nothing is stored until Meta has agreed to send the code: a failure leaves
    ids, number, token and PIN as they were (a refusal sets `failed` and says
    why). The stored phone number id is never trusted: the number is looked up
    in the WABA by its digits every time. `verified_name` is the display name
    Meta shows patients when it adds a new number.
    """
    with _locked(account) as locked:
        if not locked.may_register:
            raise StatusConflictError(status=locked.status, reason=Detail.of("conflict.active"))
        _ensure_not_owned_elsewhere(locked, number=number)
        token = _require_access_token(locked, _secret_change(access_token))
        waba_id = _require_business_account(locked, business_account_id)
        client = _client(locked, token)
        pending_error: WhatsAppError | None = None
        try:
            number_id = _find_or_add_number(client, waba_id, number, verified_name)
            _ensure_not_owned_elsewhere(locked, phone_number_id=number_id)
            # Sending a code is pointless if the number cannot be registered afterwards.
            attempts_left = _meta_budget_guard(locked, number_id)
            client.request_code(
                number_id,
                method="VOICE" if otp_method == "voice" else "SMS",
                language=META_LANGUAGES.get((language or "es")[:2], "es"),
            )
        except (AttemptsExhaustedError, NumberOwnedElsewhereError) as exc:
            pending_error = exc
        except MetaError as exc:
            pending_error = _record_meta_failure(locked, exc)
            if isinstance(pending_error, MetaRefusedError):
                _save(locked, update_fields=["status", "detail_parts", "meta_code", "updated_at"])
        else:
            # Meta is sending the code: now the clinic's inputs become the stored state.
            changed, _meta_facing = _assign_credentials(
                locked, business_account_id=waba_id, access_token=access_token
            )
            if locked.pin_phone_number_id != number_id or not locked.registration_pin:
                # Meta keeps the first PIN registered on a number and refuses any other
                # (133005), so one is generated per number and reused.
                locked.registration_pin = f"{secrets.randbelow(1_000_000):06d}"
                locked.pin_phone_number_id = number_id
            locked.number = number
            locked.phone_number_id = number_id
            how = Detail.of("register.by_voice" if otp_method == "voice" else "register.by_sms")
            detail = Detail.of("register.code_sent", how=how, number=number)
            if attempts_left <= 3:
                detail = detail.then("register.attempts_low", left=attempts_left)
            _set_status(locked, WhatsAppStatus.PENDING_OTP, detail=detail)
            locked.subscribed_at = None
            locked.status_checked_at = None
            locked.full_clean(validate_constraints=False)
            _save(locked)
            if "access_token" in changed:
                access_token_saved.send(sender=WhatsAppAccount, account=locked)
    if pending_error is not None:
        raise pending_error
    return locked


def whatsapp_resend_code(
    *, account: WhatsAppAccount, otp_method: str, verified_name: str, language: str = "es"
) -> WhatsAppAccount:
    """A new code for the number being registered, with the stored number, WABA and token."""
    if not account.may_resend_code:
        if not account.may_register:
            raise StatusConflictError(status=account.status, reason=Detail.of("conflict.active"))
        raise StatusConflictError(status=account.status, reason=Detail.of("conflict.register_first"))
    return whatsapp_register_number(
        account=account,
        number=account.number,
        otp_method=otp_method,
        business_account_id=account.business_account_id,
        verified_name=verified_name,
        language=language,
    )


def _find_or_add_number(client: MetaClient, waba_id: str, number: str, verified_name: str) -> str:
    digits = number.lstrip("+")
    for info in client.list_phone_numbers(waba_id):
        if info.display_digits == digits:
            return info.id
    parsed = phonenumbers.parse(number, None)
    return client.add_phone_number(
        waba_id,
        cc=str(parsed.country_code),
        phone_number=str(phonenumbers.national_significant_number(parsed)),
        verified_name=verified_name,
    )


# --- verify (endpoint 7) and the number's existing PIN (endpoint 12) -----------------------


def whatsapp_verify_code(*, account: WhatsAppAccount, code: str) -> WhatsAppAccount:
    """Check the code with Meta, register the number with our stored PIN, read its status."""
    with _locked(account) as locked:
        if not locked.may_verify:
            raise StatusConflictError(
                status=locked.status, reason=Detail.of("conflict.no_code", status=locked.status)
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
                detail = meta_refusal_detail(exc.code, exc.message, exc.details)
                if left > 0:
                    detail = detail.then("verify.attempts_left", left=left)
                _set_status(locked, WhatsAppStatus.PENDING_OTP, detail=detail, meta_code=exc.code)
                _save(locked)
                pending_error: WhatsAppError | None = exc.explained(status=locked.status, reason=detail)
            else:
                pending_error = _explain(exc, status=locked.status)
        except MetaError as exc:
            pending_error = _explain(exc, status=locked.status)
        else:
            WrongCodeAttempt.objects.filter(clinic_id=locked.clinic_id).delete()
            pending_error = _register(locked, client, locked.registration_pin or "")
    if pending_error is not None:
        raise pending_error
    return _subscribe_if_needed(locked)


def whatsapp_set_pin(*, account: WhatsAppAccount, pin: str) -> WhatsAppAccount:
    """Endpoint 12: register with the number's existing PIN after a 133005, or change an active number's PIN.

    Counted by the register budget. The PIN is stored (encrypted) only once Meta accepted it.
    """
    with _locked(account) as locked:
        if not locked.may_set_pin:
            raise StatusConflictError(status=locked.status, reason=Detail.of("conflict.no_pin"))
        client = _client(locked)
        if locked.needs_existing_pin:
            pending_error = _register(locked, client, pin)
        else:
            pending_error = _change_pin(locked, client, pin)
    if pending_error is not None:
        raise pending_error
    return _subscribe_if_needed(locked)


def _register(account: WhatsAppAccount, client: MetaClient, pin: str) -> WhatsAppError | None:
    """Register the number with `pin`, then read its status. Meta may act even when we time out."""
    number_id = account.phone_number_id
    try:
        _spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
    except AttemptsExhaustedError as exc:
        _set_status(account, WhatsAppStatus.FAILED, detail=exc.reason)
        _save(account)
        exc.status = account.status
        return exc
    try:
        client.register(number_id, pin)
    except MetaError as exc:
        error = _record_meta_failure(account, exc)
        if not isinstance(error, MetaRefusedError):
            # The code (or PIN) was sent; Meta may or may not have registered the number.
            # `verifying` lets polling find out instead of spending another attempt.
            if isinstance(exc, MetaTimeoutError):
                detail = Detail.of("deadline.verifying")
            else:
                detail = Detail.of("verify.not_confirmed", why=error.reason)
            _set_status(account, WhatsAppStatus.VERIFYING, detail=detail)
            error.reason = detail
        account.status_checked_at = None
        _save(account)
        error.status = account.status
        return error
    # Meta accepted this PIN for this number: it is the one to keep.
    account.registration_pin = pin
    account.pin_phone_number_id = number_id
    try:
        info = client.get_phone_number(number_id)
    except MetaError:
        _set_status(account, WhatsAppStatus.VERIFYING, detail=Detail.of("verify.waiting"))
    else:
        new_status, detail = _phone_status_outcome(info.status)
        if new_status not in (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING):
            new_status, detail = WhatsAppStatus.VERIFYING, Detail.of("verify.waiting")
        number = _e164_from_meta(info.display_phone_number)
        if number:
            account.number = number
        _set_status(account, new_status, detail=detail)
    account.status_checked_at = timezone.now()
    _save(account)
    return None


def _change_pin(account: WhatsAppAccount, client: MetaClient, pin: str) -> WhatsAppError | None:
    """Set a new two-step PIN on an active number; a refusal leaves the number active."""
    try:
        _spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
        client.set_pin(account.phone_number_id, pin)
    except AttemptsExhaustedError as exc:
        return exc
    except MetaError as exc:
        error = _explain(exc, status=account.status)
        if isinstance(exc, MetaTimeoutError):
            # Meta may have changed the PIN: read the number again before anything else.
            _set_status(account, WhatsAppStatus.VERIFYING, detail=Detail.of("deadline.verifying"))
            account.status_checked_at = None
            _save(account)
            error.explained(status=account.status, reason=Detail.of("deadline.verifying"))
        return error
    account.registration_pin = pin
    account.pin_phone_number_id = account.phone_number_id
    account.detail_parts = Detail.of("pin.changed").as_json()
    _save(account)
    return None


# --- refresh (endpoint 8) ------------------------------------------------------------------


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
    many servers and browsers poll, Meta sees one call per interval.
    """
    now = timezone.now()
    if not _needs_refresh(account, now):
        return _report(account)
    gate = f"whatsapp:refresh:{account.pk}"
    if not cache.add(gate, 1, timeout=settings.WHATSAPP_STATUS_REFRESH_SECONDS):
        return _report(account)
    unreachable = False
    with _locked(account) as locked:
        if not _needs_refresh(locked, timezone.now()):
            return _report(locked)
        try:
            info = _client(locked).get_phone_number(locked.phone_number_id)
        except MetaError as exc:
            if isinstance(_record_meta_failure(locked, exc), MetaRefusedError):
                locked.status_checked_at = timezone.now()
                _save(locked)
            else:
                unreachable = True
        else:
            _apply_phone_info(locked, info)
            locked.status_checked_at = timezone.now()
            _save(locked)
    if unreachable:
        return _report(locked, detail=Detail.of("refresh.unreachable"))
    return _report(_subscribe_if_needed(locked))


# --- deregister (endpoint 9) ---------------------------------------------------------------


def _nothing_to_deregister(exc: MetaRefusedError) -> bool:
    """Meta's refusal says the number is not registered, does not exist, or is not ours."""
    return exc.code in NOTHING_TO_DEREGISTER


def whatsapp_deregister(*, account: WhatsAppAccount) -> WhatsAppAccount:
    """Take the number off the Cloud API and forget it; the credentials are kept.

    A way out of every state: only a Meta that is unreachable, too slow, or that
    refuses while the number stays registered there (its rate limit, an expired
    token) keeps the status as it was.
    """
    with _locked(account) as locked:
        needs_meta = locked.status not in (WhatsAppStatus.DISCONNECTED, WhatsAppStatus.PENDING_OTP)
        if needs_meta and locked.phone_number_id:
            _spend_meta_attempt(locked, MetaAttempt.Kind.DEREGISTER)
            try:
                _client(locked).deregister(locked.phone_number_id)
            except MetaRefusedError as exc:
                if not _nothing_to_deregister(exc):
                    pending_error: WhatsAppError | None = _explain(exc, status=locked.status)
                else:
                    pending_error = None
            except MetaError as exc:
                pending_error = _explain(exc, status=locked.status)
            else:
                pending_error = None
        else:
            pending_error = None
        if pending_error is None:
            _set_status(locked, WhatsAppStatus.DISCONNECTED)
            locked.number = ""
            locked.subscribed_at = None
            locked.status_checked_at = None
            _save(locked)
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


def _event_detail(event: AccountEvent) -> Detail:
    """What Meta reported (restrictions, violations, quality, names), as a detail for the page."""
    value = event.value
    if event.event == "ACCOUNT_RESTRICTION":
        types = [
            str(r.get("restriction_type", ""))
            for r in value.get("restriction_info") or []
            if isinstance(r, dict)
        ]
        if types:
            return Detail.of("event.restricted", types=", ".join(types))
        return Detail.of("event.restricted_unspecified")
    if event.event == "ACCOUNT_VIOLATION":
        violation = value.get("violation_info")
        violation_type = violation.get("violation_type") if isinstance(violation, dict) else None
        return Detail.of(
            "event.violation",
            type=str(violation_type) if violation_type else Detail.of("event.unspecified"),
        )
    if event.field == "phone_number_quality_update":
        return Detail.of(
            "event.quality", event=str(value.get("event", "")), limit=str(value.get("current_limit", ""))
        )
    if event.field == "phone_number_name_update":
        return Detail.of(
            "event.name",
            name=str(value.get("requested_verified_name", "")),
            decision=str(value.get("decision", "")),
        )
    return NO_DETAIL


def whatsapp_apply_account_event(*, account: WhatsAppAccount, event: AccountEvent) -> str:
    """Apply what Meta reported about the account; returns what was done (stored on the delivery)."""
    if not event.is_applied:
        return "stored"
    name = event.event if event.field == "account_update" else event.field.upper()
    with _locked(account) as locked:
        if name == "DISABLED_UPDATE" and event.ban_state == "DISABLE":
            _set_status(locked, WhatsAppStatus.FAILED, detail=Detail.of("event.disabled"))
        elif name == "ACCOUNT_DELETED":
            _set_status(locked, WhatsAppStatus.FAILED, detail=Detail.of("event.deleted"))
        elif name == "PARTNER_APP_UNINSTALLED":
            _set_status(locked, WhatsAppStatus.FAILED, detail=Detail.of("event.uninstalled"))
            locked.subscribed_at = None
        elif name == "DISABLED_UPDATE" and event.ban_state == "REINSTATE":
            # Meta gave the account back: read the number's real status on the next poll.
            locked.status_checked_at = None
            if locked.status == WhatsAppStatus.FAILED and locked.phone_number_id:
                _set_status(locked, WhatsAppStatus.VERIFYING, detail=Detail.of("event.reinstated_checking"))
            else:
                locked.detail_parts = Detail.of("event.reinstated").as_json()
        elif detail := _event_detail(event):
            # Restrictions, violations, quality and name updates: the status stays,
            # the clinic sees what Meta reported (until something newer happens).
            locked.detail_parts = detail.as_json()
        else:
            return "stored"
        _save(locked)
        return f"{name.lower() or 'event'} -> {locked.status}"
