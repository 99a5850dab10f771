"""Registering a number: ask Meta for a code (endpoint 6, and a new code), verify it (endpoint 7),
and the number's two-step PIN (endpoint 12).

Each step is recorded the moment Meta answers: once Meta agreed to send a
code, the number, its ids, the PIN to register it with and `pending_otp` are
saved at once; once Meta registered the number, the PIN it accepted is saved
before its status is read. A failure after that never loses what Meta did.
"""

from __future__ import annotations

import secrets

import phonenumbers
from django.utils import timezone

from common.notsent import NOT_SENT, NotSent

from ..details import Detail, meta_refusal_detail
from ..exceptions import (
    AttemptsExhaustedError,
    MetaError,
    MetaRefusedError,
    MetaTimeoutError,
    StatusConflictError,
    WhatsAppError,
)
from ..meta import MetaClient
from ..meta_errors import WRONG_CODE
from ..models import MetaAttempt, WhatsAppAccount, WhatsAppStatus
from .credentials import (
    SecretInput,
    assign_credentials,
    require_access_token,
    require_business_account,
    save_credentials,
    secret_change,
)
from .failures import apply_meta_failure, explain, record_meta_failure
from .limits import (
    meta_budget_guard,
    spend_meta_attempt,
    wrong_code_record,
    wrong_codes_forget,
    wrong_codes_guard,
)
from .state import (
    acting_on,
    ask_meta,
    client_for,
    ensure_not_owned_elsewhere,
    recorded,
    save,
    set_status,
    snapshot,
)
from .status import e164_from_meta, phone_status_outcome, subscribe_if_needed

META_LANGUAGES = {"es": "es", "en": "en_US"}


# --- a code (endpoint 6, and a new one) ------------------------------------------------------


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
    with acting_on(account) as held:
        return _register_number(
            held,
            number=number,
            otp_method=otp_method,
            business_account_id=business_account_id,
            access_token=access_token,
            verified_name=verified_name,
            language=language,
        )


def whatsapp_resend_code(
    *, account: WhatsAppAccount, otp_method: str, verified_name: str, language: str = "es"
) -> WhatsAppAccount:
    """A new code for the number being registered, with the stored number, WABA and token."""
    with acting_on(account) as held:
        if not held.may_resend_code:
            if not held.may_register:
                raise StatusConflictError(status=held.status, reason=Detail.of("conflict.active"))
            raise StatusConflictError(status=held.status, reason=Detail.of("conflict.register_first"))
        return _register_number(
            held,
            number=held.number,
            otp_method=otp_method,
            business_account_id=held.business_account_id,
            access_token=NOT_SENT,
            verified_name=verified_name,
            language=language,
        )


def _register_number(
    account: WhatsAppAccount,
    *,
    number: str,
    otp_method: str,
    business_account_id: str | NotSent,
    access_token: SecretInput,
    verified_name: str,
    language: str,
) -> WhatsAppAccount:
    if not account.may_register:
        raise StatusConflictError(status=account.status, reason=Detail.of("conflict.active"))
    ensure_not_owned_elsewhere(account, number=number)
    token = require_access_token(account, secret_change(access_token))
    waba_id = require_business_account(account, business_account_id)
    client = client_for(account, token)
    before = snapshot(account)

    def ask_for_code() -> tuple[str, int]:
        number_id = _find_or_add_number(client, waba_id, number, verified_name)
        ensure_not_owned_elsewhere(account, phone_number_id=number_id)
        # Sending a code is pointless if the number cannot be registered afterwards.
        attempts_left = meta_budget_guard(account, number_id)
        client.request_code(
            number_id,
            method="VOICE" if otp_method == "voice" else "SMS",
            language=META_LANGUAGES.get((language or "es")[:2], "es"),
        )
        return number_id, attempts_left

    number_id, attempts_left = ask_meta(
        ask_for_code, on_failure=lambda exc: record_meta_failure(account, exc)
    )
    # Meta is sending the code: the clinic's inputs become the stored state, at once.
    changed, _meta_facing = assign_credentials(
        account, business_account_id=waba_id, access_token=access_token
    )
    if account.pin_phone_number_id != number_id or not account.registration_pin:
        # Meta keeps the first PIN registered on a number and refuses any other
        # (133005), so one is generated per number and reused.
        account.registration_pin = f"{secrets.randbelow(1_000_000):06d}"
        account.pin_phone_number_id = number_id
    account.number = number
    account.phone_number_id = number_id
    how = Detail.of("register.by_voice" if otp_method == "voice" else "register.by_sms")
    detail = Detail.of("register.code_sent", how=how, number=number)
    if attempts_left <= 3:
        detail = detail.then("register.attempts_low", left=attempts_left)
    set_status(account, WhatsAppStatus.PENDING_OTP, detail=detail)
    account.subscribed_at = None
    account.status_checked_at = None
    account.full_clean(validate_constraints=False)
    save_credentials(account, changed, action="whatsapp.code_requested", before=before, everything=True)
    return account


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


# --- verify (endpoint 7) and the number's existing PIN (endpoint 12) -------------------------


def whatsapp_verify_code(*, account: WhatsAppAccount, code: str) -> WhatsAppAccount:
    """Check the code with Meta, register the number with our stored PIN, read its status."""
    with acting_on(account) as held:
        if not held.may_verify:
            raise StatusConflictError(
                status=held.status, reason=Detail.of("conflict.no_code", status=held.status)
            )
        now = timezone.now()
        codes_left = wrong_codes_guard(held, now)
        client = client_for(held)

        def refused(exc: MetaError) -> WhatsAppError:
            if not isinstance(exc, MetaRefusedError) or exc.code != WRONG_CODE:
                return explain(exc, status=held.status)
            wrong_code_record(held, now)
            left = codes_left - 1
            detail = meta_refusal_detail(exc.code, exc.message, exc.details)
            if left > 0:
                detail = detail.then("verify.attempts_left", left=left)
            set_status(held, WhatsAppStatus.PENDING_OTP, detail=detail, meta_code=exc.code)
            return recorded(held, exc.explained(status=held.status, reason=detail))

        ask_meta(lambda: client.verify_code(held.phone_number_id, code), on_failure=refused)
        wrong_codes_forget(held)
        _register(held, client, held.registration_pin or "")
        return subscribe_if_needed(held)


def whatsapp_set_pin(*, account: WhatsAppAccount, pin: str) -> WhatsAppAccount:
    """Endpoint 12: register with the number's existing PIN after a 133005, or change an active number's PIN.

    Counted by the register budget. The PIN is stored (encrypted) only once Meta accepted it.
    """
    with acting_on(account) as held:
        if not held.may_set_pin:
            raise StatusConflictError(status=held.status, reason=Detail.of("conflict.no_pin"))
        client = client_for(held)
        if held.needs_existing_pin:
            _register(held, client, pin)
        else:
            _change_pin(held, client, pin)
        return subscribe_if_needed(held)


def _register(account: WhatsAppAccount, client: MetaClient, pin: str) -> None:
    """Register the number with `pin`, then read its status. Meta may act even when we time out."""
    number_id = account.phone_number_id
    try:
        spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
    except AttemptsExhaustedError as exc:
        set_status(account, WhatsAppStatus.FAILED, detail=exc.reason)
        recorded(account, exc)
        raise

    def not_registered(exc: MetaError) -> WhatsAppError:
        error = apply_meta_failure(account, exc)
        if not isinstance(error, MetaRefusedError):
            # The code (or PIN) was sent; Meta may or may not have registered the number.
            # `verifying` lets polling find out instead of spending another attempt.
            if isinstance(exc, MetaTimeoutError):
                detail = Detail.of("deadline.verifying")
            else:
                detail = Detail.of("verify.not_confirmed", why=error.reason)
            set_status(account, WhatsAppStatus.VERIFYING, detail=detail)
            error.reason = detail
        account.status_checked_at = None
        return recorded(account, error)

    before = snapshot(account)
    ask_meta(lambda: client.register(number_id, pin), on_failure=not_registered)
    # Meta accepted this PIN for this number: it is the one to keep, recorded before anything
    # else is asked, with `verifying` until Meta's status of the number is read.
    account.registration_pin = pin
    account.pin_phone_number_id = number_id
    set_status(account, WhatsAppStatus.VERIFYING, detail=Detail.of("verify.waiting"))
    save(account, action="whatsapp.registered", before=before)
    try:
        info = client.get_phone_number(number_id)
    except MetaError:
        pass  # `verifying`: the status poll asks Meta again
    else:
        new_status, detail = phone_status_outcome(info.status)
        if new_status in (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING):
            set_status(account, new_status, detail=detail)
        account.number = e164_from_meta(info.display_phone_number) or account.number
    account.status_checked_at = timezone.now()
    save(account)


def _change_pin(account: WhatsAppAccount, client: MetaClient, pin: str) -> None:
    """Set a new two-step PIN on an active number; a refusal leaves the number active."""
    spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)

    def not_changed(exc: MetaError) -> WhatsAppError:
        error = explain(exc, status=account.status)
        if not isinstance(exc, MetaTimeoutError):
            return error
        # Meta may have changed the PIN: read the number again before anything else.
        set_status(account, WhatsAppStatus.VERIFYING, detail=Detail.of("deadline.verifying"))
        account.status_checked_at = None
        return recorded(
            account, error.explained(status=account.status, reason=Detail.of("deadline.verifying"))
        )

    before = snapshot(account)
    ask_meta(lambda: client.set_pin(account.phone_number_id, pin), on_failure=not_changed)
    account.registration_pin = pin
    account.pin_phone_number_id = account.phone_number_id
    account.detail_parts = Detail.of("pin.changed").as_json()
    save(account, action="whatsapp.pin_changed", before=before)
