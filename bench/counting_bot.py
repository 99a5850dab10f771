"""The relay bench's bot: it verifies each delivery's Standard Webhooks signature, answers 200 and
keeps, per delivery, what the bench checks afterwards (never the patient's text).

    python -m bench.counting_bot --port 8799 --secret-file /tmp/secret

Kept per delivery: `webhook_id`, the time it arrived (`time.time()`, the clock the bench's
poster uses too), whether the signature verified, the event type, and from the body the
message's `wamid`, its conversation and its `sequence`. A delivery whose signature does not
verify is answered 401 (the product retries it: the report shows it as a retry). Control
(JSON, 127.0.0.1 only): `GET /_bot/count?prefix=wamid.X` (how many arrived, and how many
distinct verified messages whose wamid starts so), `GET /_bot/received` (all of them).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from devtools.demo_bot import verify

MAX_BODY = 1024 * 1024


def summary(body: Any) -> dict[str, Any]:
    """What the bench checks of one delivery's JSON: its type, wamid, conversation and sequence."""
    if not isinstance(body, dict):
        return {"type": None, "wamid": None, "conversation": None, "sequence": None}
    message = body.get("message")
    message = message if isinstance(message, dict) else {}
    conversation = body.get("conversation")
    conversation = conversation if isinstance(conversation, dict) else {}
    return {
        "type": body.get("type"),
        "wamid": message.get("wamid"),
        "conversation": conversation.get("id"),
        "sequence": message.get("sequence"),
    }


class CountingBot(ThreadingHTTPServer):
    daemon_threads = True
    # The product's workers connect at once when a burst is drained: more than the default 5 wait.
    request_queue_size = 128

    def __init__(self, port: int, secrets_: list[str]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.secrets_ = secrets_
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: CountingBot

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for header, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data)))):
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        with self.server.lock:
            if path == "/_bot/count":
                # ?prefix=<wamid prefix>: the distinct messages of one phase, signature verified.
                prefix = parse_qs(query).get("prefix", [""])[0]
                wamids = {
                    r["wamid"]
                    for r in self.server.received
                    if r["verified"] and str(r["wamid"] or "").startswith(prefix)
                }
                return self._answer(200, {"received": len(self.server.received), "distinct": len(wamids)})
            if path == "/_bot/received":
                return self._answer(200, self.server.received)
        return self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        arrived = time.time()
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        body = self.rfile.read(length)
        verified = verify(self.server.secrets_, self.headers, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = {
            "webhook_id": self.headers.get("webhook-id") or "",
            "at": arrived,
            "verified": verified,
            **summary(parsed),
        }
        with self.server.lock:
            self.server.received.append(record)
        self._answer(200 if verified else 401, {"ok": verified})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    options = parser.parse_args()
    secrets_ = [line.strip() for line in options.secret_file.read_text().splitlines() if line.strip()]
    bot = CountingBot(options.port, secrets_)
    print(f"counting bot listening at {bot.url}", flush=True)
    bot.serve_forever()


if __name__ == "__main__":
    main()
