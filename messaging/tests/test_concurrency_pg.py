"""On PostgreSQL's real row locks: parallel workers number one patient's messages without gaps, and no
row stays locked while a bot is answering."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.db import connections, transaction

from messaging.bot_endpoint import bot_endpoint_ping, bot_endpoint_save_url
from messaging.models import BotDelivery, BotEndpoint, Conversation, Message
from messaging.outbox import bot_delivery_attempt
from messaging.services import messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of
from whatsapp.tests.test_concurrency_pg import in_parallel

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TEXT = load("webhook_messages_text.json")


def message_value(n: int) -> dict[str, Any]:
    value = value_of(TEXT)
    value["messages"][0]["id"] = f"wamid.parallel-{n}"
    value["messages"][0]["timestamp"] = str(1749416383 + n)
    value["messages"][0]["text"]["body"] = f"message {n}"
    return value


def test_parallel_messages_of_one_new_patient_are_numbered_without_gaps(clinic):
    count = 8
    # Meta's duplicates of two of them arrive at the same moment as well.
    values = [message_value(n) for n in range(count)] + [message_value(0), message_value(1)]

    results = in_parallel(
        [
            lambda value=value: messaging_record_inbound(
                clinic_id=clinic.pk, phone_number_id=PNID, value=value, forward=True
            )
            for value in values
        ]
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(len(r) for r in results) == count
    conversation = Conversation.objects.get()
    sequences = sorted(Message.objects.values_list("sequence", flat=True))
    assert sequences == list(range(1, count + 1))
    assert conversation.last_sequence == count
    assert Message.objects.values("wamid").distinct().count() == count
    assert BotDelivery.objects.count() == count
    assert {d.message.sequence for d in BotDelivery.objects.select_related("message")} == set(
        range(1, count + 1)
    )


def test_no_row_is_locked_while_the_bot_is_answering(clinic, bot_server):
    bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url)
    BotEndpoint.objects.update(status="live")
    messaging_record_inbound(clinic_id=clinic.pk, phone_number_id=PNID, value=message_value(0), forward=True)
    seen: list[str] = []

    def answer(_request):
        # Another connection takes every row the delivery touches, without waiting: a lock held
        # by the sender during the POST would make this fail at once.
        try:
            with transaction.atomic():
                list(BotDelivery.objects.select_for_update(nowait=True))
                list(BotEndpoint.objects.select_for_update(nowait=True))
                list(Conversation.objects.select_for_update(nowait=True))
                list(Message.objects.select_for_update(nowait=True))
            seen.append("free")
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            seen.append(repr(exc))
        finally:
            connections.close_all()
        return 200, {}, b""

    bot_server.answer = answer
    assert bot_delivery_attempt(delivery_id=str(BotDelivery.objects.get().pk)) == "delivered"
    assert bot_endpoint_ping(clinic_id=clinic.pk).live

    assert seen == ["free", "free"]
    assert BotDelivery.objects.get().public_state == "delivered"


def test_parallel_workers_deliver_each_conversation_in_order_one_at_a_time(clinic, bot_server):
    """Four workers, two patients: each patient's messages reach the bot in sequence order, one at a time."""
    bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url)
    BotEndpoint.objects.update(status="live")
    for n in range(6):
        messaging_record_inbound(
            clinic_id=clinic.pk, phone_number_id=PNID, value=message_value(n), forward=True
        )
    for n in range(3):
        other = message_value(100 + n)
        other["messages"][0]["from"] = other["contacts"][0]["wa_id"] = "50370000009"
        messaging_record_inbound(clinic_id=clinic.pk, phone_number_id=PNID, value=other, forward=True)
    in_flight: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()

    def answer(request):
        conversation = json.loads(request.body)["conversation"]["id"]
        with lock:
            in_flight[conversation] = in_flight.get(conversation, 0) + 1
            if in_flight[conversation] > 1:
                overlaps.append(conversation)
        time.sleep(0.05)
        with lock:
            in_flight[conversation] -= 1
        return 200, {}, b"ok"

    bot_server.answer = answer
    any_row = str(BotDelivery.objects.values_list("pk", flat=True).first())

    def worker() -> int:
        done = 0
        for _turn in range(40):
            if bot_delivery_attempt(delivery_id=any_row) == "delivered":
                done += 1
        return done

    results = in_parallel([worker for _ in range(4)])

    assert sum(results) == 9 and overlaps == []
    bodies = [json.loads(r.body) for r in bot_server.received]
    for wa_id in ("16505551234", "50370000009"):
        sequences = [b["message"]["sequence"] for b in bodies if b["conversation"]["wa_id"] == wa_id]
        assert sequences == sorted(sequences) and len(sequences) == len(set(sequences))
    assert set(BotDelivery.objects.values_list("state", flat=True)) == {"done"}
