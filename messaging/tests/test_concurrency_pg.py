"""Several workers applying one patient's messages at once, on PostgreSQL's real row locks."""

from __future__ import annotations

from typing import Any

import pytest

from messaging.models import BotDelivery, Conversation, Message
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
