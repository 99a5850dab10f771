"""Endpoint 14c: bot keys (create, list, revoke) and what a key may call."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from clinics.bot_keys import bot_key_issue
from clinics.models import BotKey
from common.models import AuditEvent
from messaging.models import Conversation

KEYS_URL = "/api/clinics/bot/keys/"


def bot_client(key: str) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def bot_key(admin_api) -> str:
    return admin_api.post(KEYS_URL, {"name": "demo bot"}, format="json").json()["key"]


def test_it_creates_a_key_shown_once_and_stores_its_hash(admin_api, clinic):
    response = admin_api.post(KEYS_URL, {"name": "demo bot"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["key"].startswith("bot_") and len(body["key"]) == 47
    assert body["prefix"] == body["key"][:12]
    assert body["name"] == "demo bot"
    stored = BotKey.objects.get(clinic=clinic)
    assert stored.prefix == body["prefix"]
    assert body["key"] not in stored.digest
    listed = admin_api.get(KEYS_URL).json()["results"]
    assert listed == [
        {
            "name": "demo bot",
            "prefix": body["prefix"],
            "created_at": listed[0]["created_at"],
            "last_used_at": None,
        }
    ]
    assert "key" not in listed[0]


def test_it_requires_a_name(admin_api, clinic):
    response = admin_api.post(KEYS_URL, {"name": ""}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert not BotKey.objects.exists()


def test_it_requires_credentials(anon_client, db):
    assert anon_client.post(KEYS_URL, {"name": "x"}, format="json").status_code == 401


def test_it_requires_admin(api_client, clinic_staff):
    response = api_client(clinic_staff).post(KEYS_URL, {"name": "x"}, format="json")

    assert response.status_code == 403
    assert not BotKey.objects.exists()


def test_a_bot_key_cannot_manage_keys(bot_key):
    response = bot_client(bot_key).post(KEYS_URL, {"name": "another"}, format="json")

    assert response.status_code == 403
    assert BotKey.objects.count() == 1


def test_it_revokes_a_key_at_once(admin_api, bot_key):
    prefix = bot_key[:12]

    assert bot_client(bot_key).get("/api/clinics/templates/").status_code == 200
    assert admin_api.delete(f"{KEYS_URL}{prefix}/").status_code == 204

    assert not BotKey.objects.exists()
    assert bot_client(bot_key).get("/api/clinics/templates/").status_code == 401


def test_it_hides_other_clinics_keys(api_client, other_clinic_admin, bot_key):
    response = api_client(other_clinic_admin).delete(f"{KEYS_URL}{bot_key[:12]}/")

    assert response.status_code == 404
    assert BotKey.objects.count() == 1


def test_it_records_the_last_use(admin_api, bot_key):
    bot_client(bot_key).get("/api/clinics/templates/")

    assert BotKey.objects.get().last_used_at is not None
    assert admin_api.get(KEYS_URL).json()["results"][0]["last_used_at"] is not None


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/clinics/settings/"),
        ("patch", "/api/clinics/settings/"),
        ("get", "/api/clinics/me/"),
        ("get", "/api/clinics/whatsapp/status/"),
        ("get", "/api/clinics/whatsapp/health/"),
        ("post", "/api/clinics/templates/sync/"),
        ("get", KEYS_URL),
        ("post", "/api/auth/logout/"),
        ("get", "/api/clinics/bot/"),
        ("put", "/api/clinics/bot/"),
        ("post", "/api/clinics/bot/secret/"),
        ("get", "/api/clinics/bot/deliveries/"),
    ],
)
def test_a_bot_key_is_refused_elsewhere(bot_key, method, url):
    response = getattr(bot_client(bot_key), method)(url, {}, format="json")

    assert response.status_code == 403
    assert "bot key" in response.json()["detail"]
    assert "accessToken" not in response.content.decode()
    assert BotKey.objects.count() == 1


def test_a_bot_key_reads_its_clinics_conversations_and_no_other(bot_key, clinic, other_clinic):
    mine = Conversation.objects.create(clinic=clinic, phone_number_id="109000000000001", wa_id="50370000001")
    theirs = Conversation.objects.create(
        clinic=other_clinic, phone_number_id="109000000000002", wa_id="50370000002"
    )
    client = bot_client(bot_key)

    listed = client.get("/api/clinics/conversations/")
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [str(mine.pk)]
    assert client.get(f"/api/clinics/conversations/{mine.pk}/messages/").status_code == 200
    assert client.get(f"/api/clinics/conversations/{theirs.pk}/messages/").status_code == 404


def test_an_unknown_bot_key_is_401(db):
    response = bot_client("bot_" + "x" * 43).get("/api/clinics/templates/")

    assert response.status_code == 401


def test_a_members_bearer_token_still_works(api_client, clinic_admin):
    response = api_client(clinic_admin, keyword="Bearer").get("/api/clinics/settings/")

    assert response.status_code == 200


def test_an_inactive_clinics_key_is_refused(admin_api, clinic, bot_key):
    type(clinic).objects.filter(pk=clinic.pk).update(is_active=False)

    response = bot_client(bot_key).get("/api/clinics/templates/")

    assert response.status_code == 403


def test_admin_lists_bot_keys_by_prefix_and_never_the_key(superuser, clinic):
    admin_client = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin_client.force_login(superuser)
    bot_key, key = bot_key_issue(clinic=clinic, name="demo bot")

    html = admin_client.get("/admin/clinics/botkey/", {"q": "San Salvador"}).content.decode()
    assert bot_key.prefix in html and "demo bot" in html
    assert key not in html
    detail = admin_client.get(f"/admin/clinics/botkey/{bot_key.pk}/change/").content.decode()
    assert bot_key.digest not in detail and key not in detail
    assert (
        admin_client.post(f"/admin/clinics/botkey/{bot_key.pk}/delete/", {"post": "yes"}).status_code == 302
    )
    assert not BotKey.objects.exists()


def test_issuing_and_revoking_a_key_leave_one_audit_row_each_with_its_prefix_only(
    admin_api, clinic, clinic_admin
):
    key = admin_api.post(KEYS_URL, {"name": "demo bot"}, format="json").json()["key"]
    prefix = key[:12]
    assert admin_api.delete(f"{KEYS_URL}{prefix}/").status_code == 204

    rows = list(AuditEvent.objects.filter(clinic_id=clinic.pk, action__startswith="bot_key.").order_by("id"))
    assert [(row.action, row.door, row.actor) for row in rows] == [
        ("bot_key.issued", "api", clinic_admin.email),
        ("bot_key.revoked", "api", clinic_admin.email),
    ]
    assert all(row.changes == {"name": "demo bot", "key": f"{prefix}…"} for row in rows)
    assert key not in str([row.changes for row in rows])
