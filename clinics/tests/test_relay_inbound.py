"""Patients' messages from Meta's webhook: recorded once with the event, forwarded only to a bot that is on."""

from __future__ import annotations

import pytest
from django.db import transaction

from messaging.models import BotDelivery, BotEndpoint, Conversation, Message
from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.inbound import messages_change_received
from whatsapp.models import AppliedWebhookEvent, WebhookDelivery
from whatsapp.tests.helpers import account_of, arrange_active, meta_bytes, text_message

pytestmark = pytest.mark.django_db


def deliver(clinic, payload) -> str:
    """Meta posts the payload; the worker applies it."""
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(payload), signed_with_clinic_secret=True
    )
    assert delivery is not None
    return whatsapp_delivery_process(delivery_id=str(delivery.pk))


def live_bot(clinic) -> None:
    clinic.bot_enabled = True
    clinic.save(update_fields=["bot_enabled"])
    BotEndpoint.objects.create(
        clinic=clinic, url="https://bot.example.com/hook", status="live", secret="whsec_x"
    )


def test_with_the_bot_off_the_message_is_stored_and_needs_a_person(clinic, queued_tasks):
    arrange_active(clinic)

    deliver(clinic, text_message(body="¿Tienen cita mañana?"))

    conversation = Conversation.objects.get()
    assert (conversation.clinic_id, conversation.wa_id, conversation.needs_human) == (
        clinic.pk,
        "16505551234",
        True,
    )
    assert Message.objects.get().text == "¿Tienen cita mañana?"
    assert not BotDelivery.objects.exists()


def test_with_a_live_bot_each_message_gets_one_delivery_written_with_the_event(clinic, queued_tasks):
    arrange_active(clinic)
    live_bot(clinic)

    deliver(clinic, text_message())

    delivery = BotDelivery.objects.get()
    assert (delivery.event_type, delivery.message.text) == (
        "message.received",
        "Does it come in another color?",
    )
    assert Conversation.objects.get().needs_human is False
    assert AppliedWebhookEvent.objects.filter(clinic=clinic).count() == 1


def test_metas_duplicate_inside_another_delivery_adds_no_message_and_no_delivery(clinic, queued_tasks):
    arrange_active(clinic)
    live_bot(clinic)
    deliver(clinic, text_message())
    # Meta batches the same message again with a new one: another delivery, the first message once.
    batch = text_message()
    messages = batch["entry"][0]["changes"][0]["value"]["messages"]
    messages.append({**messages[0], "id": "wamid.second", "text": {"body": "¿Y en rojo?"}})

    deliver(clinic, batch)

    assert WebhookDelivery.objects.count() == 2
    assert [m.text for m in Message.objects.order_by("sequence")] == [
        "Does it come in another color?",
        "¿Y en rojo?",
    ]
    assert BotDelivery.objects.count() == 2


def test_another_numbers_messages_reach_no_conversation(clinic, queued_tasks):
    arrange_active(clinic)

    deliver(clinic, text_message(pnid="999999999"))

    assert not Conversation.objects.exists()


def test_a_failing_receiver_rolls_the_event_back_and_it_is_retried(clinic, queued_tasks):
    arrange_active(clinic)
    live_bot(clinic)

    def boom(**kwargs):
        raise RuntimeError("the product is down")

    messages_change_received.connect(boom, dispatch_uid="boom")
    try:
        outcome = deliver(clinic, text_message())
    finally:
        messages_change_received.disconnect(dispatch_uid="boom")

    assert "retrying" in outcome
    assert not Message.objects.exists() and not BotDelivery.objects.exists()
    assert not AppliedWebhookEvent.objects.exists()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.get()
    assert delivery.state == "retrying"
