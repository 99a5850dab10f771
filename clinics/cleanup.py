"""The daily clean-up: what the product no longer needs is deleted (`manage.py clinics_cleanup`).

Processed Meta deliveries older than WEBHOOK_RETENTION_DAYS (with the markers of
the events they applied and the refused-signature counts of that age), patients'
messages older than MESSAGE_RETENTION_DAYS (and the conversations they leave
empty), and API tokens past their end (API_TOKEN_TTL_DAYS after issue: they already answer 401,
only their rows were left). Every deletion is idempotent and by primary key or
by date, so the command is safe to run on several machines at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from messaging.services import messaging_delete_expired
from whatsapp.retention import whatsapp_deliveries_delete_processed, whatsapp_signature_failures_delete

from .models import ApiToken


@dataclass(frozen=True)
class Cleaned:
    deliveries: int
    signature_hours: int
    messages: int
    conversations: int
    tokens: int


def api_tokens_delete_expired(*, now: datetime) -> int:
    """Delete the tokens whose end (`ApiToken.expires_at`) has passed; how many."""
    ended = ApiToken.objects.filter(created_at__lte=now - timedelta(days=settings.API_TOKEN_TTL_DAYS))
    return ended.delete()[1].get(ApiToken._meta.label, 0)


def clinics_cleanup(*, now: datetime) -> Cleaned:
    cutoff = now - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    messages, conversations = messaging_delete_expired(now=now)
    return Cleaned(
        deliveries=whatsapp_deliveries_delete_processed(received_before=cutoff),
        signature_hours=whatsapp_signature_failures_delete(counted_before=cutoff),
        messages=messages,
        conversations=conversations,
        tokens=api_tokens_delete_expired(now=now),
    )
