"""The WhatsApp connection's state machine. Only this module assigns `status`.

    disconnected --register--> pending_otp --verify ok--> active
                                   |   \\--verify ok, Meta not done--> verifying --poll--> active
                                   \\--Meta refused--> failed <--Meta refused--/
    deregister (from any state) --> disconnected

Every transition of one clinic runs under a row lock on its WhatsAppAccount, so
two parallel requests can never, for example, register the same number twice.
Meta's answers are recorded before any error is raised: a failing Meta loses
nothing we were given.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import phonenumbers
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from clinics.models import Clinic

from .exceptions import (
    AttemptsExhaustedError,
    MetaRefusalError,
    MetaTimedOutError,
    MetaUnreachableError,
    StatusConflictError,
    WhatsAppError,
)
from .meta import (
    MetaClient,
    MetaError,
    MetaRefusedError,
    MetaTimeoutError,
    PhoneNumberInfo,
)
from .meta_errors import (
    META_ERROR_SENTENCES,
    NOT_REGISTERED,
    TRANSIENT_CODES,
    WRONG_CODE,
    meta_error_sentence,
)
from .models import (
    MASK_SUFFIX,
    MetaAttempt,
    WhatsAppAccount,
    WhatsAppStatus,
    WrongCodeAttempt,
    new_verify_token,
)

logger = logging.getLogger(__name__)

# Meta: 10 register/deregister requests per number per moving 72 hours, then a 72-hour block.
META_ATTEMPT_LIMIT = 10
META_ATTEMPT_WINDOW = timedelta(hours=72)
WRONG_CODE_LIMIT = 5
WRONG_CODE_WINDOW = timedelta(minutes=15)
# An `active` number is re-read from Meta when polled after this long.
ACTIVE_RECHECK_AFTER = timedelta(minutes=5)

T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class ConnectionReport:
    """What the status endpoint and the page show."""

    status: str
    number: str | None
    detail: str | None


# --- small helpers -------------------------------------------------------------------------


def whatsapp_account_create(*, clinic: Clinic) -> WhatsAppAccount:
    # A random verify token from the start, so the webhook can be set up at once.
    account = WhatsAppAccount(clinic=clinic, verify_token=new_verify_token())
    account.save()
    return account


def whatsapp_account_for(clinic: Clinic) -> WhatsAppAccount:
    try:
        return clinic.whatsapp
    except WhatsAppAccount.DoesNotExist:
        account, _created = WhatsAppAccount.objects.get_or_create(
            clinic=clinic, defaults={"verify_token": new_verify_token()}
        )
        clinic.whatsapp = account
        return account


@contextmanager
def _locked_account(clinic: Clinic) -> Iterator[WhatsAppAccount]:
    """The clinic's account, row-locked for the rest of the transaction."""
    whatsapp_account_for(clinic)
    with transaction.atomic():
        yield WhatsAppAccount.objects.select_for_update().select_related("clinic").get(clinic=clinic)


def _client(account: WhatsAppAccount) -> MetaClient:
    if not account.access_token:
        raise StatusConflictError(
            status=account.status,
            detail=_("No access token is stored for this clinic. Save the WhatsApp credentials first."),
        )
    return MetaClient(account.access_token)


def _is_masked(value: str | None) -> bool:
    return isinstance(value, str) and MASK_SUFFIX in value


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


def _translate_meta_error(exc: MetaError, *, status: str) -> WhatsAppError:
    """Our domain error for a Meta failure, carrying the status the clinic is in now."""
    if isinstance(exc, MetaTimeoutError):
        return MetaTimedOutError(
            status=status,
            detail=_("Meta did not answer in time. Nothing was lost; try again in a minute."),
        )
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", "") or ""
    details = getattr(exc, "details", None)
    if isinstance(exc, MetaRefusedError) and code not in TRANSIENT_CODES:
        return MetaRefusalError(
            status=status, detail=meta_error_sentence(code, message, details), meta_code=code
        )
    if code in META_ERROR_SENTENCES:
        detail = meta_error_sentence(code, message, details)
    elif code and (message or details):
        # Meta's own words for its trouble: the clinic (or support) can act on them.
        detail = _(
            "Meta reported a temporary problem (%(code)s): %(message)s Try again in a few minutes."
        ) % {
            "code": code,
            "message": (details or message)[:300],
        }
    else:
        detail = _("Meta could not be reached. Nothing was lost; try again in a few minutes.")
    return MetaUnreachableError(status=status, detail=detail)


def _record_meta_failure(account: WhatsAppAccount, exc: MetaError) -> WhatsAppError:
    """A refusal makes the connection `failed` with Meta's reason; other failures leave the status.

    The caller saves the account and raises (or reports) the returned error.
    """
    error = _translate_meta_error(exc, status=account.status)
    if isinstance(error, MetaRefusalError):
        _set_status(account, WhatsAppStatus.FAILED, detail=error.detail, meta_code=error.meta_code)
        error.status = account.status
    return error


def _call_meta(account: WhatsAppAccount, call: Callable[[MetaClient], T]) -> T:
    return call(_client(account))


# --- credentials (endpoint 5 and the settings endpoint) ------------------------------------


def whatsapp_store_credentials(
    *,
    clinic: Clinic,
    phone_number_id: str | None = UNSET,
    business_account_id: str | None = UNSET,
    access_token: str | None = UNSET,
    verify_token: str | None = UNSET,
    app_secret: str | None = UNSET,
) -> tuple[WhatsAppAccount, bool]:
    """Store already-validated credentials; returns the account and whether Meta-facing ones changed.

    The masked-token rule lives here so every front door gets it: a token that
    contains `...****` is the masked value sent back and keeps the stored token;
    `None` clears it; any other value replaces it. UNSET leaves a field as it is.
    """
    with _locked_account(clinic) as account:
        changed: list[str] = []
        meta_facing = False

        def assign(field: str, value: str | None, *, facing: bool) -> None:
            nonlocal meta_facing
            if value is UNSET:
                return
            if getattr(account, field) != value:
                setattr(account, field, value)
                changed.append(field)
                meta_facing = meta_facing or facing

        if phone_number_id is not UNSET:
            assign("phone_number_id", phone_number_id or "", facing=True)
        if business_account_id is not UNSET:
            assign("business_account_id", business_account_id or "", facing=True)
            if "business_account_id" in changed and account.subscribed_at is not None:
                # A new WhatsApp Business Account needs its own webhook subscription.
                account.subscribed_at = None
                changed.append("subscribed_at")
        if access_token is not UNSET and not _is_masked(access_token):
            assign("access_token", access_token or None, facing=True)
        if verify_token is not UNSET and verify_token is not None:
            assign("verify_token", verify_token, facing=False)
        if app_secret is not UNSET and not _is_masked(app_secret):
            assign("app_secret", app_secret or None, facing=False)
        if changed:
            account.full_clean()
            account.save(update_fields=[*changed, "updated_at"])
        return account, meta_facing


def whatsapp_check_connection(*, clinic: Clinic) -> WhatsAppAccount:
    """Read the configured number from Meta and derive the status; never raises for Meta.

    connected -> active, pending -> verifying, refused -> failed with Meta's
    reason; unreachable -> status unchanged and `detail` says so.
    """
    with _locked_account(clinic) as account:
        if not (account.phone_number_id and account.access_token):
            _set_status(
                account,
                account.status,
                detail=_("Save the phone number id and the access token to connect WhatsApp."),
            )
            account.save(update_fields=["detail", "meta_code", "updated_at"])
            return account
        try:
            info = _call_meta(account, lambda meta: meta.get_phone_number(account.phone_number_id))
        except MetaError as exc:
            error = _record_meta_failure(account, exc)
            if not isinstance(error, MetaRefusalError):
                _set_status(
                    account,
                    account.status,
                    detail=_("Credentials saved, but Meta could not be reached to check them: %(why)s")
                    % {"why": error.detail},
                )
        else:
            _apply_phone_info(account, info)
        account.status_checked_at = timezone.now()
        account.save()
    return _subscribe_if_needed(clinic=clinic, account=account)


def whatsapp_configure(
    *,
    clinic: Clinic,
    phone_number_id: str,
    business_account_id: str,
    access_token: str | None = UNSET,
    verify_token: str | None = UNSET,
    app_secret: str | None = UNSET,
) -> WhatsAppAccount:
    """Endpoint 5: store first (nothing is lost if Meta is unreachable), then ask Meta."""
    keeps_stored_token = access_token is UNSET or access_token is None or _is_masked(access_token)
    if keeps_stored_token and not whatsapp_account_for(clinic).access_token:
        raise ValidationError(
            {"accessToken": [_("Send the access token: none is stored for this clinic yet.")]}
        )
    whatsapp_store_credentials(
        clinic=clinic,
        phone_number_id=phone_number_id,
        business_account_id=business_account_id,
        access_token=access_token,
        verify_token=verify_token,
        app_secret=app_secret,
    )
    return whatsapp_check_connection(clinic=clinic)


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


def _subscribe_if_needed(*, clinic: Clinic, account: WhatsAppAccount) -> WhatsAppAccount:
    """Subscribe our app to the clinic's WABA once the number is active, or no webhook arrives."""
    if account.status != WhatsAppStatus.ACTIVE or account.subscribed_at or not account.business_account_id:
        return account
    with _locked_account(clinic) as locked:
        if locked.subscribed_at or locked.status != WhatsAppStatus.ACTIVE:
            return locked
        try:
            _call_meta(locked, lambda meta: meta.subscribe_app(locked.business_account_id))
        except MetaError as exc:
            reason = _translate_meta_error(exc, status=locked.status).detail
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


def whatsapp_attempts_left(*, phone_number_id: str) -> int:
    """Register/deregister calls Meta will still accept for this number in the current window."""
    left, _reopens = _attempts_left(phone_number_id, timezone.now())
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


# --- register (endpoint 6) -----------------------------------------------------------------

META_LANGUAGES = {"es": "es", "en": "en_US"}


def whatsapp_register_number(
    *,
    clinic: Clinic,
    phone: str,
    otp_method: str,
    waba_id: str,
    access_token: str | None,
    language: str = "es",
) -> WhatsAppAccount:
    """Store the inputs, put the number on the WABA (or find it there), ask Meta for a code."""
    with _locked_account(clinic) as account:
        if account.status == WhatsAppStatus.ACTIVE:
            raise StatusConflictError(
                status=account.status,
                detail=_("This clinic already has an active number. Deregister it first."),
            )
        # Store first: whatever Meta says next, the clinic's input is kept.
        account.business_account_id = waba_id
        if access_token and not _is_masked(access_token):
            account.access_token = access_token
        if not account.access_token:
            raise ValidationError(
                {"accessToken": [_("Send the access token: none is stored for this clinic yet.")]}
            )
        previous_number = account.number
        account.number = phone
        if previous_number != phone:
            # A different number: the old phone number id and PIN belong to the old one.
            account.phone_number_id = ""
        account.full_clean()
        account.save()

        client = _client(account)
        try:
            number_id = account.phone_number_id or _find_or_add_number(client, account, clinic.name, phone)
            if account.phone_number_id != number_id:
                account.phone_number_id = number_id
                account.save(update_fields=["phone_number_id", "updated_at"])
            # Sending a code is pointless if the number cannot be registered afterwards.
            attempts_left = _meta_budget_guard(account)
            if account.pin_phone_number_id != number_id or not account.registration_pin:
                # Generated and stored before Meta ever sees it: Meta keeps the first
                # PIN of a number and refuses any other (133005).
                account.registration_pin = f"{secrets.randbelow(1_000_000):06d}"
                account.pin_phone_number_id = number_id
                account.save(update_fields=["registration_pin", "pin_phone_number_id", "updated_at"])
            client.request_code(
                number_id,
                method="VOICE" if otp_method == "voice" else "SMS",
                language=META_LANGUAGES.get((language or "es")[:2], "es"),
            )
        except AttemptsExhaustedError as exc:
            pending_error: WhatsAppError | None = exc
        except MetaError as exc:
            pending_error = _record_meta_failure(account, exc)
            account.save()
        else:
            how = _("by voice call") if otp_method == "voice" else _("by SMS")
            detail = _("Meta is sending a code %(how)s to %(number)s. Enter it to continue.") % {
                "how": how,
                "number": phone,
            }
            if attempts_left <= 3:
                detail += " " + _(
                    "Careful: Meta allows only %(left)d more register attempts for this number in "
                    "the next 72 hours."
                ) % {"left": attempts_left}
            _set_status(account, WhatsAppStatus.PENDING_OTP, detail=detail)
            account.subscribed_at = None
            account.save()
            pending_error = None
    if pending_error is not None:
        raise pending_error
    return account


def _find_or_add_number(client: MetaClient, account: WhatsAppAccount, verified_name: str, phone: str) -> str:
    digits = phone.lstrip("+")
    for info in client.list_phone_numbers(account.business_account_id):
        if info.display_digits == digits:
            return info.id
    parsed = phonenumbers.parse(phone, None)
    return client.add_phone_number(
        account.business_account_id,
        cc=str(parsed.country_code),
        phone_number=str(phonenumbers.national_significant_number(parsed)),
        verified_name=verified_name,
    )


# --- verify (endpoint 7) -------------------------------------------------------------------


def whatsapp_verify_code(*, clinic: Clinic, code: str) -> WhatsAppAccount:
    """Check the code with Meta, register the number with our stored PIN, read its status."""
    with _locked_account(clinic) as account:
        if account.status != WhatsAppStatus.PENDING_OTP:
            raise StatusConflictError(
                status=account.status,
                detail=_("There is no code to verify now (status: %(status)s). Register the number first.")
                % {"status": account.status},
            )
        now = timezone.now()
        codes_left = _wrong_codes_guard(account, now)
        client = _client(account)
        number_id = account.phone_number_id
        try:
            client.verify_code(number_id, code)
        except MetaRefusedError as exc:
            if exc.code == WRONG_CODE:
                WrongCodeAttempt.objects.create(clinic_id=account.clinic_id, created_at=now)
                left = codes_left - 1
                detail = meta_error_sentence(exc.code, exc.message, exc.details)
                if left > 0:
                    detail += " " + _("%(left)d attempts left.") % {"left": left}
                _set_status(account, WhatsAppStatus.PENDING_OTP, detail=detail, meta_code=exc.code)
                account.save()
                pending_error: WhatsAppError | None = MetaRefusalError(
                    status=account.status, detail=detail, meta_code=exc.code
                )
            else:
                pending_error = _translate_meta_error(exc, status=account.status)
        except MetaError as exc:
            pending_error = _translate_meta_error(exc, status=account.status)
        else:
            pending_error = _register_verified_number(account, client)
    if pending_error is not None:
        raise pending_error
    return _subscribe_if_needed(clinic=clinic, account=account)


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
        if not isinstance(error, MetaRefusalError):
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
    if not (account.phone_number_id and account.access_token):
        return False
    if account.status == WhatsAppStatus.VERIFYING:
        return True
    if account.status == WhatsAppStatus.ACTIVE:
        checked = account.status_checked_at
        return checked is None or now - checked > ACTIVE_RECHECK_AFTER or account.subscribed_at is None
    return False


def whatsapp_refresh_status(*, clinic: Clinic) -> ConnectionReport:
    """The status, re-read from Meta when it may have moved, at most once per few seconds per clinic.

    The gate is a cache `add` (atomic in Redis and in local memory), so however
    many servers and browsers poll, Meta sees one call per interval.
    """
    account = whatsapp_account_for(clinic)
    now = timezone.now()
    if not _needs_refresh(account, now):
        return _report(account)
    gate = f"whatsapp:refresh:{account.pk}"
    if not cache.add(gate, 1, timeout=settings.WHATSAPP_STATUS_REFRESH_SECONDS):
        return _report(account)
    unreachable: str | None = None
    with _locked_account(clinic) as locked:
        if not _needs_refresh(locked, timezone.now()):
            return _report(locked)
        try:
            info = _call_meta(locked, lambda meta: meta.get_phone_number(locked.phone_number_id))
        except MetaError as exc:
            if isinstance(_record_meta_failure(locked, exc), MetaRefusalError):
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
    return _report(_subscribe_if_needed(clinic=clinic, account=locked))


# --- deregister (endpoint 9) ---------------------------------------------------------------


def whatsapp_deregister(*, clinic: Clinic) -> WhatsAppAccount:
    """Take the number off the Cloud API, turn the bot off, keep the credentials."""
    with _locked_account(clinic) as account:
        needs_meta = account.status not in (WhatsAppStatus.DISCONNECTED, WhatsAppStatus.PENDING_OTP)
        pending_error: WhatsAppError | None = None
        if needs_meta and account.phone_number_id:
            _spend_meta_attempt(account, MetaAttempt.Kind.DEREGISTER)
            try:
                _call_meta(account, lambda meta: meta.deregister(account.phone_number_id))
            except MetaRefusedError as exc:
                if exc.code != NOT_REGISTERED:  # already off the platform: what we wanted
                    pending_error = _translate_meta_error(exc, status=account.status)
            except MetaError as exc:
                pending_error = _translate_meta_error(exc, status=account.status)
        if pending_error is None:
            _set_status(account, WhatsAppStatus.DISCONNECTED)
            account.number = ""
            account.subscribed_at = None
            account.status_checked_at = None
            account.save()
            Clinic.objects.filter(pk=clinic.pk).update(bot_enabled=False, updated_at=timezone.now())
            clinic.bot_enabled = False
    if pending_error is not None:
        raise pending_error
    return account


# --- webhook events ------------------------------------------------------------------------


def whatsapp_apply_account_event(*, clinic: Clinic, event: str, ban_state: str | None, info: str) -> str:
    """Apply an `account_update`-like event from Meta; returns what was done (stored on the delivery)."""
    event = (event or "").upper()
    with _locked_account(clinic) as account:
        if event == "DISABLED_UPDATE" and (ban_state or "").upper() == "DISABLE":
            _set_status(
                account,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Meta disabled this WhatsApp Business Account. Open WhatsApp Manager to read "
                    "why and request a review."
                ),
            )
        elif event == "ACCOUNT_DELETED":
            _set_status(
                account,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Meta reports this WhatsApp Business Account was deleted. Connect another "
                    "account with new credentials."
                ),
            )
        elif event == "PARTNER_APP_UNINSTALLED":
            _set_status(
                account,
                WhatsAppStatus.FAILED,
                detail=_(
                    "Access for this service was removed from the WhatsApp Business Account. "
                    "Grant it again in Meta Business Settings and save a new access token."
                ),
            )
            account.subscribed_at = None
        elif event == "DISABLED_UPDATE" and (ban_state or "").upper() == "REINSTATE":
            # Meta gave the account back: read the number's real status on the next poll.
            account.status_checked_at = None
            if account.status == WhatsAppStatus.FAILED and account.phone_number_id:
                _set_status(
                    account,
                    WhatsAppStatus.VERIFYING,
                    detail=_("Meta reinstated the account; checking the number's status."),
                )
            else:
                account.detail = _("Meta reinstated the account.")
        elif info:
            # Restrictions, violations, quality and name updates: the status stays,
            # the clinic sees what Meta reported.
            account.detail = info
        else:
            return "stored"
        account.save()
        return f"{event.lower() or 'event'} -> {account.status}"
