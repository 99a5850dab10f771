"""A real HTTP bot on 127.0.0.1 for the poster, the ping and the deliveries; Meta's payloads on disk."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from messaging.models import Message
from messaging.services import messaging_record_inbound, messaging_record_outbound

DATA = Path(__file__).parent / "data"
PNID = "106540352242922"


def answered_patient(clinic: Any, *, wamid: str) -> Message:
    """The patient of webhook_messages_text.json wrote; the bot's answer went to Meta, accepted as `wamid`.

    The inbound message is recorded without forwarding, so no delivery exists yet.
    """
    messaging_record_inbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_text.json")),
        forward=False,
    )
    message = messaging_record_outbound(
        clinic_id=clinic.pk,
        phone_number_id=PNID,
        wa_id="16505551234",
        type="text",
        text="Sí, en azul.",
        sent_by="bot",
    )
    # What the send (issue 21) records when Meta accepts it.
    Message.objects.filter(pk=message.pk).update(wamid=wamid, status="sending")
    return message


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def value_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The `value` of the first change: what the webhook worker hands to messaging."""
    return copy.deepcopy(payload["entry"][0]["changes"][0]["value"])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class BotServer:
    """A bot that records every request and answers as `answer` says (status, headers, body, delay)."""

    url: str
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], tuple[int, dict[str, str], bytes]] = lambda _r: (200, {}, b"ok")
    # Seconds to wait before the status line; or a trickle of the body, a byte per `trickle` seconds.
    delay: float = 0.0
    trickle: float = 0.0


@pytest.fixture
def bot_server(settings) -> Iterator[BotServer]:
    """A bot over real HTTP on 127.0.0.1 (allowed only because BOT_URL_ALLOW_PRIVATE is on here)."""
    settings.BOT_URL_ALLOW_PRIVATE = True
    state: dict[str, BotServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server = state["bot"]
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length),
            )
            server.received.append(received)
            if server.delay:
                time.sleep(server.delay)
            status, headers, body = server.answer(received)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.trickle:
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(server.trickle)
                else:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what the timeout tests expect

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    state["bot"] = BotServer(url=f"http://127.0.0.1:{port}/bot/hook")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state["bot"]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def resolves_to(monkeypatch):
    """`resolves_to("203.0.113.7", ...)`: every host name resolves to these addresses (DNS faked at getaddrinfo)."""

    def fake(*addresses: str) -> list[tuple[Any, ...]]:
        def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
            answers = []
            for address in addresses:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
                answers.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return answers

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return []

    return fake
