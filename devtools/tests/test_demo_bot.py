"""The demo bot: it accepts what the product signs, refuses anything else, and the demo clinic is wired to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from clinics.bot_keys import bot_key_is_current, bot_key_issue
from clinics.models import BotKey, Clinic, User
from devtools.demo_bot import DemoBot, reply_request, verify
from messaging.models import BotEndpoint, Conversation, Message, OutboundSend
from messaging.signing import new_signing_secret, webhook_headers
from whatsapp.tests.helpers import arrange_active


@pytest.fixture
def demo_bot(tmp_path) -> Iterator[DemoBot]:
    bot = DemoBot(0, secret_file=tmp_path / "secret")
    thread = threading.Thread(target=bot.serve_forever, daemon=True)
    thread.start()
    yield bot
    bot.shutdown()
    bot.server_close()


def signed(secret: str, body: bytes, *, webhook_id: str = "evt_1", at: int | None = None) -> dict[str, str]:
    return webhook_headers([secret], webhook_id=webhook_id, timestamp=at or int(time.time()), body=body)


def test_it_verifies_the_products_signature_and_nothing_else():
    secret, other = new_signing_secret(), new_signing_secret()
    body = b'{"type":"ping"}'
    assert verify([secret], signed(secret, body), body)
    assert verify([other, secret], signed(secret, body), body)  # during a rotation
    assert not verify([other], signed(secret, body), body)
    assert not verify([secret], signed(secret, body), body + b" ")
    assert not verify([secret], signed(secret, body, at=int(time.time()) - 301), body)


def test_it_answers_200_to_a_signed_delivery_and_401_to_a_forged_one(demo_bot, tmp_path):
    secret = new_signing_secret()
    (tmp_path / "secret").write_text(secret + "\n")
    body = json.dumps({"type": "message.received", "message": {"sequence": 1}}).encode()

    good = requests.post(demo_bot.url, data=body, headers=signed(secret, body), timeout=5)
    again = requests.post(demo_bot.url, data=body, headers=signed(secret, body), timeout=5)
    forged = requests.post(demo_bot.url, data=body, headers=signed(new_signing_secret(), body), timeout=5)

    assert (good.status_code, again.status_code, forged.status_code) == (200, 200, 401)
    received = requests.get(demo_bot.url.replace("/hook", "/_bot/received"), timeout=5).json()
    assert [(r["verified"], r["duplicate"]) for r in received] == [
        (True, False),
        (True, True),
        (False, False),
    ]


@pytest.mark.django_db
def test_ensure_demo_clinic_wires_the_demo_clinic_to_the_bot(demo_bot, tmp_path, settings, monkeypatch):
    settings.DEBUG = True
    settings.BOT_URL_ALLOW_PRIVATE = True
    monkeypatch.setenv("DEMO_PASSWORD", "demo-password-123")
    secret_file = tmp_path / "secret"

    call_command("ensure_demo_clinic", "--bot-url", demo_bot.url, "--bot-secret-file", str(secret_file))

    clinic = Clinic.objects.get(members__email="admin@demo.clinic")
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert (clinic.bot_enabled, endpoint.status, endpoint.url) == (True, "live", demo_bot.url)
    assert secret_file.read_text().strip() == endpoint.secret
    assert [r["verified"] for r in demo_bot.received] == [True]  # the ping
    assert User.objects.filter(email="admin@demo.clinic").exists()

    # A second start keeps the secret the bot already has.
    call_command("ensure_demo_clinic", "--bot-url", demo_bot.url, "--bot-secret-file", str(secret_file))
    assert secret_file.read_text().strip() == BotEndpoint.objects.get().secret


def _wait_for_replies(bot: DemoBot, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(bot.replies) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(bot.replies)


def _patient_said(conversation: Conversation, text: str) -> bytes:
    return json.dumps(
        {
            "type": "message.received",
            "clinic_id": str(conversation.clinic_id),
            "conversation": {"id": str(conversation.pk), "wa_id": conversation.wa_id},
            "message": {"direction": "in", "type": "text", "text": text, "sequence": 1},
        }
    ).encode()


@pytest.mark.django_db(transaction=True)
def test_it_answers_each_patient_message_through_16_once_per_delivery(clinic, live_server, tmp_path):
    account = arrange_active(clinic)
    conversation = Conversation.objects.create(
        clinic=clinic,
        phone_number_id=account.phone_number_id,
        wa_id="50370001111",
        window_open_until=timezone.now() + timedelta(hours=1),
    )
    _bot_key, key = bot_key_issue(clinic=clinic, name="demo")
    (tmp_path / "key").write_text(key + "\n")
    secret = new_signing_secret()
    bot = DemoBot(0, secrets_=[secret], api_url=live_server.url, key_file=tmp_path / "key")
    threading.Thread(target=bot.serve_forever, daemon=True).start()
    try:
        body = _patient_said(conversation, "¿Tienen cita el lunes?")
        for _delivery in range(2):  # the delivery, then a redelivery with the same webhook-id
            answer = requests.post(
                bot.url, data=body, headers=signed(secret, body, webhook_id="evt_7"), timeout=5
            )
            assert answer.status_code == 200
            _wait_for_replies(bot, _delivery + 1)
        forged = requests.post(
            bot.url, data=body, headers=signed(new_signing_secret(), body, webhook_id="evt_8"), timeout=5
        )
        time.sleep(0.3)
    finally:
        bot.shutdown()
        bot.server_close()

    assert forged.status_code == 401
    assert bot.replies == [{"webhook_id": "evt_7", "status": 202}, {"webhook_id": "evt_7", "status": 202}]
    sent = Message.objects.get(direction="out")
    assert (sent.text, sent.sent_by, sent.conversation_id) == (
        "Recibido: ¿Tienen cita el lunes?",
        "bot",
        conversation.pk,
    )
    assert OutboundSend.objects.get().idempotency_key == "evt_7"


def test_it_answers_only_a_patients_message():
    said = {"type": "message.received", "conversation": {"wa_id": "503"}, "message": {"direction": "in"}}
    assert reply_request(said | {"message": {"direction": "in", "type": "text", "text": "Hola"}}) == {
        "to": "503",
        "text": "Recibido: Hola",
    }
    assert reply_request(said)["text"] == "Recibido: [None]"
    assert reply_request({"type": "message.status", "conversation": {"wa_id": "503"}}) is None
    assert reply_request(said | {"message": {"direction": "out"}}) is None
    assert reply_request(said | {"conversation": {"wa_id": None}}) is None


@pytest.mark.django_db
def test_ensure_demo_clinic_gives_the_bot_a_key_it_keeps(demo_bot, tmp_path, settings, monkeypatch):
    settings.DEBUG = True
    settings.BOT_URL_ALLOW_PRIVATE = True
    monkeypatch.setenv("DEMO_PASSWORD", "demo-password-123")
    key_file = tmp_path / "key"
    arguments = ["--bot-url", demo_bot.url, "--bot-secret-file", str(tmp_path / "secret")]

    call_command("ensure_demo_clinic", *arguments, "--bot-key-file", str(key_file))
    first = key_file.read_text().strip()
    clinic = Clinic.objects.get(members__email="admin@demo.clinic")
    assert bot_key_is_current(clinic=clinic, key=first)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    call_command("ensure_demo_clinic", *arguments, "--bot-key-file", str(key_file))
    assert key_file.read_text().strip() == first and BotKey.objects.count() == 1

    # A revoked key is replaced by a new one.
    BotKey.objects.all().delete()
    call_command("ensure_demo_clinic", *arguments, "--bot-key-file", str(key_file))
    assert key_file.read_text().strip() != first
    assert bot_key_is_current(clinic=clinic, key=key_file.read_text().strip())
