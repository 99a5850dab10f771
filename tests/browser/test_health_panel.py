"""The health panel in a real browser, with the simulated Meta over HTTP: nothing to check before a
connection, being refreshed after connecting, one "Check now" that fills it in plain words."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from clinics import services
from clinics.models import Clinic
from whatsapp.models import WhatsAppAccount, WhatsAppHealth

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
WABA = "102290129340398"
TOKEN = "EAAhealthpanelTOKEN0000000000000000canary7"
TIMEOUT = 20_000
RAW_VALUES = ("GREEN", "YELLOW", "RED", "UNKNOWN", "TIER_", "APPROVED", "PENDING_REVIEW")


@pytest.fixture
def clinic_admin_page(page: Page, live_server) -> Page:
    clinic = services.clinic_create(name="Clínica Salud", city="San Salvador")
    Clinic.objects.filter(pk=clinic.pk).update(timezone="America/El_Salvador")
    services.clinic_add_user(clinic=clinic, email="admin@salud.example", password=PASSWORD, role="admin")
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill("admin@salud.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/settings/")
    return page


def test_the_panel_before_and_after_connecting(clinic_admin_page: Page, live_server, fake_graph, shot):
    page = clinic_admin_page
    _server, control = fake_graph
    panel = page.locator("#health")

    expect(panel.locator("#health-verdict")).to_have_text("Nothing to check yet")
    expect(panel).to_contain_text("No WhatsApp number is connected")
    expect(panel.get_by_role("button", name="Check now")).to_have_count(0)
    assert page.get_by_role("button", name="Check connection").count() == 0
    shot(page, "health-01-before-connecting")

    page.get_by_text("Register a new number", exact=True).click()
    page.locator("#acct_business_account_id").fill(WABA)
    page.locator("#acct_access_token").fill(TOKEN)
    page.get_by_role("button", name="Continue").click()
    page.locator("#reg_number").fill("+503 7765-1122")
    page.get_by_role("button", name="Send the code").click()
    expect(panel.locator("#health-verdict")).to_have_text("Nothing to check yet")
    pnid = WhatsAppAccount.objects.get(clinic__name="Clínica Salud").phone_number_id
    page.locator("#id_code").fill(control.call("GET", f"/numbers/{pnid}/code")["code"])
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#wa-status-badge")).to_have_text("Active", timeout=TIMEOUT)

    # Connected: a check is queued (no worker runs here), so the panel says it is being refreshed.
    page.reload()
    expect(panel.locator("#health-verdict")).to_have_text("Being checked")
    expect(panel).to_contain_text("the last result is being refreshed")
    shot(page, "health-02-being-checked")

    # The one "Check now" runs the checks against the simulated Meta.
    expect(page.get_by_role("button", name="Check now")).to_have_count(1)
    page.get_by_role("button", name="Check now").click()
    expect(page.locator(".message--info")).to_contain_text("Checked:", timeout=TIMEOUT)
    expect(panel.locator("#health-verdict")).not_to_have_text("Being checked")
    expect(panel.locator("#health-checked")).to_contain_text("El Salvador · Central Time")
    text = panel.inner_text()
    for raw in RAW_VALUES:
        assert raw not in text, raw
    health = WhatsAppHealth.objects.get(account__clinic__name="Clínica Salud")
    assert health.checked_phone_number_id == pnid
    shot(page, "health-03-checked")
