"""Reads of the deliveries to the bot (which may go now is the outbox loop's business)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from .models import DELIVERY_STATES, BotDelivery, BotDeliveryState

PENDING = DELIVERY_STATES[BotDeliveryState.PENDING]
DEAD = DELIVERY_STATES[BotDeliveryState.DEAD]


def bot_delivery_counts(*, clinic_id: Any) -> dict[str, int]:
    """The endpoint object's `pending` (not yet acknowledged) and `dead` counts for one clinic."""
    counts = BotDelivery.objects.filter(clinic_id=clinic_id).aggregate(
        pending=Count("pk", filter=Q(state__in=PENDING)),
        dead=Count("pk", filter=Q(state__in=DEAD)),
    )
    return {"pending": counts["pending"], "dead": counts["dead"]}
