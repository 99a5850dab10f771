"""WhatsApp on the settings page: credentials, check, register, code, resend, deregister.

Meta is faked at the HTTP boundary with `responses` and real-shaped payloads
(whatsapp/tests/data), so the real MetaClient and services run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import responses
from django.test import Client

from clinics.tests.factories import LONG_TOKEN, fill_clinic, set_whatsapp, snapshot
from whatsapp import meta
from whatsapp.models import MetaAttempt, NumberPin, WhatsAppAccount, WhatsAppStatus

DATA = Path(__file__).resolve().parents[2] / "whatsapp" / "tests" / "data"
GRAPH = "https://graph.facebook.com/v26.0"
SETTINGS = "/settings/"
CREDENTIALS = "/settings/whatsapp/credentials/"
CHECK = "/settings/whatsapp/check/"
REGISTER = "/settings/whatsapp/register/"
RESEND = "/settings/whatsapp/resend/"
VERIFY = "/settings/whatsapp/verify/"
DEREGISTER = "/settings/whatsapp/deregister/"
NEW_TOKEN = "EAAnewTOKEN0000000000000000000000000000xyz"
PNID = "110200345501442"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def phone_json(status: str = "CONNECTED", display: str = "+503 7765 4321") -> dict:
    return {
        **load("phone_number_connected.json"),
        "id": PNID,
        "status": status,
        "display_phone_number": display,
    }


def signed_in(user, *, language: str = "en", csrf: bool = False) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language, enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def account_of(clinic) -> WhatsAppAccount:
    return WhatsAppAccount.objects.get(clinic=clinic)


@pytest.fixture(autouse=True)
def _no_retry_pauses(monkeypatch):
    monkeypatch.setattr(meta, "_sleep", lambda _seconds: None)


@pytest.fixture
def graph():
    """Meta's Graph API, faked; unmatched calls fail like an unreachable Meta."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def allow_subscribe(graph) -> None:
    graph.add(responses.POST, re.compile(rf"{GRAPH}/[\w-]+/subscribed_apps"), json=load("success.json"))


# --- credentials --------------------------------------------------------------------------------


def credentials(**overrides: str) -> dict:
    return {
        "phone_number_id": PNID,
        "business_account_id": "102290129340398",
        "access_token": NEW_TOKEN,
        "verify_token": "",
        "app_secret": "",
        **overrides,
    }


def test_it_saves_credentials_and_checks_them_with_meta(clinic_admin, clinic, graph):
    graph.add(responses.GET, f"{GRAPH}/{PNID}", json=phone_json())
    allow_subscribe(graph)
    client = signed_in(clinic_admin)
    response = client.post(CREDENTIALS, credentials(app_secret="app-secret-value-123"))
    assert response.status_code == 302
    assert response["Location"] == "/settings/#whatsapp"
    account = account_of(clinic)
    assert account.phone_number_id == PNID
    assert account.business_account_id == "102290129340398"
    assert account.access_token == NEW_TOKEN
    assert account.app_secret == "app-secret-value-123"
    assert account.status == WhatsAppStatus.ACTIVE
    assert account.number == "+50377654321"
    html = client.get(SETTINGS).content.decode()
    assert "credentials saved" in html
    assert "EAAnewTO...****" in html
    assert NEW_TOKEN not in html
    assert "app-secret-value-123" not in html


def test_it_keeps_the_stored_token_when_the_field_is_blank(clinic_admin, clinic, graph):
    fill_clinic(clinic)
    set_whatsapp(clinic, app_secret="kept-app-secret")
    graph.add(responses.GET, re.compile(rf"{GRAPH}/\w+"), json=phone_json())
    allow_subscribe(graph)
    response = signed_in(clinic_admin).post(
        CREDENTIALS, credentials(phone_number_id="987654321", access_token="", app_secret="")
    )
    assert response.status_code == 302
    account = account_of(clinic)
    assert account.phone_number_id == "987654321"
    assert account.access_token == LONG_TOKEN
    assert account.app_secret == "kept-app-secret"
    assert account.verify_token == "verify_abc123"


def test_it_clears_the_app_secret_when_asked(clinic_admin, clinic, graph):
    fill_clinic(clinic)
    set_whatsapp(clinic, app_secret="old-app-secret")
    graph.add(responses.GET, re.compile(rf"{GRAPH}/\w+"), json=phone_json())
    allow_subscribe(graph)
    signed_in(clinic_admin).post(
        CREDENTIALS, credentials(phone_number_id="123456789", access_token="", clear_app_secret="on")
    )
    assert account_of(clinic).app_secret is None


def test_it_requires_a_token_when_none_is_stored(clinic_admin, clinic):
    before = snapshot(clinic)
    response = signed_in(clinic_admin).post(CREDENTIALS, credentials(access_token=""))
    assert response.status_code == 400
    html = response.content.decode()
    assert "none is stored for this clinic yet" in html.split('id="cred_access_token_error"', 1)[1][:300]
    assert snapshot(clinic) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phone_number_id", "12/../34", "1 to 64 letters"),
        ("business_account_id", "waba?x=1", "1 to 64 letters"),
        ("access_token", "has a space", "no spaces"),
        ("verify_token", "v" * 256, "Use at most 255 characters"),
        ("app_secret", "tab\tsecret", "no spaces"),
    ],
)
def test_it_shows_invalid_credentials_next_to_the_field(clinic_admin, clinic, field, value, message):
    fill_clinic(clinic)
    before = snapshot(clinic)
    response = signed_in(clinic_admin).post(CREDENTIALS, credentials(**{field: value}))
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html.split(f'id="cred_{field}_error"', 1)[1][:400]
    assert snapshot(clinic) == before
    # A rejected secret is never echoed back into the page.
    if field in ("access_token", "app_secret"):
        assert value not in html
    assert NEW_TOKEN not in html


def test_it_reports_a_meta_refusal_as_a_message(clinic_admin, clinic, graph):
    graph.add(responses.GET, f"{GRAPH}/{PNID}", json=load("error_190_invalid_token.json"), status=401)
    client = signed_in(clinic_admin)
    response = client.post(CREDENTIALS, credentials(), follow=True)
    assert response.status_code == 200
    account = account_of(clinic)
    assert account.access_token == NEW_TOKEN  # stored first, whatever Meta says
    assert account.status == WhatsAppStatus.FAILED
    html = response.content.decode()
    assert "message--error" in html
    assert account.detail.split(".")[0].replace("'", "&#x27;") in html


def test_it_keeps_credentials_when_meta_is_unreachable(clinic_admin, clinic, graph):
    response = signed_in(clinic_admin).post(CREDENTIALS, credentials(), follow=True)
    assert response.status_code == 200
    account = account_of(clinic)
    assert account.access_token == NEW_TOKEN
    assert account.status == WhatsAppStatus.DISCONNECTED
    html = response.content.decode()
    # The clinic chose "already on the Cloud API": it stays there, with a way to ask Meta again,
    # and the register step does not appear.
    assert 'id="credentials-step"' in html
    assert 'id="recheck"' in html
    assert 'id="register"' not in html
    assert "Saved, but Meta could not be reached to confirm the number." in html
    assert html.count("/settings/whatsapp/check/") == 1  # one way to ask Meta again, not two
    assert html.count("could not be reached to check them") == 1  # said once, under the status
    assert 'value="110200345501442"' in html


def test_checking_again_once_meta_answers_connects_the_number(clinic_admin, clinic, graph):
    client = signed_in(clinic_admin)
    client.post(CREDENTIALS, credentials())
    graph.add(responses.GET, f"{GRAPH}/{PNID}", json=phone_json())
    allow_subscribe(graph)

    html = client.post(CHECK, follow=True).content.decode()

    assert account_of(clinic).status == WhatsAppStatus.ACTIVE
    assert 'id="recheck"' not in html
    assert 'id="connected"' in html


def test_it_refuses_staff_credential_writes(clinic_staff, clinic):
    fill_clinic(clinic)
    before = snapshot(clinic)
    response = signed_in(clinic_staff).post(CREDENTIALS, credentials())
    assert response.status_code == 403
    assert snapshot(clinic) == before


def test_credentials_csrf_is_enforced(clinic_admin, clinic):
    before = snapshot(clinic)
    assert signed_in(clinic_admin, csrf=True).post(CREDENTIALS, credentials()).status_code == 403
    assert snapshot(clinic) == before


def test_the_credentials_form_never_renders_a_secret(clinic_admin, clinic):
    fill_clinic(clinic)
    set_whatsapp(clinic, app_secret="app-secret-never-shown")
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert LONG_TOKEN not in html
    assert "app-secret-never-shown" not in html
    assert re.search(r'<input type="password" name="access_token"[^>]*>', html)
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids on the page"
    assert 'name="access_token" value=' not in html


# --- check connection ---------------------------------------------------------------------------


def test_it_checks_the_connection(clinic_admin, clinic, graph):
    fill_clinic(clinic)
    graph.add(responses.GET, f"{GRAPH}/123456789", json=phone_json("PENDING"))
    response = signed_in(clinic_admin).post(CHECK, follow=True)
    assert response.status_code == 200
    assert account_of(clinic).status == WhatsAppStatus.VERIFYING
    html = response.content.decode()
    assert "Connection checked." in html
    assert 'data-poll-url="/api/clinics/whatsapp/status"' in html


def test_there_is_nothing_to_check_before_a_number_is_saved(clinic_admin, clinic):
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert "/settings/whatsapp/check/" not in html


def test_it_refuses_staff_check(clinic_staff):
    assert signed_in(clinic_staff).post(CHECK).status_code == 403


# --- register, code, resend ---------------------------------------------------------------------


def register_form(**overrides: str) -> dict:
    return {
        "number": "+503 7765-4321",
        "otp_method": "sms",
        "business_account_id": "102290129340398",
        "access_token": "",
        **overrides,
    }


def fake_register(graph) -> None:
    graph.add(
        responses.GET,
        f"{GRAPH}/102290129340398/phone_numbers",
        json={"data": [], "paging": {"cursors": {"before": "a", "after": "b"}}},
    )
    graph.add(responses.POST, f"{GRAPH}/102290129340398/phone_numbers", json={"id": PNID})
    graph.add(responses.POST, f"{GRAPH}/{PNID}/request_code", json=load("success.json"))


def test_it_registers_a_number_and_asks_for_the_code(clinic_admin, clinic, graph):
    set_whatsapp(clinic, access_token=LONG_TOKEN)
    fake_register(graph)
    client = signed_in(clinic_admin)
    response = client.post(REGISTER, register_form(otp_method="voice"))
    assert response.status_code == 302
    account = account_of(clinic)
    assert account.status == WhatsAppStatus.PENDING_OTP
    assert account.number == "+50377654321"
    assert account.phone_number_id == PNID
    request_code = next(call for call in graph.calls if call.request.url.endswith("request_code"))
    body = request_code.request.body
    assert "VOICE" in (body.decode() if isinstance(body, bytes) else body)
    html = client.get(SETTINGS).content.decode()
    assert 'name="code"' in html
    assert "Send a new code by SMS" in html
    assert "attempts left in the next 72 hours" in html


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("number", "+503 1234", "not a valid phone number"),
        ("number", "7765-4321", "international format"),
        ("otp_method", "fax", "Select a valid choice"),
        ("business_account_id", "../me", "1 to 64 letters"),
    ],
)
def test_it_shows_invalid_register_input_next_to_the_field(clinic_admin, clinic, field, value, message):
    set_whatsapp(clinic, access_token=LONG_TOKEN)
    before = snapshot(clinic)
    response = signed_in(clinic_admin).post(REGISTER, register_form(**{field: value}))
    assert response.status_code == 400
    assert message in response.content.decode().split(f'id="reg_{field}_error"', 1)[1][:400]
    assert snapshot(clinic) == before


def test_it_shows_the_services_token_error_next_to_the_token_field(clinic_admin, clinic):
    response = signed_in(clinic_admin).post(REGISTER, register_form())
    assert response.status_code == 400
    html = response.content.decode()
    assert "none is stored for this clinic" in html.split('id="reg_access_token_error"', 1)[1][:400]
    assert account_of(clinic).status == WhatsAppStatus.DISCONNECTED


def test_it_reports_a_status_conflict(clinic_admin, clinic):
    fill_clinic(clinic)
    set_whatsapp(
        clinic, status=WhatsAppStatus.ACTIVE, number="+50377654321", subscribed_at="2025-01-01T00:00Z"
    )
    from django.utils import timezone

    set_whatsapp(clinic, status_checked_at=timezone.now())
    response = signed_in(clinic_admin).post(REGISTER, register_form(), follow=True)
    assert "Deregister it first" in response.content.decode()
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE


def pending(clinic) -> None:
    set_whatsapp(
        clinic,
        access_token=LONG_TOKEN,
        business_account_id="102290129340398",
        phone_number_id=PNID,
        number="+50377654321",
        status=WhatsAppStatus.PENDING_OTP,
        registration_pin="123456",
        pin_phone_number_id=PNID,
    )


def test_it_verifies_the_code_and_the_number_becomes_active(clinic_admin, clinic, graph):
    pending(clinic)
    graph.add(responses.POST, f"{GRAPH}/{PNID}/verify_code", json=load("success.json"))
    graph.add(responses.POST, f"{GRAPH}/{PNID}/register", json=load("success.json"))
    graph.add(responses.GET, f"{GRAPH}/{PNID}", json=phone_json())
    allow_subscribe(graph)
    client = signed_in(clinic_admin)
    response = client.post(VERIFY, {"code": "123 456"})
    assert response.status_code == 302
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE
    verify_call = next(call for call in graph.calls if call.request.url.endswith("verify_code"))
    assert "code=123456" in verify_call.request.body
    html = client.get(SETTINGS).content.decode()
    assert "verified and active" in html
    assert 'id="deregister"' in html
    assert "once WhatsApp is active" not in html


def test_it_reports_a_wrong_code(clinic_admin, clinic, graph):
    pending(clinic)
    graph.add(
        responses.POST, f"{GRAPH}/{PNID}/verify_code", json=load("error_136025_verify_code.json"), status=400
    )
    response = signed_in(clinic_admin).post(VERIFY, {"code": "000000"}, follow=True)
    html = response.content.decode()
    assert "message--error" in html
    assert "4 attempts left." in html
    assert account_of(clinic).status == WhatsAppStatus.PENDING_OTP


def test_it_shows_an_invalid_code_next_to_the_field(clinic_admin, clinic):
    pending(clinic)
    response = signed_in(clinic_admin).post(VERIFY, {"code": "12ab"})
    assert response.status_code == 400
    assert "4 to 8 digits" in response.content.decode().split('id="id_code_error"', 1)[1][:300]


def test_it_resends_the_code(clinic_admin, clinic, graph):
    pending(clinic)
    graph.add(
        responses.GET,
        f"{GRAPH}/102290129340398/phone_numbers",
        json={"data": [{"id": PNID, "display_phone_number": "+503 7765-4321"}]},
    )
    graph.add(responses.POST, f"{GRAPH}/{PNID}/request_code", json=load("success.json"))
    response = signed_in(clinic_admin).post(RESEND, {"otp_method": "sms"}, follow=True)
    assert "new code" in response.content.decode()
    assert any(call.request.url.endswith("request_code") for call in graph.calls)
    assert account_of(clinic).status == WhatsAppStatus.PENDING_OTP


def test_it_refuses_staff_register_verify_resend(clinic_staff, clinic):
    pending(clinic)
    before = snapshot(clinic)
    client = signed_in(clinic_staff)
    assert client.post(REGISTER, register_form()).status_code == 403
    assert client.post(VERIFY, {"code": "123456"}).status_code == 403
    assert client.post(RESEND, {"otp_method": "sms"}).status_code == 403
    assert snapshot(clinic) == before


def test_register_and_verify_enforce_csrf(clinic_admin, clinic):
    pending(clinic)
    client = signed_in(clinic_admin, csrf=True)
    assert client.post(REGISTER, register_form()).status_code == 403
    assert client.post(VERIFY, {"code": "123456"}).status_code == 403
    assert client.post(RESEND, {"otp_method": "sms"}).status_code == 403


# --- deregister ---------------------------------------------------------------------------------


def active(clinic) -> None:
    from django.utils import timezone

    fill_clinic(clinic)
    set_whatsapp(
        clinic,
        phone_number_id=PNID,
        status=WhatsAppStatus.ACTIVE,
        number="+50377654321",
        status_checked_at=timezone.now(),
        subscribed_at=timezone.now(),
    )


def test_it_deregisters_after_a_typed_confirmation(clinic_admin, clinic, graph):
    active(clinic)
    graph.add(responses.POST, f"{GRAPH}/{PNID}/deregister", json=load("success.json"))
    client = signed_in(clinic_admin)
    assert "Type the number +50377654321 to confirm." in client.get(SETTINGS).content.decode()
    response = client.post(DEREGISTER, {"confirmation": "+503 7765-4321"})
    assert response.status_code == 302
    account = account_of(clinic)
    assert account.status == WhatsAppStatus.DISCONNECTED
    assert account.access_token == LONG_TOKEN  # credentials kept
    clinic.refresh_from_db()
    assert clinic.bot_enabled is False
    assert MetaAttempt.objects.filter(kind="deregister").count() == 1


def test_it_refuses_a_wrong_confirmation(clinic_admin, clinic):
    active(clinic)
    before = snapshot(clinic)
    response = signed_in(clinic_admin).post(DEREGISTER, {"confirmation": "+50300000000"})
    assert response.status_code == 400
    assert "does not match" in response.content.decode().split('id="id_confirmation_error"', 1)[1][:300]
    assert snapshot(clinic) == before


def test_it_reports_meta_unreachable_on_deregister(clinic_admin, clinic, graph):
    active(clinic)
    graph.add(
        responses.POST,
        f"{GRAPH}/{PNID}/deregister",
        json=load("error_2_service_unavailable.json"),
        status=503,
    )
    response = signed_in(clinic_admin).post(DEREGISTER, {"confirmation": "+50377654321"}, follow=True)
    assert "message--error" in response.content.decode()
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE


def test_it_refuses_staff_deregister(clinic_staff, clinic):
    active(clinic)
    before = snapshot(clinic)
    assert signed_in(clinic_staff).post(DEREGISTER, {"confirmation": "+50377654321"}).status_code == 403
    assert snapshot(clinic) == before


def test_deregister_csrf_is_enforced(clinic_admin, clinic):
    active(clinic)
    response = signed_in(clinic_admin, csrf=True).post(DEREGISTER, {"confirmation": "+50377654321"})
    assert response.status_code == 403
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE


# --- the live status ----------------------------------------------------------------------------


def test_a_reload_refreshes_a_verifying_number(clinic_admin, clinic, graph):
    pending(clinic)
    set_whatsapp(clinic, status=WhatsAppStatus.VERIFYING)
    graph.add(responses.GET, f"{GRAPH}/{PNID}", json=phone_json())
    allow_subscribe(graph)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert "badge--active" in html
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE


def test_the_status_endpoint_works_with_the_session(clinic_admin, clinic):
    response = signed_in(clinic_admin).get("/api/clinics/whatsapp/status/")
    assert response.status_code == 200
    assert response.json()["status"] == "disconnected"


# --- the page once connected, and for staff ---------------------------------------------------


def test_once_connected_the_everyday_things_come_first_and_the_pin_change_last(clinic_admin, clinic):
    active(clinic)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    order = [html.index(marker) for marker in ('id="whatsapp"', 'id="bot"', 'id="health"', 'id="profile"')]
    assert order == sorted(order)
    assert html.index('id="deregister"') < html.index('id="pin"')
    pin = html.split('id="pin"', 1)[1]
    assert pin.startswith(">") or pin.startswith(" ")
    assert "<summary>Change the two-step verification PIN</summary>" in pin
    assert "This service chose one when it registered the number" in pin
    assert "New two-step verification PIN" in pin
    assert "previous provider" not in pin.split("</details>", 1)[0]  # not the old PIN's help


def test_the_existing_pin_step_still_asks_for_the_previous_providers_pin(clinic_admin, clinic):
    fill_clinic(clinic)
    set_whatsapp(clinic, phone_number_id=PNID, status=WhatsAppStatus.FAILED, meta_code=133005)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert "Enter the number's existing PIN" in html
    assert "The 6 digits set for this number in WhatsApp Manager or its previous provider." in html


def test_each_meta_word_has_a_plain_sentence(clinic_admin, clinic):
    html = signed_in(clinic_admin, language="es").get(SETTINGS).content.decode()
    for sentence in (
        "La API de WhatsApp Cloud es el servicio de Meta",
        "La cuenta de Meta que contiene los números de WhatsApp de su clínica.",
        "El número interno que Meta da a su número de WhatsApp",
        "Una contraseña larga de Meta que permite a este servicio usar",
        "La dirección donde Meta entrega a este servicio los mensajes de los pacientes (el webhook)",
        "Una palabra que Meta repite una vez",
        "La clave con la que Meta firma cada entrega",
    ):
        assert sentence in html, sentence


@pytest.mark.parametrize(
    ("status", "meta_code", "sentence"),
    [
        (
            WhatsAppStatus.FAILED,
            133005,
            "The connection needs your clinic's administrator: let them know.",
        ),
        (WhatsAppStatus.PENDING_OTP, None, "Your clinic's administrator is connecting this number"),
        (WhatsAppStatus.DISCONNECTED, None, "Your clinic's administrator connects it on this page."),
    ],
)
def test_staff_never_read_an_instruction_they_cannot_follow(
    clinic_staff, clinic, status, meta_code, sentence
):
    fill_clinic(clinic)
    set_whatsapp(clinic, phone_number_id=PNID, status=status, meta_code=meta_code)
    WhatsAppAccount.objects.filter(clinic=clinic).update(
        detail_parts=[
            {"key": "meta.133005", "params": {}},
            {"key": "subscribe.refused", "params": {"why": "x"}},
        ]
    )
    html = signed_in(clinic_staff).get(SETTINGS).content.decode()
    assert sentence in html
    for instruction in ("Enter that", "Check connection", "Connect a number first", "Register it again"):
        assert instruction not in html, instruction


def test_the_simulated_numbers_are_listed_in_plain_words(clinic_admin, clinic, settings):
    settings.META_SIMULATED = True
    settings.META_GRAPH_URL = "http://127.0.0.1:8765/v26.0"
    fill_clinic(clinic)
    set_whatsapp(clinic, business_account_id="102290129340398")
    state = {
        "numbers": {
            "1": {
                "id": "109000000000001",
                "waba_id": "102290129340398",
                "display_phone_number": "+503 2200 0001",
                "status": "CONNECTED",
            },
            "2": {
                "id": "109000000000002",
                "waba_id": "102290129340398",
                "display_phone_number": "+503 2200 0002",
                "status": "PENDING",
                "is_pin_enabled": True,
                "pin": "123456",
            },
            # A number this clinic registered before: its PIN is the clinic's own.
            "3": {
                "id": "109000000000003",
                "waba_id": "102290129340398",
                "display_phone_number": "+503 7000 1111",
                "status": "DISCONNECTED",
                "is_pin_enabled": True,
                "pin": "654321",
            },
        }
    }
    NumberPin.objects.create(clinic=clinic, phone_number_id="109000000000003", pin="654321")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as control:
        control.add(responses.GET, "http://127.0.0.1:8765/_fake/state", json=state)
        html = signed_in(clinic_admin, language="es").get(SETTINGS).content.decode()
    listed = html.split('id="simulated-numbers"', 1)[1].split("</div>", 1)[0]
    assert "ya está en la API de WhatsApp Cloud" in listed
    assert "aún no está en la API de WhatsApp Cloud" in listed
    assert "CONNECTED" not in listed and "PENDING" not in listed
    # Another provider's PIN is listed (the newcomer needs it); the clinic's own never is.
    assert listed.count("PIN de dos pasos de otro proveedor") == 1
    assert "123456" in listed and "654321" not in html
