"""API tokens end: a lifetime, a password change, a deactivation; their last use is recorded and listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from clinics.models import ApiToken, User
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

SETTINGS_URL = "/api/clinics/settings/"
ISSUED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _issue(user: User) -> tuple[ApiToken, APIClient]:
    token, key = ApiToken.issue(user)
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return token, client


# --- lifetime ---------------------------------------------------------------------------------


def test_it_refuses_a_token_past_its_lifetime(clinic_admin):
    with time_machine.travel(ISSUED, tick=False):
        _token, client = _issue(clinic_admin)
    with time_machine.travel(ISSUED + timedelta(days=30, seconds=1), tick=False):
        response = client.get(SETTINGS_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "This token has expired. Sign in again to get a new one."}
    assert response["WWW-Authenticate"] == 'Token realm="api"'


def test_it_accepts_a_token_on_its_last_day(clinic_admin):
    with time_machine.travel(ISSUED, tick=False):
        _token, client = _issue(clinic_admin)
    with time_machine.travel(ISSUED + timedelta(days=29, hours=23), tick=False):
        response = client.get(SETTINGS_URL)

    assert response.status_code == 200


def test_the_lifetime_is_a_setting_and_applies_to_tokens_already_issued(clinic_admin, settings):
    with time_machine.travel(ISSUED, tick=False):
        token, client = _issue(clinic_admin)
    settings.API_TOKEN_TTL_DAYS = 7
    with time_machine.travel(ISSUED + timedelta(days=8), tick=False):
        response = client.get(SETTINGS_URL)

    assert response.status_code == 401
    assert token.expires_at == ISSUED + timedelta(days=7)


# --- password changes and deactivation end every token --------------------------------------


def _assert_tokens_ended(user: User, *clients: APIClient) -> None:
    assert not ApiToken.objects.filter(user=user).exists()
    for client in clients:
        assert client.get(SETTINGS_URL).status_code == 401


def test_a_password_change_on_the_page_ends_every_token(clinic_admin, other_clinic_admin):
    _token, first = _issue(clinic_admin)
    _token, second = _issue(clinic_admin)
    _token, other = _issue(other_clinic_admin)
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)

    response = page.post(
        "/accounts/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-New-pass-phrase-77",
            "new_password2": "a-New-pass-phrase-77",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password_change/done/"
    _assert_tokens_ended(clinic_admin, first, second)
    assert other.get(SETTINGS_URL).status_code == 200


def test_a_password_set_in_admin_ends_every_token(clinic_admin, superuser):
    _token, client = _issue(clinic_admin)
    admin = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin.force_login(superuser)

    response = admin.post(
        f"/admin/clinics/user/{clinic_admin.pk}/password/",
        {"password1": "a-New-pass-phrase-77", "password2": "a-New-pass-phrase-77", "usable_password": "true"},
    )

    assert response.status_code == 302
    clinic_admin.refresh_from_db()
    assert clinic_admin.check_password("a-New-pass-phrase-77")
    _assert_tokens_ended(clinic_admin, client)


def test_set_password_anywhere_ends_every_token(clinic_admin):
    _token, client = _issue(clinic_admin)

    user = User.objects.get(pk=clinic_admin.pk)
    user.set_password("a-New-pass-phrase-77")
    user.save()

    _assert_tokens_ended(clinic_admin, client)


def test_changepassword_command_ends_every_token(clinic_admin, monkeypatch):
    _token, client = _issue(clinic_admin)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a-New-pass-phrase-77")

    call_command("changepassword", clinic_admin.email, stdout=None)

    _assert_tokens_ended(clinic_admin, client)


def test_deactivation_in_admin_ends_every_token(clinic_staff, superuser):
    _token, client = _issue(clinic_staff)
    admin = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin.force_login(superuser)
    form = {
        "email": clinic_staff.email,
        "full_name": "",
        "clinic": clinic_staff.clinic_id,
        "role": "staff",
        "is_active": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }

    response = admin.post(f"/admin/clinics/user/{clinic_staff.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    clinic_staff.refresh_from_db()
    assert clinic_staff.is_active is False
    _assert_tokens_ended(clinic_staff, client)
    clinic_staff.is_active = True
    clinic_staff.save(update_fields=["is_active"])
    assert client.get(SETTINGS_URL).status_code == 401  # reactivation brings no token back


def test_signing_in_and_saving_other_fields_keep_the_tokens(clinic_admin, settings):
    # A password hash upgraded at sign-in is no password change.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    User.objects.filter(pk=clinic_admin.pk).update(
        password=make_password(PASSWORD, hasher="md5")  # an older hasher: upgraded at sign-in
    )
    _token, client = _issue(clinic_admin)

    page = Client()
    assert (
        page.post("/accounts/login/", {"username": clinic_admin.email, "password": PASSWORD}).status_code
        == 302
    )
    user = User.objects.get(pk=clinic_admin.pk)
    assert user.password.startswith("pbkdf2_sha256$")
    user.full_name = "Ana López"
    user.save()

    assert client.get(SETTINGS_URL).status_code == 200


# --- last use ---------------------------------------------------------------------------------


def test_it_records_the_last_use_at_most_once_a_minute(clinic_admin):
    token, client = _issue(clinic_admin)
    assert token.last_used_at is None

    with time_machine.travel(ISSUED, tick=False):
        client.get(SETTINGS_URL)
    token.refresh_from_db()
    assert token.last_used_at == ISSUED

    with time_machine.travel(ISSUED + timedelta(seconds=59), tick=False):
        assert client.get(SETTINGS_URL).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == ISSUED

    with time_machine.travel(ISSUED + timedelta(seconds=61), tick=False):
        client.get(SETTINGS_URL)
    token.refresh_from_db()
    assert token.last_used_at == ISSUED + timedelta(seconds=61)


def test_admin_lists_tokens_with_their_last_use(clinic_admin, superuser):
    with time_machine.travel(ISSUED, tick=False):
        used, client = _issue(clinic_admin)
        client.get(SETTINGS_URL)
        unused, _client = _issue(clinic_admin)
    admin = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin.force_login(superuser)

    html = admin.get("/admin/clinics/apitoken/").content.decode()

    assert "Last used" in html and "Expires" in html
    assert used.prefix in html and unused.prefix in html
    assert "Nov. 1, 2026, 9 a.m." in html  # the used token's last use
    assert "Dec. 1, 2026, 9 a.m." in html  # both expire 30 days after issue
    assert used.digest not in html
