"""API tokens through the shared cache (clinics.token_cache): two servers share Redis, and every write ends the copies.

"Server A" and "server B" are two API clients of one process whose cache is a Redis
database of this module's own, as two gunicorn servers share it (tests/e2e/test_token_cache.py
runs the same against two real servers). Each test first lets A keep the token in the
cache, then changes something through B or a service, and A's next request must see it.
"""

from __future__ import annotations

import pytest
import redis
from rest_framework.test import APIClient

from clinics import services
from clinics.models import ApiToken, User
from clinics.permissions import ADMIN_ONLY_MESSAGE, INACTIVE_CLINIC_MESSAGE
from whatsapp.cache import whatsapp_account_changed
from whatsapp.models import WhatsAppAccount, WhatsAppStatus
from whatsapp.services.state import save, set_status

from .factories import LONG_TOKEN, fill_active_connection

pytestmark = pytest.mark.django_db

REDIS_DB = 10  # this module's own
SETTINGS_URL = "/api/clinics/settings/"
STATUS_URL = "/api/clinics/whatsapp/status/"


@pytest.fixture(autouse=True)
def shared_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:6379/{REDIS_DB}",
        }
    }
    settings.API_TOKEN_CACHE = True
    store = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    store.flushdb()
    yield store
    store.flushdb()


@pytest.fixture
def key(clinic_admin) -> str:
    return services.api_token_issue(user=clinic_admin)


def _server(key: str) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def server_a(key) -> APIClient:
    client = _server(key)
    # The first request records the token's use (which drops the copy); the second keeps it.
    assert client.get(SETTINGS_URL).status_code == 200
    assert client.get(SETTINGS_URL).status_code == 200
    return client


@pytest.fixture
def server_b(key) -> APIClient:
    return _server(key)


def _cached(store: redis.Redis, key: str) -> bytes | None:
    found = store.keys(f"*clinics:api-token:{ApiToken.hash_key(key)}")
    return store.get(found[0]) if found else None


def test_it_answers_from_the_cache_without_a_query(server_a, shared_cache, key, django_assert_num_queries):
    assert _cached(shared_cache, key) is not None

    with django_assert_num_queries(0):
        response = server_a.get(SETTINGS_URL)

    assert response.status_code == 200
    assert response.json()["name"] == "Clínica San Salvador"


def test_the_cache_holds_no_password_hash_and_no_plaintext_secret(clinic, clinic_admin, shared_cache, key):
    fill_active_connection(clinic)
    client = _server(key)
    client.get(SETTINGS_URL)
    client.get(SETTINGS_URL)

    stored = _cached(shared_cache, key)
    assert stored is not None
    user = User.objects.get(pk=clinic_admin.pk)
    assert user.password.encode() not in stored
    for secret in (LONG_TOKEN, "verify_abc123"):
        assert secret.encode() not in stored
    # What it holds still answers: the masked token is decrypted from the cached ciphertext.
    assert client.get(SETTINGS_URL).json()["whatsapp_access_token"].startswith(LONG_TOKEN[:8])


def test_a_sign_out_on_one_server_ends_the_token_on_the_other(server_a, server_b, shared_cache, key):
    assert server_b.post("/api/auth/logout/").status_code == 204

    response = server_a.get(SETTINGS_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token. Sign in again to get a new one."}
    assert not ApiToken.objects.filter(digest=ApiToken.hash_key(key)).exists()


def test_revoking_all_tokens_ends_them_at_once(server_a, clinic_admin):
    assert services.api_tokens_revoke(user=clinic_admin) == 1

    assert server_a.get(SETTINGS_URL).status_code == 401


def test_a_deactivation_ends_access_at_once(server_a, clinic_admin):
    user = User.objects.get(pk=clinic_admin.pk)
    user.is_active = False
    user.save()

    response = server_a.get(SETTINGS_URL)

    assert response.status_code == 401
    assert not ApiToken.objects.filter(user=clinic_admin).exists()


def test_a_password_change_ends_access_at_once(server_a, clinic_admin):
    user = User.objects.get(pk=clinic_admin.pk)
    user.set_password("a-new-password-0123")
    user.save()

    assert server_a.get(SETTINGS_URL).status_code == 401


def test_a_role_change_shows_at_once(server_a, clinic_admin):
    user = User.objects.get(pk=clinic_admin.pk)
    user.role = User.Role.STAFF
    user.save()

    response = server_a.patch(SETTINGS_URL, {"city": "Santa Ana"}, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": str(ADMIN_ONLY_MESSAGE)}
    assert server_a.get(SETTINGS_URL).status_code == 200  # staff still read


def test_a_clinic_change_shows_at_once(server_a, server_b, clinic):
    assert server_b.patch(SETTINGS_URL, {"city": "Santa Tecla"}, format="json").status_code == 200
    assert server_a.get(SETTINGS_URL).json()["city"] == "Santa Tecla"

    services.clinic_update_platform_fields(clinic=clinic, data={"is_active": False})

    response = server_a.get(SETTINGS_URL)
    assert response.status_code == 403
    assert response.json() == {"detail": str(INACTIVE_CLINIC_MESSAGE)}


def test_a_user_deleted_in_admin_loses_access_at_once(server_a, clinic_admin, superuser):
    admin = APIClient()
    admin.force_login(superuser)

    response = admin.post(f"/admin/clinics/user/{clinic_admin.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(pk=clinic_admin.pk).exists()
    assert server_a.get(SETTINGS_URL).status_code == 401


def test_a_token_deleted_in_admin_ends_at_once(server_a, key, superuser):
    token = ApiToken.objects.get(digest=ApiToken.hash_key(key))
    admin = APIClient()
    admin.force_login(superuser)

    response = admin.post(f"/admin/clinics/apitoken/{token.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert server_a.get(SETTINGS_URL).status_code == 401


def test_a_connection_write_ends_the_copies_of_every_member(server_a, clinic, clinic_staff):
    staff = _server(services.api_token_issue(user=clinic_staff))
    staff.get(SETTINGS_URL)
    staff.get(SETTINGS_URL)
    # A queryset update() sends no signal: the copies stand until its writer says so.
    WhatsAppAccount.objects.filter(clinic=clinic).update(status=WhatsAppStatus.FAILED)
    assert server_a.get(STATUS_URL).json()["status"] == "disconnected"

    whatsapp_account_changed(clinic_id=clinic.pk)

    assert server_a.get(STATUS_URL).json()["status"] == "failed"
    assert staff.get(SETTINGS_URL).json()["whatsapp_status"] == "failed"


def test_a_status_the_services_write_ends_the_copies(server_a, clinic):
    # The one writer of `status` and its one save (whatsapp.services.state) end the copies.
    account = WhatsAppAccount.objects.get(clinic=clinic)
    set_status(account, WhatsAppStatus.FAILED)
    save(account)

    assert server_a.get(STATUS_URL).json()["status"] == "failed"


def test_without_a_shared_cache_every_request_reads_the_database(settings, shared_cache, key, clinic_admin):
    # A local-memory cache is one per process: settings.py turns the token cache off with it.
    settings.API_TOKEN_CACHE = False
    client = _server(key)
    assert client.get(SETTINGS_URL).status_code == 200

    assert client.get(SETTINGS_URL).status_code == 200
    assert _cached(shared_cache, key) is None
    User.objects.filter(pk=clinic_admin.pk).update(is_active=False)  # a write no service made
    assert client.get(SETTINGS_URL).status_code == 401
