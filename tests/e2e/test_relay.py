"""A patient's message from Meta's webhook to the clinic's bot, over real HTTP with a real worker.

gunicorn answers the webhook, `manage.py db_worker` applies the event and delivers it,
and a real bot on 127.0.0.1 (devtools/demo_bot.py, in this process) records each
request: it arrives signed and verifiable, one patient's messages in order, once per
`webhook-id` (Meta's duplicate adds nothing); a bot answering 500 gets it again, then
it is dead and listed by 18, and redelivered with the same id; with the bot off the
conversation needs a person. The retry schedule is shrunk (BOT_RETRY_SCALE) so that
24 hours of retries take seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from devtools.demo_bot import DemoBot

from .conftest import create_throwaway_database, product_env, run_manage

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "e2e-" + secrets.token_urlsafe(16)
ADMIN = "admin@relay.example"
WABA = "102290129340398"
APP_SECRET = "e2e-relay-secret-" + secrets.token_hex(8)
PATIENT = "50370000001"
# 24 hours of retries in about 17 seconds, each pause at least a second.
RETRY_SCALE = "0.0002"


@pytest.fixture
def bot(tmp_path) -> Iterator[DemoBot]:
    server = DemoBot(0, secret_file=tmp_path / "bot-secret")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def start_connected_clinic(
    processes: Any, env: dict[str, str], *, admin: str, name: str, phone: str
) -> dict[str, Any]:
    """The fake Meta, a migrated database, one clinic with its admin signed in to the API, gunicorn,
    the worker, and the clinic's number already on the Cloud API (`active`), with APP_SECRET."""
    _fake, fake = processes.fake_graph(env)
    env["META_GRAPH_URL"] = f"{fake}/v26.0"
    run_manage(env, "migrate", "--no-input")
    created = run_manage(
        {**env, "CLINIC_USER_PASSWORD": PASSWORD},
        "create_clinic",
        name,
        "--admin-email",
        admin,
    )
    clinic_id = next(line.split(":", 1)[1].strip() for line in created.stdout.splitlines() if "id:" in line)
    _server, origin = processes.gunicorn(env)
    processes.worker(env)
    api = requests.Session()
    token = api.post(f"{origin}/api/auth/token/", json={"email": admin, "password": PASSWORD}, timeout=30)
    api.headers["Authorization"] = f"Token {token.json()['token']}"
    number = requests.post(
        f"{fake}/_fake/numbers",
        json={"waba_id": WABA, "cc": "503", "phone_number": phone, "status": "CONNECTED"},
        timeout=5,
    ).json()
    connected = api.put(
        f"{origin}/api/clinics/whatsapp/",
        json={
            "phoneNumberId": number["id"],
            "businessAccountId": WABA,
            "accessToken": "EAAE2E" + secrets.token_hex(40),
            "verifyToken": "e2e-verify",
            "appSecret": APP_SECRET,
        },
        timeout=30,
    ).json()
    assert connected["status"] == "active", connected
    return {"origin": origin, "api": api, "clinic_id": clinic_id, "pnid": number["id"], "fake": fake}


@pytest.fixture
def relay(processes, tmp_path, bot):
    db = create_throwaway_database("clinics_relay", tmp_path)
    try:
        env = product_env(
            DATABASE_URL=db.url, BOT_URL_ALLOW_PRIVATE="true", BOT_RETRY_SCALE=RETRY_SCALE, LOG_LEVEL="INFO"
        )
        stack = start_connected_clinic(processes, env, admin=ADMIN, name="Clínica Relay", phone="77001122")
        yield {**stack, "bot": bot}
    finally:
        processes.stop_all()
        db.drop()


def patient_payload(pnid: str, *texts_and_ids: tuple[str, str]) -> dict[str, Any]:
    """Meta's `messages` webhook: the patient's texts, in order, with their wamids."""
    now = int(time.time())
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "50377001122", "phone_number_id": pnid},
                            "contacts": [{"profile": {"name": "Paciente E2E"}, "wa_id": PATIENT}],
                            "messages": [
                                {
                                    "from": PATIENT,
                                    "id": wamid,
                                    "timestamp": str(now),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                                for text, wamid in texts_and_ids
                            ],
                        },
                    }
                ],
            }
        ],
    }


def post_webhook(relay: dict[str, Any], payload: dict[str, Any]) -> str:
    body = json.dumps(payload).encode("ascii")
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = requests.post(
        f"{relay['origin']}/whatsapp/webhook/{relay['clinic_id']}/",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def received_texts(bot: DemoBot) -> list[tuple[str, int, str, bool]]:
    """(webhook-id, sequence, text, acknowledged) of each message.received the bot got."""
    return [
        (r["webhook_id"], r["body"]["message"]["sequence"], r["body"]["message"]["text"], r["acknowledged"])
        for r in list(bot.received)
        if r["body"] and r["body"]["type"] == "message.received"
    ]


def test_a_patients_messages_reach_the_bot_signed_in_order_once_then_retries_dead_letter_and_bot_off(relay):
    api, origin, bot, pnid = relay["api"], relay["origin"], relay["bot"], relay["pnid"]
    secret = api.put(f"{origin}/api/clinics/bot/", json={"url": bot.url}, timeout=30).json()["secret"]
    (bot.secret_file).write_text(secret + "\n")
    assert api.post(f"{origin}/api/clinics/bot/test/", timeout=30).json() == {"status": "live"}
    switched = api.patch(f"{origin}/api/clinics/settings/", json={"bot_enabled": True}, timeout=30)
    assert switched.json()["bot_enabled"] is True, switched.text

    # Three messages of one patient: two in one delivery, one in the next; then Meta's duplicates.
    first = patient_payload(pnid, ("Hola", "wamid.e2e.1"), ("¿Tienen cita mañana?", "wamid.e2e.2"))
    assert post_webhook(relay, first) == "received"
    assert post_webhook(relay, patient_payload(pnid, ("A las 9, por favor", "wamid.e2e.3"))) == "received"
    assert post_webhook(relay, first) == "duplicate"  # the same delivery again
    batched = patient_payload(
        pnid, ("¿Tienen cita mañana?", "wamid.e2e.2"), ("A las 9, por favor", "wamid.e2e.3")
    )
    assert post_webhook(relay, batched) == "received"  # the same messages in another delivery

    wait_until("three acknowledged deliveries", lambda: sum(r[3] for r in received_texts(bot)) >= 3)
    time.sleep(2)  # room for a wrong second delivery to show
    got = received_texts(bot)
    assert [(seq, text) for _id, seq, text, _ok in got] == [
        (1, "Hola"),
        (2, "¿Tienen cita mañana?"),
        (3, "A las 9, por favor"),
    ]
    assert len({webhook_id for webhook_id, *_rest in got}) == 3
    assert all(r["verified"] for r in bot.received)

    # The bot fails: the delivery comes again with the same id, then is dead and listed by 18.
    bot.status = 500
    assert post_webhook(relay, patient_payload(pnid, ("¿Hay alguien?", "wamid.e2e.4"))) == "received"
    wait_until("two attempts of the 4th", lambda: len([r for r in received_texts(bot) if r[1] == 4]) >= 2)
    dead = wait_until(
        "the 4th listed dead",
        lambda: api.get(f"{origin}/api/clinics/bot/deliveries/", params={"state": "dead"}, timeout=30).json()[
            "results"
        ],
    )
    attempts = [r for r in received_texts(bot) if r[1] == 4]
    assert len({r[0] for r in attempts}) == 1 and dead[0]["webhook_id"] == attempts[0][0]
    assert dead[0]["attempts"] == len(attempts) >= 3 and dead[0]["last_status_code"] == 500
    # Signed afresh at each attempt, each one verifiable.
    fourth = [r for r in bot.received if r["webhook_id"] == attempts[0][0]]
    assert len({r["timestamp"] for r in fourth}) >= 2 and all(r["verified"] for r in fourth)

    bot.status = 200
    redelivered = api.post(f"{origin}/api/clinics/bot/deliveries/{dead[0]['id']}/redeliver/", timeout=30)
    assert redelivered.status_code == 200 and redelivered.json()["state"] == "pending"
    wait_until("the redelivery acknowledged", lambda: any(r[1] == 4 and r[3] for r in received_texts(bot)))
    assert api.get(f"{origin}/api/clinics/bot/", timeout=30).json()["dead"] == 0

    # The bot off: nothing forwarded, the conversation needs a person.
    before = len(bot.received)
    switched = api.patch(f"{origin}/api/clinics/settings/", json={"bot_enabled": False}, timeout=30)
    assert switched.json()["bot_enabled"] is False, switched.text
    assert post_webhook(relay, patient_payload(pnid, ("¿Me llaman?", "wamid.e2e.5"))) == "received"

    def needing_a_person() -> Any:
        [conversation] = api.get(f"{origin}/api/clinics/conversations/", timeout=30).json()["results"]
        return conversation if conversation["needs_human"] else None

    conversation = wait_until("the conversation needs a person", needing_a_person)
    assert conversation["last_message"]["text"] == "¿Me llaman?"
    assert conversation["last_message"]["sequence"] == 5
    time.sleep(1)
    assert len(bot.received) == before
