"""messaging_delete_expired: messages older than MESSAGE_RETENTION_DAYS go, and conversations left empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from messaging.models import BotDelivery, Conversation, Message
from messaging.services import messaging_delete_expired, messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of

pytestmark = pytest.mark.django_db

TEXT = load("webhook_messages_text.json")
SENT_AT = datetime.fromtimestamp(1749416383, tz=UTC)  # the payload's timestamp


def inbound(clinic, *, wa_id: str, wamid: str, at: datetime) -> None:
    value = value_of(TEXT)
    value["contacts"][0]["wa_id"] = value["messages"][0]["from"] = wa_id
    value["messages"][0]["id"] = wamid
    value["messages"][0]["timestamp"] = str(int(at.timestamp()))
    messaging_record_inbound(clinic_id=clinic.pk, phone_number_id=PNID, value=value, forward=True)


def test_old_messages_and_their_empty_conversations_are_deleted(clinic, settings):
    settings.MESSAGE_RETENTION_DAYS = 30
    now = SENT_AT + timedelta(days=40)
    # A patient who wrote 40 days ago only; one who wrote then and again yesterday.
    inbound(clinic, wa_id="50370000001", wamid="wamid.old-only", at=SENT_AT)
    inbound(clinic, wa_id="50370000002", wamid="wamid.old", at=SENT_AT)
    inbound(clinic, wa_id="50370000002", wamid="wamid.recent", at=now - timedelta(days=1))
    Conversation.objects.update(created_at=SENT_AT)

    deleted = messaging_delete_expired(now=now, batch_size=1)

    assert deleted == (2, 1)
    assert list(Message.objects.values_list("wamid", flat=True)) == ["wamid.recent"]
    [kept] = Conversation.objects.all()
    assert kept.wa_id == "50370000002"
    assert kept.last_sequence == 2  # numbering goes on from where it was
    assert list(BotDelivery.objects.values_list("message__wamid", flat=True)) == ["wamid.recent"]


def test_nothing_younger_than_the_retention_is_touched(clinic, settings):
    settings.MESSAGE_RETENTION_DAYS = 365
    inbound(clinic, wa_id="50370000001", wamid="wamid.a", at=SENT_AT)

    assert messaging_delete_expired(now=SENT_AT + timedelta(days=364)) == (0, 0)
    assert Message.objects.count() == 1 and Conversation.objects.count() == 1


def test_the_default_retention_is_a_year(settings):
    from django.conf import settings as django_settings

    assert django_settings.MESSAGE_RETENTION_DAYS == 365
