"""The create_clinic and add_clinic_user management commands."""

from __future__ import annotations

import re
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from clinics.models import ApiToken, Clinic, User

from .factories import SETTINGS_URL

STRONG_PASSWORD = "Tamarindo-Verde-2031"
SLUG_RE = re.compile(r"^clinica-san-salvador-[a-z0-9]{6}$")


@pytest.fixture
def password(monkeypatch) -> str:
    monkeypatch.setenv("CLINIC_USER_PASSWORD", STRONG_PASSWORD)
    return STRONG_PASSWORD


def _run(*args: str, **options: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def _create(name: str = "Clínica San Salvador", email: str = "a@example.com", **options: str) -> str:
    return _run("create_clinic", name, admin_email=email, **options)


# --- create_clinic ------------------------------------------------------------------------


def test_it_creates_a_clinic_with_its_admin(db, password):
    output = _create()

    clinic = Clinic.objects.get()
    assert f"id: {clinic.id}" in output
    assert f"slug: {clinic.slug}" in output
    assert isinstance(clinic.id, uuid.UUID)
    assert SLUG_RE.match(clinic.slug), clinic.slug
    assert clinic.name == "Clínica San Salvador"
    assert (clinic.country, clinic.timezone, clinic.currency) == ("El Salvador", "America/El_Salvador", "USD")
    assert clinic.is_active
    account = clinic.whatsapp
    assert account.status == "disconnected"
    assert account.verify_token
    assert len(account.verify_token) >= 16
    assert account.access_token is None
    admin = User.objects.get()
    assert admin.email == "a@example.com"
    assert admin.clinic_id == clinic.id
    assert admin.role == User.Role.ADMIN
    assert admin.check_password(STRONG_PASSWORD)
    assert not admin.is_staff
    assert not admin.is_superuser


def test_it_takes_country_timezone_and_currency(db, password):
    _create(country="Guatemala", timezone="America/Guatemala", currency="gtq")

    clinic = Clinic.objects.get()
    assert (clinic.country, clinic.timezone, clinic.currency) == ("Guatemala", "America/Guatemala", "GTQ")


def test_it_creates_an_admin_who_can_use_the_api(db, password, anon_client):
    _create(email="Ana@Example.com")

    response = anon_client.post(
        "/api/auth/token/", {"email": "ana@example.com", "password": STRONG_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    settings = anon_client.get(SETTINGS_URL)
    assert settings.status_code == 200
    assert settings.json()["name"] == "Clínica San Salvador"
    patched = anon_client.patch(SETTINGS_URL, {"city": "Santa Ana"}, format="json")
    assert patched.status_code == 200


def test_it_gives_clinics_with_the_same_name_different_slugs(db, password):
    _create(email="a@example.com")
    _create(email="b@example.com")

    slugs = list(Clinic.objects.values_list("slug", flat=True))
    assert len(set(slugs)) == 2
    assert all(SLUG_RE.match(slug) for slug in slugs)


def test_it_keeps_the_slug_when_the_api_renames_the_clinic(db, password, anon_client):
    _create()
    slug = Clinic.objects.get().slug
    key = anon_client.post(
        "/api/auth/token/", {"email": "a@example.com", "password": STRONG_PASSWORD}, format="json"
    ).json()["token"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = anon_client.patch("/api/clinics/me/", {"name": "Hospital Central"}, format="json")

    assert response.status_code == 200
    assert response.json()["slug"] == slug
    clinic = Clinic.objects.get()
    assert (clinic.name, clinic.slug) == ("Hospital Central", slug)


@pytest.mark.parametrize("email", ["a@example.com", "A@Example.COM"])
def test_it_refuses_a_duplicate_email(db, password, email):
    _create(email="a@example.com")

    with pytest.raises(CommandError, match="already exists"):
        _create(name="Otra Clínica", email=email)

    assert Clinic.objects.count() == 1
    assert User.objects.count() == 1


@pytest.mark.parametrize("weak", ["12345678", "password", "short1"])
def test_it_refuses_a_weak_password(db, monkeypatch, weak):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", weak)

    with pytest.raises(CommandError):
        _create()

    assert not Clinic.objects.exists()
    assert not User.objects.exists()


def test_it_refuses_to_run_without_a_password(db, monkeypatch):
    monkeypatch.delenv("CLINIC_USER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", StringIO())  # not a terminal: no prompt

    with pytest.raises(CommandError, match="CLINIC_USER_PASSWORD"):
        _create()

    assert not Clinic.objects.exists()


@pytest.mark.parametrize(
    "options",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "GMT-6 Central"},
        {"currency": "ABC"},
    ],
)
def test_it_refuses_bad_options(db, password, options):
    with pytest.raises(CommandError):
        _create(**options)

    assert not Clinic.objects.exists()
    assert not User.objects.exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_it_refuses_a_bad_name(db, password, name):
    with pytest.raises(CommandError):
        _create(name=name)

    assert not Clinic.objects.exists()


# --- add_clinic_user ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["staff", "admin"])
def test_it_adds_a_user_to_a_clinic(clinic, password, role):
    output = _run("add_clinic_user", clinic.slug, "Nurse@Example.com", role=role)

    user = User.objects.get(email="nurse@example.com")
    assert user.clinic_id == clinic.id
    assert user.role == role
    assert user.check_password(STRONG_PASSWORD)
    assert "nurse@example.com" in output
    assert role in output


def test_it_adds_staff_by_default(clinic, password):
    _run("add_clinic_user", clinic.slug, "nurse@example.com")

    assert User.objects.get(email="nurse@example.com").role == User.Role.STAFF


def test_it_adds_staff_who_can_read_but_not_write(clinic, password, anon_client):
    _run("add_clinic_user", clinic.slug, "nurse@example.com", role="staff")
    key = anon_client.post(
        "/api/auth/token/", {"email": "nurse@example.com", "password": STRONG_PASSWORD}, format="json"
    ).json()["token"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert anon_client.get(SETTINGS_URL).status_code == 200
    assert anon_client.patch(SETTINGS_URL, {"city": "X"}, format="json").status_code == 403
    assert ApiToken.objects.count() == 1


def test_it_refuses_an_unknown_slug(clinic, password):
    with pytest.raises(CommandError, match="no-such-clinic-abc123"):
        _run("add_clinic_user", "no-such-clinic-abc123", "nurse@example.com", role="staff")

    assert not User.objects.filter(email="nurse@example.com").exists()


def test_it_refuses_an_existing_email(clinic, clinic_admin, password):
    with pytest.raises(CommandError, match="already exists"):
        _run("add_clinic_user", clinic.slug, "ADMIN@sansalvador.example", role="staff")

    assert User.objects.get(email="admin@sansalvador.example").role == User.Role.ADMIN


def test_it_refuses_an_unknown_role(clinic, password):
    with pytest.raises(CommandError):
        # Through the parser, as on the command line (a keyword option would skip argparse's choices).
        _run("add_clinic_user", clinic.slug, "nurse@example.com", "--role", "owner")

    assert not User.objects.filter(email="nurse@example.com").exists()


def test_it_refuses_a_weak_password_for_a_new_user(clinic, monkeypatch):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", "12345678")

    with pytest.raises(CommandError):
        _run("add_clinic_user", clinic.slug, "nurse@example.com", role="staff")

    assert not User.objects.filter(email="nurse@example.com").exists()
