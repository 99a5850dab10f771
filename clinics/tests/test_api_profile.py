"""GET, PUT and PATCH /api/clinics/me/ (endpoints 3 and 4 of the contract)."""

from __future__ import annotations

import pytest
import responses

from clinics import services
from clinics.models import Clinic

from .factories import (
    BAD_VALUES,
    LONG_TOKEN,
    PROFILE_KEYS,
    PROFILE_URL,
    bad_id,
    changed_columns,
    fill_clinic,
    first_per_field,
    snapshot,
)

BARE_URL = PROFILE_URL.rstrip("/")
WRITES = ["put", "patch"]
METHODS = ["get", "put", "patch"]


def _call(client, method: str, url: str = PROFILE_URL, body: dict | None = None):
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
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-key")

    response = _call(anon_client, method, body={"city": "Santa Tecla"})

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'


@pytest.mark.parametrize("method", WRITES)
def test_it_requires_admin_for_writes(api_client, clinic_staff, clinic, method):
    before = snapshot(clinic)

    response = _call(api_client(clinic_staff), method, body={"city": "Santa Tecla"})

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only your clinic's administrators can do this. Ask an administrator of your clinic."
    }
    assert snapshot(clinic) == before


def test_it_lets_staff_read(api_client, clinic_staff, clinic):
    response = api_client(clinic_staff).get(PROFILE_URL)

    assert response.status_code == 200
    assert list(response.json()) == PROFILE_KEYS
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


# --- reading --------------------------------------------------------------------------------


def test_it_returns_the_profile_without_any_token(api_client, clinic_admin, clinic):
    fill_clinic(clinic)

    response = api_client(clinic_admin).get(PROFILE_URL)

    assert response.status_code == 200
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
        "is_active": True,
        "subscription_plan": "pro",
        "whatsapp_phone_number_id": "123456789",
        "whatsapp_business_account_id": "waba_123",
    }
    assert list(response.json()) == PROFILE_KEYS
    assert b"token" not in response.content
    assert LONG_TOKEN[:8].encode() not in response.content
    assert b"verify_abc123" not in response.content


def test_it_returns_null_for_unset_values(api_client, clinic_admin, clinic):
    body = api_client(clinic_admin).get(PROFILE_URL).json()

    assert list(body) == PROFILE_KEYS
    for key in ("phone", "address", "logo_url", "whatsapp_phone_number_id", "whatsapp_business_account_id"):
        assert body[key] is None, key


def test_it_sends_utf8_unescaped(api_client, clinic_admin, clinic):
    response = api_client(clinic_admin).get(PROFILE_URL)

    assert "Clínica San Salvador".encode() in response.content
    assert b"\\u00ed" not in response.content


@pytest.mark.parametrize("url", [PROFILE_URL, BARE_URL])
@pytest.mark.parametrize("method", METHODS)
def test_it_answers_both_slash_forms_without_redirect(api_client, clinic_admin, clinic, url, method):
    response = _call(api_client(clinic_admin), method, url, {"city": "Santa Tecla"})

    assert response.status_code == 200
    assert list(response.json()) == PROFILE_KEYS
    if method != "get":
        clinic.refresh_from_db()
        assert clinic.city == "Santa Tecla"


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", WRITES)
def test_it_updates_every_profile_field(api_client, clinic_admin, clinic, method):
    fill_clinic(clinic)
    before = snapshot(clinic)

    response = _call(
        api_client(clinic_admin),
        method,
        body={
            "name": "Clínica Ñandú",
            "phone": "+503 7765-4321",
            "address": "Calle Nueva 456",
            "city": "Santa Ana",
            "timezone": "America/Guatemala",
            "currency": "gtq",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert list(body) == PROFILE_KEYS
    assert body["name"] == "Clínica Ñandú"
    assert body["phone"] == "+50377654321"
    assert body["address"] == "Calle Nueva 456"
    assert body["city"] == "Santa Ana"
    assert body["timezone"] == "America/Guatemala"
    assert body["currency"] == "GTQ"
    assert body["whatsapp_phone_number_id"] == "123456789"
    assert "Clínica Ñandú".encode() in response.content
    changes = changed_columns(before, snapshot(clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes == {
        "clinic": {
            "name": ("Clínica San Salvador", "Clínica Ñandú"),
            "phone": ("+50399999999", "+50377654321"),
            "address": ("Avenida Principal 123", "Calle Nueva 456"),
            "city": ("San Salvador", "Santa Ana"),
            "timezone": ("America/El_Salvador", "America/Guatemala"),
            "currency": ("USD", "GTQ"),
        },
        "whatsapp": {},
    }


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
def test_it_ignores_read_only_and_settings_only_fields(
    api_client, clinic_admin, clinic, other_clinic, method
):
    fill_clinic(clinic)
    before = snapshot(clinic)

    with responses.RequestsMock() as meta:
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
                # Settings-only keys: the profile endpoint does not take them.
                "bot_enabled": False,
                "whatsapp_access_token": "EAANewTokenValue0123456789abcdef",
                "whatsapp_verify_token": "changed_verify",
                "whatsapp_phone_number_id": "999",
                "city": "Santa Tecla",
            },
        )
        assert len(meta.calls) == 0

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(clinic.id)
    assert body["slug"] == before["clinic"]["slug"]
    assert body["country"] == "El Salvador"
    assert body["is_active"] is True
    assert body["subscription_plan"] == "pro"
    changes = changed_columns(before, snapshot(clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes == {"clinic": {"city": ("San Salvador", "Santa Tecla")}, "whatsapp": {}}


def test_it_updates_a_clinic_without_whatsapp_state(api_client, db):
    bare = Clinic.objects.create(name="Clínica Sin WhatsApp")
    admin = services.clinic_add_user(
        clinic=bare, email="bare@example.com", password="pw-0123456789", role="admin"
    )
    client = api_client(admin)
    client.raise_request_exception = False

    response = client.patch(PROFILE_URL, {"city": "Santa Tecla"}, format="json")

    assert response.status_code == 200
    assert response.json()["city"] == "Santa Tecla"


def test_it_keeps_the_slug_on_rename(api_client, clinic_admin, clinic):
    slug = clinic.slug

    response = api_client(clinic_admin).put(PROFILE_URL, {"name": "Hospital Nuevo"}, format="json")

    assert response.status_code == 200
    assert response.json()["slug"] == slug
    clinic.refresh_from_db()
    assert (clinic.name, clinic.slug) == ("Hospital Nuevo", slug)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("+503 9999-9999", "+50399999999"), ("+50399999999", "+50399999999"), ("", ""), (None, "")],
)
def test_it_normalises_the_phone(api_client, clinic_admin, clinic, sent, stored):
    fill_clinic(clinic)

    response = api_client(clinic_admin).patch(PROFILE_URL, {"phone": sent}, format="json")

    assert response.status_code == 200
    assert response.json()["phone"] == (stored or None)
    clinic.refresh_from_db()
    assert clinic.phone == stored


def test_it_upper_cases_the_currency(api_client, clinic_admin, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(currency="EUR")

    response = api_client(clinic_admin).patch(PROFILE_URL, {"currency": "usd"}, format="json")

    assert response.status_code == 200
    assert response.json()["currency"] == "USD"
    clinic.refresh_from_db()
    assert clinic.currency == "USD"


def test_it_changes_nothing_when_a_get_body_is_put_back(api_client, clinic_admin, clinic):
    fill_clinic(clinic)
    client = api_client(clinic_admin)
    body = client.get(PROFILE_URL).json()
    before = snapshot(clinic)

    response = client.put(PROFILE_URL, body, format="json")

    assert response.status_code == 200
    assert response.json() == body
    assert snapshot(clinic) == before


# --- validation: a rejected request saves nothing, not even its valid fields --------------

VALIDATION_CASES = [
    *[pytest.param("patch", bad, id=f"patch-{bad_id(bad)}") for bad in BAD_VALUES],
    *[pytest.param("put", bad, id=f"put-{bad_id(bad)}") for bad in first_per_field(BAD_VALUES)],
]


@pytest.mark.parametrize(("method", "bad"), VALIDATION_CASES)
def test_it_rejects_invalid_values_and_saves_nothing(api_client, clinic_admin, clinic, method, bad):
    field, value = bad
    fill_clinic(clinic)
    client = api_client(clinic_admin)
    before_body = client.get(PROFILE_URL).json()
    before = snapshot(clinic)
    # A valid change rides along: it must not be saved either.
    valid = {"address": "Calle Nueva 456"} if field == "city" else {"city": "Santa Tecla"}

    response = _call(client, method, body={**valid, field: value})

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {field}
    assert isinstance(body[field], list)
    assert body[field]
    assert all(isinstance(message, str) and message for message in body[field])
    assert client.get(PROFILE_URL).json() == before_body
    assert snapshot(clinic) == before


# --- tenancy --------------------------------------------------------------------------------


def test_it_shows_only_the_callers_clinic(api_client, other_clinic_admin, clinic, other_clinic):
    fill_clinic(clinic)

    body = api_client(other_clinic_admin).get(PROFILE_URL).json()

    assert body["id"] == str(other_clinic.id)
    assert body["name"] == "Clínica Santa Ana"
    assert body["city"] == "Santa Ana"
    assert body["whatsapp_phone_number_id"] is None


@pytest.mark.parametrize("method", WRITES)
def test_it_changes_only_the_callers_clinic(api_client, other_clinic_admin, clinic, other_clinic, method):
    fill_clinic(clinic)
    before_a = snapshot(clinic)
    before_b = snapshot(other_clinic)

    response = _call(
        api_client(other_clinic_admin),
        method,
        body={"id": str(clinic.id), "slug": clinic.slug, "name": "Clínica Santa Ana Renovada"},
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(other_clinic.id)
    assert snapshot(clinic) == before_a
    changes = changed_columns(before_b, snapshot(other_clinic))
    assert changes["clinic"].pop("updated_at")
    assert changes == {
        "clinic": {"name": ("Clínica Santa Ana", "Clínica Santa Ana Renovada")},
        "whatsapp": {},
    }


# --- query ceilings (no query per field or per row) --------------------------------------------


@pytest.mark.parametrize("keyword", ["Token", "Bearer"])
def test_it_reads_in_one_query_at_most(
    api_client, clinic_admin, clinic, django_assert_max_num_queries, keyword
):
    client = api_client(clinic_admin, keyword=keyword)
    # A token's use is written at most once a minute: this first request wrote it.
    client.get(PROFILE_URL)

    # The token with its user, clinic and WhatsApp connection: one query, or none when cached.
    with django_assert_max_num_queries(1):
        response = client.get(PROFILE_URL)

    assert response.status_code == 200


def test_it_writes_in_few_queries(api_client, clinic_admin, clinic, django_assert_max_num_queries):
    client = api_client(clinic_admin)
    # A token's use is written at most once a minute: this first request wrote it.
    client.get(PROFILE_URL)

    # token+user+clinic+whatsapp, savepoint, locked read, update, release,
    # and the audit row in the update's transaction: lock the chain head, insert the row, move the head.
    with django_assert_max_num_queries(8):
        response = client.patch(PROFILE_URL, {"name": "Nueva", "city": "Santa Ana"}, format="json")

    assert response.status_code == 200
