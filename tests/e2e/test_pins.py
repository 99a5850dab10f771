"""Register A, then B, then A again against the fake Graph server, over real HTTP.

The fake plays Meta's PIN rule: a number keeps the first two-step PIN registered on it
(deregistering does not remove it) and refuses any other with 133005. A clinic that
comes back to a number it had before must send the PIN it gave that number.
"""

from __future__ import annotations

import pytest

from devtools.fake_graph import FakeGraphServer
from whatsapp.models import NumberPin, WhatsAppAccount

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

WABA = "102290129340398"
TOKEN = "EAAPINS" + "x" * 40
PHONE_A = "+50377654321"
PHONE_B = "+50370001234"


@pytest.fixture
def fake(settings):
    with FakeGraphServer() as server:
        settings.META_GRAPH_URL = server.base_url
        yield server.graph


def _connect(client, graph, pnid: str, phone: str) -> None:
    response = client.post(
        "/api/clinics/whatsapp/register/",
        {"phone": phone, "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
        format="json",
    )
    assert response.json()["status"] == "pending_otp", response.json()
    code = graph.last_code(pnid)["code"]
    response = client.post("/api/clinics/whatsapp/verify/", {"code": code}, format="json")
    assert response.json() == {"status": "active"}, response.json()


def _meta_pin(graph, pnid: str) -> str:
    return graph.snapshot()["numbers"][pnid]["pin"]


def test_register_a_then_b_then_a_again(fake, clinic_admin, api_client):
    client = api_client(clinic_admin)
    a = fake.create_number({"waba_id": WABA, "cc": "503", "phone_number": "77654321"})["id"]
    b = fake.create_number({"waba_id": WABA, "cc": "503", "phone_number": "70001234"})["id"]

    _connect(client, fake, a, PHONE_A)
    pin_a = _meta_pin(fake, a)
    assert client.delete("/api/clinics/whatsapp/").json()["status"] == "disconnected"
    _connect(client, fake, b, PHONE_B)
    assert client.delete("/api/clinics/whatsapp/").json()["status"] == "disconnected"
    _connect(client, fake, a, PHONE_A)

    account = WhatsAppAccount.objects.get(clinic=clinic_admin.clinic)
    assert (account.status, account.number, account.meta_code) == ("active", PHONE_A, None)
    assert _meta_pin(fake, a) == pin_a  # Meta kept A's first PIN, and we sent it
    kept = {row.phone_number_id: row.pin for row in NumberPin.objects.filter(clinic=clinic_admin.clinic)}
    assert kept == {a: pin_a, b: _meta_pin(fake, b)}


def test_the_fake_refuses_another_pin_with_133005(fake, clinic_admin, api_client):
    """The PIN rule this file relies on: a number registered elsewhere keeps that PIN."""
    client = api_client(clinic_admin)
    a = fake.create_number({"waba_id": WABA, "cc": "503", "phone_number": "77654321", "pin": "999999"})["id"]
    client.post(
        "/api/clinics/whatsapp/register/",
        {"phone": PHONE_A, "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
        format="json",
    )

    response = client.post(
        "/api/clinics/whatsapp/verify/", {"code": fake.last_code(a)["code"]}, format="json"
    )

    assert response.status_code == 400
    assert (response.json()["status"], response.json()["meta_code"]) == ("failed", 133005)
    assert _meta_pin(fake, a) == "999999"
    assert NumberPin.objects.count() == 0
