"""A small demo bot for development: it verifies each delivery's Standard Webhooks signature and answers 200.

What a clinic's real bot must do first, in a few lines: check `webhook-signature`
(HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the bytes of the
`whsec_` secret; several signatures during a rotation), refuse a timestamp more
than 5 minutes away, and deduplicate on `webhook-id` (a retry, or Meta's own
duplicate, has the same id). It keeps what it got in memory and prints one line
per delivery (the event, its id and sequence; never the patient's text).

    python -m devtools.demo_bot --port 8766 --secret-file .dev/demo-bot-secret

The secret file is read at each request, so `manage.py ensure_demo_clinic` can
write it after the bot started. Control (JSON, no auth, 127.0.0.1 only):

``GET  /_bot/received``   every delivery received: ``{"webhook_id", "timestamp", "verified", "duplicate", "body"}``
``POST /_bot/answer``     ``{"status": 500}``: answer every delivery with that status from now on
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The replay window Standard Webhooks recommends.
TOLERANCE_SECONDS = 300
MAX_BODY = 1024 * 1024
# Endpoint 16, under the API's address.
SEND_PATH = "/api/clinics/messages/"
REPLY_PREFIX = "Recibido: "


def verify(secrets_: list[str], headers: Any, body: bytes, *, now: float | None = None) -> bool:
    """Whether one of the `v1,` signatures is ours over exactly this body, with a fresh timestamp."""
    webhook_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - sent_at) > TOLERANCE_SECONDS:
        return False
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    offered = [
        part[3:] for part in (headers.get("webhook-signature") or "").split() if part.startswith("v1,")
    ]
    for secret in secrets_:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return True
    return False


class DemoBot(ThreadingHTTPServer):
    """The bot's server: `received` holds every delivery, `status` is what it answers."""

    daemon_threads = True

    def __init__(
        self,
        port: int,
        *,
        secret_file: Path | None = None,
        secrets_: list[str] | None = None,
        api_url: str = "",
        key_file: Path | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.secret_file = secret_file
        self.fixed_secrets = secrets_ or []
        self.api_url = api_url.rstrip("/")
        self.key_file = key_file
        self.status = 200
        self.received: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def secrets(self) -> list[str]:
        found = list(self.fixed_secrets)
        if self.secret_file is not None and self.secret_file.exists():
            found += [line.strip() for line in self.secret_file.read_text().splitlines() if line.strip()]
        return found

    def key(self) -> str:
        if self.key_file is None or not self.key_file.exists():
            return ""
        return self.key_file.read_text().strip()

    def reply(self, webhook_id: str, body: Any) -> None:
        """Answer a patient's message through endpoint 16, keyed by the delivery's id (see the module)."""
        request = reply_request(body)
        key = self.key()
        if request is None or not (self.api_url and key):
            return
        status = post_reply(self.api_url, key, webhook_id, request)
        with self.lock:
            self.replies.append({"webhook_id": webhook_id, "status": status})
        print(f"demo bot: answered {webhook_id} through 16 -> {status}", flush=True)  # noqa: T201


def reply_request(body: Any) -> dict[str, str] | None:
    """Endpoint 16's body answering a `message.received` from a patient, or None for anything else."""
    if not isinstance(body, dict) or body.get("type") != "message.received":
        return None
    conversation, message = body.get("conversation") or {}, body.get("message") or {}
    to = conversation.get("wa_id") if isinstance(conversation, dict) else None
    if not to or not isinstance(message, dict) or message.get("direction") != "in":
        return None
    said = message.get("text") or f"[{message.get('type')}]"
    return {"to": str(to), "text": (REPLY_PREFIX + str(said))[:4096]}


def post_reply(api_url: str, key: str, webhook_id: str, body: dict[str, str]) -> int:
    """POST the answer to 16 with the bot key; the HTTP status (0 when the API could not be reached)."""
    if not api_url.startswith(("http://", "https://")):
        return 0
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        api_url + SEND_PATH,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": webhook_id,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except OSError:
        return 0


class _Handler(BaseHTTPRequestHandler):
    server: DemoBot

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per delivery is printed instead

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/_bot/received":
            with self.server.lock:
                return self._answer(200, self.server.received)
        if self.path == "/_bot/replies":
            with self.server.lock:
                return self._answer(200, self.server.replies)
        return self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        body = self.rfile.read(length)
        if self.path == "/_bot/answer":
            self.server.status = int(json.loads(body or b"{}").get("status", 200))
            return self._answer(200, {"status": self.server.status})
        verified = verify(self.server.secrets(), self.headers, body)
        webhook_id = self.headers.get("webhook-id") or ""
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        with self.server.lock:
            duplicate = verified and any(
                r["webhook_id"] == webhook_id and r["acknowledged"] for r in self.server.received
            )
            status = self.server.status if verified else 401
            self.server.received.append(
                {
                    "webhook_id": webhook_id,
                    "timestamp": self.headers.get("webhook-timestamp"),
                    "verified": verified,
                    "duplicate": duplicate,
                    "acknowledged": 200 <= status < 300,
                    "body": parsed,
                }
            )
        message = (parsed or {}).get("message") or {} if isinstance(parsed, dict) else {}
        print(  # noqa: T201 - the demo's output
            f"demo bot: {(parsed or {}).get('type') if isinstance(parsed, dict) else '?'} {webhook_id} "
            f"seq={message.get('sequence')} signature={'ok' if verified else 'BAD'}"
            f"{' (duplicate)' if duplicate else ''} -> {status}",
            flush=True,
        )
        self._answer(status, {"ok": 200 <= status < 300})
        if verified and 200 <= status < 300:
            # After the acknowledgement: the product waits for no answer of ours to send it.
            threading.Thread(target=self.server.reply, args=(webhook_id, parsed), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--api-url", default="", help="The API's address, to answer through 16.")
    parser.add_argument("--key-file", type=Path, default=None, help="Where the bot key is written.")
    options = parser.parse_args()
    bot = DemoBot(
        options.port, secret_file=options.secret_file, api_url=options.api_url, key_file=options.key_file
    )
    print(f"demo bot listening at {bot.url}", flush=True)  # noqa: T201
    bot.serve_forever()


if __name__ == "__main__":
    main()
