"""bot_deliveries_due: one conversation's deliveries in order, one at a time; others never wait."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import BotDelivery
from messaging.selectors import bot_deliveries_due
from messaging.services import messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of

pytestmark = pytest.mark.django_db


def sequences_due(now) -> list[tuple[str, int]]:
    return [(d.conversation.wa_id, d.message.sequence) for d in bot_deliveries_due(now=now)]


def test_only_the_head_of_each_conversation_is_due(clinic):
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
    now = timezone.now() + timedelta(seconds=1)

    assert sorted(sequences_due(now)) == [("16505551234", 1), ("972987654321", 1)]

    # The head waits for a retry an hour away: the rest of its conversation waits too.
    head = BotDelivery.objects.get(message__sequence=1, conversation__wa_id="16505551234")
    BotDelivery.objects.filter(pk=head.pk).update(next_attempt_at=now + timedelta(hours=1), attempts=1)
    assert sequences_due(now) == [("972987654321", 1)]

    BotDelivery.objects.filter(pk=head.pk).update(state="delivered")
    assert sorted(sequences_due(now)) == [("16505551234", 2), ("972987654321", 1)]

    # A dead delivery no longer holds the line; one being delivered does.
    BotDelivery.objects.filter(message__sequence=2, conversation__wa_id="16505551234").update(state="dead")
    BotDelivery.objects.filter(message__sequence=3, conversation__wa_id="16505551234").update(
        state="delivering"
    )
    assert sequences_due(now) == [("972987654321", 1)]


def test_nothing_is_due_before_its_time(clinic):
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_text.json")),
        forward=True,
    )
    assert sequences_due(timezone.now() - timedelta(minutes=1)) == []
