"""The bot's outbox: one conversation's deliveries in order, one at a time; others never wait."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import BotDelivery
from messaging.outbox import BOT_DELIVERIES
from messaging.services import messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of

pytestmark = pytest.mark.django_db


def claim_all() -> list[tuple[str, int]]:
    """What workers would take now, one claim after another: (patient, sequence) of each."""
    taken = []
    while (row := BOT_DELIVERIES.claim(None)) is not None:
        taken.append((row.conversation.wa_id, row.message.sequence))
    return taken


def test_only_the_head_of_each_conversation_is_taken(clinic):
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_every_type.json")),
        forward=True,
    )
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_text_bsuid.json")),
        forward=True,
    )

    assert sorted(claim_all()) == [("16505551234", 1), ("972987654321", 1)]

    # The head waits for a retry an hour away: the rest of its conversation waits too.
    head = BotDelivery.objects.get(message__sequence=1, conversation__wa_id="16505551234")
    other = BotDelivery.objects.get(conversation__wa_id="972987654321")
    BotDelivery.objects.filter(pk=head.pk).update(
        state="retrying", next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    BotDelivery.objects.filter(pk=other.pk).update(state="done")
    assert claim_all() == []

    BotDelivery.objects.filter(pk=head.pk).update(state="done")
    assert claim_all() == [("16505551234", 2)]

    # A dead delivery no longer holds the line; one being delivered does.
    BotDelivery.objects.filter(message__sequence=2, conversation__wa_id="16505551234").update(state="failed")
    assert claim_all() == [("16505551234", 3)]
    assert claim_all() == []


def test_a_delivered_head_queues_the_next_of_its_line(clinic, queued_tasks):
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_every_type.json")),
        forward=True,
    )
    queued_tasks.clear()
    head = BOT_DELIVERIES.claim(None)
    assert head is not None and head.message.sequence == 1

    BOT_DELIVERIES.succeed(head)

    second = BotDelivery.objects.get(conversation=head.conversation, message__sequence=2)
    [task] = queued_tasks
    assert task.kwargs == {"delivery_id": str(second.pk)}


def test_nothing_is_taken_before_its_retry_is_due(clinic):
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_text.json")),
        forward=True,
    )
    BotDelivery.objects.update(state="retrying", next_attempt_at=timezone.now() + timedelta(minutes=1))
    assert claim_all() == []
