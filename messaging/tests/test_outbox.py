"""Deliveries to the bot: the body, one signed attempt against a real server, and the row it leaves."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.bot_endpoint import bot_endpoint_rotate_secret, bot_endpoint_save_url
from messaging.exceptions import BotDeliveryNotDeadError
from messaging.models import BotDelivery, BotEndpoint, Conversation, Message
from messaging.outbox import (
    BOT_DELIVERIES,
    Outcome,
    bot_delivery_attempt,
    bot_delivery_record_outcome,
    bot_delivery_redeliver,
    deliver_one,
    delivery_body,
    next_attempt_at,
)
from messaging.selectors import bot_delivery_counts
from messaging.services import messaging_record_inbound, messaging_record_status
from messaging.tests.conftest import PNID, answered_patient, load, value_of
from messaging.tests.test_signing import spec_verify

pytestmark = pytest.mark.django_db

TEXT = load("webhook_messages_text.json")


@pytest.fixture
def live_bot(clinic, bot_server):
    """The clinic's bot endpoint, live, pointing at the test server; returns (server, secret)."""
    secret = bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url).new_secret
    BotEndpoint.objects.filter(clinic=clinic).update(status="live")
    return bot_server, secret


@pytest.fixture
def delivery(clinic) -> BotDelivery:
    messaging_record_inbound(clinic_id=clinic.pk, phone_number_id=PNID, value=value_of(TEXT), forward=True)
    return BotDelivery.objects.get()


def claimed(delivery: BotDelivery) -> BotDelivery:
    """The row as a worker holds it: claimed by the outbox loop, this attempt counted."""
    row = BOT_DELIVERIES.claim(delivery.pk)
    assert row is not None and row.pk == delivery.pk
    return row


def attempt(delivery: BotDelivery) -> str:
    """One task's worth of work: claim, post, record."""
    return bot_delivery_attempt(delivery_id=str(delivery.pk))


def test_the_body_is_the_contracts_json(clinic, delivery):
    conversation = Conversation.objects.get()
    message = Message.objects.get()

    assert delivery_body(delivery) == {
        "type": "message.received",
        "clinic_id": str(clinic.pk),
        "conversation": {
            "id": str(conversation.pk),
            "wa_id": "16505551234",
            "user_id": None,
            "profile_name": "Sheena Nelson",
            "window_open_until": "2025-06-09T20:59:43Z",
            "needs_human": False,
            "last_message_at": "2025-06-08T20:59:43Z",
        },
        "message": {
            "id": str(message.pk),
            "wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            "direction": "in",
            "type": "text",
            "text": "Does it come in another color?",
            "media": None,
            "details": None,
            "sent_by": "patient",
            "status": None,
            "error": None,
            "created_at": "2025-06-08T20:59:43Z",
            "sequence": 1,
        },
    }


def test_a_status_event_reports_the_status_it_was_written_for(clinic):
    answered_patient(clinic, wamid="wamid.out")
    for status in ("sent", "read"):
        entry = {
            "id": "wamid.out",
            "status": status,
            "timestamp": "1750030073",
            "recipient_id": "16505551234",
        }
        messaging_record_status(clinic_id=clinic.pk, phone_number_id=PNID, status=entry, forward=True)

    sent_event = BotDelivery.objects.get(event_status="sent")
    body = delivery_body(sent_event)
    assert body["type"] == "message.status"
    assert (body["message"]["status"], body["message"]["direction"], body["message"]["sequence"]) == (
        "sent",
        "out",
        2,
    )


def test_an_acknowledged_delivery_is_signed_verifiable_and_recorded(clinic, delivery, live_bot):
    server, secret = live_bot
    delivery = claimed(delivery)

    outcome = deliver_one(delivery)

    assert (outcome.kind, outcome.status_code, outcome.retry_at) == ("acknowledged", 200, None)
    [request] = server.received
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert spec_verify(secret, request.headers, request.body)
    assert json.loads(request.body) == delivery_body(delivery)
    assert BotDelivery.objects.get().state == "processing"  # deliver_one changes nothing

    bot_delivery_record_outcome(delivery=delivery, outcome=outcome)

    row = BotDelivery.objects.get()
    assert (row.state, row.public_state, row.attempts, row.last_status_code, row.last_error) == (
        "done",
        "delivered",
        1,
        200,
        "",
    )
    assert row.delivered_at == outcome.attempted_at == row.first_attempt_at
    assert row.next_attempt_at is None and row.lease_expires_at is None
    endpoint = BotEndpoint.objects.get()
    assert endpoint.last_success_at == outcome.attempted_at and endpoint.failing_since is None


def test_a_retry_keeps_the_same_webhook_id_with_a_fresh_timestamp(clinic, delivery, live_bot):
    server, secret = live_bot
    server.answer = lambda _r: (503, {}, b"")
    assert attempt(delivery).startswith("retrying in ")
    retried = BotDelivery.objects.get()
    assert retried.next_attempt_at == retried.first_attempt_at + timedelta(seconds=5)
    server.answer = lambda _r: (200, {}, b"")
    BotDelivery.objects.update(next_attempt_at=timezone.now())  # its time has come
    assert attempt(delivery) == "delivered"

    first, second = server.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.webhook_id
    assert first.body == second.body
    assert spec_verify(secret, second.headers, second.body)
    row = BotDelivery.objects.get()
    assert (row.state, row.attempts) == ("done", 2)


def test_a_failure_is_retried_after_what_retry_after_asks(clinic, delivery, live_bot):
    server, _secret = live_bot
    server.answer = lambda _r: (429, {"Retry-After": "90"}, b"Patient said: Does it come in another color?")
    delivery = claimed(delivery)

    outcome = deliver_one(delivery)

    assert (outcome.kind, outcome.status_code, outcome.error) == ("retry", 429, "HTTP 429")
    assert outcome.retry_at == outcome.attempted_at + timedelta(seconds=90)
    bot_delivery_record_outcome(delivery=delivery, outcome=outcome)
    row = BotDelivery.objects.get()
    assert (row.state, row.public_state, row.attempts, row.last_status_code) == (
        "retrying",
        "pending",
        1,
        429,
    )
    assert row.next_attempt_at == outcome.retry_at
    assert row.first_attempt_at == outcome.attempted_at
    assert "color" not in row.last_error  # the bot's answer, which may quote the patient, is not kept
    assert BotEndpoint.objects.get().failing_since == outcome.attempted_at


def test_a_bot_that_cannot_be_reached_is_retried_on_schedule(clinic, delivery, live_bot, settings):
    server, _secret = live_bot
    settings.BOT_URL_ALLOW_PRIVATE = False

    outcome = deliver_one(claimed(delivery))

    assert outcome.kind == "retry" and outcome.error.startswith("refused_address")
    assert outcome.retry_at == outcome.attempted_at + timedelta(seconds=5)
    assert server.received == []


def test_without_a_bot_url_the_delivery_waits(clinic, delivery):
    outcome = deliver_one(claimed(delivery))
    assert (outcome.kind, outcome.error) == ("retry", "no bot URL")


def test_the_schedule_is_5s_30s_2m_10m_30m_then_hourly_for_24_hours():
    first = timezone.now()
    delays = []
    now = first
    attempt = 1
    while (when := next_attempt_at(attempt=attempt, first_attempt_at=first, now=now)) is not None:
        delays.append(int((when - now).total_seconds()))
        now, attempt = when, attempt + 1
    assert delays[:6] == [5, 30, 120, 600, 1800, 3600]
    assert set(delays[5:]) == {3600}
    assert now <= first + timedelta(hours=24) < now + timedelta(hours=1)
    # Retry-After waits longer, never shorter, and never past the 24 hours.
    assert next_attempt_at(
        attempt=1, first_attempt_at=first, now=first, retry_after_seconds=600
    ) == first + timedelta(seconds=600)
    assert next_attempt_at(
        attempt=3, first_attempt_at=first, now=first, retry_after_seconds=1
    ) == first + timedelta(seconds=120)
    late = first + timedelta(hours=23, minutes=59)
    assert next_attempt_at(attempt=20, first_attempt_at=first, now=late) is None


def test_after_24_hours_of_failures_the_delivery_is_dead(clinic, delivery, live_bot):
    server, _secret = live_bot
    server.answer = lambda _r: (500, {}, b"")
    started = timezone.now() - timedelta(hours=23, minutes=30)
    BotDelivery.objects.filter(pk=delivery.pk).update(first_attempt_at=started, attempts=11)
    delivery = claimed(delivery)

    outcome = deliver_one(delivery)
    bot_delivery_record_outcome(delivery=delivery, outcome=outcome)

    assert outcome.kind == "dead" and outcome.retry_at is None
    row = BotDelivery.objects.get()
    assert (row.public_state, row.attempts, row.first_attempt_at, row.next_attempt_at) == (
        "dead",
        12,
        started,
        None,
    )
    # A finished row is not rewritten by a late outcome.
    bot_delivery_record_outcome(
        delivery=delivery,
        outcome=Outcome(kind=Outcome.ACKNOWLEDGED, attempted_at=timezone.now(), status_code=200),
    )
    assert BotDelivery.objects.get().public_state == "dead"


def test_ten_minutes_of_failures_make_the_endpoint_failing_and_a_person_needed(clinic, delivery, live_bot):
    server, _secret = live_bot
    server.answer = lambda _r: (500, {}, b"")
    BotEndpoint.objects.update(failing_since=timezone.now() - timedelta(minutes=11))

    attempt(delivery)

    assert BotEndpoint.objects.get().status == "failing"
    assert Conversation.objects.get().needs_human is True

    server.answer = lambda _r: (204, {}, b"")
    BotDelivery.objects.update(next_attempt_at=timezone.now())
    assert attempt(delivery) == "delivered"
    endpoint = BotEndpoint.objects.get()
    assert (endpoint.status, endpoint.failing_since) == ("live", None)


def test_failures_shorter_than_ten_minutes_keep_the_endpoint_live(clinic, delivery, live_bot):
    server, _secret = live_bot
    server.answer = lambda _r: (500, {}, b"")
    BotEndpoint.objects.update(failing_since=timezone.now() - timedelta(minutes=9))

    attempt(delivery)

    assert BotEndpoint.objects.get().status == "live"
    assert Conversation.objects.get().needs_human is False


def test_deliveries_after_a_rotation_carry_both_signatures(clinic, delivery, live_bot):
    server, old = live_bot
    new = bot_endpoint_rotate_secret(clinic_id=clinic.pk)

    assert deliver_one(claimed(delivery)).kind == "acknowledged"

    [request] = server.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert spec_verify(old, request.headers, request.body) and spec_verify(new, request.headers, request.body)


def test_a_dead_delivery_is_redelivered_with_its_id_and_a_fresh_day(clinic, other_clinic, delivery, live_bot):
    server, secret = live_bot
    BotDelivery.objects.filter(pk=delivery.pk).update(
        state="failed",
        attempts=12,
        first_attempt_at=timezone.now() - timedelta(hours=25),
        last_error="HTTP 500",
    )
    assert bot_delivery_counts(clinic_id=clinic.pk) == {"pending": 0, "dead": 1}
    with pytest.raises(BotDelivery.DoesNotExist):
        bot_delivery_redeliver(clinic_id=other_clinic.pk, delivery_id=delivery.pk)

    bot_delivery_redeliver(clinic_id=clinic.pk, delivery_id=delivery.pk)

    row = BotDelivery.objects.get()
    assert (row.state, row.attempts, row.first_attempt_at) == ("queued", 0, None)
    assert bot_delivery_counts(clinic_id=clinic.pk) == {"pending": 1, "dead": 0}
    assert attempt(row) == "delivered"
    assert BotDelivery.objects.get().public_state == "delivered"
    assert server.received[0].headers["webhook-id"] == delivery.webhook_id
    assert spec_verify(secret, server.received[0].headers, server.received[0].body)
    with pytest.raises(BotDeliveryNotDeadError) as excinfo:
        bot_delivery_redeliver(clinic_id=clinic.pk, delivery_id=delivery.pk)
    assert excinfo.value.state == "delivered"
