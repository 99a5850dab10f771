"""Admin smoke tests: clinics (list, search, filters, add, change, WhatsApp inline, actions),
users, API tokens and webhook deliveries. No secret may reach a page or a history entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import responses
from django.contrib.admin.models import LogEntry
from django.test import Client

from clinics.models import ApiToken, Clinic, User
from clinics.tests.factories import LONG_TOKEN, fill_clinic, set_whatsapp, snapshot
from whatsapp import meta
from whatsapp.models import WebhookDelivery, WhatsAppAccount, WhatsAppStatus

DATA = Path(__file__).resolve().parents[2] / "whatsapp" / "tests" / "data"
GRAPH = "https://graph.facebook.com/v26.0"
CHANGELIST = "/admin/clinics/clinic/"
ADD = "/admin/clinics/clinic/add/"
CANARY = "EAAcanaryTOKEN0000000000000000SECRETxyz"
SECRET = "app-secret-canary-0123456789"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture(autouse=True)
def _no_retry_pauses(monkeypatch):
    monkeypatch.setattr(meta, "_sleep", lambda _seconds: None)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    return client


@pytest.fixture
def graph():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def change_url(clinic: Clinic) -> str:
    return f"/admin/clinics/clinic/{clinic.pk}/change/"


def clinic_form(clinic: Clinic, **overrides: str) -> dict:
    account = WhatsAppAccount.objects.get(clinic=clinic)
    data = {
        "name": clinic.name,
        "phone": clinic.phone,
        "address": clinic.address,
        "city": clinic.city,
        "country": clinic.country,
        "timezone": clinic.timezone,
        "currency": clinic.currency,
        "logo_url": clinic.logo_url,
        "language": "es",
        "is_active": "on",
        "subscription_plan": clinic.subscription_plan,
        "subscription_expires_at_0": "",
        "subscription_expires_at_1": "",
        "whatsapp-TOTAL_FORMS": "1",
        "whatsapp-INITIAL_FORMS": "1",
        "whatsapp-MIN_NUM_FORMS": "1",
        "whatsapp-MAX_NUM_FORMS": "1",
        "whatsapp-0-id": str(account.pk),
        "whatsapp-0-clinic": str(clinic.pk),
        "whatsapp-0-phone_number_id": account.phone_number_id,
        "whatsapp-0-business_account_id": account.business_account_id,
        "whatsapp-0-new_access_token": "",
        "whatsapp-0-new_app_secret": "",
    }
    if clinic.bot_enabled:
        data["bot_enabled"] = "on"
    data.update(overrides)
    return data


def all_history() -> str:
    return " ".join(f"{entry.change_message} {entry.object_repr}" for entry in LogEntry.objects.all())


# --- list, search, filters ----------------------------------------------------------------------


def test_changelist_lists_clinics_with_a_status_badge(admin_client, clinic, other_clinic):
    fill_clinic(clinic, token=CANARY)
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Clínica San Salvador" in html
    assert "Clínica Santa Ana" in html
    assert 'class="wa-badge wa-badge--disconnected"' in html
    assert "clinics/admin.css" in html
    assert CANARY not in html


@pytest.mark.parametrize(
    ("query", "expected", "absent"),
    [
        ("San Salvador", "Clínica San Salvador", "Clínica Santa Ana"),
        ("santa-ana", "Clínica Santa Ana", "Clínica San Salvador"),
        ("Santa Ana", "Clínica Santa Ana", "Clínica San Salvador"),
        ("admin@santaana.example", "Clínica Santa Ana", "Clínica San Salvador"),
    ],
)
def test_search_finds_by_name_slug_city_and_member_email(
    admin_client, clinic_admin, other_clinic_admin, query, expected, absent
):
    html = admin_client.get(CHANGELIST, {"q": query}).content.decode()
    assert expected in html
    assert f">{absent}<" not in html


@pytest.mark.parametrize(
    ("params", "expected", "absent"),
    [
        ({"subscription_plan__exact": "pro"}, "Clínica San Salvador", "Clínica Santa Ana"),
        ({"is_active__exact": "0"}, "Clínica Cerrada", "Clínica San Salvador"),
        ({"whatsapp__status__exact": "active"}, "Clínica San Salvador", "Clínica Santa Ana"),
    ],
)
def test_each_filter(admin_client, clinic, other_clinic, inactive_clinic, params, expected, absent):
    fill_clinic(clinic)
    set_whatsapp(clinic, status=WhatsAppStatus.ACTIVE)
    response = admin_client.get(CHANGELIST, params)
    assert response.status_code == 200
    html = response.content.decode()
    assert f">{expected}<" in html
    assert f">{absent}<" not in html


# --- add and change -----------------------------------------------------------------------------


def test_add_creates_the_clinic_through_the_service(admin_client):
    assert admin_client.get(ADD).status_code == 200
    response = admin_client.post(
        ADD,
        {
            "name": "  Clínica Nueva  ",
            "phone": "+503 2222-3333",
            "address": "",
            "city": "Soyapango",
            "country": "El Salvador",
            "timezone": "America/El_Salvador",
            "currency": "usd",
            "logo_url": "",
            "language": "es",
            "is_active": "on",
            "subscription_plan": "basic",
            "subscription_expires_at_0": "",
            "subscription_expires_at_1": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    clinic = Clinic.objects.get(name="Clínica Nueva")
    assert re.fullmatch(r"clinica-nueva-[a-z0-9]{6}", clinic.slug)
    assert clinic.phone == "+50322223333"
    assert clinic.currency == "USD"
    assert clinic.subscription_plan == "basic"
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert account.verify_token
    assert LogEntry.objects.filter(object_id=str(clinic.pk)).exists()


def test_add_rejects_invalid_input_and_saves_nothing(admin_client):
    response = admin_client.post(
        ADD,
        {"name": "Mala", "timezone": "Nowhere/City", "currency": "usd", "subscription_plan": "free"},
    )
    assert response.status_code == 200
    assert "IANA time zone" in response.content.decode()
    assert not Clinic.objects.filter(name="Mala").exists()


def test_change_page_shows_only_the_masked_token(admin_client, clinic):
    fill_clinic(clinic, token=CANARY)
    set_whatsapp(clinic, app_secret=SECRET, registration_pin="918273")
    response = admin_client.get(change_url(clinic))
    assert response.status_code == 200
    html = response.content.decode()
    assert "EAAcanar...****" in html
    assert CANARY not in html
    assert SECRET not in html
    assert "verify_abc123" not in html
    assert "918273" not in html
    assert 'name="whatsapp-0-access_token"' not in html
    assert re.search(r'<input type="password" name="whatsapp-0-new_access_token"[^>]*>', html)


def test_the_inline_form_has_no_encrypted_field():
    from whatsapp.admin import WhatsAppAccountAdminForm

    assert set(WhatsAppAccountAdminForm.base_fields) == {
        "phone_number_id",
        "business_account_id",
        "new_access_token",
        "new_app_secret",
    }


def test_the_write_only_field_replaces_the_token(admin_client, clinic, graph):
    fill_clinic(clinic, token=LONG_TOKEN)
    graph.add(responses.GET, f"{GRAPH}/123456789", json=load("phone_number_connected.json"))
    graph.add(responses.POST, re.compile(rf"{GRAPH}/.+/subscribed_apps"), json=load("success.json"))
    response = admin_client.post(
        change_url(clinic),
        clinic_form(clinic, **{"whatsapp-0-new_access_token": CANARY, "whatsapp-0-new_app_secret": SECRET}),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert account.access_token == CANARY
    assert account.app_secret == SECRET
    assert account.status == WhatsAppStatus.ACTIVE  # checked with Meta through the service
    history = all_history()
    assert "New access token" in history
    assert CANARY not in history
    assert SECRET not in history
    page = admin_client.get(f"/admin/clinics/clinic/{clinic.pk}/history/").content.decode()
    assert CANARY not in page and SECRET not in page


def test_a_blank_write_only_field_keeps_the_token(admin_client, clinic):
    fill_clinic(clinic, token=CANARY)
    response = admin_client.post(change_url(clinic), clinic_form(clinic, city="Apopa"))
    assert response.status_code == 302, response.content.decode()[:3000]
    clinic.refresh_from_db()
    assert clinic.city == "Apopa"
    assert WhatsAppAccount.objects.get(clinic=clinic).access_token == CANARY
    assert CANARY not in all_history()


def test_change_rejects_an_invalid_token_without_echoing_it(admin_client, clinic):
    fill_clinic(clinic, token=LONG_TOKEN)
    before = snapshot(clinic)
    bad = "bad token with spaces SECRETPART"
    response = admin_client.post(
        change_url(clinic), clinic_form(clinic, **{"whatsapp-0-new_access_token": bad})
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "no spaces" in html
    assert "SECRETPART" not in html
    assert snapshot(clinic) == before


def test_change_rejects_a_meta_id_with_a_slash(admin_client, clinic):
    fill_clinic(clinic)
    before = snapshot(clinic)
    response = admin_client.post(
        change_url(clinic), clinic_form(clinic, **{"whatsapp-0-phone_number_id": "1/2"})
    )
    assert response.status_code == 200
    assert snapshot(clinic) == before


def test_change_saves_admin_only_fields(admin_client, clinic):
    fill_clinic(clinic)
    response = admin_client.post(
        change_url(clinic),
        clinic_form(clinic, subscription_plan="enterprise", country="Guatemala", is_active=""),
    )
    assert response.status_code == 302
    clinic.refresh_from_db()
    assert clinic.subscription_plan == "enterprise"
    assert clinic.country == "Guatemala"
    assert clinic.is_active is False


# --- actions ------------------------------------------------------------------------------------


def run_action(admin_client, action: str, *clinics: Clinic):
    return admin_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(c.pk) for c in clinics]},
        follow=True,
    )


def test_refresh_action_reads_the_status_from_meta(admin_client, clinic, graph):
    fill_clinic(clinic, token=CANARY)
    graph.add(responses.GET, f"{GRAPH}/123456789", json=load("phone_number_pending.json"))
    response = run_action(admin_client, "refresh_whatsapp_status", clinic)
    assert response.status_code == 200
    assert WhatsAppAccount.objects.get(clinic=clinic).status == WhatsAppStatus.VERIFYING
    html = response.content.decode()
    assert "Verifying" in html
    assert CANARY not in html


def test_refresh_action_reports_a_meta_refusal(admin_client, clinic, graph):
    fill_clinic(clinic)
    graph.add(responses.GET, f"{GRAPH}/123456789", json=load("error_190_invalid_token.json"), status=401)
    response = run_action(admin_client, "refresh_whatsapp_status", clinic)
    html = response.content.decode()
    assert 'class="error"' in html
    assert WhatsAppAccount.objects.get(clinic=clinic).status == WhatsAppStatus.FAILED


def test_deregister_action_goes_through_the_service(admin_client, clinic, graph):
    fill_clinic(clinic)
    set_whatsapp(clinic, status=WhatsAppStatus.ACTIVE, number="+50377654321")
    graph.add(responses.POST, f"{GRAPH}/123456789/deregister", json=load("success.json"))
    response = run_action(admin_client, "deregister_whatsapp", clinic)
    assert "1 clinic disconnected" in response.content.decode()
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert account.status == WhatsAppStatus.DISCONNECTED
    assert account.access_token == LONG_TOKEN
    clinic.refresh_from_db()
    assert clinic.bot_enabled is False


def test_deregister_action_reports_meta_errors(admin_client, clinic, graph):
    fill_clinic(clinic)
    set_whatsapp(clinic, status=WhatsAppStatus.ACTIVE, number="+50377654321")
    graph.add(
        responses.POST,
        f"{GRAPH}/123456789/deregister",
        json=load("error_2_service_unavailable.json"),
        status=503,
    )
    response = run_action(admin_client, "deregister_whatsapp", clinic)
    html = response.content.decode()
    assert 'class="error"' in html
    assert "Clínica San Salvador:" in html
    assert WhatsAppAccount.objects.get(clinic=clinic).status == WhatsAppStatus.ACTIVE


def test_admin_is_for_superusers_only(clinic_admin):
    client = Client()
    client.force_login(clinic_admin)
    assert client.get(CHANGELIST).status_code == 302


# --- users --------------------------------------------------------------------------------------


def test_users_admin_adds_a_user_with_a_password(admin_client, clinic):
    page = admin_client.get("/admin/clinics/user/add/")
    assert page.status_code == 200
    assert 'name="password1"' in page.content.decode()
    response = admin_client.post(
        "/admin/clinics/user/add/",
        {
            "email": "New.Person@Clinic.Example",
            "full_name": "Nueva Persona",
            "clinic": str(clinic.pk),
            "role": "staff",
            "usable_password": "true",
            "password1": "a-Long-pass-phrase-42",
            "password2": "a-Long-pass-phrase-42",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user = User.objects.get(email="new.person@clinic.example")
    assert user.clinic == clinic
    assert user.role == "staff"
    assert user.check_password("a-Long-pass-phrase-42")
    assert "a-Long-pass-phrase-42" not in all_history()


def test_users_admin_refuses_a_duplicate_email(admin_client, clinic_admin):
    response = admin_client.post(
        "/admin/clinics/user/add/",
        {
            "email": clinic_admin.email.upper(),
            "role": "staff",
            "usable_password": "true",
            "password1": "a-Long-pass-phrase-42",
            "password2": "a-Long-pass-phrase-42",
        },
    )
    assert response.status_code == 200
    assert User.objects.filter(email=clinic_admin.email).count() == 1


def test_users_admin_changes_role_and_clinic(admin_client, clinic_staff, other_clinic):
    url = f"/admin/clinics/user/{clinic_staff.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert clinic_staff.password not in page.content.decode()
    response = admin_client.post(
        url,
        {
            "email": clinic_staff.email,
            "full_name": "",
            "clinic": str(other_clinic.pk),
            "role": "admin",
            "is_active": "on",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    clinic_staff.refresh_from_db()
    assert clinic_staff.role == "admin"
    assert clinic_staff.clinic == other_clinic


def test_users_changelist_and_search(admin_client, clinic_admin, other_clinic_admin):
    html = admin_client.get("/admin/clinics/user/", {"q": "santaana"}).content.decode()
    assert "admin@santaana.example" in html
    assert "admin@sansalvador.example" not in html
    assert admin_client.get("/admin/clinics/user/", {"role__exact": "staff"}).status_code == 200


def test_api_tokens_show_only_their_prefix(admin_client, clinic_admin):
    token, key = ApiToken.issue(clinic_admin)
    html = admin_client.get("/admin/clinics/apitoken/").content.decode()
    assert token.prefix in html
    assert key not in html
    assert (
        token.digest not in admin_client.get(f"/admin/clinics/apitoken/{token.pk}/change/").content.decode()
    )


# --- webhook deliveries -------------------------------------------------------------------------


def test_webhook_deliveries_are_read_only(admin_client, clinic):
    delivery = WebhookDelivery.objects.create(
        clinic=clinic, dedupe_key="k1", fields="messages", raw_body='{"entry": []}', outcome="stored"
    )
    assert admin_client.get("/admin/whatsapp/webhookdelivery/").status_code == 200
    assert admin_client.get("/admin/whatsapp/webhookdelivery/add/").status_code == 403
    url = f"/admin/whatsapp/webhookdelivery/{delivery.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(url, {"outcome": "edited"}).status_code == 403
    assert admin_client.post(f"/admin/whatsapp/webhookdelivery/{delivery.pk}/delete/").status_code == 403
    delivery.refresh_from_db()
    assert delivery.outcome == "stored"


# --- the same field rules as the API and the page (the admin used to skip address and city) ---


def test_change_normalises_address_and_city_like_the_api(admin_client, clinic):
    response = admin_client.post(
        change_url(clinic), clinic_form(clinic, address="  Calle Arce 1  ", city="  Santa Ana ")
    )
    assert response.status_code == 302
    clinic.refresh_from_db()
    assert (clinic.address, clinic.city) == ("Calle Arce 1", "Santa Ana")


def test_change_refuses_a_city_the_api_refuses(admin_client, clinic):
    before = snapshot(clinic)
    response = admin_client.post(change_url(clinic), clinic_form(clinic, city="x" * 101))
    assert response.status_code == 200
    assert "at most 100 characters" in response.content.decode()
    assert snapshot(clinic) == before


def test_the_inline_credentials_are_checked_with_meta_like_the_settings_endpoint(admin_client, clinic, graph):
    set_whatsapp(clinic, access_token=LONG_TOKEN, phone_number_id="", business_account_id="")
    graph.add(responses.GET, f"{GRAPH}/106540352242922", json=load("phone_number_connected.json"))
    graph.add(responses.POST, f"{GRAPH}/102290129340398/subscribed_apps", json={"success": True})
    response = admin_client.post(
        change_url(clinic),
        clinic_form(
            clinic,
            **{
                "whatsapp-0-phone_number_id": "106540352242922",
                "whatsapp-0-business_account_id": "102290129340398",
            },
        ),
    )
    assert response.status_code == 302
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert account.status == WhatsAppStatus.ACTIVE
    assert account.subscribed_at is not None


# --- the admin in the reader's words --------------------------------------------------------------


def spanish_admin(superuser) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="es")
    client.force_login(superuser)
    return client


def test_country_time_zone_and_currency_are_the_pages_pickers(superuser, clinic):
    Clinic.objects.filter(pk=clinic.pk).update(country="El Salvador")
    html = spanish_admin(superuser).get(f"{CHANGELIST}{clinic.pk}/change/").content.decode()

    country = re.search(r'<select name="country".*?</select>', html, re.DOTALL).group(0)
    assert '<option value="El Salvador" selected>El Salvador</option>' in country
    assert '<option value="Germany">Alemania</option>' in country
    zones = re.search(r'<select name="timezone".*?</select>', html, re.DOTALL).group(0)
    assert re.search(r'<optgroup label="([^"]+)"', zones).group(1) == "El Salvador"
    assert ">El Salvador · hora central<" in zones
    assert "US/Eastern" not in zones
    currencies = re.search(r'<select name="currency".*?</select>', html, re.DOTALL).group(0)
    assert '<option value="USD" selected>dólar estadounidense (USD)</option>' in currencies
    assert 'value="XAU"' not in currencies


def test_the_pickers_save_through_the_service(admin_client, clinic):
    data = clinic_form(clinic, city="Madrid", country="Spain", timezone="Europe/Madrid", currency="EUR")

    response = admin_client.post(f"{CHANGELIST}{clinic.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    clinic.refresh_from_db()
    assert (clinic.country, clinic.timezone, clinic.currency) == ("Spain", "Europe/Madrid", "EUR")


def test_a_superuser_without_a_clinic_is_not_shown_as_staff(superuser, clinic_staff, clinic_admin):
    html = spanish_admin(superuser).get("/admin/clinics/user/").content.decode()
    rows = {
        email: row
        for row in re.findall(r"<tr>.*?</tr>", html, re.DOTALL)
        for email in (superuser.email, clinic_staff.email, clinic_admin.email)
        if email in row
    }
    assert "Administrador del sitio" in rows[superuser.email]
    assert "Personal" not in rows[superuser.email]
    assert "Personal" in rows[clinic_staff.email]
    assert "Administrador del sitio" not in rows[clinic_admin.email]


def test_the_task_queue_pages_are_in_spanish(superuser, clinic, database_tasks):
    from django_tasks_db.models import DBTaskResult

    from whatsapp.deliveries import process_webhook_delivery

    delivery = WebhookDelivery.objects.create(
        clinic=clinic, dedupe_key="k1", fields="messages", raw_body="{}", outcome="stored"
    )
    process_webhook_delivery.enqueue(str(delivery.pk))
    result = DBTaskResult.objects.get()
    client = spanish_admin(superuser)

    index = client.get("/admin/").content.decode()
    assert "Tareas en segundo plano" in index
    assert "Tasks Database Backend" not in index
    listing = client.get("/admin/django_tasks_database/dbtaskresult/").content.decode()
    assert "Lista para ejecutarse" in listing
    assert ">Ready<" not in listing
    change = client.get(f"/admin/django_tasks_database/dbtaskresult/{result.pk}/change/").content.decode()
    assert "DBTaskResult object" not in change
    assert f"{result.task_name} · Lista para ejecutarse" in change
    assert "Tareas en segundo plano" in change.split('class="breadcrumbs"', 1)[1][:600]
    history = client.get(f"/admin/django_tasks_database/dbtaskresult/{result.pk}/history/").content.decode()
    assert "DBTaskResult object" not in history
    assert f"{result.task_name} · Lista para ejecutarse" in history
