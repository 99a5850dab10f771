"""POST /api/clinics/whatsapp/register/ (endpoint 6)."""

from __future__ import annotations

import re

import pytest
from django.utils import translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.tests.helpers import (
    NEW_TOKEN,
    OTHER_PNID,
    OTHER_WABA,
    PHONE,
    PNID,
    REGISTER_URL,
    STATUS_URL,
    TOKEN,
    WABA,
    account_of,
    arrange,
    arrange_active,
    form_of,
    json_of,
    snapshot,
)

pytestmark = pytest.mark.django_db


def body(**overrides):
    data = {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not ...}


def sentence(code: int) -> str:
    with translation.override("en"):
        return str(META_ERROR_SENTENCES[code])


def number_on_waba(graph, *, pnid: str = PNID) -> None:
    graph.numbers(("1906385232743451", "+1 631-555-5555"), (pnid, "+503 7765-4321"))
    graph.request_code(pnid)


# --- who may call ---------------------------------------------------------------------------------


def test_it_requires_authentication(anon_client, clinic, graph):
    assert anon_client.post(REGISTER_URL, body(), format="json").status_code == 401
    assert graph.calls == []


def test_it_requires_admin(api_client, clinic_staff, graph):
    before = snapshot(clinic_staff.clinic)
    assert api_client(clinic_staff).post(REGISTER_URL, body(), format="json").status_code == 403
    assert snapshot(clinic_staff.clinic) == before
    assert graph.calls == []


def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, graph):
    response = api_client(inactive_clinic_admin).post(REGISTER_URL, body(), format="json")
    assert response.status_code == 403
    assert graph.calls == []


def test_it_refuses_a_user_without_clinic(api_client, clinicless_user, graph):
    assert api_client(clinicless_user).post(REGISTER_URL, body(), format="json").status_code == 403


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"phone": "77654321"},  # no country code
        {"phone": "+503 1234"},
        {"phone": "+1 555 0100"},
        {"phone": "not a phone"},
        {"phone": ""},
        {"phone": ...},
        {"otpMethod": "whatsapp"},
        {"otpMethod": "ivr"},
        {"otpMethod": ""},
        {"otpMethod": ...},
        {"wabaId": "1022/9012"},
        {"wabaId": "102290129340398?x=1"},
        {"wabaId": "w" * 65},
        {"wabaId": ...},
        {"accessToken": "EAAG secret"},
    ],
)
def test_it_rejects_invalid_input_and_saves_nothing(admin_api, clinic, graph, overrides):
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, body(**overrides), format="json")

    assert response.status_code == 400
    assert next(iter(overrides)) in response.json()
    assert snapshot(clinic) == before
    assert graph.calls == []


def test_it_requires_a_token_when_none_is_stored(admin_api, clinic, graph):
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, body(accessToken=...), format="json")

    assert response.status_code == 400
    assert "accessToken" in response.json()
    assert snapshot(clinic) == before
    assert graph.calls == []


@pytest.mark.parametrize(
    ("given", "meta_method"), [("sms", "SMS"), ("SMS", "SMS"), ("Voice", "VOICE"), ("VOICE", "VOICE")]
)
def test_it_accepts_the_otp_method_in_any_case(admin_api, clinic, graph, given, meta_method):
    number_on_waba(graph)

    response = admin_api.post(REGISTER_URL, body(otpMethod=given), format="json")

    assert response.status_code == 200
    assert form_of(graph.calls_to("POST", f"{PNID}/request_code")[0])["code_method"] == meta_method


# --- the happy paths ------------------------------------------------------------------------------


def test_it_finds_the_number_on_the_waba_and_requests_a_code(admin_api, clinic, graph):
    graph.numbers(("1906385232743451", "+1 631-555-5555"), (PNID, "+503 7765-4321"))
    graph.request_code(PNID)

    response = admin_api.post(REGISTER_URL, body(), format="json", HTTP_ACCEPT_LANGUAGE="es")

    assert response.status_code == 200
    assert response.json() == {"status": "pending_otp"}
    account = account_of(clinic)
    assert account.status == "pending_otp"
    assert (account.number, account.phone_number_id, account.business_account_id) == (PHONE, PNID, WABA)
    assert account.access_token == TOKEN
    assert re.fullmatch(r"[0-9]{6}", account.registration_pin)
    assert account.pin_phone_number_id == PNID
    assert graph.calls_to("POST", f"{WABA}/phone_numbers") == []
    sent = graph.calls_to("POST", f"{PNID}/request_code")
    assert len(sent) == 1
    assert form_of(sent[0]) == {"code_method": "SMS", "language": "es"}
    assert sent[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert graph.calls_to("POST", f"{PNID}/register") == []  # only after the code


def test_it_asks_for_the_code_in_english(admin_api, clinic, graph):
    number_on_waba(graph)

    response = admin_api.post(REGISTER_URL, body(otpMethod="voice"), format="json", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    assert form_of(graph.calls_to("POST", f"{PNID}/request_code")[0]) == {
        "code_method": "VOICE",
        "language": "en_US",
    }


def test_it_adds_the_number_when_the_waba_does_not_have_it(admin_api, clinic, graph):
    graph.numbers(("1906385232743451", "+1 631-555-5555"))
    graph.add_number(OTHER_PNID)
    graph.request_code(OTHER_PNID)

    response = admin_api.post(REGISTER_URL, body(), format="json")

    assert response.status_code == 200
    created = graph.calls_to("POST", f"{WABA}/phone_numbers")
    assert len(created) == 1
    assert json_of(created[0]) == {
        "cc": "503",
        "phone_number": "77654321",
        "verified_name": "Clínica San Salvador",
    }
    account = account_of(clinic)
    assert (account.status, account.phone_number_id, account.pin_phone_number_id) == (
        "pending_otp",
        OTHER_PNID,
        OTHER_PNID,
    )


def test_it_normalises_the_phone_to_e164(admin_api, clinic, graph):
    number_on_waba(graph)
    admin_api.post(REGISTER_URL, body(phone="+503 7765-4321"), format="json")
    assert account_of(clinic).number == "+50377654321"


def test_it_uses_the_stored_token_when_masked(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    number_on_waba(graph)

    response = admin_api.post(REGISTER_URL, body(accessToken=TOKEN[:8] + "...****"), format="json")

    assert response.status_code == 200
    assert account_of(clinic).access_token == TOKEN
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in graph.calls)


def test_it_stores_a_new_token(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    number_on_waba(graph)

    admin_api.post(REGISTER_URL, body(accessToken=NEW_TOKEN), format="json")

    assert account_of(clinic).access_token == NEW_TOKEN


def test_it_tells_where_the_code_goes(admin_api, clinic, graph):
    number_on_waba(graph)
    admin_api.post(REGISTER_URL, body(), format="json")

    status = admin_api.get(STATUS_URL).json()

    assert status["status"] == "pending_otp"
    assert status["number"] == PHONE
    assert "SMS" in status["detail"] and PHONE in status["detail"]


def test_it_keeps_the_pin_when_the_same_number_registers_again(admin_api, clinic, graph):
    number_on_waba(graph)
    admin_api.post(REGISTER_URL, body(), format="json")
    first_pin = account_of(clinic).registration_pin

    response = admin_api.post(REGISTER_URL, body(otpMethod="voice"), format="json")

    assert response.status_code == 200
    assert account_of(clinic).registration_pin == first_pin
    # The stored id is never trusted: the number is looked up in the WABA every time.
    assert len(graph.calls_to("GET", f"{WABA}/phone_numbers")) == 2


# --- status rules ---------------------------------------------------------------------------------


def test_it_refuses_while_active(admin_api, clinic, graph):
    arrange_active(clinic)
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, body(phone="+503 7000-0000"), format="json")

    assert response.status_code == 409
    assert response.json()["status"] == "active"
    assert "Deregister" in response.json()["detail"]
    assert snapshot(clinic) == before
    assert graph.calls == []


@pytest.mark.parametrize("status", ["disconnected", "failed", "pending_otp", "verifying"])
def test_it_restarts_from(admin_api, clinic, graph, status):
    arrange(
        clinic,
        status=status,
        phone_number_id=PNID,
        business_account_id=WABA,
        access_token=TOKEN,
        number=PHONE,
        registration_pin="482915",
        pin_phone_number_id=PNID,
    )
    number_on_waba(graph)

    response = admin_api.post(REGISTER_URL, body(), format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "pending_otp"}
    account = account_of(clinic)
    assert account.status == "pending_otp"
    assert account.registration_pin == "482915"  # Meta keeps a number's first PIN


def test_it_forgets_the_old_number_id_for_a_different_number(admin_api, clinic, graph):
    arrange(
        clinic,
        status="failed",
        phone_number_id=PNID,
        number=PHONE,
        access_token=TOKEN,
        registration_pin="482915",
        pin_phone_number_id=PNID,
    )
    graph.numbers((OTHER_PNID, "+503 7000-1234"))
    graph.request_code(OTHER_PNID)

    response = admin_api.post(REGISTER_URL, body(phone="+503 7000-1234"), format="json")

    assert response.status_code == 200
    account = account_of(clinic)
    assert (account.phone_number_id, account.number, account.pin_phone_number_id) == (
        OTHER_PNID,
        "+50370001234",
        OTHER_PNID,
    )
    assert account.registration_pin != "482915"


# --- Meta refuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", f"{PNID}/request_code", 136024),
        ("GET", f"{WABA}/phone_numbers", 190),
        ("GET", f"{WABA}/phone_numbers", 200),
        ("POST", f"{PNID}/request_code", 131031),
    ],
)
def test_it_reports_a_refusal_as_failed_and_stores_nothing_else(admin_api, clinic, graph, method, path, code):
    arrange(clinic, status="disconnected", business_account_id=OTHER_WABA, access_token=NEW_TOKEN)
    if not path.startswith(WABA):
        graph.numbers((PNID, "+503 7765-4321"))
    graph.error(method, path, code)
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, body(), format="json", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 400
    assert response.json() == {"status": "failed", "detail": sentence(code), "meta_code": code}
    account = account_of(clinic)
    with translation.override("en"):
        assert (account.status, account.meta_code, account.detail) == ("failed", code, sentence(code))
    # Only the outcome changed: ids, number, token and PIN are as they were.
    after = snapshot(clinic)
    for field in ("status", "detail_parts", "meta_code"):
        after.pop(field), before.pop(field)
    assert after == before


def test_it_reports_a_refused_add_in_metas_words(admin_api, clinic, graph):
    graph.numbers()
    graph.error("POST", f"{WABA}/phone_numbers", 200000)

    response = admin_api.post(REGISTER_URL, body(), format="json")

    assert response.status_code == 400
    data = response.json()
    assert (data["status"], data["meta_code"]) == ("failed", 200000)
    assert "Cannot add phone number to WhatsApp Business Account" in data["detail"]


# --- Meta unreachable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "fault", "http"),
    [
        ("GET", f"{WABA}/phone_numbers", "reset", 502),
        ("GET", f"{WABA}/phone_numbers", "http503", 502),
        ("GET", f"{WABA}/phone_numbers", "timeout", 504),
        ("POST", f"{PNID}/request_code", "reset", 502),
        ("POST", f"{PNID}/request_code", "timeout", 504),
    ],
)
def test_it_keeps_status_and_inputs_when_meta_is_unreachable(
    admin_api, clinic, graph, method, path, fault, http
):
    arrange(clinic, status="failed", detail="An earlier problem.")
    if not path.startswith(WABA):
        graph.numbers((PNID, "+503 7765-4321"))
    graph.fault(method, path, fault)
    before = snapshot(clinic)

    response = admin_api.post(REGISTER_URL, body(), format="json")

    assert response.status_code == http
    data = response.json()
    assert data["status"] == "failed"
    assert data["detail"]
    assert "meta_code" not in data
    assert snapshot(clinic) == before
