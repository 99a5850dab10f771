"""Reads of the deliveries to the bot (which may go now is the outbox loop's business)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from .models import DELIVERY_STATES, BotDelivery, BotDeliveryState, Conversation, Message

PENDING = DELIVERY_STATES[BotDeliveryState.PENDING]
DEAD = DELIVERY_STATES[BotDeliveryState.DEAD]


def bot_delivery_counts(*, clinic_id: Any) -> dict[str, int]:
    """The endpoint object's `pending` (not yet acknowledged) and `dead` counts for one clinic."""
    counts = BotDelivery.objects.filter(clinic_id=clinic_id).aggregate(
        pending=Count("pk", filter=Q(state__in=PENDING)),
        dead=Count("pk", filter=Q(state__in=DEAD)),
    )
    return {"pending": counts["pending"], "dead": counts["dead"]}


def conversations_of(*, clinic_id: Any) -> QuerySet[Conversation]:
    """The clinic's conversations (scoped by the caller's clinic, never by an id from outside)."""
    return Conversation.objects.filter(clinic_id=clinic_id)


def conversation_of(*, clinic_id: Any, conversation_id: Any) -> Conversation:
    """One conversation of the clinic; `Conversation.DoesNotExist` for another clinic's."""
    return Conversation.objects.get(pk=conversation_id, clinic_id=clinic_id)


def last_messages(conversations: list[Conversation]) -> dict[Any, Message]:
    """The last message of each conversation, in one query."""
    if not conversations:
        return {}
    which = Q()
    for conversation in conversations:
        which |= Q(conversation_id=conversation.pk, sequence=conversation.last_sequence)
    return {message.conversation_id: message for message in Message.objects.filter(which)}


def bot_deliveries_of(*, clinic_id: Any, state: str | None = None) -> QuerySet[BotDelivery]:
    """The clinic's deliveries to its bot, those in `state` (pending, delivered or dead) when given."""
    rows = BotDelivery.objects.filter(clinic_id=clinic_id)
    if state is not None:
        rows = rows.filter(state__in=DELIVERY_STATES[state])
    return rows
