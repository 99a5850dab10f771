"""messaging_record_status: Meta's statuses of our messages only move forward, each change one delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from messaging.models import BotDelivery, Conversation, Message
from messaging.outbox import webhook_id_for
from messaging.services import messaging_record_status
from messaging.tests.conftest import PNID, answered_patient, load, value_of

pytestmark = pytest.mark.django_db

WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="


def status_entry(name: str, *, wamid: str = WAMID) -> dict:
    """The first status of a real-shaped Meta payload, about our message `wamid`."""
    entry = value_of(load(f"webhook_messages_status_{name}.json"))["statuses"][0]
    entry["id"] = wamid
    return entry


@pytest.fixture
def sent_message(clinic) -> Message:
    return answered_patient(clinic, wamid=WAMID)


def record(clinic, entry, *, forward=True):
    return messaging_record_status(clinic_id=clinic.pk, phone_number_id=PNID, status=entry, forward=forward)


def test_an_outbound_message_takes_the_next_sequence_and_waits_queued(clinic, sent_message):
    assert sent_message.sequence == 2
    assert (sent_message.direction, sent_message.status, sent_message.sent_by) == ("out", "queued", "bot")
    assert Conversation.objects.get().last_sequence == 2


def test_statuses_move_forward_with_one_delivery_each(clinic, sent_message):
    for name in ("sent", "delivered", "read"):
        assert record(clinic, status_entry(name)) is not None
        assert Message.objects.get(pk=sent_message.pk).status == name

    deliveries = BotDelivery.objects.order_by("created_at")
    assert [(d.event_type, d.event_status) for d in deliveries] == [
        ("message.status", "sent"),
        ("message.status", "delivered"),
        ("message.status", "read"),
    ]
    assert deliveries[0].webhook_id == webhook_id_for(
        clinic_id=clinic.pk, event="message.status", key=f"{WAMID}:sent"
    )
    message = Message.objects.get(pk=sent_message.pk)
    assert message.meta_timestamp == datetime.fromtimestamp(1689380458, tz=UTC)


def test_a_late_delivered_never_moves_read_back(clinic, sent_message):
    record(clinic, status_entry("read"))
    assert record(clinic, status_entry("delivered")) is None
    assert record(clinic, status_entry("sent")) is None

    assert Message.objects.get(pk=sent_message.pk).status == "read"
    assert list(BotDelivery.objects.values_list("event_status", flat=True)) == ["read"]


def test_metas_duplicate_status_gives_no_second_delivery(clinic, sent_message):
    record(clinic, status_entry("delivered"))
    assert record(clinic, status_entry("delivered")) is None

    assert BotDelivery.objects.count() == 1


def test_failed_keeps_metas_code_and_stays_failed(clinic, sent_message):
    record(clinic, status_entry("sent"))
    assert record(clinic, status_entry("failed")) is not None

    message = Message.objects.get(pk=sent_message.pk)
    assert (message.status, message.error_code) == ("failed", 131049)
    delivery = BotDelivery.objects.get(event_status="failed")
    assert delivery.event_error_code == 131049
    assert record(clinic, status_entry("delivered")) is None
    assert Message.objects.get(pk=sent_message.pk).status == "failed"


def test_failed_after_delivered_is_not_applied(clinic, sent_message):
    record(clinic, status_entry("delivered"))
    assert record(clinic, status_entry("failed")) is None
    assert Message.objects.get(pk=sent_message.pk).status == "delivered"


def test_without_forwarding_the_status_is_stored_and_nothing_queued(clinic, sent_message):
    record(clinic, status_entry("sent"), forward=False)

    assert Message.objects.get(pk=sent_message.pk).status == "sent"
    assert BotDelivery.objects.count() == 0


def test_a_send_whose_answer_was_lost_is_found_by_our_id(clinic, sent_message):
    Message.objects.filter(pk=sent_message.pk).update(wamid="")
    entry = status_entry("sent")
    entry["biz_opaque_callback_data"] = str(sent_message.pk)

    assert record(clinic, entry) is not None
    message = Message.objects.get(pk=sent_message.pk)
    assert (message.wamid, message.status) == (WAMID, "sent")


def test_statuses_of_unknown_messages_or_other_clinics_change_nothing(clinic, other_clinic, sent_message):
    assert record(clinic, status_entry("sent", wamid="wamid.not-ours")) is None
    assert (
        messaging_record_status(
            clinic_id=other_clinic.pk, phone_number_id=PNID, status=status_entry("sent"), forward=True
        )
        is None
    )
    entry = status_entry("sent")
    entry["status"] = "deleted"  # not a status we know
    assert record(clinic, entry) is None

    assert Message.objects.get(pk=sent_message.pk).status == "sending"
    assert BotDelivery.objects.count() == 0


def test_one_change_applies_its_messages_and_statuses_together(clinic, sent_message):
    from messaging.services import messaging_apply_messages_change

    value = value_of(load("webhook_messages_status_delivered.json"))
    value["statuses"][0]["id"] = WAMID
    value["messages"] = value_of(load("webhook_messages_every_type.json"))["messages"][:2]

    applied = messaging_apply_messages_change(clinic_id=clinic.pk, value=value, forward=True)

    assert [m.type for m in applied.received] == ["image", "document"]
    assert [m.pk for m in applied.updated] == [sent_message.pk]
    assert Message.objects.get(pk=sent_message.pk).status == "delivered"
    assert sorted(BotDelivery.objects.values_list("event_type", flat=True)) == [
        "message.received",
        "message.received",
        "message.status",
    ]
    assert messaging_apply_messages_change(clinic_id=clinic.pk, value=value, forward=True) == type(applied)(
        received=[], updated=[]
    )
