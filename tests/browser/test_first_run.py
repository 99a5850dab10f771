"""The first ten minutes, in a browser: Meta simulated as scripts/run does it, a clinic admin
following only what the page says (in Spanish), the other paths a clinic takes, and the admin site
in Spanish."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from clinics import services
from clinics.models import Clinic, User
from tests.browser.conftest import DEMO_TOKEN, DEMO_WABA
from whatsapp.models import WhatsAppAccount
from whatsapp.services import whatsapp_store_credentials

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
WABA, TOKEN = DEMO_WABA, DEMO_TOKEN
TIMEOUT = 20_000


@pytest.fixture
def demo_clinic() -> Clinic:
    """The demo clinic: its admin, and credentials the simulated Meta knows (ensure_demo_clinic)."""
    clinic = services.clinic_create(name="Clínica Demo San Salvador", city="San Salvador")
    services.clinic_add_user(clinic=clinic, email="admin@demo.clinic", password=PASSWORD, role="admin")
    whatsapp_store_credentials(account=clinic.whatsapp, business_account_id=WABA, access_token=TOKEN)
    return clinic


def spanish_page(browser: Browser, *, width: int = 1280) -> Page:
    context = browser.new_context(locale="es-SV", viewport={"width": width, "height": 900})
    return context.new_page()


def sign_in_es(page: Page, base: str, email: str = "admin@demo.clinic") -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Correo electrónico").fill(email)
    page.get_by_label("Contraseña").fill(PASSWORD)
    page.get_by_role("button", name="Iniciar sesión").click()
    expect(page).to_have_url(re.compile(r"/settings/"))


def badge(page: Page):
    return page.locator("#wa-status-badge")


def test_the_first_run_reaches_active_in_spanish_following_the_page(
    browser, live_server, simulated, demo_clinic, shot
):
    page = spanish_page(browser)
    sign_in_es(page, live_server.url)
    expect(page.locator("#simulated-banner")).to_contain_text("Meta está simulado")
    expect(badge(page)).to_have_text("Desconectado")
    # The demo clinic's credentials are known: the page starts at step 2, the number.
    expect(page.locator(".steps__item--current")).to_have_text("2. Número")
    expect(page.locator("#simulated-numbers")).to_contain_text("109000000000001")
    shot(page, "12-first-run-step-2-es")

    page.get_by_label("Número de WhatsApp").fill("+503 7765-4321")
    page.get_by_role("button", name="Enviar el código").click()
    expect(page.locator(".steps__item--current")).to_have_text("3. Código")
    # The code the simulated Meta "sent" is on the page: nothing to look up elsewhere.
    code = page.locator("#simulated-code strong").inner_text()
    assert re.fullmatch(r"[0-9]{6}", code)
    shot(page, "13-first-run-code-es")
    page.get_by_label("Código").fill(code)
    page.get_by_role("button", name="Verificar").click()

    expect(badge(page)).to_have_text("Activo", timeout=TIMEOUT)
    expect(page.locator("#connected")).to_contain_text("+503 7765 4321", timeout=TIMEOUT)
    shot(page, "14-first-run-active-es")
    account = WhatsAppAccount.objects.get(clinic=demo_clinic)
    assert (account.status, account.number) == ("active", "+50377654321")


def test_a_number_already_on_the_cloud_api_needs_only_its_ids(browser, live_server, simulated, shot):
    clinic = services.clinic_create(name="Clínica Migrada")
    services.clinic_add_user(clinic=clinic, email="admin@migrada.example", password=PASSWORD, role="admin")
    page = spanish_page(browser)
    sign_in_es(page, live_server.url, "admin@migrada.example")
    expect(page.locator(".steps__item--current")).to_have_text("1. Cuenta de Meta")
    expect(page.get_by_text("Mi número ya está en la API de WhatsApp Cloud")).to_be_visible()

    page.locator("#cred_phone_number_id").fill("109000000000001")
    page.locator("#cred_business_account_id").fill(WABA)
    page.locator("#cred_access_token").fill(TOKEN)
    page.get_by_role("button", name="Guardar credenciales").click()

    expect(badge(page)).to_have_text("Activo", timeout=TIMEOUT)
    shot(page, "15-already-on-cloud-api-es")
    assert WhatsAppAccount.objects.get(clinic=clinic).status == "active"


def test_a_number_with_another_providers_pin(browser, live_server, simulated, demo_clinic, shot):
    page = spanish_page(browser)
    sign_in_es(page, live_server.url)
    # +503 2200 0002 comes from another provider with the two-step PIN 123456.
    page.get_by_label("Número de WhatsApp").fill("+503 2200-0002")
    page.get_by_role("button", name="Enviar el código").click()
    page.get_by_label("Código").fill(page.locator("#simulated-code strong").inner_text())
    page.get_by_role("button", name="Verificar").click()

    expect(badge(page)).to_have_text("Con error")
    expect(page.locator("#pin")).to_contain_text("PIN actual del número")
    shot(page, "16-pin-asked-es")
    page.get_by_label("PIN de verificación en dos pasos").fill("123456")
    page.get_by_role("button", name="Enviar el PIN").click()

    expect(badge(page)).to_have_text("Activo", timeout=TIMEOUT)
    account = WhatsAppAccount.objects.get(clinic=demo_clinic)
    assert (account.status, account.registration_pin) == ("active", "123456")
    # Our stored PIN is never rendered (the simulated Meta's own box lists the fake's PIN on purpose).
    html = page.content()
    assert html.count("123456") == page.locator("#simulated-numbers").inner_html().count("123456")
    expect(page.locator("#pin_pin")).to_have_value("")  # the change-PIN form of an active number


def test_a_form_error_then_a_language_switch_is_no_dead_end(browser, live_server, demo_clinic):
    page = spanish_page(browser)
    sign_in_es(page, live_server.url)
    page.locator("#id_phone").fill("12345")
    page.get_by_role("button", name="Guardar perfil").click()
    expect(page).to_have_url(re.compile(r"/settings/profile/$"))
    expect(page.locator("#id_phone_error")).to_be_visible()

    page.get_by_label("Idioma").select_option("en")
    page.get_by_role("button", name="Cambiar").click()

    # It used to land on a blank 405 page (GET /settings/profile/).
    expect(page).to_have_url(re.compile(r"/settings/$"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h2#profile-title")).to_have_text("Clinic profile")


def test_the_phone_layout_has_no_sideways_scroll(browser, live_server, simulated, demo_clinic, shot):
    page = spanish_page(browser, width=390)
    sign_in_es(page, live_server.url)
    expect(page.locator("#register")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    shot(page, "17-phone-390px-es")


# English words the Spanish admin must not show (Django's own and ours).
ENGLISH = re.compile(
    r"\b(Created at|Updated at|Status checked at|Connected at|Subscribed at|Django administration|"
    r"Site administration|WhatsApp of|Date joined|Save and continue|Change clinic)\b"
)


def test_the_admin_change_page_in_spanish(browser, live_server, demo_clinic, shot):
    User.objects.create_superuser(email="root@clinics.example", password=PASSWORD)
    page = spanish_page(browser)
    page.goto(f"{live_server.url}/admin/login/")
    page.locator("#id_username").fill("root@clinics.example")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"{live_server.url}/admin/clinics/clinic/{demo_clinic.pk}/change/")

    expect(page.locator("#site-name")).to_have_text("Clínicas")
    expect(page.locator("#content")).to_contain_text(re.compile("creado el", re.IGNORECASE))
    expect(page.locator("#content")).to_contain_text("Conexión de WhatsApp")
    text = page.locator("body").inner_text()
    assert not ENGLISH.search(text), ENGLISH.search(text)
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon and icon.endswith(".svg")
    assert page.request.get(f"{live_server.url}/favicon.ico").ok
    shot(page, "18-admin-change-es")
