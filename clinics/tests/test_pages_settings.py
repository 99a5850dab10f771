"""The settings page: sign-in, access rules, the profile and bot forms, languages, masking."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from clinics.models import Clinic
from clinics.tests.factories import LONG_TOKEN, fill_clinic, set_whatsapp, snapshot
from conftest import PASSWORD
from whatsapp.models import WhatsAppAccount

SETTINGS = "/settings/"
PROFILE = "/settings/profile/"
BOT = "/settings/bot/"

VALID_PROFILE = {
    "name": "  Clínica Nueva  ",
    "phone": "+503 2222-3333",
    "address": "Calle 1",
    "city": "Santa Tecla",
    "timezone": "America/El_Salvador",
    "currency": "usd",
}


def signed_in(user, *, language: str = "en", csrf: bool = False) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language, enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def csrf_token_of(client: Client) -> str:
    response = client.get(SETTINGS)
    assert response.status_code == 200
    return (
        response.cookies["csrftoken"].value
        if "csrftoken" in response.cookies
        else client.cookies["csrftoken"].value
    )


# --- sign-in ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_redirects_anonymous_to_sign_in():
    response = Client().get(SETTINGS)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/settings/"


@pytest.mark.django_db
def test_it_redirects_anonymous_posts_to_sign_in():
    response = Client().post(PROFILE, VALID_PROFILE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_signs_in_with_email_and_password(clinic_admin):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'type="email"' in page.content.decode()
    response = client.post(
        "/accounts/login/", {"username": "Admin@SanSalvador.example", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert client.get(SETTINGS).status_code == 200


def test_it_refuses_a_wrong_password(clinic_admin):
    response = Client(HTTP_ACCEPT_LANGUAGE="en").post(
        "/accounts/login/", {"username": clinic_admin.email, "password": "wrong"}
    )
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()


def test_it_signs_out_with_post_only(clinic_admin):
    client = signed_in(clinic_admin)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get(SETTINGS).status_code == 302


def test_it_changes_the_password(clinic_admin):
    client = signed_in(clinic_admin)
    assert client.get("/accounts/password_change/").status_code == 200
    response = client.post(
        "/accounts/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "an0ther-Long-pass!",
            "new_password2": "an0ther-Long-pass!",
        },
    )
    assert response.status_code == 302
    clinic_admin.refresh_from_db()
    assert clinic_admin.check_password("an0ther-Long-pass!")


def test_it_explains_a_user_without_clinic(clinicless_user):
    response = signed_in(clinicless_user).get(SETTINGS)
    assert response.status_code == 403
    assert "not linked to any clinic" in response.content.decode()


def test_it_explains_an_inactive_clinic(inactive_clinic_admin):
    response = signed_in(inactive_clinic_admin).get(SETTINGS)
    assert response.status_code == 403
    assert "inactive" in response.content.decode()


def test_it_refuses_writes_for_an_inactive_clinic(inactive_clinic_admin, inactive_clinic):
    before = snapshot(inactive_clinic)
    response = signed_in(inactive_clinic_admin).post(PROFILE, VALID_PROFILE)
    assert response.status_code == 403
    assert "inactive" in response.content.decode()
    assert snapshot(inactive_clinic) == before


def test_it_explains_a_superuser_without_clinic(superuser):
    response = signed_in(superuser).get(SETTINGS)
    assert response.status_code == 403
    assert "/admin/" in response.content.decode()


# --- the page ---------------------------------------------------------------------------------


def test_it_renders_in_spanish_by_default(clinic_admin):
    client = Client()
    client.force_login(clinic_admin)
    html = client.get(SETTINGS).content.decode()
    assert '<html lang="es">' in html
    assert "Perfil de la clínica" in html
    assert "Guardar perfil" in html


def test_it_renders_in_english_from_accept_language(clinic_admin):
    html = signed_in(clinic_admin, language="en-US,en;q=0.9").get(SETTINGS).content.decode()
    assert '<html lang="en">' in html
    assert "Clinic profile" in html
    assert "Save profile" in html


def test_it_renders_in_spanish_from_accept_language(clinic_admin):
    html = signed_in(clinic_admin, language="es-SV,es;q=0.9").get(SETTINGS).content.decode()
    assert '<html lang="es">' in html
    assert "Desconectado" in html


def test_it_switches_language_with_set_language(clinic_admin):
    client = signed_in(clinic_admin, language="es")
    response = client.post("/i18n/setlang/", {"language": "en", "next": SETTINGS})
    assert response.status_code == 302
    assert '<html lang="en">' in client.get(SETTINGS).content.decode()


def test_it_shows_the_masked_token_never_the_whole_token(clinic_admin, clinic):
    fill_clinic(clinic)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert "EAAOKw1x...****" in html
    assert LONG_TOKEN not in html
    assert LONG_TOKEN[8:20] not in html


def test_it_shows_the_webhook_url_and_verify_token_to_admins(clinic_admin, clinic):
    fill_clinic(clinic)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert f"http://testserver/whatsapp/webhook/{clinic.pk}/<" in html
    assert "verify_abc123" in html
    assert 'data-copy="webhook-url"' in html


def test_it_shows_staff_everything_read_only(clinic_staff, clinic):
    fill_clinic(clinic)
    html = signed_in(clinic_staff).get(SETTINGS).content.decode()
    assert "Clínica San Salvador" in html
    assert "Read-only" in html
    assert 'action="/settings/profile/"' not in html
    assert "/settings/whatsapp/" not in html
    assert 'name="csrfmiddlewaretoken"' in html  # only the language and sign-out forms
    assert LONG_TOKEN not in html
    assert "verify_abc123" not in html
    assert "data-poll-url" not in html


def test_it_uses_only_own_static_files_and_no_inline_code(clinic_admin, clinic):
    fill_clinic(clinic)
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()
    assert "<script>" not in html
    assert "style=" not in html
    assert " onclick=" not in html
    assert "/static/clinics/site.js" in html
    assert "/static/clinics/site.css" in html
    assert "http://cdn" not in html and "https://cdn" not in html


def test_it_is_not_cached(clinic_admin):
    response = signed_in(clinic_admin).get(SETTINGS)
    assert "no-store" in response["Cache-Control"]


# --- the profile form -------------------------------------------------------------------------


def test_it_saves_the_profile(clinic_admin, clinic):
    client = signed_in(clinic_admin)
    response = client.post(PROFILE, VALID_PROFILE)
    assert response.status_code == 302
    assert response["Location"] == "/settings/#profile"
    clinic.refresh_from_db()
    assert clinic.name == "Clínica Nueva"
    assert clinic.phone == "+50322223333"
    assert clinic.address == "Calle 1"
    assert clinic.city == "Santa Tecla"
    assert clinic.currency == "USD"
    assert "profile was saved" in client.get(SETTINGS).content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "   ", "Enter the clinic&#x27;s name."),
        ("name", "x" * 201, "Use at most 200 characters for the name."),
        ("phone", "12345", "international format"),
        ("phone", "+503 123", "not a possible phone number"),
        ("city", "c" * 101, "Use at most 100 characters"),
        ("address", "a" * 256, "Use at most 255 characters"),
        ("timezone", "Mars/Olympus", "IANA time zone"),
        ("currency", "XYZ", "ISO 4217"),
    ],
)
def test_it_shows_invalid_profile_input_next_to_the_field(clinic_admin, clinic, field, value, message):
    before = snapshot(clinic)
    response = signed_in(clinic_admin).post(PROFILE, {**VALID_PROFILE, field: value})
    assert response.status_code == 400
    html = response.content.decode()
    error_block = html.split(f'id="id_{field}_error"', 1)
    assert len(error_block) == 2, f"no error list for {field}"
    assert message in error_block[1][:400]
    assert 'aria-invalid="true"' in html
    assert snapshot(clinic) == before


def test_it_saves_nothing_when_one_profile_field_is_invalid(clinic_admin, clinic):
    before = snapshot(clinic)
    signed_in(clinic_admin).post(PROFILE, {**VALID_PROFILE, "currency": "nope"})
    assert snapshot(clinic) == before


def test_it_refuses_staff_profile_writes(clinic_staff, clinic):
    before = snapshot(clinic)
    response = signed_in(clinic_staff).post(PROFILE, VALID_PROFILE)
    assert response.status_code == 403
    assert "administrators" in response.content.decode()
    assert snapshot(clinic) == before


def test_a_get_on_an_action_goes_back_to_the_page(clinic_admin):
    # A reload after a form error, or a language switch there, is no dead end (it used to be a 405).
    response = signed_in(clinic_admin).get(PROFILE)
    assert response.status_code == 302
    assert response["Location"] == "/settings/"


def test_it_enforces_csrf(clinic_admin, clinic):
    client = signed_in(clinic_admin, csrf=True)
    before = snapshot(clinic)
    assert client.post(PROFILE, VALID_PROFILE).status_code == 403
    assert snapshot(clinic) == before
    token = csrf_token_of(client)
    response = client.post(PROFILE, {**VALID_PROFILE, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    clinic.refresh_from_db()
    assert clinic.name == "Clínica Nueva"


def test_it_changes_only_the_own_clinic(clinic_admin, clinic, other_clinic):
    before = snapshot(other_clinic)
    signed_in(clinic_admin).post(PROFILE, {**VALID_PROFILE, "clinic": str(other_clinic.pk)})
    assert snapshot(other_clinic) == before


# --- the bot switch ---------------------------------------------------------------------------


def test_it_turns_the_bot_on_and_off(clinic_admin, clinic):
    client = signed_in(clinic_admin)
    assert client.post(BOT, {"bot_enabled": "on"}).status_code == 302
    clinic.refresh_from_db()
    assert clinic.bot_enabled is True
    assert client.post(BOT, {}).status_code == 302
    clinic.refresh_from_db()
    assert clinic.bot_enabled is False


def test_the_bot_switch_says_whether_patients_get_answers(clinic_admin, clinic):
    # It used to say "the bot is on" under a hint that the bot only works once WhatsApp is active.
    client = signed_in(clinic_admin)
    assert "patients who write get no automatic answers" in client.get(SETTINGS).content.decode()
    Clinic.objects.filter(pk=clinic.pk).update(bot_enabled=True)
    assert "patients get no answers yet: WhatsApp is not active" in client.get(SETTINGS).content.decode()
    WhatsAppAccount.objects.filter(clinic=clinic).update(status="active", number="+50377654321")
    assert "get answers now" in client.get(SETTINGS).content.decode()


def test_it_refuses_staff_bot_writes(clinic_staff, clinic):
    response = signed_in(clinic_staff).post(BOT, {"bot_enabled": "on"})
    assert response.status_code == 403
    clinic.refresh_from_db()
    assert clinic.bot_enabled is False


def test_bot_csrf_is_enforced(clinic_admin, clinic):
    response = signed_in(clinic_admin, csrf=True).post(BOT, {"bot_enabled": "on"})
    assert response.status_code == 403
    assert Clinic.objects.get(pk=clinic.pk).bot_enabled is False


def test_it_keeps_the_token_when_staff_view_a_short_token(clinic_staff, clinic):
    set_whatsapp(clinic, access_token="short-token")
    html = signed_in(clinic_staff).get(SETTINGS).content.decode()
    assert "short-token" not in html
    assert "...****" in html


@pytest.mark.django_db
def test_it_locks_sign_in_after_failures(client, clinic_admin, settings):
    settings.AXES_FAILURE_LIMIT = 3
    wrong = {"username": clinic_admin.email, "password": "not-the-password"}
    answers = [client.post("/accounts/login/", wrong).status_code for _ in range(3)]
    blocked = client.post(
        "/accounts/login/",
        {"username": clinic_admin.email, "password": PASSWORD},
        HTTP_ACCEPT_LANGUAGE="en",
    )

    assert answers == [200, 200, 429]
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session  # even the right password waits
    assert "Too many failed sign-in attempts. Try again in 15 minutes." in blocked.content.decode()


# --- words a receptionist understands -----------------------------------------------------------


def select_html(html: str, name: str) -> str:
    match = re.search(rf'<select name="{name}".*?</select>', html, re.DOTALL)
    assert match, name
    return match.group(0)


def option_values(select: str) -> list[str]:
    return re.findall(r'<option value="([^"]*)"', select)


def first_group(select: str) -> str:
    match = re.search(r'<optgroup label="([^"]+)"', select)
    assert match
    return match.group(1)


def test_the_pickers_name_currencies_and_zones_in_spanish(clinic_admin, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(country="El Salvador")
    html = signed_in(clinic_admin, language="es").get(SETTINGS).content.decode()

    zones = select_html(html, "timezone")
    assert first_group(zones) == "El Salvador"  # the clinic's country first
    assert '<option value="America/El_Salvador" selected>El Salvador · hora central</option>' in zones
    assert '<optgroup label="Estados Unidos">' in zones
    assert ">Los Ángeles · hora del Pacífico<" in zones
    assert '<optgroup label="America">' not in zones  # no English region names
    values = option_values(zones)
    assert len(values) == len(set(values))  # each zone once
    for alias in ("US/Eastern", "America/Buenos_Aires", "Asia/Calcutta", "Etc/GMT+6", "UTC", "GB"):
        assert alias not in values, alias
    assert "America/Argentina/Buenos_Aires" in values and "Asia/Kolkata" in values

    currencies = select_html(html, "currency")
    assert first_group(currencies) == "El Salvador"
    assert '<option value="USD" selected>dólar estadounidense (USD)</option>' in currencies
    assert ">euro (EUR)<" in currencies
    codes = option_values(currencies)
    for junk in ("XAU", "XTS", "XXX", "USN", "CLF", "SVC", "DEM", "XDR"):
        assert junk not in codes, junk
    assert "US Dollar" not in currencies


def test_the_pickers_name_currencies_and_zones_in_english(clinic_admin, clinic):
    html = signed_in(clinic_admin, language="en").get(SETTINGS).content.decode()
    assert '<option value="USD" selected>US Dollar (USD)</option>' in select_html(html, "currency")
    assert ">Los Angeles · Pacific Time<" in select_html(html, "timezone")
    assert '<optgroup label="United States">' in select_html(html, "timezone")


def test_a_stored_zone_outside_the_list_stays_the_first_choice(clinic_admin, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(timezone="US/Eastern")
    client = signed_in(clinic_admin, language="es")
    zones = select_html(client.get(SETTINGS).content.decode(), "timezone")
    assert first_group(zones) == "Actual"
    assert '<option value="US/Eastern" selected>US/Eastern</option>' in zones


def test_staff_read_the_profile_in_their_words(clinic_staff, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(country="Spain", currency="EUR", timezone="Europe/Madrid")
    html = signed_in(clinic_staff, language="es").get(SETTINGS).content.decode()
    assert "<dd>España</dd>" in html
    assert "<dd>euro (EUR)</dd>" in html
    assert "<dd>Madrid · hora de Europa central (Europe/Madrid)</dd>" in html


# --- no lost input --------------------------------------------------------------------------------


def test_typed_values_survive_a_language_switch_after_a_form_error(clinic_admin, clinic):
    before = snapshot(clinic)
    client = signed_in(clinic_admin, language="es")
    typed = {**VALID_PROFILE, "name": "Clínica Escrita", "phone": "12345"}
    assert client.post(PROFILE, typed).status_code == 400

    # The language form posts back to the URL on screen, the form's POST-only one.
    switched = client.post("/i18n/setlang/", {"language": "en", "next": PROFILE}, follow=True)

    assert switched.redirect_chain[-1][0] == "/settings/"
    html = switched.content.decode()
    assert 'value="Clínica Escrita"' in html
    assert 'value="12345"' in html
    assert "What you typed is shown again below; it is not saved yet." in html
    assert "international format" in html  # the error, now in English
    assert snapshot(clinic) == before  # nothing saved
    # Shown once: a later visit is the stored profile again.
    assert 'value="Clínica Escrita"' not in client.get(SETTINGS).content.decode()


def test_a_secret_typed_before_a_language_switch_is_never_kept(clinic_admin, clinic):
    client = signed_in(clinic_admin)
    bad = {"phone_number_id": "12/../34", "business_account_id": "102290129340398"}
    assert (
        client.post(
            "/settings/whatsapp/credentials/", {**bad, "access_token": "EAAsecretNEVERkept0000"}
        ).status_code
        == 400
    )

    assert "EAAsecretNEVERkept0000" not in str(dict(client.session))
    html = client.post(
        "/i18n/setlang/", {"language": "es", "next": "/settings/whatsapp/credentials/"}, follow=True
    )
    page = html.content.decode()
    assert 'value="12/../34"' in page
    assert "EAAsecretNEVERkept0000" not in page


def test_forms_that_wait_for_meta_say_so(clinic_admin, clinic):
    html = signed_in(clinic_admin, language="es").get(SETTINGS).content.decode()
    assert 'data-busy-text="Hablando con Meta… puede tardar hasta 25 segundos.' in html
    assert re.search(r'<form method="post" action="/settings/whatsapp/credentials/"[^>]*data-busy', html)
    assert "<script>" not in html  # our own static file only (strict CSP)
