"""Patients' messages from Meta's webhook: recorded once with the event, forwarded only to a bot that is on."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from clinics.notifications import clinic_alert_send
from messaging.models import BotDelivery, BotEndpoint, Conversation, Message
from messaging.outbox import bot_delivery_attempt
from messaging.signing import new_signing_secret
from messaging.tests.conftest import answered_patient, load
from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.inbound import messages_change_received
from whatsapp.models import AppliedWebhookEvent, WebhookDelivery, WhatsAppAlert
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


def refusing_bot(clinic, settings, *, failing_for: timedelta | None) -> None:
    """A live bot whose port refuses connections; failing for `failing_for` already."""
    settings.BOT_URL_ALLOW_PRIVATE = True
    clinic.bot_enabled = True
    clinic.save(update_fields=["bot_enabled"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    BotEndpoint.objects.create(
        clinic=clinic,
        url=f"http://127.0.0.1:{port}/hook",
        status="live",
        secret=new_signing_secret(),
        failing_since=None if failing_for is None else timezone.now() - failing_for,
    )


def attempt_each_delivery() -> None:
    """A worker runs the task of each delivery once."""
    for pk in BotDelivery.objects.order_by("created_at").values_list("pk", flat=True):
        bot_delivery_attempt(delivery_id=str(pk))


def send_the_warnings() -> None:
    for pk in WhatsAppAlert.objects.values_list("pk", flat=True):
        clinic_alert_send(alert_id=pk)


def test_ten_minutes_of_failures_warn_the_admins_once_in_the_clinics_language(
    clinic, clinic_admin, clinic_staff, settings, queued_tasks
):
    arrange_active(clinic)
    refusing_bot(clinic, settings, failing_for=timedelta(minutes=11))

    deliver(clinic, text_message())
    second = text_message(body="¿Hola?")
    second["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = "wamid.second"
    deliver(clinic, second)
    attempt_each_delivery()
    BotDelivery.objects.filter(state="retrying").update(next_attempt_at=timezone.now())
    attempt_each_delivery()
    send_the_warnings()

    assert BotEndpoint.objects.get().status == "failing"
    assert [(m.subject, m.to) for m in mail.outbox] == [
        ("El bot de Clínica San Salvador no responde", [clinic_admin.email])
    ]
    assert "10 minutos" in mail.outbox[0].body
    assert Conversation.objects.get().needs_human is True
    assert WhatsAppAlert.objects.get().kind == "bot_failing"
    # Both messages wait for the bot, in order: the first retrying, the second behind it.
    assert list(BotDelivery.objects.order_by("created_at").values_list("state", "attempts")) == [
        ("retrying", 2),
        ("queued", 0),
    ]


def test_a_new_episode_after_a_recovery_warns_again(clinic, clinic_admin, settings, queued_tasks):
    arrange_active(clinic)
    refusing_bot(clinic, settings, failing_for=timedelta(minutes=11))
    deliver(clinic, text_message())
    attempt_each_delivery()
    # The bot answered again (a success ends the episode), then failed for 10 minutes more.
    BotEndpoint.objects.update(status="live", failing_since=timezone.now() - timedelta(minutes=12))
    BotDelivery.objects.update(next_attempt_at=timezone.now())

    attempt_each_delivery()
    send_the_warnings()

    assert len(mail.outbox) == 2
    assert WhatsAppAlert.objects.filter(kind="bot_failing").count() == 2


def test_failures_under_ten_minutes_warn_nobody(clinic, clinic_admin, settings, queued_tasks):
    arrange_active(clinic)
    refusing_bot(clinic, settings, failing_for=None)

    deliver(clinic, text_message())
    attempt_each_delivery()

    endpoint = BotEndpoint.objects.get()
    assert (endpoint.status, endpoint.failing_since is not None) == ("live", True)
    assert mail.outbox == []
    assert Conversation.objects.get().needs_human is False


def test_the_sweep_queues_a_delivery_whose_worker_died(clinic, queued_tasks, settings):
    arrange_active(clinic)
    live_bot(clinic)
    deliver(clinic, text_message())
    delivery = BotDelivery.objects.get()
    # A worker claimed it and died: its lease ran out.
    BotDelivery.objects.update(state="processing", lease_expires_at=timezone.now() - timedelta(seconds=1))
    queued_tasks.clear()

    call_command("requeue_stalled")

    assert BotDelivery.objects.get().state == "queued"
    assert [task.kwargs for task in queued_tasks] == [{"delivery_id": str(delivery.pk)}]


def test_a_status_of_our_message_is_forwarded_to_a_live_bot(clinic, queued_tasks):
    arrange_active(clinic)
    live_bot(clinic)
    status = load("webhook_messages_status_sent.json")
    wamid = status["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    answered_patient(clinic, wamid=wamid)

    deliver(clinic, status)

    [delivery] = BotDelivery.objects.filter(event_type="message.status")
    assert (delivery.event_status, delivery.message.wamid, delivery.state) == ("sent", wamid, "queued")
    assert Message.objects.get(wamid=wamid).status == "sent"
