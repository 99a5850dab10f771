"""GET, PUT and PATCH /api/clinics/settings/ (endpoints 1 and 2 of the contract)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from django.conf import settings
from django.utils import translation

from clinics.models import Clinic
from whatsapp.models import WhatsAppAccount

from .factories import (
    BAD_VALUES,
    LONG_TOKEN,
    SETTINGS_BAD_VALUES,
    SETTINGS_KEYS,
    SETTINGS_URL,
    bad_id,
    changed_columns,
    fill_clinic,
    first_per_field,
    set_whatsapp,
    snapshot,
)

META_DATA = Path(settings.BASE_DIR) / "whatsapp" / "tests" / "data"
BARE_URL = SETTINGS_URL.rstrip("/")
WRITES = ["put", "patch"]
METHODS = ["get", "put", "patch"]


def _call(client, method: str, url: str = SETTINGS_URL, body: dict | None = None):
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, body if body is not None else {}, format="json")


# --- who may call -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_it_requires_credentials(anon_client, clinic, method):
    before = snapshot(clinic)

    response = _call(anon_client, method, body={"city": "Santa Tecla"})

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert snapshot(clinic) == before


@pytest.mark.parametrize("method", METHODS)
def test_it_rejects_a_garbage_token(anon_client, clinic, method):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    before = snapshot(clinic)

    response = _call(anon_client, method, body={"city": "Santa Tecla"})

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert snapshot(clinic) == before


@pytest.mark.parametrize("method", WRITES)
def test_it_requires_admin_for_writes(api_client, clinic_staff, clinic, method):
    before = snapshot(clinic)

    response = _call(api_client(clinic_staff), method, body={"city": "Santa Tecla", "bot_enabled": True})

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only your clinic's administrators can do this. Ask an administrator of your clinic."
    }
    assert snapshot(clinic) == before


def test_it_lets_staff_read(api_client, clinic_staff, clinic):
    response = api_client(clinic_staff).get(SETTINGS_URL)

    assert response.status_code == 200
    assert list(response.json()) == SETTINGS_KEYS
    assert response.json()["id"] == str(clinic.id)


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, inactive_clinic, method):
    before = snapshot(inactive_clinic)

    response = _call(api_client(inactive_clinic_admin), method, body={"city": "Santa Tecla"})

    assert response.status_code == 403
    assert "inactive" in response.json()["detail"]
    assert "Contact support" in response.json()["detail"]
    assert snapshot(inactive_clinic) == before


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_a_user_without_clinic(api_client, clinicless_user, clinic, method):
    before = snapshot(clinic)

    response = _call(api_client(clinicless_user), method, body={"city": "Santa Tecla"})

    assert response.status_code == 403
    assert "not linked to any clinic" in response.json()["detail"]
    assert snapshot(clinic) == before


def test_it_refuses_a_superuser_without_clinic(api_client, superuser, clinic):
    response = api_client(superuser).get(SETTINGS_URL)

    assert response.status_code == 403
    assert "not linked to any clinic" in response.json()["detail"]


# --- reading --------------------------------------------------------------------------------


def test_it_returns_exactly_the_seed_keys(api_client, clinic_admin, clinic):
    fill_clinic(clinic)

    response = api_client(clinic_admin).get(SETTINGS_URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    clinic.refresh_from_db()
    assert response.json() == {
        "id": str(clinic.id),
        "name": "Clínica San Salvador",
        "slug": clinic.slug,
        "phone": "+50399999999",
        "address": "Avenida Principal 123",
        "city": "San Salvador",
        "country": "El Salvador",
        "timezone": "America/El_Salvador",
        "currency": "USD",
        "logo_url": "https://cdn.example.com/logo.png",
        "whatsapp_phone_number_id": "123456789",
        "whatsapp_business_account_id": "waba_123",
        "whatsapp_access_token": "EAAOKw1x...****",
        "whatsapp_verify_token": "verify_abc123",
        "whatsapp_status": "disconnected",
        "bot_enabled": True,
        "is_active": True,
        "subscription_plan": "pro",
        "subscription_expires_at": "2025-12-31T00:00:00Z",
    }
    assert list(response.json()) == SETTINGS_KEYS


def test_it_returns_null_for_unset_values(api_client, clinic_admin, clinic):
    set_whatsapp(clinic, verify_token=None)

    body = api_client(clinic_admin).get(SETTINGS_URL).json()

    assert list(body) == SETTINGS_KEYS
    for key in (
        "phone",
        "address",
        "logo_url",
        "whatsapp_phone_number_id",
        "whatsapp_business_account_id",
        "whatsapp_access_token",
        "whatsapp_verify_token",
        "subscription_expires_at",
    ):
        assert body[key] is None, key


def test_it_gives_a_new_clinic_a_verify_token(api_client, clinic_admin):
    token = api_client(clinic_admin).get(SETTINGS_URL).json()["whatsapp_verify_token"]

    assert isinstance(token, str)
    assert len(token) >= 16


def test_it_sends_utf8_unescaped(api_client, clinic_admin, clinic):
    response = api_client(clinic_admin).get(SETTINGS_URL)

    assert "Clínica San Salvador".encode() in response.content
    assert b"\\u00ed" not in response.content


def test_it_writes_times_in_utc_with_z(api_client, clinic_admin, clinic):
    local = dt.datetime(2026, 1, 15, 18, 30, tzinfo=ZoneInfo("America/El_Salvador"))
    Clinic.objects.filter(pk=clinic.pk).update(subscription_expires_at=local)

    body = api_client(clinic_admin).get(SETTINGS_URL).json()

    assert body["subscription_expires_at"] == "2026-01-16T00:30:00Z"


@pytest.mark.parametrize("url", [SETTINGS_URL, BARE_URL])
@pytest.mark.parametrize("method", METHODS)
def test_it_answers_both_slash_forms_without_redirect(api_client, clinic_admin, clinic, url, method):
    response = _call(api_client(clinic_admin), method, url, {"city": "Santa Tecla"})

    assert response.status_code == 200
    assert list(response.json()) == SETTINGS_KEYS
    if method != "get":
        clinic.refresh_from_db()
        assert clinic.city == "Santa Tecla"


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", WRITES)
def test_it_updates_every_writable_field(api_client, clinic_admin, clinic, method):
    fill_clinic(clinic)
    before = snapshot(clinic)

    with responses.RequestsMock() as meta:
        response = _call(
            api_client(clinic_admin),
            method,
            body={
                "name": "  Clínica Ñandú  ",
                "phone": "+503 7765-4321",
                "address": "Calle Nueva 456",
                "city": "Santa Ana",
                "timezone": "America/Guatemala",
                "currency": "usd",
                "whatsapp_verify_token": "new_verify_token",
                "bot_enabled": False,
            },
        )
        # A new verify token is ours alone: Meta is not asked.
        assert len(meta.calls) == 0

    assert response.status_code == 200
    body = response.json()
    assert list(body) == SETTINGS_KEYS
    assert body["name"] == "Clínica Ñandú"
    assert body["phone"] == "+50377654321"
    assert body["address"] == "Calle Nueva 456"
    assert body["city"] == "Santa Ana"
    assert body["timezone"] == "America/Guatemala"
    assert body["currency"] == "USD"
    assert body["whatsapp_verify_token"] == "new_verify_token"
    assert body["bot_enabled"] is False
    assert body["whatsapp_access_token"] == "EAAOKw1x...****"
    after = snapshot(clinic)
    changes = changed_columns(before, after)
    assert changes["clinic"].pop("updated_at")
    assert changes["whatsapp"].pop("updated_at")
    assert changes == {
        "clinic": {
            "name": ("Clínica San Salvador", "Clínica Ñandú"),
            "phone": ("+50399999999", "+50377654321"),
            "address": ("Avenida Principal 123", "Calle Nueva 456"),
            "city": ("San Salvador", "Santa Ana"),
            "timezone": ("America/El_Salvador", "America/Guatemala"),
            "bot_enabled": (True, False),
        },
        "whatsapp": {"verify_token": ("verify_abc123", "new_verify_token")},
    }


def test_it_stores_meta_ids_without_a_token_and_says_what_is_missing(api_client, clinic_admin, clinic):
    before = snapshot(clinic)

    with responses.RequestsMock() as meta:
        response = api_client(clinic_admin).patch(
            SETTINGS_URL,
            {"whatsapp_phone_number_id": "987654321", "whatsapp_business_account_id": "waba_987"},
            format="json",
        )
        assert len(meta.calls) == 0

    assert response.status_code == 200
    assert response.json()["whatsapp_phone_number_id"] == "987654321"
    assert response.json()["whatsapp_business_account_id"] == "waba_987"
    after = snapshot(clinic)
    changes = changed_columns(before, after)
    assert changes["clinic"] == {}
    assert changes["whatsapp"]["phone_number_id"] == ("", "987654321")
    assert changes["whatsapp"]["business_account_id"] == ("", "waba_987")
    with translation.override("en"):
        assert "access token" in WhatsAppAccount.objects.get(clinic=clinic).detail


def test_it_checks_new_credentials_with_meta(api_client, clinic_admin, clinic):
    connected = json.loads((META_DATA / "phone_number_connected.json").read_text())

    with responses.RequestsMock() as meta:
        meta.get(f"{settings.META_GRAPH_URL}/1190244884170604", json=connected)
        response = api_client(clinic_admin).patch(
            SETTINGS_URL,
            {"whatsapp_phone_number_id": "1190244884170604", "whatsapp_access_token": LONG_TOKEN},
            format="json",
        )
        assert meta.calls[0].request.headers["Authorization"] == f"Bearer {LONG_TOKEN}"

    assert response.status_code == 200
    assert response.json()["whatsapp_status"] == "active"
    assert response.json()["whatsapp_access_token"] == "EAAOKw1x...****"
    account = snapshot(clinic)["whatsapp"]
    assert account["access_token"] == LONG_TOKEN
    assert account["phone_number_id"] == "1190244884170604"
    assert account["status"] == "active"
    assert account["number"] == "+552137315313"


@pytest.mark.parametrize("method", WRITES)
def test_it_treats_put_as_partial(api_client, clinic_admin, clinic, method):
    fill_clinic(clinic)
    before = snapshot(clinic)

    response = _call(api_client(clinic_admin), method, body={"city": "Santa Tecla"})

    assert response.status_code == 200
    changes = changed_columns(before, snapshot(clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes == {"clinic": {"city": ("San Salvador", "Santa Tecla")}, "whatsapp": {}}


@pytest.mark.parametrize("method", WRITES)
def test_it_ignores_read_only_fields(api_client, clinic_admin, clinic, other_clinic, method):
    fill_clinic(clinic)
    before = snapshot(clinic)

    response = _call(
        api_client(clinic_admin),
        method,
        body={
            "id": str(other_clinic.id),
            "slug": "stolen-slug-abc123",
            "country": "Guatemala",
            "logo_url": "https://evil.example/logo.png",
            "whatsapp_status": "active",
            "is_active": False,
            "subscription_plan": "enterprise",
            "subscription_expires_at": "2099-01-01T00:00:00Z",
            "city": "Santa Tecla",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(clinic.id)
    assert body["slug"] == before["clinic"]["slug"]
    assert body["country"] == "El Salvador"
    assert body["logo_url"] == "https://cdn.example.com/logo.png"
    assert body["whatsapp_status"] == "disconnected"
    assert body["is_active"] is True
    assert body["subscription_plan"] == "pro"
    assert body["subscription_expires_at"] == "2025-12-31T00:00:00Z"
    changes = changed_columns(before, snapshot(clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes == {"clinic": {"city": ("San Salvador", "Santa Tecla")}, "whatsapp": {}}
    assert Clinic.objects.get(pk=other_clinic.pk).slug == other_clinic.slug


def test_it_keeps_the_slug_on_rename(api_client, clinic_admin, clinic):
    slug = clinic.slug

    response = api_client(clinic_admin).patch(SETTINGS_URL, {"name": "Hospital Nuevo"}, format="json")

    assert response.status_code == 200
    assert response.json()["slug"] == slug
    clinic.refresh_from_db()
    assert clinic.name == "Hospital Nuevo"
    assert clinic.slug == slug


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("+503 9999-9999", "+50399999999"),
        ("+50399999999", "+50399999999"),
        ("", ""),
        (None, ""),
    ],
)
def test_it_normalises_the_phone(api_client, clinic_admin, clinic, sent, stored):
    fill_clinic(clinic)

    response = api_client(clinic_admin).patch(SETTINGS_URL, {"phone": sent}, format="json")

    assert response.status_code == 200
    assert response.json()["phone"] == (stored or None)
    clinic.refresh_from_db()
    assert clinic.phone == stored


def test_it_upper_cases_the_currency(api_client, clinic_admin, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(currency="EUR")

    response = api_client(clinic_admin).patch(SETTINGS_URL, {"currency": "usd"}, format="json")

    assert response.status_code == 200
    assert response.json()["currency"] == "USD"
    clinic.refresh_from_db()
    assert clinic.currency == "USD"


# --- validation: a rejected request saves nothing, not even its valid fields --------------

# Every rule through PATCH; PUT runs the same code, so one bad value per field is enough there.
VALIDATION_CASES = [
    *[pytest.param("patch", bad, id=f"patch-{bad_id(bad)}") for bad in BAD_VALUES + SETTINGS_BAD_VALUES],
    *[
        pytest.param("put", bad, id=f"put-{bad_id(bad)}")
        for bad in first_per_field(BAD_VALUES + SETTINGS_BAD_VALUES)
    ],
]


@pytest.mark.parametrize(("method", "bad"), VALIDATION_CASES)
def test_it_rejects_invalid_values_and_saves_nothing(api_client, clinic_admin, clinic, method, bad):
    field, value = bad
    fill_clinic(clinic)
    client = api_client(clinic_admin)
    before_body = client.get(SETTINGS_URL).json()
    before = snapshot(clinic)
    # A valid change rides along: it must not be saved either.
    valid = {"address": "Calle Nueva 456"} if field == "city" else {"city": "Santa Tecla"}

    with responses.RequestsMock() as meta:
        response = _call(client, method, body={**valid, field: value})
        assert len(meta.calls) == 0

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {field}
    assert isinstance(body[field], list)
    assert body[field]
    assert all(isinstance(message, str) and message for message in body[field])
    assert client.get(SETTINGS_URL).json() == before_body
    assert snapshot(clinic) == before


# --- the masked access token --------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        (LONG_TOKEN, "EAAOKw1x...****"),
        ("ABCDEFGH123456789", "ABCDEFGH...****"),  # 17 characters: prefix shown
        ("ABCDEFGH12345678", "...****"),  # 16 characters: nothing shown
        ("short", "...****"),
        ("x", "...****"),
        (None, None),
    ],
)
def test_it_masks_the_access_token(api_client, clinic_admin, clinic, token, shown):
    set_whatsapp(clinic, access_token=token)

    response = api_client(clinic_admin).get(SETTINGS_URL)

    assert response.json()["whatsapp_access_token"] == shown
    if token and len(token) > 8:
        assert token.encode() not in response.content


@pytest.mark.parametrize("masked", ["EAAOKw1x...****", "...****", "anything...****"])
@pytest.mark.parametrize("method", WRITES)
def test_it_keeps_the_token_when_the_masked_value_comes_back(
    api_client, clinic_admin, clinic, method, masked
):
    fill_clinic(clinic)
    before = snapshot(clinic)

    with responses.RequestsMock() as meta:
        response = _call(api_client(clinic_admin), method, body={"whatsapp_access_token": masked})
        assert len(meta.calls) == 0

    assert response.status_code == 200
    assert response.json()["whatsapp_access_token"] == "EAAOKw1x...****"
    assert snapshot(clinic) == before
    clinic.refresh_from_db()
    assert clinic.whatsapp.access_token == LONG_TOKEN


def test_it_clears_the_token_with_null(api_client, clinic_admin, clinic):
    fill_clinic(clinic)

    with responses.RequestsMock() as meta:
        response = api_client(clinic_admin).patch(
            SETTINGS_URL, {"whatsapp_access_token": None}, format="json"
        )
        assert len(meta.calls) == 0

    assert response.status_code == 200
    assert response.json()["whatsapp_access_token"] is None
    clinic.refresh_from_db()
    assert clinic.whatsapp.access_token is None
    assert clinic.whatsapp.phone_number_id == "123456789"
    assert clinic.whatsapp.verify_token == "verify_abc123"


def test_it_replaces_the_token_with_a_new_value(api_client, clinic_admin, clinic):
    # No phone number id stored: the new token is kept without asking Meta.
    set_whatsapp(clinic, access_token=LONG_TOKEN)
    new_token = "EAANewTokenValue0123456789abcdef"

    with responses.RequestsMock() as meta:
        response = api_client(clinic_admin).patch(
            SETTINGS_URL, {"whatsapp_access_token": new_token}, format="json"
        )
        assert len(meta.calls) == 0

    assert response.status_code == 200
    assert response.json()["whatsapp_access_token"] == "EAANewTo...****"
    assert new_token.encode() not in response.content
    clinic.refresh_from_db()
    assert clinic.whatsapp.access_token == new_token


@pytest.mark.parametrize("token", [LONG_TOKEN, "short-token", None])
def test_it_changes_nothing_when_a_get_body_is_put_back(api_client, clinic_admin, clinic, token):
    fill_clinic(clinic, token=token)
    client = api_client(clinic_admin)
    body = client.get(SETTINGS_URL).json()
    before = snapshot(clinic)

    with responses.RequestsMock() as meta:
        response = client.put(SETTINGS_URL, body, format="json")
        assert len(meta.calls) == 0

    assert response.status_code == 200
    assert response.json() == body
    assert snapshot(clinic) == before


# --- tenancy --------------------------------------------------------------------------------


def test_it_shows_only_the_callers_clinic(api_client, other_clinic_admin, clinic, other_clinic):
    fill_clinic(clinic)

    body = api_client(other_clinic_admin).get(SETTINGS_URL).json()

    assert body["id"] == str(other_clinic.id)
    assert body["name"] == "Clínica Santa Ana"
    assert body["whatsapp_access_token"] is None
    assert body["whatsapp_verify_token"] != "verify_abc123"


@pytest.mark.parametrize("method", WRITES)
def test_it_changes_only_the_callers_clinic(api_client, other_clinic_admin, clinic, other_clinic, method):
    fill_clinic(clinic)
    before_a = snapshot(clinic)
    before_b = snapshot(other_clinic)

    response = _call(
        api_client(other_clinic_admin),
        method,
        body={
            "id": str(clinic.id),
            "slug": clinic.slug,
            "name": "Clínica Santa Ana Renovada",
            "whatsapp_verify_token": "b_verify_token",
        },
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(other_clinic.id)
    assert snapshot(clinic) == before_a
    changes = changed_columns(before_b, snapshot(other_clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes["whatsapp"].pop("updated_at")
    assert changes["clinic"] == {"name": ("Clínica Santa Ana", "Clínica Santa Ana Renovada")}
    assert changes["whatsapp"] == {"verify_token": (before_b["whatsapp"]["verify_token"], "b_verify_token")}


# --- query ceilings (no query per field or per row) --------------------------


@pytest.mark.parametrize("keyword", ["Token", "Bearer"])
def test_it_reads_in_one_query_at_most(
    api_client, clinic_admin, clinic, django_assert_max_num_queries, keyword
):
    client = api_client(clinic_admin, keyword=keyword)
    # A token's use is written at most once a minute: this first request wrote it.
    client.get(SETTINGS_URL)

    # The token with its user, clinic and WhatsApp connection: one query, or none when cached.
    with django_assert_max_num_queries(1):
        response = client.get(SETTINGS_URL)

    assert response.status_code == 200


def test_it_writes_profile_fields_in_few_queries(
    api_client, clinic_admin, clinic, django_assert_max_num_queries
):
    client = api_client(clinic_admin)
    # A token's use is written at most once a minute: this first request wrote it.
    client.get(SETTINGS_URL)

    # token+user+clinic+whatsapp, savepoint, locked read, update, release, whatsapp for the output,
    # and the audit row in the update's transaction: lock the chain head, insert the row, move the head.
    with django_assert_max_num_queries(9):
        response = client.patch(
            SETTINGS_URL, {"name": "Nueva", "city": "Santa Ana", "bot_enabled": True}, format="json"
        )

    assert response.status_code == 200
