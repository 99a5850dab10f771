"""Every free-text field (a clinic's name, address, city and country; a user's full name) follows the
contract's rule on every write path: no character of the hidden categories, at least one visible one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from clinics import services
from clinics.models import Clinic, User
from clinics.tests.factories import PROFILE_URL, SETTINGS_URL, snapshot
from clinics.tests.test_admin_clinics import change_url, clinic_form
from clinics.tests.test_pages_settings import VALID_PROFILE, signed_in

# One of each kind the contract names.
HIDDEN = {
    "escape": "\x1b[31m",
    "newline": "\n",
    "delete": "\x7f",
    "C1 control": "\x9b",
    "right-to-left override": "\u202e",
    "left-to-right embedding": "\u202a",
    "first-strong isolate": "\u2068",
    "pop directional isolate": "\u2069",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    # The 16 that still passed: bidirectional marks, separators, soft hyphen, tags, fillers...
    "left-to-right mark": "\u200e",
    "right-to-left mark": "\u200f",
    "arabic letter mark": "\u061c",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "soft hyphen": "\u00ad",
    "tag letter": "\U000e0041",
    "cancel tag": "\U000e007f",
    "mongolian vowel separator": "\u180e",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "hangul filler": "\u3164",
    "halfwidth hangul filler": "\uffa0",
    "private use": "\ue000",
    "unassigned": "\u0378",
    "interlinear annotation anchor": "\ufff9",
}
FIELDS = ["name", "address", "city"]
CASES = [pytest.param(field, char, id=f"{field}-{kind}") for field in FIELDS for kind, char in HIDDEN.items()]


def _text(char: str) -> str:
    return f"Clínica{char}Norte"


def _code_of(char: str) -> str:
    # Each sample starts with its hidden character; the message names it.
    return f"U+{ord(char[0]):04X}"


@pytest.mark.parametrize(("field", "char"), CASES)
@pytest.mark.parametrize("url", [PROFILE_URL, SETTINGS_URL])
def test_the_api_refuses_it_with_a_400_naming_the_field(api_client, clinic_admin, clinic, field, char, url):
    before = snapshot(clinic)

    response = api_client(clinic_admin).patch(
        url, {field: _text(char), "phone": "+50322223333"}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert _code_of(char) in response.json()[field][0]
    assert snapshot(clinic) == before  # not even the valid phone was saved


@pytest.mark.parametrize(("field", "char"), CASES[::3])
def test_the_settings_page_refuses_it_next_to_the_field(clinic_admin, clinic, field, char):
    before = snapshot(clinic)

    response = signed_in(clinic_admin).post("/settings/profile/", {**VALID_PROFILE, field: _text(char)})

    assert response.status_code == 400
    assert list(response.context["profile_form"].errors) == [field]
    assert "Remove the hidden character" in response.content.decode()
    assert snapshot(clinic) == before


@pytest.mark.parametrize(("field", "char"), CASES[1::3])
def test_admin_refuses_it_next_to_the_field(superuser, clinic, field, char):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    before = snapshot(clinic)

    response = client.post(change_url(clinic), clinic_form(clinic, **{field: _text(char)}))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert snapshot(clinic) == before


def test_admin_refuses_it_on_a_new_clinic(superuser):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)

    response = client.post(
        "/admin/clinics/clinic/add/",
        {
            "name": "Clínica\u202eetsoN",
            "timezone": "America/El_Salvador",
            "currency": "USD",
            "subscription_plan": "free",
            "is_active": "on",
            "language": "es",
        },
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["name"]
    assert not Clinic.objects.exists()


@pytest.mark.django_db
def test_the_create_clinic_command_refuses_it(monkeypatch):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", "Tamarindo-Verde-2031")

    with pytest.raises(CommandError, match="U\\+202E"):
        call_command("create_clinic", "Clínica\u202eetsoN", admin_email="a@example.com", stdout=None)

    assert not Clinic.objects.exists()


@pytest.mark.django_db
def test_the_model_refuses_it_for_any_other_writer():
    # A writer that skips the doors' normalisers still goes through clinic_create's full_clean.
    with pytest.raises(ValidationError) as refused:
        services.clinic_create(name="Clínica", city="San\u200bta Ana")

    assert list(refused.value.message_dict) == ["city"]
    assert not Clinic.objects.exists()


@pytest.mark.parametrize(
    "text",
    ["Clínica Nuestra Señora", "Консультация", "عيادة الشفاء", "診療所", "Sala\u00a02", "O'Brien & Söhne"],
)
def test_it_keeps_ordinary_text_in_any_script(api_client, clinic_admin, clinic, text):
    response = api_client(clinic_admin).patch(PROFILE_URL, {"name": text, "city": text}, format="json")

    assert response.status_code == 200
    clinic.refresh_from_db()
    assert (clinic.name, clinic.city) == (text, text)


# A name made only of characters that show nothing (the finding: such a name was saved).
INVISIBLE_ONLY = {
    "fillers": "\u3164\u3164",
    "marks and separators": "\u200e\u2028\u200f",
    "a lone combining accent": "\u0301",
    "spaces of other widths": "\u2003\u00a0",
}


@pytest.mark.parametrize("text", list(INVISIBLE_ONLY.values()), ids=list(INVISIBLE_ONLY))
def test_a_name_of_nothing_visible_is_refused(api_client, clinic_admin, clinic, text):
    before = snapshot(clinic)

    response = api_client(clinic_admin).patch(PROFILE_URL, {"name": text}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    assert snapshot(clinic) == before


def test_a_lone_combining_accent_is_not_a_visible_character(api_client, clinic_admin):
    response = api_client(clinic_admin).patch(PROFILE_URL, {"city": "\u0301"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"city": ["Enter at least one visible character."]}


def test_admin_refuses_it_in_the_country(superuser, clinic):
    # Admin's country is a picker of country names: a value with a hidden mark is no choice at all.
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    before = snapshot(clinic)

    response = client.post(change_url(clinic), clinic_form(clinic, country="El\u200eSalvador"))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["country"]
    assert "Select a valid choice" in response.content.decode()
    assert snapshot(clinic) == before


@pytest.mark.django_db
def test_the_create_clinic_command_refuses_it_in_the_country(monkeypatch):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", "Tamarindo-Verde-2031")

    with pytest.raises(CommandError, match="U\\+2028"):
        call_command(
            "create_clinic",
            "Clínica Norte",
            admin_email="a@example.com",
            country="El\u2028Salvador",
            stdout=None,
        )

    assert not Clinic.objects.exists()


def test_admin_refuses_it_in_a_users_full_name(superuser, clinic):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)

    response = client.post(
        "/admin/clinics/user/add/",
        {
            "email": "new.person@clinic.example",
            "full_name": "Ana\u202eLópez",
            "clinic": str(clinic.pk),
            "role": "staff",
            "usable_password": "true",
            "password1": "a-Long-pass-phrase-42",
            "password2": "a-Long-pass-phrase-42",
        },
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["full_name"]
    assert not User.objects.filter(email="new.person@clinic.example").exists()


def test_admin_refuses_a_full_name_changed_to_fillers(superuser, clinic_staff):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)

    response = client.post(
        f"/admin/clinics/user/{clinic_staff.pk}/change/",
        {
            "email": clinic_staff.email,
            "full_name": "\u3164\u3164",
            "clinic": str(clinic_staff.clinic_id),
            "role": "staff",
            "is_active": "on",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
        },
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["full_name"]
    clinic_staff.refresh_from_db()
    assert clinic_staff.full_name == ""


@pytest.mark.django_db
def test_the_service_refuses_it_in_a_new_users_full_name(clinic):
    with pytest.raises(ValidationError) as refused:
        services.clinic_add_user(
            clinic=clinic, email="b@example.com", password="x-y-z-1234", full_name="Bea\u200f"
        )

    assert list(refused.value.message_dict) == ["full_name"]
    assert not User.objects.filter(email="b@example.com").exists()
