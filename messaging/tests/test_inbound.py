"""messaging_record_inbound: Meta's patient messages become numbered, encrypted messages and deliveries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.tests.test_encryption import raw_value
from messaging.models import BotDelivery, BotDeliveryState, Conversation, Message
from messaging.outbox import webhook_id_for
from messaging.services import messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of

pytestmark = pytest.mark.django_db

TEXT = load("webhook_messages_text.json")
EVERY_TYPE = load("webhook_messages_every_type.json")
BSUID = load("webhook_messages_text_bsuid.json")


def record(clinic, value, *, forward=True):
    return messaging_record_inbound(clinic_id=clinic.pk, phone_number_id=PNID, value=value, forward=forward)


def test_it_records_a_text_message_in_a_new_conversation(clinic):
    [message] = record(clinic, value_of(TEXT))

    conversation = Conversation.objects.get()
    assert (conversation.clinic_id, conversation.phone_number_id, conversation.wa_id) == (
        clinic.pk,
        PNID,
        "16505551234",
    )
    assert conversation.profile_name == "Sheena Nelson"
    sent_at = datetime.fromtimestamp(1749416383, tz=UTC)
    assert conversation.window_open_until == sent_at + timedelta(hours=24)
    assert conversation.last_message_at == sent_at
    assert conversation.last_sequence == 1
    assert conversation.needs_human is False
    assert conversation.window_is_open(sent_at + timedelta(hours=23, minutes=59))
    assert not conversation.window_is_open(sent_at + timedelta(hours=24))

    message = Message.objects.get(pk=message.pk)
    assert message.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert (message.direction, message.type, message.sent_by, message.status) == ("in", "text", "patient", "")
    assert message.text == "Does it come in another color?"
    assert message.media_info is None
    assert message.sequence == 1
    assert message.created_at == sent_at


def test_it_queues_one_delivery_per_new_message_with_an_id_from_the_wamid(clinic):
    [message] = record(clinic, value_of(TEXT))

    delivery = BotDelivery.objects.get()
    assert delivery.event_type == "message.received"
    assert (delivery.state, delivery.public_state) == ("queued", BotDeliveryState.PENDING)
    assert (delivery.conversation_id, delivery.message_id, delivery.clinic_id) == (
        message.conversation_id,
        message.pk,
        clinic.pk,
    )
    assert delivery.webhook_id == webhook_id_for(
        clinic_id=clinic.pk, event="message.received", key=message.wamid
    )
    assert delivery.webhook_id.startswith("evt_") and len(delivery.webhook_id) == 36
    assert delivery.lease_expires_at is not None and delivery.attempts == 0  # leased to the queue


def test_metas_duplicate_adds_no_message_and_no_delivery(clinic):
    record(clinic, value_of(TEXT))
    again = record(clinic, value_of(TEXT))

    assert again == []
    assert Message.objects.count() == 1
    assert BotDelivery.objects.count() == 1
    assert Conversation.objects.get().last_sequence == 1


def test_without_forwarding_nothing_is_queued_and_a_person_is_needed(clinic):
    [message] = record(clinic, value_of(TEXT), forward=False)

    assert BotDelivery.objects.count() == 0
    assert Conversation.objects.get().needs_human is True
    assert Message.objects.get(pk=message.pk).text == "Does it come in another color?"


def test_forwarding_again_does_not_clear_needs_human(clinic):
    record(clinic, value_of(TEXT), forward=False)
    value = value_of(TEXT)
    value["messages"][0]["id"] = "wamid.second"
    record(clinic, value)

    assert Conversation.objects.get().needs_human is True  # a person clears it
    assert BotDelivery.objects.count() == 1


def test_every_contract_type_is_recorded_in_order_with_its_parts(clinic):
    created = record(clinic, value_of(EVERY_TYPE))

    assert [m.sequence for m in created] == list(range(1, 15))
    by_seq = {m.sequence: Message.objects.get(pk=m.pk) for m in created}
    assert [by_seq[s].type for s in sorted(by_seq)] == [
        "image",
        "document",
        "audio",
        "video",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "interactive",
        "button",
        "reaction",
        "unsupported",
        "unsupported",
        "text",
    ]
    image, document, audio = by_seq[1], by_seq[2], by_seq[3]
    assert image.text == "The rash on my arm"
    assert image.media_info == {
        "id": "1003383421387256",
        "mime_type": "image/jpeg",
        "sha256": "8k3Zl5vKfUu2q7Zk0Q6H8a2m5bN1x9c4d7e0f3g6h9I=",
    }
    assert document.media_info is not None and document.media_info["filename"] == "lab-results.pdf"
    assert audio.text is None and audio.media_info is not None
    assert audio.media_info["mime_type"] == "audio/ogg; codecs=opus"
    assert by_seq[6].details_info == {
        "location": {
            "address": "1 Hacker Way, Menlo Park, CA 94025",
            "latitude": 37.483307,
            "longitude": -122.148981,
            "name": "Main Street Beach",
            "url": "https://foo.bar",
        }
    }
    assert by_seq[7].details_info is not None
    assert by_seq[7].details_info["contacts"][0]["name"]["formatted_name"] == "Barbara Johnson"
    assert by_seq[8].text == "Yes, I'll come"
    assert by_seq[8].details_info is not None
    assert by_seq[8].details_info["context"] == {
        "reply_to_wamid": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QUJDMDAwMDAwMDAwMDAwMDAA"
    }
    assert by_seq[9].text == "Tuesday 9:30"
    assert by_seq[10].text == "Change my appointment"
    assert by_seq[10].details_info is not None
    assert by_seq[10].details_info["button"] == {"payload": "RESCHEDULE"}
    assert by_seq[11].text == "\U0001f44d"
    assert by_seq[11].details_info == {
        "reaction": {"wamid": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QUJDMDAwMDAwMDAwMDAwMDEA"}
    }
    assert by_seq[12].details_info == {"errors": [{"code": 131051, "title": "Message type unknown"}]}
    assert by_seq[13].details_info == {"meta_type": "order"}
    assert by_seq[13].text is None  # an unknown type's content is not kept
    assert by_seq[14].details_info is not None
    assert by_seq[14].details_info["context"]["forwarded"] is True
    assert BotDelivery.objects.count() == 14
    assert Conversation.objects.get().window_open_until == datetime.fromtimestamp(
        1749416530, tz=UTC
    ) + timedelta(hours=24)


def test_sequences_continue_across_events_without_gaps(clinic):
    record(clinic, value_of(TEXT))
    record(clinic, value_of(TEXT))  # a duplicate takes no number
    record(clinic, value_of(EVERY_TYPE))

    sequences = list(Message.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, 16))


def test_the_window_never_moves_back_for_a_late_older_message(clinic):
    record(clinic, value_of(EVERY_TYPE))
    latest = Conversation.objects.get().window_open_until
    older = value_of(TEXT)  # Meta's time is before the others'
    record(clinic, older)

    conversation = Conversation.objects.get()
    assert conversation.window_open_until == latest
    assert conversation.last_sequence == 15


def test_texts_names_and_media_are_ciphertext_in_the_database(clinic):
    created = record(clinic, value_of(EVERY_TYPE))
    image = created[0]
    conversation = Conversation.objects.get()

    for column in ("text", "media"):
        stored = raw_value(Message, image.pk, column)
        assert stored is not None and stored.startswith("enc:v1:test2:")
        assert "rash" not in stored and "1003383421387256" not in stored
    stored_details = raw_value(Message, created[5].pk, "details")
    assert (
        stored_details is not None and stored_details.startswith("enc:v1:") and "Hacker" not in stored_details
    )
    stored_name = raw_value(Conversation, conversation.pk, "profile_name")
    assert stored_name is not None and stored_name.startswith("enc:v1:") and "Sheena" not in stored_name


def test_a_patient_known_only_by_user_id_then_by_phone_keeps_one_conversation(clinic):
    value = value_of(BSUID)
    # The username-era shape: no wa_id in contacts, no `from`, only the user id.
    del value["contacts"][0]["wa_id"]
    del value["messages"][0]["from"]
    value["messages"][0]["from_user_id"] = value["contacts"][0]["user_id"]
    record(clinic, value)
    conversation = Conversation.objects.get()
    assert (conversation.wa_id, conversation.user_id) == ("", "US.13491208655302741918")

    later = value_of(BSUID)
    later["messages"][0]["id"] = "wamid.later"
    record(clinic, later)

    conversation = Conversation.objects.get()
    assert (conversation.wa_id, conversation.user_id) == ("972987654321", "US.13491208655302741918")
    assert conversation.last_sequence == 2
    assert conversation.profile_name == "Test Name"


def test_another_clinic_or_number_gets_its_own_conversation(clinic, other_clinic):
    record(clinic, value_of(TEXT))
    messaging_record_inbound(
        clinic_id=other_clinic.pk, phone_number_id=PNID, value=value_of(TEXT), forward=True
    )
    other_number = value_of(TEXT)
    other_number["messages"][0]["id"] = "wamid.other-number"
    messaging_record_inbound(
        clinic_id=clinic.pk, phone_number_id="999000111", value=other_number, forward=True
    )

    assert Conversation.objects.count() == 3
    assert Message.objects.filter(clinic=other_clinic).count() == 1
    assert set(Message.objects.values_list("sequence", flat=True)) == {1}
    # The same wamid at another clinic is another event: its own webhook-id.
    assert BotDelivery.objects.values("webhook_id").distinct().count() == 3


def test_it_never_logs_texts_or_names(clinic, caplog):
    value = value_of(TEXT)
    value["messages"].append(
        {"id": "wamid.nobody", "timestamp": "1749416390", "type": "text", "text": {"body": "x"}}
    )
    value["contacts"].append({"profile": {"name": "Someone Else"}})
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    # With the debug cursor on, every SQL statement is logged with its parameters.
    with CaptureQueriesContext(connection):
        record(clinic, value)

    assert any(r.name == "django.db.backends" for r in caplog.records)  # the logs had their chance
    assert "Does it come" not in caplog.text and "Sheena" not in caplog.text
    assert Message.objects.count() == 1  # the message naming no sender is skipped, and said so
    assert "names no sender" in caplog.text


def test_ids_longer_than_metas_are_skipped_not_failing_the_event(clinic):
    value = value_of(TEXT)
    value["messages"][0]["from"] = "1" * 40
    value["contacts"][0]["wa_id"] = "1" * 40
    second = value_of(TEXT)["messages"][0]
    second["id"] = "wamid." + "x" * 300
    value["messages"].append(second)

    assert record(clinic, value) == []
    assert Message.objects.count() == 0


def test_a_contact_naming_another_patient_gives_no_name(clinic):
    value = value_of(TEXT)
    value["messages"][0]["from"] = "50370001111"

    [message] = record(clinic, value)

    conversation = Conversation.objects.get(pk=message.conversation_id)
    assert (conversation.wa_id, conversation.profile_name) == ("50370001111", None)


def test_a_member_clears_needs_human_of_their_own_clinic_only(clinic, other_clinic):
    from messaging.services import conversation_clear_needs_human

    [message] = record(clinic, value_of(TEXT), forward=False)
    with pytest.raises(Conversation.DoesNotExist):
        conversation_clear_needs_human(clinic_id=other_clinic.pk, conversation_id=message.conversation_id)
    assert Conversation.objects.get().needs_human is True

    conversation_clear_needs_human(clinic_id=clinic.pk, conversation_id=message.conversation_id)

    assert Conversation.objects.get().needs_human is False
