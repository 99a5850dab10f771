"""Registering a number: ask Meta for a code (endpoint 6, and a new code), verify it (endpoint 7),
and the number's two-step PIN (endpoint 12).

Each step is recorded the moment Meta answers: once Meta agreed to send a
code, the number, its ids, the PIN to register it with and `pending_otp` are
saved at once; once Meta registered the number, the PIN it accepted is saved
before its status is read. A failure after that never loses what Meta did.

Every number keeps its own PIN (`NumberPin`): Meta keeps the first PIN
registered on a number and refuses any other (133005), so a number the clinic
had before is registered with the PIN we gave it. A code request claims the
number for CLAIM_LIFETIME only; the verified code proves the claim.
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
    NumberOwnedElsewhereError,
    StatusConflictError,
    WhatsAppError,
)
from ..meta import MetaClient
from ..meta_errors import PIN_MISMATCH, WRONG_CODE
from ..models import MetaAttempt, NumberPin, WhatsAppAccount, WhatsAppStatus
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
    spend_code_request,
    spend_meta_attempt,
    wrong_code_record,
    wrong_codes_forget,
    wrong_codes_guard,
)
from .state import (
    CLAIM_LIFETIME,
    acting_on,
    ask_meta,
    client_for,
    ensure_not_owned_elsewhere,
    mark_lapsed_claims,
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
    token = require_access_token(account, secret_change(access_token))
    waba_id = require_business_account(account, business_account_id)
    client = client_for(account, token)
    before = snapshot(account)
    # Counted before anything else is asked: each code is an SMS or a call to a person.
    spend_code_request(account, number)
    ensure_not_owned_elsewhere(account, number=number)

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
    account.registration_pin = _pin_for(account, number_id)
    account.pin_phone_number_id = number_id
    account.number = number
    account.phone_number_id = number_id
    # Meta listed the number in this WABA (or added it there): the WABA's events are this number's too.
    account.proven_business_account_id = waba_id
    changed.append("proven_business_account_id")
    how = Detail.of("register.by_voice" if otp_method == "voice" else "register.by_sms")
    detail = Detail.of("register.code_sent", how=how, number=number)
    if attempts_left <= 3:
        detail = detail.then("register.attempts_low", left=attempts_left)
    set_status(account, WhatsAppStatus.PENDING_OTP, detail=detail)
    account.claim_expires_at = timezone.now() + CLAIM_LIFETIME
    account.subscribed_at = None
    account.status_checked_at = None
    account.full_clean(validate_constraints=False)
    save_credentials(account, changed, action="whatsapp.code_requested", before=before, everything=True)
    mark_lapsed_claims(account, number=number, phone_number_id=number_id)
    return account


def _pin_for(account: WhatsAppAccount, number_id: str) -> str:
    """The PIN to register the number with: the one it kept, or a new one for a number new to the clinic.

    Meta keeps the first PIN registered on a number and refuses any other
    (133005), so a number registered before gets its own PIN back.
    """
    kept = NumberPin.objects.filter(clinic_id=account.clinic_id, phone_number_id=number_id).first()
    if kept is not None:
        return kept.pin
    if account.pin_phone_number_id == number_id and account.registration_pin:
        return account.registration_pin
    return f"{secrets.randbelow(1_000_000):06d}"


def whatsapp_numbers_with_kept_pin(*, account: WhatsAppAccount) -> set[str]:
    """The phone number ids whose two-step PIN this clinic keeps (`_pin_for` registers them with it).

    Those PINs are the clinic's own, never shown, and not another provider's.
    """
    kept = set(
        NumberPin.objects.filter(clinic_id=account.clinic_id).values_list("phone_number_id", flat=True)
    )
    if account.pin_phone_number_id and account.registration_pin:
        kept.add(account.pin_phone_number_id)
    return kept


def _pins_to_try(account: WhatsAppAccount) -> list[str]:
    """The number's PINs, newest first: a PIN change whose answer was lost may have reached Meta."""
    kept = NumberPin.objects.filter(
        clinic_id=account.clinic_id, phone_number_id=account.phone_number_id
    ).first()
    if kept is not None and account.registration_pin in kept.candidates:
        return kept.candidates
    return [account.registration_pin or ""]


def _keep_pin(account: WhatsAppAccount, number_id: str, pin: str) -> None:
    """Meta accepted `pin` for the number: it is the one to keep, and the only one."""
    NumberPin.objects.update_or_create(
        clinic_id=account.clinic_id,
        phone_number_id=number_id,
        defaults={"pin": pin, "unconfirmed_pin": None},
    )
    account.registration_pin = pin
    account.pin_phone_number_id = number_id


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
        # Only a proven claim elsewhere stops a code: while others wait for theirs, the right code wins.
        _refuse_number_taken(held)

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
        _prove_claim(held)
        _register(held, client, _pins_to_try(held))
        return subscribe_if_needed(held)


def _refuse_number_taken(account: WhatsAppAccount) -> None:
    """409 when another clinic proved its claim on the number first; the clinic reads why, `failed`."""
    try:
        ensure_not_owned_elsewhere(
            account, number=account.number, phone_number_id=account.phone_number_id, pending_too=False
        )
    except NumberOwnedElsewhereError as exc:
        set_status(account, WhatsAppStatus.FAILED, detail=exc.reason)
        raise recorded(account, exc, ["status", "detail_parts", "meta_code"]) from None


def _prove_claim(account: WhatsAppAccount) -> None:
    """The code is verified: the number is this clinic's for good, unless another clinic's right
    code was recorded a moment earlier (the database constraint decides)."""
    lapses = account.claim_expires_at
    account.claim_expires_at = None
    try:
        save(account, ["claim_expires_at"])
    except NumberOwnedElsewhereError as exc:
        account.claim_expires_at = lapses
        set_status(account, WhatsAppStatus.FAILED, detail=exc.reason)
        raise recorded(account, exc, ["status", "detail_parts", "meta_code"]) from None


def whatsapp_set_pin(*, account: WhatsAppAccount, pin: str) -> WhatsAppAccount:
    """Endpoint 12: register with the number's existing PIN after a 133005, or change an active number's PIN.

    Counted by the register budget. The PIN is stored (encrypted) only once Meta accepted it.
    """
    with acting_on(account) as held:
        if not held.may_set_pin:
            raise StatusConflictError(status=held.status, reason=Detail.of("conflict.no_pin"))
        client = client_for(held)
        if held.needs_existing_pin:
            _register(held, client, [pin], typed=True)
        else:
            _change_pin(held, client, pin)
        return subscribe_if_needed(held)


def _register(account: WhatsAppAccount, client: MetaClient, pins: list[str], *, typed: bool = False) -> None:
    """Register the number with the first of `pins` Meta accepts, then read its status.

    An older PIN is tried only when Meta refused the newer one as not the
    number's (133005); each try is counted by the register budget. A PIN the
    clinic `typed` that Meta refuses is said to be wrong, with the attempts
    left. Meta may act even when we time out.
    """
    number_id = account.phone_number_id
    before = snapshot(account)
    for tried, pin in enumerate(pins, start=1):
        try:
            left = spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
        except AttemptsExhaustedError as exc:
            set_status(account, WhatsAppStatus.FAILED, detail=exc.reason)
            recorded(account, exc)
            raise
        try:
            client.register(number_id, pin)
        except MetaError as exc:
            mismatch = isinstance(exc, MetaRefusedError) and exc.code == PIN_MISMATCH
            if mismatch and tried < len(pins):
                continue  # the older PIN may be the one Meta kept
            raise _not_registered(account, exc, wrong_pin_left=left if mismatch and typed else None) from exc
        # Meta accepted this PIN for this number: it is the one to keep, recorded before anything
        # else is asked, with `verifying` until Meta's status of the number is read.
        _keep_pin(account, number_id, pin)
        break
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


def _not_registered(account: WhatsAppAccount, exc: MetaError, *, wrong_pin_left: int | None) -> WhatsAppError:
    """Record a register call that failed; returns the error to raise."""
    error = apply_meta_failure(account, exc)
    if wrong_pin_left is not None:
        detail = Detail.of("pin.wrong", left=wrong_pin_left)
        set_status(account, account.status, detail=detail, meta_code=account.meta_code)
        error.reason = detail
    elif not isinstance(error, MetaRefusedError):
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


def _change_pin(account: WhatsAppAccount, client: MetaClient, pin: str) -> None:
    """Set a new two-step PIN on an active number; a refusal leaves the number active.

    The new PIN is kept as unconfirmed before Meta is asked: when the answer is
    lost, Meta may have changed it, so both PINs are kept until Meta accepts one
    (the next registration tries the newer first).
    """
    spend_meta_attempt(account, MetaAttempt.Kind.REGISTER)
    number_id = account.phone_number_id
    before = snapshot(account)
    kept, _created = NumberPin.objects.get_or_create(
        clinic_id=account.clinic_id,
        phone_number_id=number_id,
        defaults={"pin": account.registration_pin or ""},
    )
    earlier_unconfirmed = kept.unconfirmed_pin
    kept.unconfirmed_pin = pin
    kept.save(update_fields=["unconfirmed_pin", "updated_at"])

    def not_changed(exc: MetaError) -> WhatsAppError:
        error = explain(exc, status=account.status)
        if isinstance(error, MetaRefusedError):
            # Meta said no to this PIN: what the number may have is what it had before.
            kept.unconfirmed_pin = earlier_unconfirmed
            kept.save(update_fields=["unconfirmed_pin", "updated_at"])
            return error
        detail = Detail.of("pin.unconfirmed")
        if isinstance(exc, MetaTimeoutError):
            # Meta may have acted: read the number again before anything else.
            detail = Detail.of("deadline.verifying").then("pin.unconfirmed")
            set_status(account, WhatsAppStatus.VERIFYING, detail=detail)
            account.status_checked_at = None
        else:
            set_status(account, account.status, detail=detail)
        return recorded(account, error.explained(status=account.status, reason=detail))

    ask_meta(lambda: client.set_pin(number_id, pin), on_failure=not_changed)
    _keep_pin(account, number_id, pin)
    account.detail_parts = Detail.of("pin.changed").as_json()
    save(account, action="whatsapp.pin_changed", before=before)
