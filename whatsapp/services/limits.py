"""Limits before Meta's: the register/deregister budget of a number and the wrong-code limit.

Each attempt is recorded before the call it counts is made, in a statement of
its own, so it stays counted whatever Meta answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from ..details import Detail
from ..exceptions import AttemptsExhaustedError
from ..models import MetaAttempt, WhatsAppAccount, WrongCodeAttempt

# Meta: 10 register/deregister requests per number per moving 72 hours, then a 72-hour block.
META_ATTEMPT_LIMIT = 10
META_ATTEMPT_WINDOW = timedelta(hours=72)
WRONG_CODE_LIMIT = 5
WRONG_CODE_WINDOW = timedelta(minutes=15)


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
