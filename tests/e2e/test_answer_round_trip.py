"""The first run's round trip over real HTTP: patient -> webhook -> bot -> 16 -> worker -> Meta -> statuses.

gunicorn answers the webhook and the API, `manage.py run_worker` applies Meta's
events, delivers them to the demo bot (devtools/demo_bot.py, in this process) and
sends the bot's answer to the simulated Meta (devtools/fake_graph.py), which posts
signed `sent`, `delivered` and `read` events to the number's webhook. The bot
answers through 16 with its key and the delivery's `webhook-id` as the
`Idempotency-Key`, so a redelivery of the patient's message texts the patient once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.demo_bot import DemoBot

from .conftest import create_throwaway_database, product_env
from .test_relay import APP_SECRET, patient_payload, post_webhook, start_connected_clinic, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN = "admin@answer.example"


@pytest.fixture
def round_trip(processes, tmp_path) -> Iterator[dict[str, Any]]:
    db = create_throwaway_database("clinics_answer_e2e", tmp_path)
    bot: DemoBot | None = None
    try:
        env = product_env(DATABASE_URL=db.url, BOT_URL_ALLOW_PRIVATE="true", LOG_LEVEL="INFO")
        stack = start_connected_clinic(
            processes, env, admin=ADMIN, name="Clínica Respuesta", phone="77001133"
        )
        fake, origin, api = stack["fake"], stack["origin"], stack["api"]
        clinic_id, pnid = stack["clinic_id"], stack["pnid"]
        # The simulated Meta posts each accepted message's statuses to the number's webhook.
        requests.post(
            f"{fake}/_fake/webhook_target",
            json={
                "phone_number_id": pnid,
                "url": f"{origin}/whatsapp/webhook/{clinic_id}/",
                "app_secret": APP_SECRET,
            },
            timeout=5,
        ).raise_for_status()
        requests.post(f"{fake}/_fake/status_webhooks", json={"delays": [0.2, 0.4, 0.6]}, timeout=5)
        key = api.post(f"{origin}/api/clinics/bot/keys/", json={"name": "demo"}, timeout=30).json()["key"]
        (tmp_path / "bot-key").write_text(key + "\n")
        bot = DemoBot(0, secret_file=tmp_path / "bot-secret", api_url=origin, key_file=tmp_path / "bot-key")
        threading.Thread(target=bot.serve_forever, daemon=True).start()
        secret = api.put(f"{origin}/api/clinics/bot/", json={"url": bot.url}, timeout=30).json()["secret"]
        (tmp_path / "bot-secret").write_text(secret + "\n")
        assert api.post(f"{origin}/api/clinics/bot/test/", timeout=30).json() == {"status": "live"}
        switched = api.patch(f"{origin}/api/clinics/settings/", json={"bot_enabled": True}, timeout=30)
        assert switched.json()["bot_enabled"] is True, switched.text
        yield {
            "origin": origin,
            "api": api,
            "clinic_id": clinic_id,
            "pnid": pnid,
            "bot": bot,
            "fake": fake,
        }
    finally:
        if bot is not None:
            bot.shutdown()
            bot.server_close()
        processes.stop_all()
        db.drop()


def test_the_bots_answer_reaches_meta_once_and_its_statuses_come_back(round_trip):
    api, origin, bot, fake = round_trip["api"], round_trip["origin"], round_trip["bot"], round_trip["fake"]
    patient = patient_payload(round_trip["pnid"], ("Hola, ¿abren el sábado?", "wamid.e2e.answer.1"))
    assert post_webhook(round_trip, patient) == "received"

    def conversation() -> dict[str, Any] | None:
        results = api.get(f"{origin}/api/clinics/conversations/", timeout=30).json()["results"]
        return results[0] if results else None

    def answer() -> dict[str, Any] | None:
        found = conversation()
        if found is None:
            return None
        listed = api.get(f"{origin}/api/clinics/conversations/{found['id']}/messages/", timeout=30).json()
        outbound = [m for m in listed["results"] if m["direction"] == "out"]
        return outbound[0] if outbound and outbound[0]["status"] == "read" else None

    read = wait_until("the bot's answer read", answer)
    assert (read["text"], read["sent_by"]) == ("Recibido: Hola, ¿abren el sábado?", "bot")
    assert bot.replies[0]["status"] == 202
    sends = requests.get(f"{fake}/_fake/requests", params={"method": "POST", "path": "/messages"}, timeout=5)
    assert len(sends.json()) == 1

    # The bot's answer to a redelivery of that message (same webhook-id): 202 again, nothing more sent.
    first = next(r for r in bot.received if r["body"] and r["body"]["type"] == "message.received")
    bot.reply(first["webhook_id"], first["body"])
    assert [r["status"] for r in bot.replies] == [202, 202]
    assert len({r["webhook_id"] for r in bot.replies}) == 1
    time.sleep(2)  # room for a wrong second send to show
    sends = requests.get(f"{fake}/_fake/requests", params={"method": "POST", "path": "/messages"}, timeout=5)
    assert len(sends.json()) == 1
    # Each status change of the answer was forwarded to the bot, signed.
    statuses = [r for r in bot.received if r["body"] and r["body"]["type"] == "message.status"]
    assert "read" in {r["body"]["message"]["status"] for r in statuses}
    assert all(r["verified"] for r in bot.received)
