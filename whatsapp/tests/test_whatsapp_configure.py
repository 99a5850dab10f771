"""PUT /api/clinics/whatsapp/ (endpoint 5) and the settings endpoint's credential changes."""

from __future__ import annotations

import pytest
import requests
from django.db import connection
from django.utils import translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.tests import helpers
from whatsapp.tests.helpers import (
    APP_SECRET,
    CONFIGURE_URL,
    DISPLAY,
    NEW_TOKEN,
    OTHER_WABA,
    PNID,
    SETTINGS_URL,
    TOKEN,
    WABA,
    account_of,
    arrange,
    arrange_active,
    graph_url,
    snapshot,
)

pytestmark = pytest.mark.django_db


def body(**overrides):
    data = {
        "phoneNumberId": PNID,
        "businessAccountId": WABA,
        "accessToken": TOKEN,
        "verifyToken": "vibecoding",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not ...}


def sentence(code: int) -> str:
    with translation.override("en"):
        return str(META_ERROR_SENTENCES[code])


# --- who may call ---------------------------------------------------------------------------------


def test_it_requires_authentication(anon_client, clinic, graph):
    response = anon_client.put(CONFIGURE_URL, body(), format="json")
    assert response.status_code == 401
    assert graph.calls == []


def test_it_requires_admin(api_client, clinic_staff, graph):
    before = snapshot(clinic_staff.clinic)
    response = api_client(clinic_staff).put(CONFIGURE_URL, body(), format="json")
    assert response.status_code == 403
    assert "administrator" in response.json()["detail"]
    assert snapshot(clinic_staff.clinic) == before
    assert graph.calls == []


def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, graph):
    response = api_client(inactive_clinic_admin).put(CONFIGURE_URL, body(), format="json")
    assert response.status_code == 403
    assert "inactive" in response.json()["detail"]
    assert account_of(inactive_clinic_admin.clinic).phone_number_id == ""


def test_it_refuses_a_user_without_clinic(api_client, clinicless_user, graph):
    response = api_client(clinicless_user).put(CONFIGURE_URL, body(), format="json")
    assert response.status_code == 403
    assert "not linked to any clinic" in response.json()["detail"]


def test_it_changes_only_the_callers_clinic(api_client, other_clinic_admin, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()
    before = snapshot(clinic)
    response = api_client(other_clinic_admin).put(CONFIGURE_URL, body(), format="json")
    assert response.status_code == 200
    assert snapshot(clinic) == before
    assert account_of(other_clinic_admin.clinic).phone_number_id == PNID


# --- validation: 400 and nothing saved -------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"phoneNumberId": "1065/4035"},
        {"phoneNumberId": "106540352242922?fields=id"},
        {"phoneNumberId": "../me"},
        {"phoneNumberId": "1" * 65},
        {"phoneNumberId": ""},
        {"phoneNumberId": ...},
        {"businessAccountId": "1022.9012"},
        {"businessAccountId": "b" * 65},
        {"businessAccountId": ...},
        {"accessToken": "EAAG secret token"},
        {"accessToken": "EAAG\tsecret"},
        {"accessToken": ""},
        {"accessToken": "x" * 2049},
        {"verifyToken": "two words"},
        {"verifyToken": "v" * 256},
        {"appSecret": "has space"},
        {"phoneNumberId": 106540352242922},
    ],
)
def test_it_rejects_invalid_input_and_saves_nothing(admin_api, clinic, graph, overrides):
    arrange(clinic, access_token="EAAGstoredTOKEN0123456789")
    before = snapshot(clinic)

    response = admin_api.put(CONFIGURE_URL, body(**overrides), format="json")

    assert response.status_code == 400
    field = next(iter(overrides))
    assert field in response.json()
    assert snapshot(clinic) == before
    assert graph.calls == []


def test_it_accepts_64_character_ids(admin_api, clinic, graph):
    long_id = "A1_-" * 16
    graph.number("CONNECTED", pnid=long_id)
    graph.subscribe(waba=long_id)
    response = admin_api.put(
        CONFIGURE_URL, body(phoneNumberId=long_id, businessAccountId=long_id), format="json"
    )
    assert response.status_code == 200
    assert account_of(clinic).phone_number_id == long_id


def test_it_requires_an_access_token_when_none_is_stored(admin_api, clinic, graph):
    arrange(clinic, access_token=None)
    before = snapshot(clinic)

    response = admin_api.put(CONFIGURE_URL, body(accessToken=...), format="json")

    assert response.status_code == 400
    assert "accessToken" in response.json()
    assert snapshot(clinic) == before


def test_it_rejects_a_masked_token_when_none_is_stored(admin_api, clinic, graph):
    arrange(clinic, access_token=None)
    before = snapshot(clinic)

    response = admin_api.put(CONFIGURE_URL, body(accessToken="EAAOKw1x...****"), format="json")

    assert response.status_code == 400
    assert snapshot(clinic) == before


def test_it_keeps_the_stored_token_when_omitted(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.put(CONFIGURE_URL, body(accessToken=...), format="json")

    assert response.status_code == 200
    assert account_of(clinic).access_token == TOKEN
    assert graph.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_it_keeps_the_stored_token_when_masked(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.put(CONFIGURE_URL, body(accessToken=TOKEN[:8] + "...****"), format="json")

    assert response.status_code == 200
    assert account_of(clinic).access_token == TOKEN


def test_it_replaces_the_token(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.put(CONFIGURE_URL, body(accessToken=NEW_TOKEN), format="json")

    assert response.status_code == 200
    assert account_of(clinic).access_token == NEW_TOKEN
    assert graph.calls[0].request.headers["Authorization"] == f"Bearer {NEW_TOKEN}"


def test_it_keeps_the_verify_token_when_omitted(admin_api, clinic, graph):
    original = account_of(clinic).verify_token
    assert original  # a new clinic gets a random one
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.put(CONFIGURE_URL, body(verifyToken=...), format="json")

    assert response.status_code == 200
    assert account_of(clinic).verify_token == original


def test_it_stores_and_clears_the_app_secret(admin_api, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()

    assert admin_api.put(CONFIGURE_URL, body(appSecret=APP_SECRET), format="json").status_code == 200
    assert account_of(clinic).app_secret == APP_SECRET

    assert admin_api.put(CONFIGURE_URL, body(), format="json").status_code == 200
    assert account_of(clinic).app_secret == APP_SECRET  # omitted keeps it

    assert admin_api.put(CONFIGURE_URL, body(appSecret=None), format="json").status_code == 200
    assert account_of(clinic).app_secret is None


# --- Meta's answers -------------------------------------------------------------------------------


def test_it_activates_a_connected_number(admin_api, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.put(CONFIGURE_URL, body(), format="json")

    assert response.status_code == 200
    data = response.json()
    assert data["message"] == "WhatsApp configuration saved: Meta confirms the number is active."
    assert data["status"] == "active"
    assert "meta_code" not in data
    account = account_of(clinic)
    assert account.status == "active"
    assert account.phone_number_id == PNID
    assert account.business_account_id == WABA
    assert account.number == "+50377654321"  # E.164 from "+503 7765-4321"
    assert account.access_token == TOKEN
    assert account.verify_token == "vibecoding"
    assert account.connected_at is not None
    assert account.subscribed_at is not None
    assert account.status_checked_at is not None
    get = graph.calls_to("GET", PNID)
    assert len(get) == 1
    assert "status" in get[0].request.params["fields"].split(",")
    assert get[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(graph.calls_to("POST", f"{WABA}/subscribed_apps")) == 1


def test_it_stores_the_token_encrypted(admin_api, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()

    admin_api.put(CONFIGURE_URL, body(), format="json")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, verify_token FROM whatsapp_whatsappaccount WHERE clinic_id = %s",
            [clinic.pk.hex if connection.vendor == "sqlite" else clinic.pk],
        )
        raw_token, raw_verify = cursor.fetchone()
    assert raw_token
    assert TOKEN not in raw_token
    assert TOKEN[8:20] not in raw_token
    assert "vibecoding" not in raw_verify


def test_it_does_not_subscribe_twice(admin_api, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()

    admin_api.put(CONFIGURE_URL, body(), format="json")
    admin_api.put(CONFIGURE_URL, body(), format="json")

    assert len(graph.calls_to("POST", f"{WABA}/subscribed_apps")) == 1


def test_it_reads_a_pending_number_as_verifying(admin_api, clinic, graph):
    graph.number("PENDING")

    response = admin_api.put(CONFIGURE_URL, body(), format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "verifying"
    assert response.json()["detail"]
    assert account_of(clinic).status == "verifying"
    assert graph.calls_to("POST", f"{WABA}/subscribed_apps") == []


def test_it_reports_an_expired_token_as_failed(admin_api, clinic, graph):
    graph.error("GET", PNID, 190)

    response = admin_api.put(CONFIGURE_URL, body(), format="json")

    assert response.status_code == 200
    data = response.json()
    assert data["message"] == "WhatsApp configuration saved, but Meta did not accept the number: see detail."
    assert data["status"] == "failed"
    assert data["detail"] == sentence(190)
    assert data["meta_code"] == 190
    account = account_of(clinic)
    assert (account.status, account.meta_code) == ("failed", 190)
    assert account.access_token == TOKEN  # stored all the same
    assert len(graph.calls_to("GET", PNID)) == 1  # a refusal is not retried


@pytest.mark.parametrize("fault", ["reset", "http503", "timeout"])
def test_it_keeps_the_credentials_when_meta_is_unreachable(admin_api, clinic, graph, fault):
    arrange(clinic, status="failed", detail="old")
    graph.fault("GET", PNID, fault)

    response = admin_api.put(CONFIGURE_URL, body(appSecret=APP_SECRET), format="json")

    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "failed"  # unchanged
    assert data["message"] == (
        "WhatsApp configuration saved, but Meta could not be reached to check the number: see detail."
    )
    assert "could not be reached" in data["detail"] or "did not answer in time" in data["detail"]
    assert "meta_code" not in data or data["meta_code"] is None
    account = account_of(clinic)
    assert account.status == "failed"
    assert (account.phone_number_id, account.business_account_id) == (PNID, WABA)
    assert (account.access_token, account.verify_token, account.app_secret) == (
        TOKEN,
        "vibecoding",
        APP_SECRET,
    )
    assert len(graph.calls_to("GET", PNID)) == 3  # GETs are retried twice


def test_it_says_what_happened_in_the_readers_language(api_client, clinic_admin, clinic, graph):
    graph.fault("GET", PNID, "reset")
    data = (
        api_client(clinic_admin).put(CONFIGURE_URL, body(), format="json", HTTP_ACCEPT_LANGUAGE="es").json()
    )

    assert data["message"] == (
        "Configuración de WhatsApp guardada, pero no se pudo contactar con Meta para comprobar el número: "
        "vea el detalle."
    )
    assert data["status"] == "disconnected"
    assert account_of(clinic).phone_number_id == PNID


def test_it_drops_an_old_meta_code_when_meta_is_unreachable(admin_api, clinic, graph):
    graph.error("GET", PNID, 190)
    admin_api.put(CONFIGURE_URL, body(), format="json")
    graph.mock.replace("GET", graph_url(PNID), body=requests.exceptions.ConnectionError("reset"))

    response = admin_api.put(CONFIGURE_URL, body(accessToken=NEW_TOKEN), format="json")

    assert response.json()["status"] == "failed"
    assert "meta_code" not in response.json()
    assert account_of(clinic).meta_code is None


def test_it_reports_an_unknown_number_id_as_failed(admin_api, clinic, graph):
    graph.error("GET", PNID, 100)

    response = admin_api.put(CONFIGURE_URL, body(), format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["meta_code"] == 100
    assert response.json()["detail"] == sentence(100)


def test_it_answers_without_a_trailing_slash(admin_api, clinic, graph):
    graph.number("CONNECTED")
    graph.subscribe()
    response = admin_api.put(CONFIGURE_URL.rstrip("/"), body(), format="json")
    assert response.status_code == 200


# --- the settings endpoint goes through the same check ---------------------------------------------


def test_settings_patch_with_a_new_number_id_asks_meta(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    graph.number("CONNECTED", display=DISPLAY)
    graph.subscribe()

    response = admin_api.patch(SETTINGS_URL, {"whatsapp_phone_number_id": PNID}, format="json")

    assert response.status_code == 200
    assert response.json()["whatsapp_status"] == "active"
    assert response.json()["whatsapp_phone_number_id"] == PNID
    assert len(graph.calls_to("GET", PNID)) == 1
    account = account_of(clinic)
    assert (account.status, account.number) == ("active", "+50377654321")


def test_settings_patch_with_a_refused_token_marks_failed(admin_api, clinic, graph):
    arrange(clinic, phone_number_id=PNID, business_account_id=WABA, access_token=TOKEN, status="active")
    graph.error("GET", PNID, 190)

    response = admin_api.patch(SETTINGS_URL, {"whatsapp_access_token": NEW_TOKEN}, format="json")

    assert response.status_code == 200
    assert response.json()["whatsapp_status"] == "failed"
    account = account_of(clinic)
    assert (account.status, account.meta_code, account.access_token) == ("failed", 190, NEW_TOKEN)


def test_settings_patch_without_credential_changes_does_not_call_meta(admin_api, clinic, graph):
    arrange(clinic, phone_number_id=PNID, business_account_id=WABA, access_token=TOKEN)

    response = admin_api.patch(
        SETTINGS_URL, {"name": "Clínica Nueva", "whatsapp_access_token": TOKEN[:8] + "...****"}, format="json"
    )

    assert response.status_code == 200
    assert graph.calls == []
    assert account_of(clinic).access_token == TOKEN


def test_it_subscribes_a_new_waba(admin_api, clinic, graph):
    arrange_active(clinic)  # subscribed to WABA
    graph.number("CONNECTED")
    graph.subscribe(waba=OTHER_WABA)

    response = admin_api.put(CONFIGURE_URL, body(businessAccountId=OTHER_WABA), format="json")

    assert response.json()["status"] == "active"
    assert len(graph.calls_to("POST", f"{OTHER_WABA}/subscribed_apps")) == 1


def test_it_keeps_waiting_for_the_code_when_credentials_are_saved_again(admin_api, clinic, graph):
    # The code was requested; Meta reports PENDING until it is entered. Saving the
    # credentials again must not take the code step away (verify answers 409 otherwise).
    helpers.arrange_pending(clinic)
    graph.number("PENDING")

    response = admin_api.put(CONFIGURE_URL, body(), format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "pending_otp"
    assert account_of(clinic).status == "pending_otp"
