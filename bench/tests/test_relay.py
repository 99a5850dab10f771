"""The relay bench's own logic: the counting bot over real HTTP, the paced poster, and the checks
that decide loss, duplicates and order."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.counting_bot import CountingBot
from bench.relay import Posted, Target, check_phase, patient_message, percentile, post_paced, stage_spreads
from messaging.signing import new_signing_secret, webhook_headers


def _posted(wamid: str, sent: float, answered: float, status: int = 200) -> Posted:
    return Posted(wamid, "50370000001", sent, sent, answered, status)


def _got(
    wamid: str, at: float, conversation: str, sequence: int, webhook_id: str = "", verified: bool = True
):
    return {
        "webhook_id": webhook_id or f"evt_{wamid}",
        "at": at,
        "verified": verified,
        "type": "message.received",
        "wamid": wamid,
        "conversation": conversation,
        "sequence": sequence,
    }


def test_percentile_is_the_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) == 0.0


def test_a_clean_phase_has_no_loss_no_duplicate_and_its_order():
    posted = [_posted("w1", 0.0, 0.1), _posted("w2", 0.5, 0.6), _posted("w3", 1.0, 1.1)]
    received = [_got("w1", 0.3, "c1", 1), _got("w2", 0.9, "c2", 1), _got("w3", 2.1, "c1", 2)]
    check = check_phase(posted, received, {"evt_w1": 1, "evt_w2": 1, "evt_w3": 1})
    assert (check.accepted, check.received, check.lost) == (3, 3, [])
    assert (check.extra_receipts, check.retries, check.duplicates_beyond_retries) == (0, 0, 0)
    assert (check.conversations, check.order_broken) == (2, [])
    assert check.relay_rate == pytest.approx(3 / 2.1)
    assert check.drain_seconds == pytest.approx(1.0)
    assert check.latency["n"] == 3
    assert check.latency["max_ms"] == pytest.approx(1000.0)


def test_a_message_that_never_arrives_is_lost():
    posted = [_posted("w1", 0.0, 0.1), _posted("w2", 0.5, 0.6)]
    check = check_phase(posted, [_got("w1", 0.3, "c1", 1)])
    assert check.lost == ["w2"]
    assert check.received == 1


def test_an_unverified_receipt_does_not_count_as_arrived():
    posted = [_posted("w1", 0.0, 0.1)]
    check = check_phase(posted, [_got("w1", 0.3, "c1", 1, verified=False)])
    assert check.lost == ["w1"]
    assert check.unverified == 1


def test_a_retry_is_a_receipt_the_rows_explain_and_anything_more_is_a_duplicate():
    posted = [_posted("w1", 0.0, 0.1), _posted("w2", 0.0, 0.1)]
    received = [
        _got("w1", 0.2, "c1", 1),
        _got("w1", 5.2, "c1", 1),  # the product tried twice (its row says 2 attempts)
        _got("w2", 0.3, "c2", 1),
        _got("w2", 0.4, "c2", 1),  # one attempt only: a duplicate
    ]
    check = check_phase(posted, received, {"evt_w1": 2, "evt_w2": 1})
    assert check.extra_receipts == 2
    assert check.retries == 1
    assert check.duplicates_beyond_retries == 1
    assert check.order_broken == []  # a repeat of a sequence already seen is not reordering


def test_a_conversation_seen_out_of_order_or_with_a_gap_is_reported():
    posted = [_posted(w, 0.0, 0.1) for w in ("w1", "w2", "w3", "w4")]
    received = [
        _got("w2", 0.2, "c1", 2),
        _got("w1", 0.3, "c1", 1),
        _got("w3", 0.2, "c2", 1),
        _got("w4", 0.3, "c2", 3),
    ]
    check = check_phase(posted, received)
    assert sorted(check.order_broken) == ["c1: [2, 1]", "c2: [1, 3]"]


def test_posts_answered_otherwise_than_200_are_not_accepted_nor_lost():
    posted = [_posted("w1", 0.0, 0.1), _posted("w2", 0.0, 0.1, status=503)]
    check = check_phase(posted, [_got("w1", 0.2, "c1", 1)])
    assert (check.posted, check.accepted, check.lost) == (2, 1, [])


def test_stages_are_measured_between_the_points_each_message_has():
    posted = [_posted("w1", 10.0, 10.02), _posted("w2", 11.0, 11.03)]
    rows = {
        "w1": {"stored": 10.01, "apply_task_started": 10.21, "applied": 10.25, "claimed": 10.5},
        "w2": {"stored": 11.01, "apply_task_started": None, "applied": 11.2, "claimed": 11.4},
    }
    received = [_got("w1", 10.52, "c1", 1), _got("w2", 11.45, "c2", 1)]
    stages = stage_spreads(posted, received, rows)
    picked = stages["stored -> its task picked by a worker"]
    assert picked["n"] == 1
    assert picked["p50_ms"] == pytest.approx(200.0)
    assert stages["200 -> bot's receipt (end to end)"]["n"] == 2
    assert stages["claimed -> bot's receipt (sign, connect, POST)"]["max_ms"] == pytest.approx(50.0)


@pytest.fixture
def bot():
    secret = new_signing_secret()
    server = CountingBot(0, [secret])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, secret
    server.shutdown()
    server.server_close()


def _call(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    answer = conn.getresponse()
    data = json.loads(answer.read())
    conn.close()
    return answer.status, data


def _delivery(secret: str, wamid: str, sequence: int, webhook_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "type": "message.received",
            "clinic_id": "c",
            "conversation": {"id": "conv-1"},
            "message": {"wamid": wamid, "sequence": sequence, "text": "secret text"},
        }
    ).encode()
    headers = webhook_headers([secret], webhook_id=webhook_id, timestamp=int(time.time()), body=body)
    return body, headers


def test_the_counting_bot_keeps_what_the_bench_checks_of_signed_deliveries(bot):
    server, secret = bot
    port = server.server_address[1]
    body, headers = _delivery(secret, "wamid.RELAYxP1N0000001", 1, "evt_one")
    assert _call(port, "POST", "/hook", body, headers)[0] == 200
    forged, forged_headers = _delivery(new_signing_secret(), "wamid.RELAYxP1N0000002", 2, "evt_two")
    assert _call(port, "POST", "/hook", forged, forged_headers)[0] == 401

    status, received = _call(port, "GET", "/_bot/received")
    assert status == 200
    assert [
        (r["webhook_id"], r["verified"], r["wamid"], r["conversation"], r["sequence"]) for r in received
    ] == [
        ("evt_one", True, "wamid.RELAYxP1N0000001", "conv-1", 1),
        ("evt_two", False, "wamid.RELAYxP1N0000002", "conv-1", 2),
    ]
    assert "secret text" not in json.dumps(received)
    assert _call(port, "GET", "/_bot/count?prefix=wamid.RELAYxP1N")[1] == {"received": 2, "distinct": 1}
    assert _call(port, "GET", "/_bot/count?prefix=wamid.RELAYxP2N")[1]["distinct"] == 0


class _Recorder(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        return

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((time.time(), json.loads(body), self.headers["X-Hub-Signature-256"]))
        self.send_response(200 if len(self.server.bodies) % 5 else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_the_poster_keeps_its_rate_and_records_each_answer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = Target("clinic", "token", "106540352242922", "102290129340398")
    deliveries = [
        patient_message(target, wa_id=f"5037100000{n % 3}", wamid=f"wamid.T{n}", text="hola")
        for n in range(20)
    ]
    started = time.time()
    try:
        posted = post_paced("127.0.0.1", server.server_address[1], "/hook", deliveries, rate=40, threads=4)
    finally:
        server.shutdown()
        server.server_close()
    elapsed = time.time() - started
    assert 0.4 < elapsed < 2.0  # 20 at 40 a second: the last is due after 0.475 s (+0.2 s start)
    assert [p.wamid for p in posted] == [f"wamid.T{n}" for n in range(20)]
    assert sorted(p.status for p in posted) == [200] * 16 + [503] * 4
    assert all(p.sent >= p.due - 0.01 and p.answered >= p.sent for p in posted)
    sent_payload = server.bodies[0][1]
    change = sent_payload["entry"][0]["changes"][0]
    assert change["field"] == "messages"
    assert change["value"]["metadata"]["phone_number_id"] == "106540352242922"
    assert change["value"]["messages"][0]["type"] == "text"
    assert server.bodies[0][2].startswith("sha256=")
