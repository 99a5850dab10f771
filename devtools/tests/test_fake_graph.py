"""The fake Graph server, driven over real HTTP by the real MetaClient."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.fake_graph import token_fingerprint
from devtools.tests.conftest import TOKEN, WABA, control
from whatsapp.meta import MetaClient, MetaRefusedError, MetaTimeoutError, MetaUnavailableError


def add_verified_number(client: MetaClient, fake, session) -> str:
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="Clínica Sonrisa")
    client.request_code(pnid, method="SMS", language="es")
    client.verify_code(pnid, control(fake, session, "GET", f"numbers/{pnid}/code")["code"])
    return pnid


def test_it_runs_the_whole_lifecycle(fake, session, client):
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="Clínica Sonrisa")
    info = client.get_phone_number(pnid)
    assert (info.status, info.code_verification_status, info.platform_type) == (
        "PENDING",
        "NOT_VERIFIED",
        "NOT_APPLICABLE",
    )
    assert info.display_digits == "50377654321"
    assert info.display_phone_number.startswith("+503 ")

    client.request_code(pnid, method="sms", language="es")
    code = control(fake, session, "GET", f"numbers/{pnid}/code")
    assert code["method"] == "SMS"
    assert len(code["code"]) == 6
    assert code["code"].isdigit()

    wrong = "000000" if code["code"] != "000000" else "111111"
    with pytest.raises(MetaRefusedError) as caught:
        client.verify_code(pnid, wrong)
    assert caught.value.code == 136025
    assert caught.value.http_status == 400
    assert caught.value.message == "(#136025) Verify code error"
    assert caught.value.fbtrace_id

    client.verify_code(pnid, code["code"])
    assert client.get_phone_number(pnid).code_verification_status == "VERIFIED"

    client.register(pnid, "212834")
    info = client.get_phone_number(pnid)
    assert (info.status, info.platform_type) == ("CONNECTED", "CLOUD_API")

    with pytest.raises(MetaRefusedError) as caught:
        client.register(pnid, "999999")
    assert caught.value.code == 133005
    assert caught.value.details == "Two-step verification PIN incorrect."

    client.register(pnid, "212834")  # the same PIN again is a harmless no-op

    client.deregister(pnid)
    info = client.get_phone_number(pnid)
    assert (info.status, info.platform_type) == ("DISCONNECTED", "NOT_APPLICABLE")

    client.subscribe_app(WABA)
    state = control(fake, session, "GET", "state")
    assert state["wabas"][WABA]["apps"][0]["whatsapp_business_api_data"]["name"] == "Fake Clinics App"
    assert state["numbers"][pnid]["pin"] == "212834"
    assert [n.id for n in client.list_phone_numbers(WABA)] == [pnid]


def test_it_refuses_the_eleventh_register_or_deregister_in_72_hours(fake, session, client):
    pnid = add_verified_number(client, fake, session)
    for attempt in range(10):
        if attempt % 2:
            client.deregister(pnid)
        else:
            client.register(pnid, "123456")

    with pytest.raises(MetaRefusedError) as caught:
        client.register(pnid, "123456")

    assert caught.value.code == 133016
    assert caught.value.http_status == 400
    assert len(control(fake, session, "GET", "requests?method=POST&path=/(de)?register$")) == 11

    control(fake, session, "POST", "settings", {"advance_seconds": 72 * 3600 + 1})
    # Verification lapsed meanwhile (14 days is longer, 72 h is not): the number is DISCONNECTED.
    client.register(pnid, "123456")
    assert client.get_phone_number(pnid).status == "CONNECTED"


def test_it_refuses_register_before_verification(fake, session, client):
    pnid = client.add_phone_number(WABA, cc="1", phone_number="16315555555", verified_name="Jasper")

    with pytest.raises(MetaRefusedError) as caught:
        client.register(pnid, "123456")

    assert caught.value.code == 133006
    assert client.get_phone_number(pnid).display_phone_number == "+1 631-555-5555"


def test_it_expires_verification_after_14_days(fake, session, client):
    pnid = add_verified_number(client, fake, session)
    control(fake, session, "POST", "settings", {"advance_seconds": 15 * 24 * 3600})

    assert client.get_phone_number(pnid).code_verification_status == "EXPIRED"
    with pytest.raises(MetaRefusedError) as caught:
        client.register(pnid, "123456")
    assert caught.value.code == 133006


def test_it_reports_pending_for_the_configured_reads_after_register(fake, session, client):
    control(fake, session, "POST", "settings", {"pending_reads_after_register": 2, "code": "123456"})
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="Clínica")
    client.request_code(pnid, method="VOICE", language="en_US")
    client.verify_code(pnid, "123456")
    client.register(pnid, "654321")

    statuses = [client.get_phone_number(pnid).status for _ in range(3)]

    assert statuses == ["PENDING", "PENDING", "CONNECTED"]


def test_it_answers_unknown_ids_with_100_33(client):
    with pytest.raises(MetaRefusedError) as caught:
        client.get_phone_number("999999999999999")

    assert (caught.value.code, caught.value.subcode) == (100, 33)
    assert "Object with ID '999999999999999' does not exist" in caught.value.message


def test_it_refuses_unknown_fields(fake, session, client):
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="X")

    response = session.get(
        f"{fake.base_url}/{pnid}",
        params={"fields": "id,search_visibility"},
        headers={"Authorization": "Bearer t"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "(#100) Tried accessing nonexisting field (search_visibility) on node type (WhatsAppBusinessPhoneNumber)"
    )


def test_it_expires_revokes_and_limits_tokens(fake, session, client):
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="X")

    control(fake, session, "POST", "tokens", {"token": TOKEN, "waba_ids": ["1"]})
    with pytest.raises(MetaRefusedError) as caught:
        client.get_phone_number(pnid)
    assert (caught.value.code, caught.value.http_status) == (200, 403)

    control(fake, session, "POST", "tokens", {"token": TOKEN, "expired": True})
    with pytest.raises(MetaRefusedError) as caught:
        client.get_phone_number(pnid)
    assert (caught.value.code, caught.value.subcode, caught.value.http_status) == (190, 463, 401)
    assert "Session has expired" in caught.value.message

    control(fake, session, "POST", "settings", {"status_overrides": {"190": 400}})
    with pytest.raises(MetaRefusedError) as caught:
        client.get_phone_number(pnid)
    assert caught.value.http_status == 400

    other = MetaClient("another-token", base_url=fake.base_url, session=session, read_retries=0)
    assert other.get_phone_number(pnid).id == pnid


def test_it_requires_a_token(fake, session):
    response = session.post(f"{fake.base_url}/{WABA}/subscribed_apps")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 104


def test_it_accepts_query_form_json_and_multipart_encodings_and_any_version(fake, session):
    control(fake, session, "POST", "settings", {"code": "424242"})
    graph = fake.base_url.replace("/v26.0", "/v23.0")
    created = session.post(
        f"{graph}/{WABA}/phone_numbers",
        params={"access_token": TOKEN},
        json={"cc": "1", "phone_number": "14195551518", "verified_name": "Lucky Shrub"},
    )
    assert created.status_code == 200, created.text
    pnid = created.json()["id"]

    asked = session.post(
        f"{graph}/{pnid}/request_code",
        params={"code_method": "SMS", "language": "en_US", "access_token": TOKEN},
    )
    verified = session.post(
        f"{fake.origin}/v19.0/{pnid}/verify_code",
        data={"code": "424242"},
        headers={"Authorization": "OAuth x"},
    )
    registered = session.post(
        f"{graph}/{pnid}/register",
        files={"messaging_product": (None, "whatsapp"), "pin": (None, "123456")},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert [r.json() for r in (asked, verified, registered)] == [{"success": True}] * 3
    number = control(fake, session, "GET", "state")["numbers"][pnid]
    assert number["phone_number"] == "4195551518"
    assert number["display_phone_number"] == "+1 419-555-1518"
    assert number["status"] == "CONNECTED"


def test_it_pages_the_number_list(fake, session, client):
    control(fake, session, "POST", "settings", {"page_size": 2})
    for index in range(5):
        control(
            fake,
            session,
            "POST",
            "numbers",
            {"waba_id": WABA, "cc": "1", "phone_number": f"631555010{index}"},
        )

    numbers = client.list_phone_numbers(WABA)

    assert len({n.id for n in numbers}) == 5
    assert len(control(fake, session, "GET", "requests?path=phone_numbers")) == 3


def test_it_serves_numbers_created_and_changed_through_the_control_api(fake, session, client):
    number = control(
        fake,
        session,
        "POST",
        "numbers",
        {
            "waba_id": WABA,
            "cc": "503",
            "phone_number": "+50377654321",
            "status": "CONNECTED",
            "pin": "111111",
        },
    )
    pnid = number["id"]
    assert client.get_phone_number(pnid).status == "CONNECTED"

    with pytest.raises(MetaRefusedError) as caught:
        client.register(pnid, "222222")
    assert caught.value.code == 133005
    client.register(pnid, "111111")

    control(fake, session, "POST", f"numbers/{pnid}", {"status": "BANNED", "quality_rating": "RED"})
    info = client.get_phone_number(pnid)
    assert (info.status, info.quality_rating) == ("BANNED", "RED")

    control(fake, session, "POST", "reset")
    with pytest.raises(MetaRefusedError):
        client.get_phone_number(pnid)


def test_it_rejects_bad_control_requests(fake, session):
    assert session.post(f"{fake.control_url}/numbers/nope", json={"status": "X"}).status_code == 404
    assert session.post(f"{fake.control_url}/settings", json={"typo": 1}).status_code == 400
    assert session.post(f"{fake.control_url}/faults", json={"kind": "meteor"}).status_code == 400
    assert session.get(f"{fake.control_url}/numbers/1/code").status_code == 404


# --- faults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "code", "http_status"),
    [
        ({"kind": "delay", "seconds": 3.0}, MetaTimeoutError, None, None),
        ({"kind": "reset"}, MetaUnavailableError, None, None),
        ({"kind": "status", "status": 500, "code": 131000}, MetaUnavailableError, 131000, 500),
        ({"kind": "status", "status": 503}, MetaUnavailableError, 2, 503),
        ({"kind": "status", "status": 403, "code": 131031}, MetaRefusedError, 131031, 403),
        ({"kind": "invalid_json"}, MetaUnavailableError, None, 200),
        ({"kind": "html"}, MetaUnavailableError, None, 502),
        ({"kind": "huge"}, MetaUnavailableError, None, 200),
    ],
)
def test_it_injects_faults_the_client_maps(
    fake, session, client, fault_client, fault, error, code, http_status
):
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="X")
    control(fake, session, "POST", "faults", {"method": "GET", "path": f"/{pnid}$", **fault})

    started = time.monotonic()
    with pytest.raises(error) as caught:
        fault_client.get_phone_number(pnid)
    elapsed = time.monotonic() - started

    assert elapsed < 3
    assert getattr(caught.value, "code", None) == code
    assert getattr(caught.value, "http_status", None) == http_status
    assert control(fake, session, "GET", "faults") == []  # used up
    assert client.get_phone_number(pnid).id == pnid
    assert control(fake, session, "GET", f"requests?path=/{pnid}$")[0]["fault"] == fault["kind"]


def test_it_retries_a_get_through_a_transient_fault(fake, session):
    client = MetaClient(TOKEN, base_url=fake.base_url, read_timeout=1, connect_timeout=1, session=session)
    pnid = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="X")
    control(fake, session, "POST", "faults", {"method": "GET", "path": pnid, "kind": "status", "status": 503})

    assert client.get_phone_number(pnid).id == pnid
    assert [e["status"] for e in control(fake, session, "GET", f"requests?method=GET&path={pnid}")] == [
        503,
        200,
    ]


def test_it_can_carry_out_a_request_and_then_fail_the_answer(fake, session, client):
    pnid = add_verified_number(client, fake, session)
    control(fake, session, "POST", "faults", {"path": "/register$", "kind": "reset", "process": True})

    with pytest.raises(MetaUnavailableError):
        client.register(pnid, "123456")

    # Meta did it; we never heard. The service must re-read instead of registering again.
    assert client.get_phone_number(pnid).status == "CONNECTED"
    assert len(control(fake, session, "GET", "requests?path=/register$")) == 1


def test_it_reports_a_refused_connection_as_unavailable(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = MetaClient(TOKEN, base_url=f"http://127.0.0.1:{port}/v26.0", session=session, read_retries=0)

    with pytest.raises(MetaUnavailableError):
        client.deregister("1")


# --- request log and secrecy -----------------------------------------------------------------------------


def test_it_logs_requests_without_the_token(fake, session, client, caplog):
    caplog.set_level(logging.DEBUG)
    pnid = add_verified_number(client, fake, session)
    session.get(f"{fake.base_url}/{pnid}", params={"access_token": TOKEN, "fields": "status"})
    client.register(pnid, "123456")

    log = control(fake, session, "GET", "requests")

    assert [(e["method"], e["path"].rsplit("/", 1)[-1]) for e in log] == [
        ("POST", "phone_numbers"),
        ("POST", "request_code"),
        ("POST", "verify_code"),
        ("GET", pnid),
        ("POST", "register"),
    ]
    assert log[0]["body_keys"] == ["cc", "phone_number", "verified_name"]
    assert log[3]["params"] == {"fields": "status"}
    assert log[3]["auth"] == {"present": True, "via": "query", "sha256": token_fingerprint(TOKEN)}
    assert log[4]["auth"]["via"] == "header"
    assert token_fingerprint(TOKEN) == hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    everything = json.dumps(log) + json.dumps(control(fake, session, "GET", "state"))
    assert TOKEN not in everything
    # urllib3 logs the query string of the raw call above (which is why the client never
    # puts the token there); ours and the fake's logs must not carry it.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("whatsapp")]
    assert ours
    assert not [message for message in ours if TOKEN in message]


def test_it_sends_signed_webhooks_with_ascii_escaping(fake, session):
    received: dict = {}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            received["signature"] = self.headers["X-Hub-Signature-256"]
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    payload = json.loads(
        (
            Path(__file__).resolve().parents[2] / "whatsapp" / "tests" / "data" / "webhook_messages_text.json"
        ).read_text()
    )
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "¿Cita mañana? 🦷"
    try:
        answer = control(
            fake,
            session,
            "POST",
            "webhooks/send",
            {
                "url": f"http://127.0.0.1:{receiver.server_address[1]}/wa",
                "app_secret": "s3cret",
                "payload": payload,
            },
        )
    finally:
        receiver.shutdown()
        receiver.server_close()

    body = received["body"]
    assert answer["status"] == 200
    assert b"\\u00bfCita ma\\u00f1ana? \\ud83e\\uddb7" in body
    assert body.isascii()
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert received["signature"] == expected == answer["signature"]
    assert json.loads(body) == payload


@pytest.mark.e2e
def test_it_runs_as_a_command_until_sigterm():
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_graph", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v26.0")
        client = MetaClient(TOKEN, base_url=base_url, read_retries=0)
        client.subscribe_app(WABA)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
