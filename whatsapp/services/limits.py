"""Limits before Meta's: the register/deregister budget of a number, the wrong-code limit and the
code-request limits (each code is an SMS or a call to a person).

Each attempt is recorded before the call it counts is made, in a statement of
its own, so it stays counted whatever Meta answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from ..details import Detail
from ..exceptions import AttemptsExhaustedError
from ..models import CodeRequest, MetaAttempt, WhatsAppAccount, WrongCodeAttempt

# Meta: 10 register/deregister requests per number per moving 72 hours, then a 72-hour block.
META_ATTEMPT_LIMIT = 10
META_ATTEMPT_WINDOW = timedelta(hours=72)
WRONG_CODE_LIMIT = 5
WRONG_CODE_WINDOW = timedelta(minutes=15)
# Code requests: per clinic and number, and per clinic (every number together).
CODE_REQUESTS_PER_NUMBER = 5
CODE_REQUESTS_PER_NUMBER_WINDOW = timedelta(hours=1)
CODE_REQUESTS_PER_CLINIC = 20
CODE_REQUESTS_PER_CLINIC_WINDOW = timedelta(days=1)


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


def meta_budget_guard(account: WhatsAppAccount, phone_number_id: str) -> int:
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


def spend_meta_attempt(account: WhatsAppAccount, kind: str) -> int:
    """Count one register/deregister call before it is made; returns how many remain."""
    left = meta_budget_guard(account, account.phone_number_id)
    MetaAttempt.objects.create(
        phone_number_id=account.phone_number_id,
        kind=kind,
        clinic_id=account.clinic_id,
        created_at=timezone.now(),
    )
    return left - 1


def wrong_codes_guard(account: WhatsAppAccount, now: datetime) -> int:
    """Codes the clinic may still try now, or refuse after too many wrong ones."""
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


def wrong_code_record(account: WhatsAppAccount, now: datetime) -> None:
    WrongCodeAttempt.objects.create(clinic_id=account.clinic_id, created_at=now)


def wrong_codes_forget(account: WhatsAppAccount) -> None:
    WrongCodeAttempt.objects.filter(clinic_id=account.clinic_id).delete()


def _code_request_refusal(
    account: WhatsAppAccount, times: list[datetime], limit: int, window: timedelta, now: datetime, key: str
) -> AttemptsExhaustedError | None:
    if len(times) < limit:
        return None
    reopens = times[-limit] + window
    seconds = int((reopens - now).total_seconds()) + 1
    return AttemptsExhaustedError(
        status=account.status,
        reason=Detail.of(
            key, limit=limit, minutes=max(1, -(-seconds // 60)), when=reopens.strftime("%Y-%m-%d %H:%M")
        ),
        retry_after=seconds,
    )


def spend_code_request(account: WhatsAppAccount, number: str) -> None:
    """Count one code request before Meta is asked, or refuse it (429) past either limit.

    Every request counts, one refused afterwards too: asking is what costs a
    person an SMS or a call, and what would let a clinic probe numbers for free.
    """
    now = timezone.now()
    today = list(
        CodeRequest.objects.filter(
            clinic_id=account.clinic_id, created_at__gt=now - CODE_REQUESTS_PER_CLINIC_WINDOW
        )
        .order_by("created_at")
        .values_list("number", "created_at")
    )
    this_number = [
        at for asked, at in today if asked == number and at > now - CODE_REQUESTS_PER_NUMBER_WINDOW
    ]
    refusal = _code_request_refusal(
        account,
        this_number,
        CODE_REQUESTS_PER_NUMBER,
        CODE_REQUESTS_PER_NUMBER_WINDOW,
        now,
        "limit.code_requests_number",
    ) or _code_request_refusal(
        account,
        [at for _asked, at in today],
        CODE_REQUESTS_PER_CLINIC,
        CODE_REQUESTS_PER_CLINIC_WINDOW,
        now,
        "limit.code_requests_clinic",
    )
    if refusal is not None:
        raise refusal
    CodeRequest.objects.create(clinic_id=account.clinic_id, number=number, created_at=now)
