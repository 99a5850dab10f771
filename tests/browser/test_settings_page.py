"""The settings page in a real browser, against live_server and the fake Graph server over HTTP."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from clinics import services
from clinics.models import Clinic, User
from whatsapp.models import WhatsAppAccount

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
WABA = "102290129340398"
TOKEN = "EAAbrowserTOKEN000000000000000000canary99"
TIMEOUT = 20_000


@pytest.fixture
def clinic_with_people() -> Clinic:
    clinic = services.clinic_create(name="Clínica San Salvador", city="San Salvador")
    services.clinic_add_user(
        clinic=clinic, email="admin@sansalvador.example", password=PASSWORD, role="admin"
    )
    services.clinic_add_user(
        clinic=clinic, email="staff@sansalvador.example", password=PASSWORD, role="staff"
    )
    return clinic


def sign_in(page: Page, base: str, email: str, shot=None) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    if shot:
        shot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/settings/"))


def badge(page: Page):
    return page.locator("#wa-status-badge")


def test_an_admin_connects_a_new_number_end_to_end(
    page: Page, live_server, fake_graph, clinic_with_people, shot
):
    _server, control = fake_graph
    # The first read after registering still says PENDING: the page must poll to see `active`.
    control.call("POST", "/settings", {"pending_reads_after_register": 1})

    sign_in(page, live_server.url, "admin@sansalvador.example", shot)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(badge(page)).to_have_text("Disconnected")
    expect(page.locator(".steps__item--current")).to_have_text("1. Meta account")
    shot(page, "02-settings-admin-new")

    # Profile: phones are shown as people write them, stored in E.164.
    page.locator("#id_name").fill("Clínica San Salvador Centro")
    page.locator("#id_phone").fill("+503 2222-3333")
    page.locator("#id_timezone").select_option("America/El_Salvador")
    page.locator("#id_currency").select_option("USD")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator(".message--success")).to_contain_text("profile was saved")
    expect(page.locator("#id_phone")).to_have_value("+503 2222 3333")
    assert Clinic.objects.get(pk=clinic_with_people.pk).phone == "+50322223333"

    # An invalid value is shown next to its field, and focusable by keyboard.
    page.locator("#id_phone").fill("12345")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#id_phone_error")).to_contain_text("international format")
    expect(page.locator("#id_phone")).to_have_attribute("aria-invalid", "true")
    shot(page, "03-profile-error")
    page.goto(f"{live_server.url}/settings/")

    # Step 1, a new number: the WhatsApp Business Account and the token, asked once.
    page.get_by_text("Register a new number", exact=True).click()
    page.locator("#acct_business_account_id").fill(WABA)
    page.locator("#acct_access_token").fill(TOKEN)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".steps__item--current")).to_have_text("2. Number")
    expect(page.locator("#masked-token")).to_have_text("EAAbrows...****")
    assert TOKEN not in page.content()
    expect(page.locator("#webhook-url")).to_contain_text(f"/whatsapp/webhook/{clinic_with_people.pk}")
    page.get_by_role("button", name=re.compile(r"^Copy\s+Webhook URL")).click()
    expect(page.locator("#copy-status")).to_have_text("Webhook URL copied")
    shot(page, "04-step-2-number")

    # Step 2: the number and SMS; the account and the token are not asked again.
    assert page.locator("#reg_business_account_id").count() == 0
    page.locator("#reg_number").fill("+503 7765-4321")
    page.get_by_label("SMS").check()
    page.get_by_role("button", name="Send the code").click()
    expect(badge(page)).to_have_text("Waiting for the code")
    expect(page.locator(".steps__item--current")).to_have_text("3. Code")
    expect(page.locator("#id_code")).to_be_visible()
    expect(page.locator("#attempts-left")).to_contain_text("attempts left")
    shot(page, "05-enter-code")

    # The SMS, as the fake "delivers" it.
    pnid = WhatsAppAccount.objects.get(clinic=clinic_with_people).phone_number_id
    code = control.call("GET", f"/numbers/{pnid}/code")["code"]
    page.locator("#id_code").fill(code)
    page.get_by_role("button", name="Verify", exact=True).click()
    # Verifying first (no register form then), then the static script polls until active.
    expect(badge(page)).to_have_text("Active", timeout=TIMEOUT)
    expect(page.locator("#wa-status-number")).to_have_text("+503 7765 4321", timeout=TIMEOUT)
    expect(page.locator("#connected")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#deregister")).to_be_visible()
    assert WhatsAppAccount.objects.get(clinic=clinic_with_people).status == "active"
    shot(page, "06-active")

    # Bot on: the page says patients get answers now.
    page.get_by_label("Answer patients with the bot").check()
    page.locator("#bot").get_by_role("button", name="Save").click()
    expect(page.locator(".message--success")).to_contain_text("The bot is on.")
    expect(page.locator("#bot-hint")).to_contain_text("get answers now")

    # Deregister behind a typed confirmation.
    page.locator("#id_confirmation").fill("+503 0000-0000")
    page.get_by_role("button", name="Disconnect", exact=True).click()
    expect(page.locator("#id_confirmation_error")).to_contain_text("does not match")
    page.locator("#id_confirmation").fill("+503 7765-4321")
    page.get_by_role("button", name="Disconnect", exact=True).click()
    expect(page.locator(".message--success")).to_contain_text("disconnected")
    expect(badge(page)).to_have_text("Disconnected")
    shot(page, "07-disconnected")
    clinic = Clinic.objects.get(pk=clinic_with_people.pk)
    assert clinic.bot_enabled is False
    assert clinic.name == "Clínica San Salvador Centro"

    # Sign out (a POST form).
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_keyboard_users_reach_the_forms(page: Page, live_server, clinic_with_people):
    sign_in(page, live_server.url, "admin@sansalvador.example")
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    outline = page.locator(".skip-link").evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # Focus moved into the page, onto a control a screen reader can name (the first is now the
    # admins' "Team" link, a link named by its text).
    focused = page.evaluate(
        "(() => { const el = document.activeElement;"
        " return el.closest('main') ? (el.id || el.name || el.textContent.trim()) : ''; })()"
    )
    assert focused


def test_staff_see_everything_read_only(page: Page, live_server, clinic_with_people, shot):
    sign_in(page, live_server.url, "staff@sansalvador.example")
    expect(page.get_by_text("Read-only")).to_be_visible()
    expect(page.locator("#profile dl")).to_contain_text("Clínica San Salvador")
    assert page.locator("#id_name").count() == 0
    assert page.locator("#cred_access_token").count() == 0
    assert page.locator("#deregister").count() == 0
    assert page.locator("[data-poll-url]").count() == 0
    expect(badge(page)).to_have_text("Disconnected")
    shot(page, "08-settings-staff")


def test_the_page_in_spanish(browser, live_server, clinic_with_people, shot):
    context = browser.new_context(locale="es-SV", viewport={"width": 420, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.get_by_label("Correo electrónico").fill("admin@sansalvador.example")
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Iniciar sesión").click()
    expect(page.locator("h2#profile-title")).to_have_text("Perfil de la clínica")
    expect(badge(page)).to_have_text("Desconectado")
    shot(page, "09-settings-spanish-mobile")
    # Switch to English on the page.
    page.get_by_label("Idioma").select_option("en")
    page.get_by_role("button", name="Cambiar").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h2#profile-title")).to_have_text("Clinic profile")
    context.close()


def test_the_admin_change_page_shows_only_the_masked_token(page: Page, live_server, clinic_with_people, shot):
    User.objects.create_superuser(email="root@clinics.example", password=PASSWORD)
    account = WhatsAppAccount.objects.get(clinic=clinic_with_people)
    account.access_token = TOKEN
    account.app_secret = "admin-app-secret-canary"
    account.phone_number_id = "123456789"
    account.save()
    page.goto(f"{live_server.url}/admin/login/")
    page.locator("#id_username").fill("root@clinics.example")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"{live_server.url}/admin/clinics/clinic/")
    expect(page.locator(".wa-badge").first).to_be_visible()
    shot(page, "10-admin-clinics")
    page.goto(f"{live_server.url}/admin/clinics/clinic/{clinic_with_people.pk}/change/")
    expect(page.get_by_text("EAAbrows...****")).to_be_visible()
    html = page.content()
    assert TOKEN not in html
    assert "admin-app-secret-canary" not in html
    expect(page.locator("input[name='whatsapp-0-new_access_token']")).to_have_value("")
    shot(page, "11-admin-clinic-change")
