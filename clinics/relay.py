"""Patients' messages reach the product: recorded, and forwarded to the clinic's bot when it is on.

whatsapp applies each Meta event once and hands every `messages` change upward
(`whatsapp.inbound.messages_change_received`) inside the event's transaction. Here
the product decides whether the clinic's bot gets them: `bot_enabled` and an endpoint
that is `live` (or `failing`: deliveries go on at the retry pace) - and messaging
records the messages and their deliveries in that same transaction. With the bot off
nothing is forwarded and the conversation needs a person; while the bot is failing
the conversation needs one too. A status that messaging settles on its own (a send
refused at the worker or by Meta's answer, a lost answer made `unknown`) asks the
same question through `messaging.services.bot_forwarding_asked`.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from messaging.models import BotEndpoint, BotEndpointStatus, Conversation
from messaging.services import AppliedChange, bot_forwarding_asked, messaging_apply_messages_change
from whatsapp.inbound import messages_change_received

from .models import Clinic


def clinic_bot_state(*, clinic_id: Any) -> str | None:
    """The status of the clinic's bot endpoint when the bot is switched on, else None (nothing forwarded)."""
    if not Clinic.objects.filter(pk=clinic_id, bot_enabled=True).exists():
        return None
    return BotEndpoint.objects.filter(clinic_id=clinic_id).values_list("status", flat=True).first()


def clinic_bot_forwards(*, clinic_id: Any) -> bool:
    """Whether the clinic's bot gets its events now: switched on, its endpoint live (or failing)."""
    return clinic_bot_state(clinic_id=clinic_id) in (BotEndpointStatus.LIVE, BotEndpointStatus.FAILING)


def clinic_messages_apply(*, clinic_id: Any, value: dict[str, Any]) -> AppliedChange:
    """Record one Meta `messages` change for the clinic, forwarding it to a live (or failing) bot."""
    state = clinic_bot_state(clinic_id=clinic_id)
    forward = state in (BotEndpointStatus.LIVE, BotEndpointStatus.FAILING)
    applied = messaging_apply_messages_change(clinic_id=clinic_id, value=value, forward=forward)
    if state == BotEndpointStatus.FAILING and applied.received:
        Conversation.objects.filter(
            pk__in={message.conversation_id for message in applied.received}, needs_human=False
        ).update(needs_human=True)
    return applied


@receiver(messages_change_received)
def _record_messages(sender: type, clinic_id: Any, value: dict[str, Any], **kwargs: Any) -> None:
    """In the transaction that marks Meta's event applied: the messages commit with it, or not at all."""
    clinic_messages_apply(clinic_id=clinic_id, value=value)


@receiver(bot_forwarding_asked)
def _answer_forwarding(sender: type, clinic_id: Any, **kwargs: Any) -> bool:
    """Messaging settles a send on its own (refused, failed at Meta's answer, unknown): the same rule as Meta's events."""
    return clinic_bot_forwards(clinic_id=clinic_id)
