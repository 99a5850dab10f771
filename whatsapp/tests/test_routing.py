"""Events go where their number is: two clinics that share a WABA id (contract, "The webhook")."""

from __future__ import annotations

import pytest

from whatsapp.health import whatsapp_health_check
from whatsapp.tests.helpers import (
    DISPLAY,
    OTHER_PNID,
    OTHER_WABA,
    PNID,
    REGISTER_URL,
    SETTINGS_URL,
    TOKEN,
    WABA,
    account_of,
    account_restriction,
    account_violation,
    arrange,
    arrange_active,
    arrange_pending,
    disabled_update,
    graph_url,
    healthy_meta,
    meta_bytes,
    phone_numbers_list,
    post_webhook,
    quality_update,
    snapshot,
)

pytestmark = pytest.mark.django_db

DEPLOYMENT_SECRET = "d3pl0ym3nt5ecret00112233445566778899"
OTHER_NUMBER = "+50370001234"


@pytest.fixture(autouse=True)
def _deployment_secret(settings, tasks_run_inline):
    """Meta signs with the deployment's app secret: any clinic's URL may carry any WABA's events."""
    settings.META_APP_SECRET = DEPLOYMENT_SECRET


def _post(client, clinic, payload) -> None:
    assert post_webhook(client, clinic, meta_bytes(payload), secret=DEPLOYMENT_SECRET).status_code == 200


def test_a_wabas_event_reaches_every_clinic_with_a_number_in_it(client, clinic, other_clinic):
    arrange_active(clinic, detail="")
    arrange_active(other_clinic, phone_number_id=OTHER_PNID, number=OTHER_NUMBER, detail="")

    _post(client, clinic, account_restriction(waba=WABA))

    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in account_of(clinic).detail
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in account_of(other_clinic).detail


def test_a_clinic_that_saved_another_clinics_waba_learns_nothing(client, clinic, other_clinic):
    """R9: the other clinic typed the WABA id (and the number's id) but verified no number in it."""
    arrange_active(clinic, detail="")
    arrange(other_clinic, business_account_id=WABA, phone_number_id=PNID, detail="")
    squatter_before = snapshot(other_clinic)

    _post(client, other_clinic, account_restriction(waba=WABA))
    _post(client, other_clinic, quality_update(waba=WABA))
    _post(client, other_clinic, disabled_update("DISABLE", waba=WABA))

    assert snapshot(other_clinic) == squatter_before
    assert account_of(other_clinic).detail == ""
    assert account_of(clinic).status == "failed"


def test_a_claim_waiting_for_its_code_hears_nothing_of_the_waba(client, clinic, other_clinic):
    arrange_active(clinic, detail="")
    arrange_pending(other_clinic, phone_number_id=OTHER_PNID, number=OTHER_NUMBER, detail="")
    claim_before = snapshot(other_clinic)

    _post(client, clinic, account_restriction(waba=WABA))

    assert snapshot(other_clinic) == claim_before
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in account_of(clinic).detail


def test_a_numbers_event_reaches_only_the_clinic_holding_it(client, clinic, other_clinic):
    arrange_active(clinic, detail="")
    arrange_active(other_clinic, phone_number_id=OTHER_PNID, number=OTHER_NUMBER, detail="")

    _post(client, clinic, quality_update(digits=OTHER_NUMBER.lstrip("+"), waba=WABA))

    assert "TIER_UNLIMITED" in account_of(other_clinic).detail
    assert account_of(clinic).detail == ""


def test_an_event_naming_a_phone_number_id_reaches_only_its_holder(client, clinic, other_clinic):
    """A disconnected clinic that kept the same ids in its credentials no longer holds the number."""
    arrange_active(clinic, detail="")
    arrange(other_clinic, business_account_id=WABA, phone_number_id=PNID, status="disconnected", detail="")
    before = snapshot(other_clinic)
    payload = account_restriction(waba=WABA)
    payload["entry"][0]["changes"][0]["value"]["metadata"] = {"phone_number_id": PNID}

    _post(client, other_clinic, payload)

    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in account_of(clinic).detail
    assert snapshot(other_clinic) == before


def test_digits_in_another_waba_reach_no_one(client, clinic, other_clinic):
    arrange_active(clinic, detail="")

    _post(client, other_clinic, quality_update(waba="999999999999999"))

    assert account_of(clinic).detail == ""


# --- a WABA's events go to the numbers Meta showed in it (R9) ---------------------------------------


OTHER_DISPLAY = "+503 7000-1234"


def test_an_active_clinic_that_saves_another_clinics_waba_id_hears_nothing_of_that_waba(
    client, clinic, other_clinic, other_clinic_admin, api_client, graph
):
    """R9: clinic B, active with its own number in its own WABA, saves clinic A's WABA id."""
    arrange_active(clinic, detail="")
    arrange_active(
        other_clinic,
        phone_number_id=OTHER_PNID,
        number=OTHER_NUMBER,
        business_account_id=OTHER_WABA,
        detail="",
    )
    # Meta reads B's own number fine; the WABA B typed lists only A's number.
    graph.number(pnid=OTHER_PNID, display=OTHER_DISPLAY)
    graph.numbers((PNID, DISPLAY), waba=WABA)
    response = api_client(other_clinic_admin).patch(
        SETTINGS_URL, {"whatsapp_business_account_id": WABA}, format="json"
    )
    assert response.status_code == 200
    assert account_of(other_clinic).business_account_id == WABA
    assert account_of(other_clinic).proven_business_account_id == ""
    squatter_detail = account_of(other_clinic).detail_parts

    # Meta signs A's WABA events with the deployment's secret, to any clinic's URL.
    _post(client, other_clinic, account_restriction(waba=WABA))
    _post(client, clinic, account_violation(waba=WABA))

    assert account_of(other_clinic).detail_parts == squatter_detail
    assert "event.restricted" not in account_of(other_clinic).detail_keys
    assert account_of(other_clinic).status == "active"
    assert "ADULT" in account_of(clinic).detail  # A hears its own WABA's events


def test_a_code_request_proves_the_waba_it_found_the_number_in(admin_api, clinic, graph):
    graph.numbers(("1906385232743451", "+1 631-555-5555"), (PNID, DISPLAY))
    graph.request_code(PNID)

    response = admin_api.post(
        REGISTER_URL,
        {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
        format="json",
    )

    assert response.status_code == 200
    assert account_of(clinic).proven_business_account_id == WABA


def test_changing_either_id_takes_the_proof_away(admin_api, clinic, graph):
    arrange_active(clinic, detail="")
    graph.number(pnid=PNID)
    graph.number(pnid=OTHER_PNID)

    admin_api.patch(SETTINGS_URL, {"whatsapp_business_account_id": OTHER_WABA}, format="json")
    assert account_of(clinic).proven_business_account_id == ""

    arrange(clinic, business_account_id=WABA, proven_business_account_id=WABA)
    admin_api.patch(SETTINGS_URL, {"whatsapp_phone_number_id": OTHER_PNID}, format="json")
    assert account_of(clinic).proven_business_account_id == ""


def test_saving_the_same_ids_again_keeps_the_proof(admin_api, clinic, graph):
    arrange_active(clinic, detail="")
    graph.number(pnid=PNID)

    response = admin_api.patch(
        SETTINGS_URL,
        {"whatsapp_business_account_id": WABA, "whatsapp_phone_number_id": PNID},
        format="json",
    )

    assert response.status_code == 200
    assert account_of(clinic).proven_business_account_id == WABA


def test_the_health_check_proves_the_waba_when_meta_lists_the_number_in_it(client, clinic, graph):
    """Ids saved by hand (endpoint 5): the WABA's events reach the clinic once Meta shows its number there."""
    arrange_active(clinic, detail="", proven_business_account_id="")
    _post(client, clinic, account_violation(waba=WABA))
    assert account_of(clinic).detail == ""

    healthy_meta(graph)
    whatsapp_health_check(account=account_of(clinic))

    assert account_of(clinic).proven_business_account_id == WABA
    _post(client, clinic, account_restriction(waba=WABA))
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in account_of(clinic).detail


def test_the_health_check_takes_the_proof_away_when_meta_no_longer_lists_the_number(client, clinic, graph):
    arrange_active(clinic, detail="")

    healthy_meta(graph, numbers=phone_numbers_list((OTHER_PNID, OTHER_DISPLAY)))
    whatsapp_health_check(account=account_of(clinic))

    assert account_of(clinic).proven_business_account_id == ""
    _post(client, clinic, account_restriction(waba=WABA))
    assert account_of(clinic).detail == ""


def test_meta_unreachable_for_the_list_leaves_the_proof_as_it_was(clinic, graph):
    arrange_active(clinic, detail="")
    healthy_meta(graph)
    graph.mock.replace("GET", graph_url(f"{WABA}/phone_numbers"), status=503, body="Service Unavailable")

    health = whatsapp_health_check(account=account_of(clinic))

    assert next(c for c in health.checks if c["key"] == "number_in_waba")["ok"] is None
    assert account_of(clinic).proven_business_account_id == WABA
