"""Every Graph call of endpoints 5-9 failing every way: a clear answer, nothing lost, state kept.

Faults: read timeout, connection reset, HTTP 500, HTTP 503, invalid JSON on a 200,
and a proxy's HTML error page.
"""

from __future__ import annotations

import pytest

from whatsapp.models import MetaAttempt, WrongCodeAttempt
from whatsapp.tests.helpers import (
    APP_SECRET,
    CONFIGURE_URL,
    DEREGISTER_URL,
    FAULTS,
    NEW_TOKEN,
    OTHER_PNID,
    OTHER_WABA,
    PHONE,
    PNID,
    REGISTER_URL,
    STATUS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
    snapshot,
)

pytestmark = pytest.mark.django_db


CONFIGURE = {"phoneNumberId": PNID, "businessAccountId": WABA, "accessToken": TOKEN, "appSecret": APP_SECRET}
REGISTER = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN}


def gateway_status(fault: str) -> int:
    return 504 if fault == "timeout" else 502


# --- endpoint 5 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_configure_keeps_everything_when_reading_the_number_fails(admin_api, clinic, graph, fault):
    arrange(clinic, status="verifying", detail="before")
    graph.fault("GET", PNID, fault)

    response = admin_api.put(CONFIGURE_URL, CONFIGURE, format="json")

    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "verifying"
    assert "Meta" in data["detail"] and data["detail"] != "before"
    account = account_of(clinic)
    assert account.status == "verifying"
    assert (account.phone_number_id, account.business_account_id) == (PNID, WABA)
    assert (account.access_token, account.app_secret) == (TOKEN, APP_SECRET)


@pytest.mark.parametrize("fault", FAULTS)
def test_configure_stays_active_when_subscribing_fails(admin_api, clinic, graph, fault):
    graph.number("CONNECTED")
    graph.fault("POST", f"{WABA}/subscribed_apps", fault)

    response = admin_api.put(CONFIGURE_URL, CONFIGURE, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "active"
    assert response.json()["detail"]  # the bot cannot hear patients yet: says so
    account = account_of(clinic)
    assert (account.status, account.subscribed_at) == ("active", None)

    # The next poll tries the subscription again.
    graph.mock.replace(
        "POST", graph.calls_to("POST", f"{WABA}/subscribed_apps")[0].request.url, json={"success": True}
    )
    admin_api.get(STATUS_URL)
    assert account_of(clinic).subscribed_at is not None


# --- endpoint 6 -----------------------------------------------------------------------------------


def _register_setup(graph, failing: str, fault: str) -> None:
    if failing == "list":
        graph.fault("GET", f"{WABA}/phone_numbers", fault)
        return
    graph.numbers()
    if failing == "add":
        graph.fault("POST", f"{WABA}/phone_numbers", fault)
        return
    graph.add_number(PNID)
    graph.fault("POST", f"{PNID}/request_code", fault)


@pytest.mark.parametrize("failing", ["list", "add", "request_code"])
@pytest.mark.parametrize("fault", FAULTS)
def test_register_keeps_every_stored_field(admin_api, clinic, graph, failing, fault):
    # Nothing lost, for real: not the ids, the number, the token, the PIN, nor the status.
    arrange(
        clinic,
        status="failed",
        detail="An earlier problem.",
        business_account_id=OTHER_WABA,
        phone_number_id=OTHER_PNID,
        access_token=NEW_TOKEN,
        number="+50370001234",
        registration_pin="111111",
        pin_phone_number_id=OTHER_PNID,
    )
    _register_setup(graph, failing, fault)
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, REGISTER, format="json")

    assert response.status_code == gateway_status(fault)
    data = response.json()
    assert data["status"] == "failed"
    assert data["detail"]
    assert snapshot(clinic) == before


# --- endpoint 7 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_stays_pending_when_verify_code_fails(admin_api, clinic, graph, fault):
    arrange_pending(clinic)
    graph.fault("POST", f"{PNID}/verify_code", fault)
    before = snapshot(clinic)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == gateway_status(fault)
    assert response.json()["status"] == "pending_otp"
    assert response.json()["detail"]
    assert snapshot(clinic) == before
    assert WrongCodeAttempt.objects.count() == 0
    assert graph.calls_to("POST", f"{PNID}/register") == []


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_moves_to_verifying_when_register_fails(admin_api, clinic, graph, fault):
    """The code was right: Meta may have registered the number, so polling decides."""
    arrange_pending(clinic)
    graph.verify_code()
    graph.fault("POST", f"{PNID}/register", fault)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == gateway_status(fault)
    assert response.json()["status"] == "verifying"
    assert response.json()["detail"]
    account = account_of(clinic)
    assert account.status == "verifying"
    assert account.registration_pin == "482915"
    assert len(graph.calls_to("POST", f"{PNID}/register")) == 1  # never repeated behind our back
    assert MetaAttempt.objects.filter(kind="register").count() == 1


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_answers_verifying_when_the_number_cannot_be_read(admin_api, clinic, graph, fault):
    arrange_pending(clinic)
    graph.verify_code()
    graph.register()
    graph.fault("GET", PNID, fault)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "verifying"}
    assert account_of(clinic).status == "verifying"


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_stays_active_when_subscribing_fails(admin_api, clinic, graph, fault):
    arrange_pending(clinic, subscribed_at=None)
    graph.verify_code()
    graph.register()
    graph.number("CONNECTED")
    graph.fault("POST", f"{WABA}/subscribed_apps", fault)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "active"}
    account = account_of(clinic)
    assert (account.status, account.subscribed_at) == ("active", None)
    assert account.detail


# --- endpoint 8 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_status_shows_the_last_known_status(admin_api, clinic, graph, fault):
    arrange_active(clinic, status="verifying", detail="Waiting for Meta.")
    graph.fault("GET", PNID, fault)
    before = snapshot(clinic)

    response = admin_api.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json()["status"] == "verifying"
    assert "last known status" in response.json()["detail"]
    assert snapshot(clinic) == before


# --- endpoint 9 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_deregister_keeps_the_status(admin_api, clinic, graph, fault):
    arrange_active(clinic)
    graph.fault("POST", f"{PNID}/deregister", fault)
    before = snapshot(clinic)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == gateway_status(fault)
    assert response.json()["status"] == "active"
    assert response.json()["detail"]
    assert snapshot(clinic) == before
