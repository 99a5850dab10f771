"""A connection that never strands a clinic (issue 9): every state x every action, the way out of
`failed`, the number's existing PIN (endpoint 12), one owner per number, and `detail` in the
reader's language. Meta is faked at the HTTP boundary (`responses`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone, translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.models import MetaAttempt, WhatsAppAccount, WhatsAppStatus
from whatsapp.services import AccountEvent, whatsapp_apply_account_event
from whatsapp.tests import helpers
from whatsapp.tests.helpers import (
    CONFIGURE_URL,
    DEREGISTER_URL,
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
    json_of,
    phone_number,
    snapshot,
)

pytestmark = pytest.mark.django_db


PIN_URL = "/api/clinics/whatsapp/pin/"
CONFIGURE = {"phoneNumberId": PNID, "businessAccountId": WABA, "accessToken": TOKEN}
REGISTER = {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN}


def sentence(code: int) -> str:
    with translation.override("en"):
        return str(META_ERROR_SENTENCES[code])


# --- every state x every action -------------------------------------------------------------

STATES = ("disconnected", "pending_otp", "verifying", "active", "failed", "failed_pin")
ACTIONS = ("configure", "register", "verify", "status", "deregister", "pin")

# (state, action) -> (HTTP status, status afterwards), with a Meta that says yes to everything.
TABLE: dict[tuple[str, str], tuple[int, str]] = {
    **{(state, "configure"): (200, "active") for state in STATES},
    **{(state, "register"): (200, "pending_otp") for state in STATES if state != "active"},
    ("active", "register"): (409, "active"),
    **{(state, "verify"): (409, state.replace("failed_pin", "failed")) for state in STATES},
    ("pending_otp", "verify"): (200, "active"),
    ("disconnected", "status"): (200, "disconnected"),
    ("pending_otp", "status"): (200, "pending_otp"),
    ("verifying", "status"): (200, "active"),  # polled: Meta says CONNECTED
    ("active", "status"): (200, "active"),
    ("failed", "status"): (200, "failed"),
    ("failed_pin", "status"): (200, "failed"),
    **{(state, "deregister"): (200, "disconnected") for state in STATES},
    **{(state, "pin"): (409, state.replace("failed_pin", "failed")) for state in STATES},
    ("failed_pin", "pin"): (200, "active"),
    ("active", "pin"): (200, "active"),
}


def test_the_table_has_one_case_per_state_and_action():
    # A state or an action added without deciding its outcome fails here.
    assert set(TABLE) == {(state, action) for state in STATES for action in ACTIONS}
    assert {status for status, _label in WhatsAppStatus.choices} == {
        state for state in STATES if state != "failed_pin"
    }


def arrange_state(clinic, state: str) -> WhatsAppAccount:
    common: dict[str, Any] = {
        "phone_number_id": PNID,
        "business_account_id": WABA,
        "access_token": TOKEN,
        "number": PHONE,
        "registration_pin": "482915",
        "pin_phone_number_id": PNID,
    }
    if state == "active":
        return arrange_active(clinic)
    if state == "pending_otp":
        return arrange_pending(clinic)
    if state == "failed_pin":
        return arrange(clinic, status="failed", meta_code=133005, **common)
    if state == "disconnected":
        return arrange(clinic, status="disconnected", **{**common, "number": ""})
    return arrange(clinic, status=state, **common)


def meta_says_yes(graph) -> None:
    graph.number("CONNECTED")
    graph.numbers((PNID, "+503 7765-4321"))
    graph.request_code()
    graph.verify_code()
    graph.register()
    graph.deregister()
    graph.subscribe()
    graph.add("POST", PNID)  # the PIN


def act(api, action: str):
    if action == "configure":
        return api.put(CONFIGURE_URL, CONFIGURE, format="json")
    if action == "register":
        return api.post(REGISTER_URL, REGISTER, format="json")
    if action == "verify":
        return api.post(VERIFY_URL, {"code": "123456"}, format="json")
    if action == "status":
        return api.get(STATUS_URL)
    if action == "deregister":
        return api.delete(DEREGISTER_URL)
    return api.put(PIN_URL, {"pin": "246810"}, format="json")


@pytest.mark.parametrize(("state", "action"), sorted(TABLE))
def test_each_state_answers_each_action(admin_api, clinic, graph, state, action):
    arrange_state(clinic, state)
    meta_says_yes(graph)
    http, after = TABLE[(state, action)]

    response = act(admin_api, action)

    assert response.status_code == http, response.json()
    assert response.json()["status"] == after
    assert account_of(clinic).status == after
    if http == 409:
        assert response.json()["detail"]
        assert [call.request.method for call in graph.calls] == []


# --- the stuck-in-failed sequence of the issue, ending in `disconnected` --------------------


def test_a_wrong_phone_number_id_never_strands_the_clinic(admin_api, clinic, graph):
    bogus = "999999999999999"
    graph.error("GET", bogus, 100)
    # 5 with an id Meta does not know: failed (100).
    assert admin_api.put(CONFIGURE_URL, {**CONFIGURE, "phoneNumberId": bogus}, format="json").json()[
        "status"
    ] == ("failed")
    # 6: the number is found in the WABA by its digits; Meta's real id replaces the typed one.
    graph.numbers((PNID, "+503 7765-4321"))
    graph.request_code()
    assert admin_api.post(REGISTER_URL, REGISTER, format="json").json() == {"status": "pending_otp"}
    assert account_of(clinic).phone_number_id == PNID
    # 5 again with the bogus id: it always replaces the stored ids -> failed again.
    assert admin_api.put(CONFIGURE_URL, {**CONFIGURE, "phoneNumberId": bogus}, format="json").json()[
        "status"
    ] == ("failed")
    assert account_of(clinic).phone_number_id == bogus
    # 6 again: the bogus stored id is not reused.
    response = admin_api.post(REGISTER_URL, REGISTER, format="json")
    assert response.json() == {"status": "pending_otp"}
    assert account_of(clinic).phone_number_id == PNID
    assert graph.calls_to("POST", f"{bogus}/request_code") == []
    # 5 once more with the bogus id, then 9: Meta's "no such number" counts as done.
    admin_api.put(CONFIGURE_URL, {**CONFIGURE, "phoneNumberId": bogus}, format="json")
    graph.error("POST", f"{bogus}/deregister", 100)
    response = admin_api.delete(DEREGISTER_URL)
    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    account = account_of(clinic)
    assert (account.status, account.number) == ("disconnected", "")


def test_deregister_from_failed_retries_after_meta_was_unreachable(admin_api, clinic, graph):
    arrange_state(clinic, "failed")
    graph.fault("POST", f"{PNID}/deregister", "reset")
    before = snapshot(clinic)

    assert admin_api.delete(DEREGISTER_URL).status_code == 502
    assert snapshot(clinic) == before

    graph.deregister()
    assert admin_api.delete(DEREGISTER_URL).json() == {"status": "disconnected"}


# --- the number's existing two-step PIN (endpoint 12) ----------------------------------------


def test_a_number_with_another_providers_pin_registers_with_that_pin(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.verify_code()
    graph.error("POST", f"{PNID}/register", 133005)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 400
    assert response.json() == {"status": "failed", "detail": sentence(133005), "meta_code": 133005}
    assert "6-digit PIN" in response.json()["detail"]
    account = account_of(clinic)
    assert (account.status, account.meta_code, account.phone_number_id) == ("failed", 133005, PNID)
    assert account.registration_pin == "482915"  # ours, which Meta refused: kept as it was

    graph.mock.replace("POST", helpers.graph_url(f"{PNID}/register"), json={"success": True})
    graph.number("CONNECTED")
    graph.subscribe()
    response = admin_api.put(PIN_URL, {"pin": "135790"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "active", "detail": None}
    account = account_of(clinic)
    assert (account.status, account.registration_pin, account.pin_phone_number_id) == (
        "active",
        "135790",
        PNID,
    )
    assert json_of(graph.calls_to("POST", f"{PNID}/register")[-1])["pin"] == "135790"
    assert MetaAttempt.objects.filter(kind="register").count() == 2  # the PIN counts too
    assert "135790" not in response.content.decode()


def test_a_wrong_existing_pin_stays_failed_and_stores_nothing(admin_api, clinic, graph):
    arrange_state(clinic, "failed_pin")
    graph.error("POST", f"{PNID}/register", 133005)
    before = snapshot(clinic)

    response = admin_api.put(PIN_URL, {"pin": "000000"}, format="json")

    assert response.status_code == 400
    assert response.json()["meta_code"] == 133005
    assert response.json()["status"] == "failed"
    # It says the PIN was wrong, and how many register attempts Meta still allows.
    assert "not this number's two-step verification PIN" in response.json()["detail"]
    assert "9 more register attempts" in response.json()["detail"]
    # Nothing lost: every column as it was, but the detail that asks for the PIN again.
    after = snapshot(clinic)
    assert after.pop("detail_parts") == [{"key": "pin.wrong", "params": {"left": 9}}]
    before.pop("detail_parts")
    assert after == before
    assert before["registration_pin"] == "482915"
    assert MetaAttempt.objects.filter(kind="register").count() == 1  # counted: Meta saw it


@pytest.mark.parametrize("fault", ["reset", "http503"])
def test_an_unreachable_meta_leaves_the_pin_step_as_it_was(admin_api, clinic, graph, fault):
    arrange_state(clinic, "failed_pin")
    graph.fault("POST", f"{PNID}/register", fault)
    before = snapshot(clinic)

    response = admin_api.put(PIN_URL, {"pin": "135790"}, format="json")

    assert response.status_code == 502
    # Meta may have registered the number: `verifying` until a poll knows; the stored PIN is unchanged.
    assert response.json()["status"] == "verifying"
    after = snapshot(clinic)
    assert after["registration_pin"] == before["registration_pin"] == "482915"
    for field in ("phone_number_id", "business_account_id", "number", "access_token", "pin_phone_number_id"):
        assert after[field] == before[field], field


def test_an_active_number_changes_its_pin_at_meta(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.add("POST", PNID)

    response = admin_api.put(PIN_URL, {"pin": "975310"}, format="json", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    assert response.json() == {
        "status": "active",
        "detail": "The two-step verification PIN of the number was changed.",
    }
    assert json_of(graph.calls_to("POST", PNID)[0]) == {"pin": "975310"}
    assert account_of(clinic).registration_pin == "975310"


def test_a_refused_pin_change_leaves_the_number_active(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.error("POST", PNID, 100)
    before = snapshot(clinic)

    response = admin_api.put(PIN_URL, {"pin": "975310"}, format="json")

    assert response.status_code == 400
    assert response.json()["status"] == "active"
    assert snapshot(clinic) == before


@pytest.mark.parametrize("pin", ["12345", "1234567", "12a456", "", None])
def test_the_pin_is_six_digits(admin_api, clinic, graph, pin):
    arrange_state(clinic, "failed_pin")
    response = admin_api.put(PIN_URL, {"pin": pin}, format="json")
    assert response.status_code == 400
    assert "pin" in response.json()
    assert graph.calls == []


def test_the_pin_is_for_admins(api_client, clinic_staff, clinic, graph):
    arrange_state(clinic, "failed_pin")
    assert api_client(clinic_staff).put(PIN_URL, {"pin": "135790"}, format="json").status_code == 403
    assert graph.calls == []


# --- one owner per number ----------------------------------------------------------------------


def test_another_clinic_cannot_save_an_owned_phone_number_id(api_client, other_clinic_admin, clinic, graph):
    arrange_active(clinic)
    other = api_client(other_clinic_admin)

    configure = other.put(CONFIGURE_URL, CONFIGURE, format="json", HTTP_ACCEPT_LANGUAGE="en")
    settings = other.patch("/api/clinics/settings/", {"whatsapp_phone_number_id": PNID}, format="json")

    assert configure.status_code == settings.status_code == 409
    assert "another clinic" in configure.json()["detail"]
    assert graph.calls == []
    assert WhatsAppAccount.objects.filter(phone_number_id=PNID).count() == 1


def test_another_clinic_cannot_register_an_owned_number(api_client, other_clinic_admin, clinic, graph):
    arrange_active(clinic)

    response = api_client(other_clinic_admin).post(
        REGISTER_URL, {**REGISTER, "wabaId": OTHER_WABA}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )

    assert response.status_code == 409
    assert "another clinic" in response.json()["detail"]
    assert graph.calls == []


def test_a_disconnected_clinic_no_longer_holds_the_phone_number_id(
    api_client, other_clinic_admin, clinic, graph
):
    arrange(clinic, status="disconnected", phone_number_id=PNID, access_token=TOKEN)
    graph.number("CONNECTED")
    graph.subscribe()

    response = api_client(other_clinic_admin).put(CONFIGURE_URL, CONFIGURE, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "active"


def test_the_budget_is_per_clinic_and_number(admin_api, clinic, other_clinic, graph):
    # Ten deregisters sent by another clinic that saved this number id spend nothing of this clinic's.
    now = timezone.now()
    for minutes in range(10):
        MetaAttempt.objects.create(
            phone_number_id=PNID,
            kind="deregister",
            clinic=other_clinic,
            created_at=now - timedelta(minutes=minutes),
        )
    arrange_active(clinic)
    graph.deregister()

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    assert MetaAttempt.objects.filter(clinic=clinic).count() == 1


def test_detail_is_rendered_in_the_readers_language(admin_api, clinic, graph):
    arrange_active(clinic, status_checked_at=timezone.now())
    graph.number("CONNECTED")
    # Applied as a webhook would (no reader's language), then read in Spanish and in English.
    whatsapp_apply_account_event(
        account=account_of(clinic), event=AccountEvent("account_update", {"event": "ACCOUNT_VIOLATION"})
    )
    spanish = admin_api.get(STATUS_URL, HTTP_ACCEPT_LANGUAGE="es").json()["detail"]
    english = admin_api.get(STATUS_URL, HTTP_ACCEPT_LANGUAGE="en").json()["detail"]
    assert spanish.startswith("Meta informó una infracción") and "sin especificar" in spanish
    assert english.startswith("Meta reported a policy violation") and "unspecified" in english


def test_an_event_detail_survives_a_status_refresh(admin_api, clinic, graph):
    arrange_active(clinic, status_checked_at=timezone.now() - timedelta(hours=1))
    whatsapp_apply_account_event(
        account=account_of(clinic),
        event=AccountEvent("phone_number_quality_update", {"event": "UPGRADE", "current_limit": "TIER_10K"}),
    )
    graph.add("GET", PNID, json_body=phone_number("CONNECTED"))

    detail = admin_api.get(STATUS_URL, HTTP_ACCEPT_LANGUAGE="en").json()["detail"]

    assert graph.calls_to("GET", PNID)  # Meta was asked
    assert "TIER_10K" in detail
