"""Deployment checks, security headers, throttles, size limits, CSRF and a canary secret."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.middleware.csrf import _get_new_csrf_string
from django.test import override_settings
from django.urls import NoReverseMatch, reverse
from rest_framework.test import APIClient

from clinics import services
from whatsapp.models import WhatsAppAccount

ROOT = Path(__file__).resolve().parents[2]
CANARY = "EAACANARY" + secrets.token_hex(24)
SETTINGS_URL = "/api/clinics/settings/"


def _prod_env(**extra: str) -> dict[str, str]:
    from tests.e2e.conftest import PRODUCT_VARIABLES, new_field_key

    env = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="clinics_project.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="clinics.example.com",
        FIELD_ENCRYPTION_KEYS=new_field_key("k2026a"),
        DATABASE_URL="sqlite:////tmp/clinics-check-deploy.sqlite3",
        # The sign-in limiter needs a cache every server and worker shares (not contacted by `check`).
        CACHE_URL="redis://127.0.0.1:6379/1",
    )
    env.update(extra)
    return env


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_under_production_variables():
    result = _check_deploy(_prod_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_a_shared_cache():
    # Local memory is one process's: each gunicorn worker would count sign-in failures apart.
    result = _check_deploy({key: value for key, value in _prod_env().items() if key != "CACHE_URL"})
    assert result.returncode != 0
    assert "axes.W001" in result.stdout + result.stderr


def test_check_deploy_fails_without_encryption_keys():
    result = _check_deploy(_prod_env(FIELD_ENCRYPTION_KEYS=""))
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    ["http://egress-proxy.internal:8080/v26.0", "http://10.0.0.7/v26.0", "http://graph.facebook.com/v26.0"],
)
def test_any_host_still_needs_https_with_debug_off(url):
    # The finding: META_GRAPH_ALLOW_ANY_HOST=true also allowed http://, so access tokens
    # could cross a network in clear text.
    result = _check_deploy(_prod_env(META_GRAPH_URL=url, META_GRAPH_ALLOW_ANY_HOST="true"))

    assert result.returncode != 0
    assert "META_GRAPH_URL must start with https://" in result.stderr


@pytest.mark.parametrize("url", ["https://egress-proxy.internal:8443/v26.0", "http://127.0.0.1:8765/v26.0"])
def test_any_host_over_https_or_to_this_machine_starts(url):
    result = _check_deploy(_prod_env(META_GRAPH_URL=url, META_GRAPH_ALLOW_ANY_HOST="true"))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("days", ["6", "0"])
def test_a_webhook_retention_under_metas_seven_days_is_refused(days):
    result = _check_deploy(_prod_env(WEBHOOK_RETENTION_DAYS=days))

    assert result.returncode != 0
    assert "WEBHOOK_RETENTION_DAYS must be at least 7" in result.stderr


# --- headers -----------------------------------------------------------------------------

SECURE = {
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SECURE_SSL_REDIRECT": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
}


@pytest.mark.django_db
@override_settings(**SECURE)
def test_hsts_on_https_only(client):
    https = client.get("/healthz/", HTTP_X_FORWARDED_PROTO="https")
    assert https.status_code == 200
    assert https["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    plain = client.get("/api/schema/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    # The load balancer's health check stays on http.
    assert client.get("/healthz/").status_code == 200


def _html_pages() -> list[str]:
    pages = ["/api/docs/"]
    with contextlib.suppress(NoReverseMatch):  # the route may not exist yet
        pages.append(reverse("login"))
    return pages


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/accounts/login/"])
def test_html_pages_carry_security_headers(client, path):
    if path not in _html_pages():
        pytest.skip(f"{path} does not exist yet")
    response = client.get(path, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]


@pytest.mark.django_db
def test_api_json_carries_nosniff_and_referrer_policy(clinic_admin, api_client):
    response = api_client(clinic_admin).get(SETTINGS_URL)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


ENDPOINTS = [
    ("get", SETTINGS_URL, None),
    ("patch", SETTINGS_URL, {"city": "San Miguel"}),
    ("put", SETTINGS_URL, {"city": "San Miguel"}),
    ("get", "/api/clinics/me/", None),
    ("patch", "/api/clinics/me/", {"city": "Sonsonate"}),
    (
        "put",
        "/api/clinics/whatsapp/",
        {"phoneNumberId": "1234", "businessAccountId": "5678", "accessToken": CANARY},
    ),
    (
        "post",
        "/api/clinics/whatsapp/register/",
        {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": "5678", "accessToken": CANARY},
    ),
    ("post", "/api/clinics/whatsapp/verify/", {"code": "123456"}),
    ("get", "/api/clinics/whatsapp/status/", None),
    ("delete", "/api/clinics/whatsapp/", None),
    ("post", "/api/clinics/whatsapp/verify/", {"code": "x"}),  # a 400
]


@pytest.mark.django_db
def test_no_store_on_every_settings_response(clinic_admin, api_client, meta_refuses):
    client = api_client(clinic_admin)
    for method, path, body in ENDPOINTS:
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code < 500, (method, path, response.status_code)
        assert response["Cache-Control"] == "no-store", (method, path, response.status_code)
        assert CANARY not in response.content.decode()
    token = APIClient().post(
        "/api/auth/token/",
        {"email": clinic_admin.email, "password": "correct-horse-battery-9"},
        format="json",
    )
    assert token.status_code == 200 and token["Cache-Control"] == "no-store"
    anonymous = APIClient().get(SETTINGS_URL)
    assert anonymous.status_code == 401 and anonymous["Cache-Control"] == "no-store"


# --- throttling, sizes, CSRF ---------------------------------------------------------------


@pytest.mark.django_db
def test_sign_in_is_throttled(clinic_admin):
    from django.conf import settings as django_settings

    limit = django_settings.AXES_FAILURE_LIMIT
    client = APIClient()
    statuses = []
    for _ in range(limit):
        statuses.append(
            client.post("/api/auth/token/", {"email": clinic_admin.email, "password": "wrong"}, format="json")
        )
    assert [r.status_code for r in statuses[: limit - 1]] == [400] * (limit - 1)
    last = statuses[-1]
    assert last.status_code == 429
    assert int(last["Retry-After"]) > 0
    # The right password is throttled too at that address (no oracle); another address is
    # not: failures from elsewhere never lock the account's owner out.
    right = client.post(
        "/api/auth/token/",
        {"email": clinic_admin.email, "password": "correct-horse-battery-9"},
        format="json",
    )
    assert right.status_code == 429
    other_ip = APIClient(REMOTE_ADDR="10.9.8.7").post(
        "/api/auth/token/",
        {"email": clinic_admin.email.upper(), "password": "correct-horse-battery-9"},
        format="json",
    )
    assert other_ip.status_code == 200


@pytest.mark.django_db
def test_api_body_over_256_kb_is_413(clinic_admin, api_client):
    body = json.dumps({"address": "x" * (257 * 1024)})
    response = api_client(clinic_admin).generic("PATCH", SETTINGS_URL, body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"]
    clinic_admin.clinic.refresh_from_db()
    assert clinic_admin.clinic.address == ""


@pytest.mark.django_db
def test_webhook_body_over_3_mb_is_413(clinic, settings):
    settings.META_APP_SECRET = "app-secret-for-tests"
    body = b'{"object":"whatsapp_business_account","entry":[],"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    signature = "sha256=" + hmac.new(b"app-secret-for-tests", body, hashlib.sha256).hexdigest()
    url = f"/whatsapp/webhook/{clinic.pk}/"
    response = APIClient().generic(
        "POST", url, body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature
    )
    assert response.status_code == 413
    # Just under the limit is accepted (Meta's largest payloads).
    small = (
        b'{"object":"whatsapp_business_account","entry":[],"pad":"' + b"x" * (3 * 1024 * 1024 - 200) + b'"}'
    )
    signature = "sha256=" + hmac.new(b"app-secret-for-tests", small, hashlib.sha256).hexdigest()
    ok = APIClient().generic(
        "POST", url, small, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature
    )
    assert ok.status_code == 200


@pytest.mark.django_db
def test_csrf_enforced_on_session_writes(clinic_admin):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinic_admin)
    assert client.get(SETTINGS_URL).status_code == 200  # reads need no token
    refused = client.patch(SETTINGS_URL, {"city": "Ahuachapán"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    clinic_admin.clinic.refresh_from_db()
    assert clinic_admin.clinic.city != "Ahuachapán"
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    accepted = client.patch(SETTINGS_URL, {"city": "Ahuachapán"}, format="json", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["city"] == "Ahuachapán"


@pytest.mark.django_db
def test_token_auth_needs_no_csrf(clinic_admin, api_client):
    client = api_client(clinic_admin)
    client.handler.enforce_csrf_checks = True
    assert client.patch(SETTINGS_URL, {"city": "Usulután"}, format="json").status_code == 200


# --- a canary secret ---------------------------------------------------------------------


@pytest.mark.django_db
def test_canary_never_leaks(clinic_admin, api_client, caplog, meta_refuses, monkeypatch):
    caplog.set_level(logging.DEBUG)
    client = api_client(clinic_admin)
    client.raise_request_exception = False
    saved = client.patch(
        SETTINGS_URL, {"whatsapp_access_token": CANARY, "whatsapp_phone_number_id": "4242"}, format="json"
    )
    assert saved.status_code == 200
    assert saved.json()["whatsapp_access_token"] == CANARY[:8] + "...****"
    seen = [saved.content.decode()]
    seen.append(client.get(SETTINGS_URL).content.decode())
    seen.append(client.get("/api/clinics/me/").content.decode())
    seen.append(client.get("/api/clinics/whatsapp/status/").content.decode())
    missing = client.get("/api/clinics/does-not-exist/")
    assert missing.status_code == 404
    seen.append(missing.content.decode())

    # A forced 500 while the token is loaded (DEBUG is off): a generic page, nothing else.
    def explode(self, phone_number_id):
        raise RuntimeError(f"unexpected failure for number {phone_number_id}")

    monkeypatch.setattr("whatsapp.meta.MetaClient.get_phone_number", explode)
    WhatsAppAccount.objects.filter(clinic=clinic_admin.clinic).update(status="verifying")
    crashed = client.get("/api/clinics/whatsapp/status/")
    assert crashed.status_code == 500
    seen.append(crashed.content.decode())
    plain = APIClient()
    plain.raise_request_exception = False
    seen.append(plain.get("/no/such/page/").content.decode())

    for text in seen:
        assert CANARY not in text
        assert CANARY[8:20] not in text
    logged = "\n".join(
        record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        for record in caplog.records
    )
    assert "unexpected failure" in logged  # the 500 was logged...
    assert CANARY not in logged  # ...without the secret
    # Raw database: the column holds ciphertext only (the DB scan in depth lives elsewhere).
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token FROM whatsapp_whatsappaccount")
        stored = [row[0] for row in cursor.fetchall()]
    assert any(value and value.startswith("enc:v1:") for value in stored)
    assert not any(value and CANARY in value for value in stored)


@pytest.mark.django_db
def test_other_clinic_never_sees_the_canary(clinic_admin, other_clinic_admin, api_client):
    services.clinic_update_settings(clinic=clinic_admin.clinic, data={"bot_enabled": True})
    from whatsapp.services import whatsapp_store_credentials

    whatsapp_store_credentials(account=clinic_admin.clinic.whatsapp, access_token=CANARY)
    other = api_client(other_clinic_admin)
    for path in (SETTINGS_URL, "/api/clinics/me/", "/api/clinics/whatsapp/status/"):
        response = other.get(path)
        assert response.status_code == 200
        assert CANARY[:8] not in response.content.decode()
