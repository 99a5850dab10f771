"""POST /api/auth/token/ and POST /api/auth/logout/."""

from __future__ import annotations

import pytest

from clinics.models import ApiToken

from .factories import SETTINGS_URL

PASSWORD = "correct-horse-battery-9"  # the conftest personas' password
TOKEN_URL = "/api/auth/token/"
LOGOUT_URL = "/api/auth/logout/"


def _login(client, email: str, password: str = PASSWORD, url: str = TOKEN_URL):
    return client.post(url, {"email": email, "password": password}, format="json")


# --- token --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [TOKEN_URL, TOKEN_URL.rstrip("/")])
def test_it_issues_a_token(anon_client, clinic_admin, url):
    response = _login(anon_client, "admin@sansalvador.example", url=url)

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["token"]
    assert len(body["token"]) >= 32
    assert response["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=clinic_admin)
    # Only the digest is stored.
    assert token.digest == ApiToken.hash_key(body["token"])
    assert body["token"] not in {token.digest, token.prefix}


@pytest.mark.parametrize("keyword", ["Token", "Bearer", "token", "bearer"])
def test_it_issues_a_token_that_works_with_either_keyword(anon_client, clinic_admin, clinic, keyword):
    key = _login(anon_client, "admin@sansalvador.example").json()["token"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")

    response = anon_client.get(SETTINGS_URL)

    assert response.status_code == 200
    assert response.json()["id"] == str(clinic.id)


def test_it_refuses_a_wrong_password(anon_client, clinic_admin):
    response = _login(anon_client, "admin@sansalvador.example", "wrong-password-1")

    assert response.status_code == 400
    assert "token" not in response.json()
    assert response.json() == {"non_field_errors": ["Wrong email or password."]}
    assert not ApiToken.objects.exists()


def test_it_refuses_an_unknown_email_the_same_way(anon_client, clinic_admin):
    response = _login(anon_client, "nobody-here@sansalvador.example")

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Wrong email or password."]}
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("body", [{}, {"email": "admin@sansalvador.example"}, {"password": PASSWORD}])
def test_it_requires_email_and_password(anon_client, clinic_admin, body):
    response = anon_client.post(TOKEN_URL, body, format="json")

    assert response.status_code == 400
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("email", ["ADMIN@SANSALVADOR.EXAMPLE", "Admin@SanSalvador.Example"])
def test_it_ignores_the_case_of_the_email(anon_client, clinic_admin, email):
    response = _login(anon_client, email)

    assert response.status_code == 200
    assert ApiToken.objects.filter(user=clinic_admin).count() == 1


def test_it_refuses_an_inactive_user(anon_client, clinic_admin):
    clinic_admin.is_active = False
    clinic_admin.save(update_fields=["is_active"])

    response = _login(anon_client, "admin@sansalvador.example")

    assert response.status_code == 400
    assert "token" not in response.json()
    assert not ApiToken.objects.exists()


def test_it_refuses_the_existing_token_of_an_inactive_user(api_client, clinic_admin):
    client = api_client(clinic_admin)
    clinic_admin.is_active = False
    clinic_admin.save(update_fields=["is_active"])

    response = client.get(SETTINGS_URL)

    assert response.status_code == 401


def test_it_locks_guessing_at_the_tenth_failure(anon_client, clinic_admin):
    # Nine failures are answered as such; the tenth locks the account for the cool-off.
    for _attempt in range(9):
        assert _login(anon_client, "admin@sansalvador.example", "guess-password").status_code == 400
    tenth = _login(anon_client, "admin@sansalvador.example", "guess-password")

    # Even the right password is refused now.
    response = _login(anon_client, "admin@sansalvador.example")

    assert tenth.status_code == 429
    assert response.status_code == 429
    assert int(response["Retry-After"]) == 15 * 60
    assert "Too many failed sign-in attempts" in response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_failures_across_addresses_never_lock_the_account(anon_client, clinic_admin):
    # Per address, and per account at one address: never the account everywhere (anyone could
    # then lock anyone out).
    for attempt in range(10):
        response = anon_client.post(
            TOKEN_URL,
            {"email": "admin@sansalvador.example", "password": "guess-password"},
            format="json",
            REMOTE_ADDR=f"10.0.0.{attempt + 1}",
        )
        assert response.status_code == 400

    response = anon_client.post(
        TOKEN_URL,
        {"email": "ADMIN@sansalvador.example", "password": PASSWORD},
        format="json",
        REMOTE_ADDR="10.0.1.1",
    )

    assert response.status_code == 200
    assert ApiToken.objects.get().user == clinic_admin


# --- logout -------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["Token", "Bearer"])
@pytest.mark.parametrize("url", [LOGOUT_URL, LOGOUT_URL.rstrip("/")])
def test_it_logs_out_and_deletes_the_token(anon_client, clinic_admin, keyword, url):
    key = _login(anon_client, "admin@sansalvador.example").json()["token"]
    other_key = _login(anon_client, "admin@sansalvador.example").json()["token"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")

    response = anon_client.post(url)

    assert response.status_code == 204
    assert response.content == b""
    assert not ApiToken.objects.filter(digest=ApiToken.hash_key(key)).exists()
    # Only the token used for the request goes; another session of the same user stays.
    assert ApiToken.objects.filter(digest=ApiToken.hash_key(other_key)).exists()
    refused = anon_client.get(SETTINGS_URL)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Token realm="api"'
    assert anon_client.post(url).status_code == 401


def test_it_requires_credentials_to_log_out(anon_client, clinic_admin):
    _login(anon_client, "admin@sansalvador.example")

    response = anon_client.post(LOGOUT_URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert ApiToken.objects.count() == 1


@pytest.mark.parametrize(
    "header",
    [
        "Token garbage",
        "Bearer garbage",
        "Token ",
        "Token two parts",
        "Bearer \u00e9\u00e9\u00e9",
    ],
)
@pytest.mark.parametrize("url", [LOGOUT_URL, SETTINGS_URL])
def test_it_refuses_a_garbage_token(anon_client, clinic_admin, header, url):
    _login(anon_client, "admin@sansalvador.example")
    anon_client.credentials(HTTP_AUTHORIZATION=header)

    response = anon_client.post(url) if url == LOGOUT_URL else anon_client.get(url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert ApiToken.objects.count() == 1
