"""DELETE /api/clinics/whatsapp/ (endpoint 9)."""

from __future__ import annotations

import pytest
from django.utils import translation

from clinics.models import Clinic
from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.models import MetaAttempt
from whatsapp.tests.helpers import (
    DEREGISTER_URL,
    PNID,
    SETTINGS_URL,
    STATUS_URL,
    TOKEN,
    WABA,
    account_of,
    arrange,
    arrange_active,
    snapshot,
)

pytestmark = pytest.mark.django_db


def bot_on(clinic) -> None:
    Clinic.objects.filter(pk=clinic.pk).update(bot_enabled=True)


# --- who may call ---------------------------------------------------------------------------------


def test_it_requires_authentication(anon_client, clinic, graph):
    arrange_active(clinic)
    assert anon_client.delete(DEREGISTER_URL).status_code == 401
    assert graph.calls == []


def test_it_requires_admin(api_client, clinic_staff, graph):
    arrange_active(clinic_staff.clinic)
    before = snapshot(clinic_staff.clinic)
    assert api_client(clinic_staff).delete(DEREGISTER_URL).status_code == 403
    assert snapshot(clinic_staff.clinic) == before
    assert graph.calls == []


def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, graph):
    arrange_active(inactive_clinic_admin.clinic)
    assert api_client(inactive_clinic_admin).delete(DEREGISTER_URL).status_code == 403
    assert graph.calls == []


def test_it_does_not_touch_another_clinic(api_client, other_clinic_admin, clinic, graph):
    arrange_active(clinic)
    before = snapshot(clinic)
    response = api_client(other_clinic_admin).delete(DEREGISTER_URL)
    assert response.status_code == 200
    assert snapshot(clinic) == before
    assert graph.calls == []


# --- deregistering --------------------------------------------------------------------------------


def test_it_deregisters_an_active_number(admin_api, clinic, graph):
    arrange_active(clinic, app_secret="0f3c1d9a8b7e6f5a")
    bot_on(clinic)
    verify_token = account_of(clinic).verify_token
    graph.deregister()

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    sent = graph.calls_to("POST", f"{PNID}/deregister")
    assert len(sent) == 1
    assert sent[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    account = account_of(clinic)
    assert account.status == "disconnected"
    assert account.number == ""
    assert account.subscribed_at is None
    # Credentials are kept for a later registration.
    assert (account.phone_number_id, account.business_account_id, account.access_token) == (PNID, WABA, TOKEN)
    assert (account.verify_token, account.app_secret, account.registration_pin) == (
        verify_token,
        "0f3c1d9a8b7e6f5a",
        "482915",
    )
    assert Clinic.objects.get(pk=clinic.pk).bot_enabled is False
    assert MetaAttempt.objects.filter(phone_number_id=PNID, kind="deregister").count() == 1
    assert admin_api.get(STATUS_URL).json() == {"status": "disconnected", "number": None, "detail": None}
    settings_body = admin_api.get(SETTINGS_URL).json()
    assert settings_body["whatsapp_status"] == "disconnected"
    assert settings_body["bot_enabled"] is False
    assert settings_body["whatsapp_phone_number_id"] == PNID


@pytest.mark.parametrize("status", ["verifying", "failed"])
def test_it_deregisters_from_any_state(admin_api, clinic, graph, status):
    arrange_active(clinic, status=status)
    graph.deregister()

    response = admin_api.delete(DEREGISTER_URL)

    assert response.json() == {"status": "disconnected"}
    assert len(graph.calls) == 1


def test_it_answers_at_once_when_already_disconnected(admin_api, clinic, graph):
    arrange(clinic, phone_number_id=PNID, access_token=TOKEN)
    bot_on(clinic)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    assert graph.calls == []
    assert MetaAttempt.objects.count() == 0
    assert Clinic.objects.get(pk=clinic.pk).bot_enabled is False


def test_it_does_not_ask_meta_while_only_a_code_is_pending(admin_api, clinic, graph):
    arrange_active(clinic, status="pending_otp")

    response = admin_api.delete(DEREGISTER_URL)

    assert response.json() == {"status": "disconnected"}
    assert graph.calls == []


def test_it_counts_not_registered_as_done(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.error("POST", f"{PNID}/deregister", 133010)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    assert account_of(clinic).status == "disconnected"


@pytest.mark.parametrize(
    ("fault", "http"), [("reset", 502), ("http503", 502), ("http500", 502), ("timeout", 504)]
)
def test_it_keeps_the_status_when_meta_is_unreachable(admin_api, clinic, graph, fault, http):
    arrange_active(clinic)
    bot_on(clinic)
    graph.fault("POST", f"{PNID}/deregister", fault)
    before = snapshot(clinic)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == http
    assert response.json()["status"] == "active"
    assert response.json()["detail"]
    assert snapshot(clinic) == before
    assert len(graph.calls) == 1  # a POST is never retried
    # The attempt may have reached Meta, so it still counts toward the 10 per 72 hours.
    assert MetaAttempt.objects.filter(kind="deregister").count() == 1


@pytest.mark.parametrize("code", [190, 133016])
def test_it_keeps_the_status_when_meta_refuses_and_the_number_stays_registered(
    admin_api, clinic, graph, code
):
    arrange_active(clinic)
    bot_on(clinic)
    graph.error("POST", f"{PNID}/deregister", code)
    before = snapshot(clinic)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 400
    with translation.override("en"):
        expected = str(META_ERROR_SENTENCES[code])
    assert response.json() == {"status": "active", "detail": expected, "meta_code": code}
    assert snapshot(clinic) == before


def test_it_answers_without_a_trailing_slash(admin_api, clinic, graph):
    assert admin_api.delete(DEREGISTER_URL.rstrip("/")).status_code == 200


@pytest.mark.parametrize(
    "code",
    [
        133010,  # not registered
        100,  # no such number (Graph's 100/33 "does not exist or missing permissions")
        200,  # not ours: this token has no permission on the number
    ],
)
@pytest.mark.parametrize("status", ["active", "failed", "verifying"])
def test_it_disconnects_when_meta_says_there_is_nothing_to_undo(admin_api, clinic, graph, code, status):
    # A way out of every state: a wrong id or a number that is not ours never strands the clinic.
    arrange_active(clinic, status=status)
    bot_on(clinic)
    graph.error("POST", f"{PNID}/deregister", code)

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected"}
    account = account_of(clinic)
    assert (account.status, account.number, account.subscribed_at) == ("disconnected", "", None)
    assert Clinic.objects.get(pk=clinic.pk).bot_enabled is False
