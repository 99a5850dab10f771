"""Events go where their number is: two clinics that share a WABA id (contract, "The webhook")."""

from __future__ import annotations

import pytest

from whatsapp.tests.helpers import (
    OTHER_PNID,
    PNID,
    WABA,
    account_of,
    account_restriction,
    arrange,
    arrange_active,
    arrange_pending,
    disabled_update,
    meta_bytes,
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
