"""Conditions a clinic's admins must be warned about, each recorded once.

whatsapp decides *that* something deserves a warning (a token about to expire,
a verdict turning broken, Meta disconnecting the number) and records it with a
unique key, in the caller's transaction. Who is told and in which language is
the product's business: `alert_recorded` is sent for every new alert, and the
product (clinics) queues its e-mail in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.dispatch import Signal

from .models import AlertKind, WhatsAppAlert

# Sent with `alert=` for each alert recorded for the first time.
alert_recorded = Signal()


def whatsapp_alert_record(
    *, clinic_id: Any, kind: AlertKind, key: str, params: dict[str, Any] | None = None
) -> WhatsAppAlert | None:
    """Record the condition unless it already was; returns the new alert, or None for a repeat.

    The unique constraint (clinic, kind, key) is the guarantee: two workers that
    notice the same condition at once still record, and warn about, it once.
    """
    try:
        with transaction.atomic():
            alert = WhatsAppAlert.objects.create(
                clinic_id=clinic_id, kind=kind, key=key[:100], params=params or {}
            )
            alert_recorded.send(sender=WhatsAppAlert, alert=alert)
    except IntegrityError:
        return None
    return alert
