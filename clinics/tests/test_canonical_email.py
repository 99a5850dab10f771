"""One canonical e-mail (NFKC, case-folded, trimmed) on write and on every lookup; the database's wall; the migration."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.apps import apps as global_apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import translation

from clinics import services
from clinics.models import User, canonical_email

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-and-unguessable-password"
ROOT = Path(__file__).resolve().parents[2]
migration = importlib.import_module("clinics.migrations.0004_canonicalise_user_emails")


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("  Ana.Lopez@Clinica.SV ", "ana.lopez@clinica.sv"),
        ("\u017fara@x.example", "sara@x.example"),  # long s
        ("\uff41\uff4e\uff41@x.example", "ana@x.example"),  # full-width letters
        ("ana@cli\u0301nica.example", "ana@clínica.example"),  # combining acute accent
        ("STRASSE@x.example", "strasse@x.example"),
        ("stra\u00dfe@x.example", "strasse@x.example"),  # sharp s folds to ss
        ("\u212aim@x.example", "kim@x.example"),  # Kelvin sign
        ("v\u0131ctim@x.example", "v\u0131ctim@x.example"),  # dotless i is its own letter
        ("\u3000ana@x.example\u00a0", "ana@x.example"),  # ideographic space, no-break space
    ],
)
def test_it_writes_one_canonical_form(clinic, written, stored):
    user = services.clinic_add_user(clinic=clinic, email=written, password=PASSWORD)

    user.refresh_from_db()
    assert user.email == stored == canonical_email(written)
    assert User.objects.get_by_natural_key(written) == user


@pytest.mark.parametrize(
    "spelling",
    ["SARA@X.EXAMPLE", "\u017fara@x.example", "\uff53\uff41\uff52\uff41@x.example", "s\u0061ra@x.example "],
)
def test_it_refuses_a_second_user_spelled_another_way(clinic, spelling):
    first = services.clinic_add_user(clinic=clinic, email="sara@x.example", password=PASSWORD)

    with pytest.raises(ValidationError) as refused, translation.override("en"):
        services.clinic_add_user(clinic=clinic, email=spelling, password=PASSWORD)

    assert refused.value.message_dict == {"email": ["A user with this email already exists."]}
    assert list(User.objects.values_list("pk", flat=True)) == [first.pk]


def test_admin_refuses_a_second_user_spelled_another_way(admin_client, clinic_admin):
    response = admin_client.post(
        "/admin/clinics/user/add/",
        {
            "email": "\uff41dmin@sansalvador.example",
            "role": "staff",
            "usable_password": "true",
            "password1": "a-Long-pass-phrase-42",
            "password2": "a-Long-pass-phrase-42",
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )

    assert response.status_code == 200
    assert "A user with this email already exists." in response.content.decode()
    assert User.objects.filter(clinic=clinic_admin.clinic).count() == 1


def test_the_database_refuses_a_case_variant_written_around_the_rule(clinic_admin, clinic_staff):
    # An UPDATE that skips canonical_email (bulk update, raw SQL, a careless future door).
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=clinic_staff.pk).update(email=clinic_admin.email.upper())

    clinic_staff.refresh_from_db()
    assert clinic_staff.email == "staff@sansalvador.example"


def test_no_product_code_looks_up_an_email_case_insensitively():
    # iexact is PostgreSQL's UPPER(), which folds dotless i into I: a different rule
    # from the one the e-mail was stored with. Exact lookups of the canonical form only.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("clinics", "common", "whatsapp", "clinics_project")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "tests" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "iexact" in line
    ]
    assert offenders == []


# --- the migration that canonicalises stored e-mails ---------------------------------------


def _write_raw(user: User, email: str) -> None:
    # As the old rule (strip + lower) stored it, around today's canonical_email.
    User.objects.filter(pk=user.pk).update(email=email)


def _run_migration() -> None:
    migration.canonicalise_emails(global_apps, SimpleNamespace(connection=connection))


def test_the_migration_canonicalises_old_spellings(clinic_admin, clinic_staff):
    _write_raw(clinic_admin, "\uff41dmin@sansalvador.example")
    _write_raw(clinic_staff, "\u017ftaff@cli\u0301nica.example")

    _run_migration()
    _run_migration()  # a second run changes nothing

    assert sorted(User.objects.values_list("email", flat=True)) == [
        "admin@sansalvador.example",
        "staff@clínica.example",
    ]


def test_the_migration_reports_collisions_and_changes_nothing(clinic_admin, clinic_staff, other_clinic_admin):
    _write_raw(clinic_staff, "\u017ftaff@x.example")
    _write_raw(other_clinic_admin, "staff@x.example")
    _write_raw(clinic_admin, "\uff41dmin@x.example")  # would be rewritten, if nothing collided

    with pytest.raises(migration.EmailCollisionError) as refused:
        _run_migration()

    message = str(refused.value)
    assert "staff@x.example" in message
    assert f"id {clinic_staff.pk} ('\u017ftaff@x.example')" in message
    assert f"id {other_clinic_admin.pk} ('staff@x.example')" in message
    assert "admin" not in message
    assert sorted(User.objects.values_list("email", flat=True)) == sorted(
        ["\u017ftaff@x.example", "staff@x.example", "\uff41dmin@x.example"]
    )
