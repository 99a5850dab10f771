"""rotate_encryption_keys reaches the patient data of conversations, messages and the bot's secrets."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from common.crypto import generate_key_line
from common.tests.test_encryption import raw_value
from messaging.bot_endpoint import bot_endpoint_rotate_secret
from messaging.models import BotEndpoint, Conversation, Message
from messaging.services import messaging_record_inbound
from messaging.tests.conftest import PNID, load, value_of

pytestmark = pytest.mark.django_db


def test_rotation_re_encrypts_messages_names_and_bot_secrets(clinic, settings):
    old, new = generate_key_line("old2025"), generate_key_line("new2026")
    # The clinic's own secrets were written with the test keys: they stay readable throughout.
    test_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    with override_settings(FIELD_ENCRYPTION_KEYS=[old, *test_keys]):
        [image, *_rest] = messaging_record_inbound(
            clinic_id=clinic.pk,
            phone_number_id=PNID,
            value=value_of(load("webhook_messages_every_type.json")),
            forward=True,
        )
        bot_endpoint_rotate_secret(clinic_id=clinic.pk)
        secret = bot_endpoint_rotate_secret(clinic_id=clinic.pk)
    conversation = Conversation.objects.get()
    endpoint = BotEndpoint.objects.get()
    columns = [
        (Message, image.pk, "text"),
        (Message, image.pk, "media"),
        (Conversation, conversation.pk, "profile_name"),
        (BotEndpoint, endpoint.pk, "secret"),
        (BotEndpoint, endpoint.pk, "previous_secret"),
    ]
    assert all(raw_value(*c).startswith("enc:v1:old2025:") for c in columns)

    with override_settings(FIELD_ENCRYPTION_KEYS=[new, old, *test_keys]):
        call_command("rotate_encryption_keys", stdout=StringIO())
    with override_settings(FIELD_ENCRYPTION_KEYS=[new]):
        assert all(raw_value(*c).startswith("enc:v1:new2026:") for c in columns)
        assert Message.objects.get(pk=image.pk).text == "The rash on my arm"
        assert Conversation.objects.get().profile_name == "Sheena Nelson"
        assert BotEndpoint.objects.get().secret == secret
        call_command("rotate_encryption_keys", "--check", stdout=StringIO())
