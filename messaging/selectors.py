"""Which deliveries to the bot may go now: per conversation in order, one at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from .models import BotDelivery, BotDeliveryState

OPEN_STATES = (BotDeliveryState.PENDING, BotDeliveryState.DELIVERING)


def bot_deliveries_due(*, now: datetime) -> QuerySet[BotDelivery]:
    """Pending deliveries whose time has come and that head their conversation's line.

    A delivery waits while an earlier one of its conversation is still open
    (pending, even if its retry is hours away, or being delivered): the bot sees
    one patient's messages in `sequence` order. Different conversations never
    wait for each other. The claiming loop takes its rows from here.
    """
    earlier_open = BotDelivery.objects.filter(
        conversation=OuterRef("conversation"), state__in=OPEN_STATES
    ).filter(
        Q(created_at__lt=OuterRef("created_at"))
        | Q(created_at=OuterRef("created_at"), message__sequence__lt=OuterRef("message__sequence"))
    )
    return (
        BotDelivery.objects.filter(state=BotDeliveryState.PENDING, next_attempt_at__lte=now)
        .annotate(waits=Exists(earlier_open))
        .filter(waits=False)
        .select_related("conversation", "message")
        .order_by("next_attempt_at", "created_at")
    )


def bot_delivery_counts(*, clinic_id: Any) -> dict[str, int]:
    """The endpoint object's `pending` (not yet acknowledged) and `dead` counts for one clinic."""
    counts = BotDelivery.objects.filter(clinic_id=clinic_id).aggregate(
        pending=Count("pk", filter=Q(state__in=OPEN_STATES)),
        dead=Count("pk", filter=Q(state=BotDeliveryState.DEAD)),
    )
    return {"pending": counts["pending"], "dead": counts["dead"]}
