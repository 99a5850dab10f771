"""Issue 18 in a real browser: words a receptionist understands, feedback while Meta works, no lost input.

Spanish first (a clinic in El Salvador), English where the words differ. Meta is the fake Graph
server over HTTP, slowed down where the test is about waiting for it.
"""

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
CONNECTED_ID = "109000000000001"
TIMEOUT = 20_000


@pytest.fixture
def clinic() -> Clinic:
    clinic = services.clinic_create(name="Clínica Demo San Salvador", city="San Salvador")
    Clinic.objects.filter(pk=clinic.pk).update(country="El Salvador")
    services.clinic_add_user(clinic=clinic, email="admin@demo.clinic", password=PASSWORD, role="admin")
    services.clinic_add_user(clinic=clinic, email="staff@demo.clinic", password=PASSWORD, role="staff")
    return clinic


def new_page(browser: Browser, locale: str = "es-SV", width: int = 1280, height: int = 900) -> Page:
    return browser.new_context(locale=locale, viewport={"width": width, "height": height}).new_page()


def sign_in(page: Page, base: str, email: str = "admin@demo.clinic") -> None:
    page.goto(f"{base}/accounts/login/")
    page.locator("#id_username").fill(email)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("button[type=submit]").last.click()
    expect(page).to_have_url(re.compile(r"/settings/"))


def option_labels(page: Page, select: str) -> list[str]:
    return page.locator(f"{select} option").all_inner_texts()


def group_labels(page: Page, select: str) -> list[str]:
    return page.eval_on_selector_all(f"{select} optgroup", "groups => groups.map(g => g.label)")


# --- words ----------------------------------------------------------------------------------------


def test_the_pickers_speak_spanish_and_english(browser, live_server, clinic, shot):
    page = new_page(browser)
    sign_in(page, live_server.url)

    expect(page.locator("#id_currency")).to_have_value("USD")
    assert page.locator("#id_currency option:checked").inner_text() == "dólar estadounidense (USD)"
    assert group_labels(page, "#id_timezone")[0] == "El Salvador"
    assert "Estados Unidos" in group_labels(page, "#id_timezone")
    zones = option_labels(page, "#id_timezone")
    assert "Los Ángeles · hora del Pacífico" in zones
    assert not [zone for zone in zones if re.search(r"\b(US/|Etc/|GMT)", zone)]
    currencies = option_labels(page, "#id_currency")
    assert not [name for name in currencies if re.search(r"\((XAU|XTS|XXX|USN|SVC)\)", name)]
    page.locator("#id_timezone").select_option("America/Mexico_City")
    page.locator("#id_currency").select_option("MXN")
    page.get_by_role("button", name="Guardar perfil").click()
    expect(page.locator(".message--success")).to_be_visible()
    clinic.refresh_from_db()
    assert (clinic.timezone, clinic.currency) == ("America/Mexico_City", "MXN")
    shot(page, "18-words-pickers-es")

    english = new_page(browser, locale="en-US")
    sign_in(english, live_server.url)
    assert english.locator("#id_currency option:checked").inner_text() == "Mexican Peso (MXN)"
    assert "United States" in group_labels(english, "#id_timezone")


def test_each_meta_word_is_explained_beside_it(browser, live_server, simulated, clinic, shot):
    whatsapp_store_credentials(account=clinic.whatsapp, business_account_id=WABA, access_token=TOKEN)
    page = new_page(browser)
    sign_in(page, live_server.url)
    expect(page.locator("#term-webhook")).to_contain_text("la dirección donde Meta entrega", ignore_case=True)
    expect(page.locator("#term-token")).to_contain_text("contraseña larga de Meta")
    expect(page.locator("#term-verify-token")).to_contain_text(
        "para comprobar que la dirección es de la clínica"
    )
    # The simulated Meta's numbers in plain words, never CONNECTED or PENDING.
    listed = page.locator("#simulated-numbers")
    expect(listed).to_contain_text("ya está en la API de WhatsApp Cloud")
    expect(listed).to_contain_text("aún no está en la API de WhatsApp Cloud")
    assert not re.search(r"CONNECTED|PENDING", listed.inner_text())
    shot(page, "19-words-meta-terms-es")


# --- feedback while Meta works -------------------------------------------------------------------


def test_a_form_waiting_for_meta_says_so_and_cannot_be_sent_twice(
    browser, live_server, simulated, clinic, shot
):
    page = new_page(browser)
    sign_in(page, live_server.url)
    page.locator("#cred_phone_number_id").fill(CONNECTED_ID)
    page.locator("#cred_business_account_id").fill(WABA)
    page.locator("#cred_access_token").fill(TOKEN)
    # Stand in for a server still waiting for Meta: the page stays, and every submission that
    # gets past the page's own script is counted instead of sent.
    page.evaluate(
        """() => {
            window.sent = 0;
            document.querySelector("#existing-number form").addEventListener("submit", (event) => {
                if (!event.defaultPrevented) { window.sent += 1; }
                event.preventDefault();
            });
        }"""
    )
    button = page.get_by_role("button", name="Guardar credenciales")
    button.click()
    button.dispatch_event("click")  # a second click on the disabled button
    page.locator("#existing-number form").evaluate("form => form.requestSubmit()")  # and Enter

    expect(button).to_be_disabled()
    expect(page.locator("#existing-number .busy-note")).to_have_text(
        re.compile(r"^Hablando con Meta… puede tardar hasta 25 segundos")
    )
    expect(page.locator("#existing-number form")).to_have_attribute("aria-busy", "true")
    assert page.evaluate("window.sent") == 1
    shot(page, "20-busy-talking-to-meta-es")


def test_without_javascript_the_forms_still_work(browser, live_server, simulated, clinic):
    context = browser.new_context(locale="es-SV", java_script_enabled=False)
    page = context.new_page()
    sign_in(page, live_server.url)
    page.locator("#cred_phone_number_id").fill(CONNECTED_ID)
    page.locator("#cred_business_account_id").fill(WABA)
    page.locator("#cred_access_token").fill(TOKEN)
    page.get_by_role("button", name="Guardar credenciales").click()
    expect(page.locator("#wa-status-badge")).to_have_text("Activo", timeout=TIMEOUT)


def test_the_two_code_buttons_still_send_their_choice(browser, live_server, simulated, clinic):
    whatsapp_store_credentials(account=clinic.whatsapp, business_account_id=WABA, access_token=TOKEN)
    page = new_page(browser)
    sign_in(page, live_server.url)
    page.get_by_label("Número de WhatsApp").fill("+503 7765-4321")
    page.get_by_role("button", name="Enviar el código").click()
    expect(page.locator("#verify")).to_be_visible()
    simulated.call("DELETE", "/requests")

    page.get_by_role("button", name="Llamarme con un código nuevo").click()

    expect(page.locator(".message--success")).to_contain_text("Meta está enviando un código nuevo")
    assert len(simulated.call("GET", "/requests?method=POST&path=request_code")) == 1
    pnid = WhatsAppAccount.objects.get(clinic=clinic).phone_number_id
    assert simulated.call("GET", f"/numbers/{pnid}/code")["method"] == "VOICE"


def test_with_meta_unreachable_the_existing_number_step_stays(browser, live_server, simulated, clinic, shot):
    simulated.call(
        "POST", "/faults", {"method": "GET", "path": f"/{CONNECTED_ID}$", "kind": "reset", "times": 10}
    )
    page = new_page(browser)
    sign_in(page, live_server.url)
    page.locator("#cred_phone_number_id").fill(CONNECTED_ID)
    page.locator("#cred_business_account_id").fill(WABA)
    page.locator("#cred_access_token").fill(TOKEN)
    page.get_by_role("button", name="Guardar credenciales").click()

    expect(page.locator("#recheck")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator(".steps__item--current")).to_have_text("1. Cuenta de Meta")
    expect(page.locator("#register")).to_have_count(0)
    body = page.locator("main").inner_text()
    assert body.count("no se pudo contactar a Meta para comprobarlas") <= 1
    shot(page, "21-meta-unreachable-es")

    simulated.call("DELETE", "/faults")
    page.get_by_role("button", name="Comprobar de nuevo con Meta").click()
    expect(page.locator("#wa-status-badge")).to_have_text("Activo", timeout=TIMEOUT)


# --- no lost input -------------------------------------------------------------------------------


def test_a_value_typed_before_a_language_switch_is_kept(browser, live_server, clinic, shot):
    page = new_page(browser)
    sign_in(page, live_server.url)
    page.locator("#id_name").fill("Clínica Escrita a Mano")
    page.locator("#id_phone").fill("12345")
    page.get_by_role("button", name="Guardar perfil").click()
    expect(page.locator("#id_phone_error")).to_be_visible()

    page.get_by_label("Idioma").select_option("en")
    page.get_by_role("button", name="Cambiar").click()

    expect(page).to_have_url(re.compile(r"/settings/"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#id_name")).to_have_value("Clínica Escrita a Mano")
    expect(page.locator("#id_phone")).to_have_value("12345")
    expect(page.locator("#id_phone_error")).to_contain_text("international format")
    expect(page.locator(".message--warning")).to_have_text(
        "What you typed is shown again below; it is not saved yet."
    )
    shot(page, "22-typed-values-kept-en")
    assert Clinic.objects.get(pk=clinic.pk).name == "Clínica Demo San Salvador"


# --- once connected, and for staff -----------------------------------------------------------------


def test_once_connected_the_page_starts_with_the_everyday_things(
    browser, live_server, simulated, clinic, shot
):
    whatsapp_store_credentials(account=clinic.whatsapp, business_account_id=WABA, access_token=TOKEN)
    page = new_page(browser)
    sign_in(page, live_server.url)
    page.locator("details#credentials > summary").click()
    page.locator("#cred_phone_number_id").fill(CONNECTED_ID)
    page.get_by_role("button", name="Guardar credenciales").click()
    expect(page.locator("#wa-status-badge")).to_have_text("Activo", timeout=TIMEOUT)

    tops = [page.locator(selector).bounding_box()["y"] for selector in ("#whatsapp", "#bot", "#health")]
    assert tops == sorted(tops)
    pin = page.locator("details#pin")
    expect(pin).not_to_have_attribute("open", "")
    deregister_top = page.locator("#deregister").bounding_box()["y"]
    assert pin.bounding_box()["y"] > deregister_top  # the PIN change comes last
    pin.locator("summary").click()
    expect(pin).to_contain_text("Este servicio eligió uno al registrar el número")
    expect(page.get_by_label("Nuevo PIN de verificación en dos pasos")).to_be_visible()
    shot(page, "23-connected-order-es")


def test_staff_read_nothing_they_cannot_do(browser, live_server, simulated, clinic, shot):
    whatsapp_store_credentials(account=clinic.whatsapp, business_account_id=WABA, access_token=TOKEN)
    admin = new_page(browser)
    sign_in(admin, live_server.url)
    # +503 2200 0002 asks for its previous provider's PIN: the admin's instruction is "enter that PIN".
    admin.get_by_label("Número de WhatsApp").fill("+503 2200-0002")
    admin.get_by_role("button", name="Enviar el código").click()
    admin.get_by_label("Código").fill(admin.locator("#simulated-code strong").inner_text())
    admin.get_by_role("button", name="Verificar").click()
    expect(admin.locator("#pin")).to_be_visible(timeout=TIMEOUT)

    staff = new_page(browser)
    sign_in(staff, live_server.url, "staff@demo.clinic")
    expect(staff.locator("#wa-status-detail")).to_have_text(
        "La conexión necesita a un administrador de su clínica: avíselo."
    )
    text = staff.locator("main").inner_text()
    for instruction in (
        "Ingrese ese PIN",
        "Introduzca ese PIN",
        "Comprobar conexión",
        "Conecte un número primero",
    ):
        assert instruction not in text, instruction
    assert staff.locator("main form[action*='/settings/whatsapp/']").count() == 0
    shot(staff, "24-staff-failed-es")


# --- admin -------------------------------------------------------------------------------------


def test_the_admin_clinic_list_fits_1280_pixels_in_spanish(browser, live_server, clinic, shot):
    User.objects.create_superuser(email="root@clinics.example", password=PASSWORD)
    for name in ("Clínica Odontológica Santa Tecla del Norte", "Centro Médico Familiar San Miguel"):
        services.clinic_create(name=name, city="Santa Tecla")
    page = new_page(browser, width=1280, height=800)
    page.goto(f"{live_server.url}/admin/login/")
    page.locator("#id_username").fill("root@clinics.example")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"{live_server.url}/admin/clinics/clinic/")

    expect(page.locator("#result_list")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    shot(page, "25-admin-clinics-1280-es")
    assert overflow <= 0, overflow
    changelist = page.locator("#changelist .results")
    cut = page.evaluate("el => el.scrollWidth - el.clientWidth", changelist.element_handle())
    assert cut <= 0, cut
    # The health verdict is still on the list, under each clinic's WhatsApp status.
    expect(page.locator("#result_list .wa-badge--unknown").first).to_have_text("Sin comprobar")

    page.goto(f"{live_server.url}/admin/clinics/user/")
    expect(page.locator("#result_list")).to_contain_text("Administrador del sitio")
    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#content")).to_contain_text("Tareas en segundo plano")
    shot(page, "26-admin-index-es")
