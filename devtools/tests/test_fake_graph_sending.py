"""The fake Graph server's sending side: messages accepted with a wamid, templates paged, signed status events."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devtools.fake_graph import STATUS_POSTERS
from devtools.tests.conftest import TOKEN, WABA, control

APP_SECRET = "fake-app-secret-for-statuses"


@pytest.fixture
def number(fake):
    return fake.graph.create_number(
        {
            "waba_id": WABA,
            "cc": "503",
            "phone_number": "77654321",
            "verified_name": "Clínica",
            "status": "CONNECTED",
        }
    )


@pytest.fixture
def receiver():
    """A webhook endpoint on 127.0.0.1 that keeps what it received and whether the signature matched."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            received.append(
                {"signed": self.headers["X-Hub-Signature-256"] == expected, "body": json.loads(body)}
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhook", received
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def _webhook_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A webhook endpoint on 127.0.0.1 answered by `handler`: its URL, while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhook"
    finally:
        server.shutdown()
        server.server_close()


def _wait_for(received: list[Any], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_it_lists_every_template_over_several_pages(client):
    templates = client.list_templates(WABA)

    assert [(t.name, t.language, t.status, t.params) for t in templates] == [
        ("recordatorio_cita", "es", "APPROVED", 2),
        ("appointment_reminder", "en", "APPROVED", 2),
        ("le_responderemos_pronto", "es", "APPROVED", 0),
        ("promocion_limpieza", "es", "REJECTED", 0),
    ]


def test_it_accepts_a_message_and_posts_signed_statuses(fake, client, number, receiver):
    url, received = receiver
    fake.graph.set_status_webhooks({"url": url, "app_secret": APP_SECRET, "delays": [0.05, 0.1, 0.15]})

    wamid = client.send_message(
        number["id"],
        {
            "to": "+50370001111",
            "type": "text",
            "text": {"body": "Hola"},
            "biz_opaque_callback_data": "ours-1",
        },
    )

    assert wamid.startswith("wamid.")
    _wait_for(received, 3)
    statuses = [event["body"]["entry"][0]["changes"][0]["value"]["statuses"][0] for event in received]
    assert all(event["signed"] for event in received)
    assert sorted(status["status"] for status in statuses) == ["delivered", "read", "sent"]
    assert {(status["id"], status["biz_opaque_callback_data"]) for status in statuses} == {(wamid, "ours-1")}
    assert {(status["recipient_id"], "recipient_user_id" in status) for status in statuses} == {
        ("50370001111", False)
    }


def test_a_message_to_a_bsuid_is_answered_and_followed_by_the_bsuid_alone(fake, session, number, receiver):
    url, received = receiver
    fake.graph.set_status_webhooks({"url": url, "app_secret": APP_SECRET, "delays": [0.05, 0.1, 0.15]})
    bsuid = "US.13491208655302741918"

    answer = session.post(
        f"{fake.base_url}/{number['id']}/messages",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "recipient": bsuid,
            "type": "text",
            "text": {"body": "Hola"},
            "biz_opaque_callback_data": "ours-1",
        },
        timeout=10,
    )

    assert answer.status_code == 200, answer.text
    wamid = answer.json()["messages"][0]["id"]
    # Meta's answer for a BSUID: the input echoed as user_id, no wa_id.
    assert answer.json()["contacts"] == [{"input": bsuid, "user_id": bsuid}]
    _wait_for(received, 3)
    statuses = [event["body"]["entry"][0]["changes"][0]["value"]["statuses"][0] for event in received]
    assert sorted(status["status"] for status in statuses) == ["delivered", "read", "sent"]
    # The patient is named by the BSUID alone: no recipient_id (no phone) in any event.
    assert [(s["id"], s["recipient_user_id"], "recipient_id" in s) for s in statuses] == [
        (wamid, bsuid, False)
    ] * 3


def test_a_fault_makes_the_next_message_fail(fake, client, number, receiver):
    url, received = receiver
    fake.graph.set_status_webhooks(
        {"url": url, "app_secret": APP_SECRET, "delays": [0.05, 0.1, 0.15], "fault": "fail"}
    )

    client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "Hola"}})

    _wait_for(received, 1)
    [status] = received[0]["body"]["entry"][0]["changes"][0]["value"]["statuses"]
    assert (status["status"], status["errors"][0]["code"]) == ("failed", 131026)


def _statuses(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["body"]["entry"][0]["changes"][0]["value"]["statuses"][0] for event in received]


def test_the_numbers_webhook_target_gets_each_accepted_messages_statuses(
    fake, session, client, number, receiver
):
    url, received = receiver
    control(fake, session, "POST", "status_webhooks", {"delays": [0.05, 0.1, 0.15]})
    targets = control(
        fake,
        session,
        "POST",
        "webhook_target",
        {"phone_number_id": number["id"], "url": url, "app_secret": APP_SECRET},
    )
    assert targets == {"targets": {number["id"]: {"url": url}}}  # never the secret

    first = client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "a"}})
    second = client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "b"}})

    _wait_for(received, 6)
    assert len(received) == 6 and all(event["signed"] for event in received)
    by_message = {
        wamid: sorted(s["status"] for s in _statuses(received) if s["id"] == wamid)
        for wamid in (first, second)
    }
    assert by_message == {first: ["delivered", "read", "sent"], second: ["delivered", "read", "sent"]}


def test_a_fault_sends_the_statuses_late_and_out_of_order(fake, session, client, number, receiver):
    url, received = receiver
    control(
        fake,
        session,
        "POST",
        "webhook_target",
        {"phone_number_id": number["id"], "url": url, "app_secret": APP_SECRET},
    )
    control(fake, session, "POST", "status_webhooks", {"delays": [0.05, 0.3, 0.6], "fault": "reversed"})

    client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "a"}})

    _wait_for(received, 3)
    assert [status["status"] for status in _statuses(received)] == ["read", "delivered", "sent"]


def test_without_a_target_nothing_is_posted_and_a_forgotten_target_gets_nothing(
    fake, session, client, number, receiver
):
    url, received = receiver
    control(fake, session, "POST", "status_webhooks", {"delays": [0.01, 0.01, 0.01]})
    body = {"phone_number_id": number["id"], "url": url, "app_secret": APP_SECRET}
    control(fake, session, "POST", "webhook_target", body)
    control(fake, session, "POST", "webhook_target", {"phone_number_id": number["id"], "url": None})

    client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "a"}})

    time.sleep(0.3)
    assert received == []


def test_the_request_log_names_each_send_by_our_reference_and_keeps_what_it_is_told(
    fake, session, client, number
):
    control(fake, session, "POST", "settings", {"request_log_limit": 3})
    before = time.time()
    for n in range(4):
        client.send_message(
            number["id"],
            {
                "to": "+50370001111",
                "type": "text",
                "text": {"body": "x"},
                "biz_opaque_callback_data": f"ours-{n}",
            },
        )

    logged = control(fake, session, "GET", "requests?method=POST&path=/messages")
    assert [entry["reference"] for entry in logged] == ["ours-1", "ours-2", "ours-3"]  # the oldest went first
    assert all(before <= entry["at"] <= time.time() for entry in logged)


def test_a_status_event_answered_503_is_posted_again(fake, client, number):
    answers = [503]  # the first delivery fails, the next ones are taken
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = answers.pop(0) if answers else 200
            received.append({"status": status, "body": body})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with _webhook_server(Handler) as url:
        # A fault makes it one event (`failed`), so the retry is the only second POST.
        fake.graph.set_status_webhooks(
            {"url": url, "app_secret": APP_SECRET, "delays": [0.05, 0.05, 0.05], "fault": "fail"}
        )
        client.send_message(number["id"], {"to": "+50370001111", "type": "text", "text": {"body": "Hola"}})
        _wait_for(received, 2)

    assert [event["status"] for event in received] == [503, 200]
    assert received[0]["body"] == received[1]["body"]  # the same event, again
    assert _statuses(received)[0]["status"] == "failed"


def test_a_slow_webhook_gets_every_status_from_a_few_posters_at_a_time(fake, client, number):
    at_once = {"now": 0, "most": 0}
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            with lock:
                at_once["now"] += 1
                at_once["most"] = max(at_once["most"], at_once["now"])
            time.sleep(0.05)  # an app slower than the events come
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                at_once["now"] -= 1
                received.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with _webhook_server(Handler) as url:
        fake.graph.set_status_webhooks({"url": url, "app_secret": APP_SECRET, "delays": [0.0, 0.0, 0.0]})
        for index in range(20):
            client.send_message(
                number["id"], {"to": f"+5037000{index:04d}", "type": "text", "text": {"body": "Hola"}}
            )
        _wait_for(received, 60)

    assert len(received) == 60  # each message's sent, delivered and read
    assert at_once["most"] <= STATUS_POSTERS
    assert len([t for t in threading.enumerate() if t.name == "fake-status-poster"]) <= STATUS_POSTERS
