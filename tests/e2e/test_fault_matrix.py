"""Every Meta call of endpoints 5-9 against every fault of the fake Graph server, over real HTTP.

The fake runs in-process (a thread) on 127.0.0.1; the product is driven through Django's
test client with META_GRAPH_URL pointed at it and 1-second timeouts. Each case checks the
answer is bounded in time, clear (a status and a `detail`), and that the stored state is
consistent: the documented status, nothing the clinic sent lost.
"""

from __future__ import annotations

import time

import pytest

from devtools.fake_graph import FakeGraphServer
from whatsapp.meta import _RETRY_BACKOFF_SECONDS
from whatsapp.models import MetaAttempt, WhatsAppAccount, WrongCodeAttempt

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

TIMEOUT = 1.0
GET_RETRIES = 2  # whatsapp.meta: GETs are retried twice, POSTs never
MARGIN = 1.5
WABA = "102290129340398"
TOKEN = "EAAFAULT" + "x" * 40
PHONE = "+50377654321"

FAULTS = {
    "delay": {"kind": "delay", "seconds": 2.5},
    "reset": {"kind": "reset"},
    "500": {"kind": "status", "status": 500},
    "503": {"kind": "status", "status": 503},
    "invalid_json": {"kind": "invalid_json"},
    "html": {"kind": "html"},
    "huge": {"kind": "huge"},
}

# operation -> (method, path regex, is a retried GET)
CALLS = {
    "5-get-number": ("GET", r"/v26\.0/{pnid}$", True),
    "8-get-number": ("GET", r"/v26\.0/{pnid}$", True),
    "6-list-numbers": ("GET", r"/{waba}/phone_numbers$", True),
    "6-add-number": ("POST", r"/{waba}/phone_numbers$", False),
    "6-request-code": ("POST", r"/{pnid}/request_code$", False),
    "7-verify-code": ("POST", r"/{pnid}/verify_code$", False),
    "7-register": ("POST", r"/{pnid}/register$", False),
    "9-deregister": ("POST", r"/{pnid}/deregister$", False),
}


@pytest.fixture(scope="module")
def fake():
    with FakeGraphServer() as server:
        yield server


@pytest.fixture
def graph(fake, settings):
    settings.META_GRAPH_URL = fake.base_url
    settings.META_READ_TIMEOUT = TIMEOUT
    settings.META_CONNECT_TIMEOUT = TIMEOUT
    fake.graph.reset()
    yield fake.graph
    fake.graph.clear_faults()
    # A delayed request carries on after the client gave up (then adds its number, say):
    # let it finish here, not inside the next case's fresh state.
    if any(entry.get("fault") == "delay" for entry in fake.graph.requests_log()):
        time.sleep(FAULTS["delay"]["seconds"])


def _number(graph, **extra) -> str:
    return graph.create_number({"waba_id": WABA, "cc": "503", "phone_number": "77654321", **extra})["id"]


def _account(clinic) -> WhatsAppAccount:
    return WhatsAppAccount.objects.get(clinic=clinic)


def _configure(client, pnid):
    return client.put(
        "/api/clinics/whatsapp/",
        {"phoneNumberId": pnid, "businessAccountId": WABA, "accessToken": TOKEN},
        format="json",
    )


# Every column but the bookkeeping one, for the field-by-field "nothing lost" comparison.
STORED = [field for field in WhatsAppAccount._meta.concrete_fields if field.attname != "updated_at"]


def _register(client):
    return client.post(
        "/api/clinics/whatsapp/register/",
        {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
        format="json",
    )


def _bound(is_get: bool) -> float:
    if is_get:
        return TIMEOUT * (GET_RETRIES + 1) + sum(_RETRY_BACKOFF_SECONDS) + MARGIN
    return TIMEOUT + MARGIN


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("operation", list(CALLS))
def test_fault(operation, fault, graph, clinic_admin, api_client):
    client = api_client(clinic_admin)
    clinic = clinic_admin.clinic
    method, path, is_get = CALLS[operation]

    # --- arrange: bring the clinic to the state where the faulted call is made ---
    pnid = None
    if operation in ("5-get-number", "6-request-code", "7-verify-code", "7-register", "8-get-number"):
        pnid = _number(graph)
    if operation in ("7-verify-code", "7-register"):
        assert _register(client).status_code == 200
        assert _account(clinic).status == "pending_otp"
    if operation == "8-get-number":
        assert _configure(client, pnid).json()["status"] == "verifying"
    if operation == "9-deregister":
        pnid = _number(graph, status="CONNECTED", pin="123456")
        assert _configure(client, pnid).json()["status"] == "active"
    before = _account(clinic)
    attempts_before = MetaAttempt.objects.count()
    graph.clear_requests()

    spec = dict(FAULTS[fault])
    spec.update(method=method, path=path.format(pnid=pnid, waba=WABA), times=GET_RETRIES + 1 if is_get else 1)
    graph.add_fault(spec)
    if operation == "8-get-number":
        from django.core.cache import cache

        cache.clear()  # the refresh gate: this poll must ask Meta

    # --- act ---
    started = time.monotonic()
    if operation == "5-get-number":
        response = _configure(client, pnid)
    elif operation == "8-get-number":
        response = client.get("/api/clinics/whatsapp/status/")
    elif operation.startswith("6-"):
        response = _register(client)
    elif operation == "7-verify-code":
        response = client.post("/api/clinics/whatsapp/verify/", {"code": "000000"}, format="json")
    elif operation == "7-register":
        code = graph.last_code(pnid)["code"]
        response = client.post("/api/clinics/whatsapp/verify/", {"code": code}, format="json")
    else:
        response = client.delete("/api/clinics/whatsapp/")
    elapsed = time.monotonic() - started

    # --- assert: bounded, clear, consistent ---
    faulted = [r for r in graph.requests_log() if r.get("fault")]
    assert faulted, f"the fault was never hit: {graph.requests_log()}"
    assert elapsed < _bound(is_get), f"{operation}/{fault} took {elapsed:.2f}s"
    body = response.json()
    assert body.get("detail"), body
    after = _account(clinic)
    if operation in ("5-get-number", "8-get-number"):
        # 5 and 8 answer 200 whatever Meta did; status unchanged, detail says Meta was unreachable.
        assert response.status_code == 200, body
        assert body["status"] == before.status
        assert after.status == before.status
        assert after.phone_number_id == pnid and after.access_token == TOKEN
        return
    expected_http = 504 if fault == "delay" else 502
    assert response.status_code == expected_http, (response.status_code, body)
    assert body["status"] == after.status
    assert TOKEN not in response.content.decode()
    if operation.startswith("6-"):
        # Nothing lost, for real: every stored field is as it was before the request.
        assert after.status == before.status == "disconnected"
        assert {f.attname: getattr(after, f.attname) for f in STORED} == {
            f.attname: getattr(before, f.attname) for f in STORED
        }
        assert MetaAttempt.objects.count() == attempts_before
    elif operation == "7-verify-code":
        # No answer is not a wrong code: nothing counted, the code can be sent again.
        assert after.status == "pending_otp"
        assert WrongCodeAttempt.objects.count() == 0
        graph.clear_faults()
        retry = client.post(
            "/api/clinics/whatsapp/verify/", {"code": graph.last_code(pnid)["code"]}, format="json"
        )
        assert retry.status_code == 200, retry.json()
        assert retry.json()["status"] in ("active", "verifying")
    elif operation == "7-register":
        # The code was right, Meta's answer to register was lost: `verifying`, polling finds out.
        assert after.status == "verifying"
        assert after.registration_pin == before.registration_pin and after.registration_pin
        assert MetaAttempt.objects.count() == attempts_before + 1
    elif operation == "9-deregister":
        # 502/504, status unchanged; the attempt was counted (Meta may have acted).
        assert after.status == "active"
        assert after.number == before.number
        assert MetaAttempt.objects.count() == attempts_before + 1
