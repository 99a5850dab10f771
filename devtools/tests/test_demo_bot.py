"""The demo bot: it accepts what the product signs, refuses anything else, and the demo clinic is wired to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from django.core.management import call_command

from clinics.models import Clinic, User
from devtools.demo_bot import DemoBot, verify
from messaging.models import BotEndpoint
from messaging.signing import new_signing_secret, webhook_headers


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
