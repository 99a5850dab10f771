"""Each number keeps its PIN, numbers are held only by proof, and code requests are limited.

Meta is faked at the HTTP boundary (`responses`); where Meta's PIN rule matters, a
callback plays it: a number keeps the first PIN registered on it and refuses any
other with 133005, and `POST /{pnid}` with a `pin` changes it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from common.tests.test_encryption import raw_value
from whatsapp.models import CodeRequest, MetaAttempt, NumberPin, WhatsAppAccount
from whatsapp.tests.helpers import (
    ERRORS,
    OTHER_PNID,
    PHONE,
    PNID,
    REGISTER_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
)

pytestmark = pytest.mark.django_db

PIN_URL = "/api/clinics/whatsapp/pin/"
OTHER_PHONE = "+50370001234"
FORM = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA}
OTHER_FORM = {"phone": OTHER_PHONE, "otpMethod": "sms", "wabaId": WABA}
NOW = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)


@pytest.fixture
def other_admin_api(api_client, other_clinic_admin):
    return api_client(other_clinic_admin)


class MetaPins:
    """Meta's two-step PIN rule for the numbers of one WABA, at the HTTP boundary."""

    def __init__(self, graph, pins: dict[str, str] | None = None) -> None:
        self.pins: dict[str, str] = dict(pins or {})
        self.sent: list[tuple[str, str]] = []
        graph.numbers((PNID, "+503 7765-4321"), (OTHER_PNID, "+503 7000-1234"))
        for pnid in (PNID, OTHER_PNID):
            graph.request_code(pnid)
            graph.verify_code(pnid)
            graph.callback("POST", f"{pnid}/register", self._register(pnid))
            graph.number("CONNECTED", pnid=pnid)
            graph.deregister(pnid)
        graph.subscribe()

    def _register(self, pnid: str):
        def answer(request) -> tuple[int, dict[str, str], str]:
            pin = json.loads(request.body)["pin"]
            self.sent.append((pnid, pin))
            if self.pins.setdefault(pnid, pin) != pin:
                status, body = ERRORS[133005]
                return status, {}, json.dumps(body)
            return 200, {}, json.dumps({"success": True})

        return answer


def connect(api, form: dict[str, Any]) -> None:
    assert api.post(REGISTER_URL, form, format="json").json()["status"] == "pending_otp"
    assert api.post(VERIFY_URL, {"code": "123456"}, format="json").json() == {"status": "active"}


def kept_pins(clinic) -> dict[str, tuple[str, str | None]]:
    return {
        kept.phone_number_id: (kept.pin, kept.unconfirmed_pin)
        for kept in NumberPin.objects.filter(clinic=clinic)
    }


# --- each number keeps its PIN ------------------------------------------------------------------


def test_a_number_registered_before_comes_back_with_its_own_pin(admin_api, clinic, clinic_admin, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    meta = MetaPins(graph)

    connect(admin_api, FORM)
    assert admin_api.delete("/api/clinics/whatsapp/").json()["status"] == "disconnected"
    connect(admin_api, OTHER_FORM)
    assert admin_api.delete("/api/clinics/whatsapp/").json()["status"] == "disconnected"
    connect(admin_api, FORM)

    first_pin = meta.pins[PNID]
    assert meta.sent == [(PNID, first_pin), (OTHER_PNID, meta.pins[OTHER_PNID]), (PNID, first_pin)]
    assert first_pin != meta.pins[OTHER_PNID]
    account = account_of(clinic)
    assert (account.status, account.number, account.meta_code) == ("active", PHONE, None)
    assert kept_pins(clinic) == {PNID: (first_pin, None), OTHER_PNID: (meta.pins[OTHER_PNID], None)}
    # Encrypted at rest, and never shown: neither the API nor the settings page carries a PIN.
    for kept in NumberPin.objects.filter(clinic=clinic):
        stored = raw_value(NumberPin, kept.pk, "pin")
        assert stored.startswith("enc:v1:") and kept.pin not in stored
    browser = Client()
    browser.force_login(clinic_admin)
    settings_page = browser.get("/settings/")
    assert settings_page.status_code == 200
    page = settings_page.content.decode()
    assert PHONE in page
    for pin in meta.pins.values():
        assert pin not in admin_api.get("/api/clinics/whatsapp/status/").content.decode()
        assert pin not in page


@pytest.mark.parametrize("meta_changed_it", [True, False])
def test_a_pin_change_whose_answer_was_lost_keeps_both_until_meta_accepts_one(
    admin_api, clinic, graph, meta_changed_it
):
    arrange_active(clinic)  # registered with 482915
    meta = MetaPins(graph, {PNID: "135790" if meta_changed_it else "482915"})
    graph.fault("POST", PNID, "timeout")

    response = admin_api.put(PIN_URL, {"pin": "135790"}, format="json")

    assert response.status_code == 504
    detail = response.json()["detail"]
    assert "Nothing was lost" not in detail
    assert "Both the old and the new PIN are kept" in detail
    assert kept_pins(clinic) == {PNID: ("482915", "135790")}
    assert account_of(clinic).registration_pin == "482915"

    # The next registration of the number tries the new PIN first, then the old one.
    connect(admin_api, FORM)

    accepted = "135790" if meta_changed_it else "482915"
    expected = [(PNID, "135790")] if meta_changed_it else [(PNID, "135790"), (PNID, "482915")]
    assert meta.sent == expected
    assert kept_pins(clinic) == {PNID: (accepted, None)}
    assert account_of(clinic).registration_pin == accepted
    assert MetaAttempt.objects.filter(kind="register").count() == 1 + len(expected)


def test_a_pin_change_meta_refused_keeps_only_the_old_pin(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.error("POST", PNID, 100)

    response = admin_api.put(PIN_URL, {"pin": "135790"}, format="json")

    assert response.status_code == 400
    assert kept_pins(clinic) == {PNID: ("482915", None)}
    assert account_of(clinic).status == "active"


def test_a_wrong_typed_pin_says_so_with_the_attempts_left(admin_api, clinic, graph):
    arrange_pending(clinic, status="failed", meta_code=133005, claim_expires_at=None)
    MetaPins(graph, {PNID: "111111"})

    response = admin_api.put(PIN_URL, {"pin": "222222"}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert (body["status"], body["meta_code"]) == ("failed", 133005)
    assert "not this number's two-step verification PIN" in body["detail"]
    assert "9 more register attempts" in body["detail"]
    assert NumberPin.objects.count() == 0  # a PIN Meta refused is not kept

    right = admin_api.put(PIN_URL, {"pin": "111111"}, format="json")
    assert right.json()["status"] == "active"
    assert kept_pins(clinic) == {PNID: ("111111", None)}


# --- numbers held only by proof ----------------------------------------------------------------


def test_a_fresh_code_request_elsewhere_holds_the_number_and_says_it_is_being_connected(
    admin_api, clinic, other_clinic, graph
):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    arrange_pending(other_clinic, claim_expires_at=timezone.now() + timedelta(minutes=20))

    response = admin_api.post(REGISTER_URL, FORM, format="json")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "is connecting this number" in detail and "try again in 20 minutes" in detail
    assert "already connected" not in detail
    assert other_clinic.name not in detail
    assert graph.calls == []
    assert account_of(clinic).status == "disconnected"


def test_a_number_connected_elsewhere_says_so(admin_api, clinic, other_clinic, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    arrange_active(other_clinic)

    response = admin_api.post(REGISTER_URL, FORM, format="json")

    assert response.status_code == 409
    assert "already connected to another clinic" in response.json()["detail"]
    assert graph.calls == []


def test_a_lapsed_code_request_no_longer_blocks_and_its_clinic_reads_why(
    admin_api, clinic, other_clinic, graph
):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    arrange_pending(other_clinic, claim_expires_at=timezone.now() - timedelta(minutes=1))
    MetaPins(graph)

    response = admin_api.post(REGISTER_URL, FORM, format="json")

    assert response.status_code == 200
    assert account_of(clinic).status == "pending_otp"
    other = account_of(other_clinic)
    assert other.status == "pending_otp"
    assert other.detail_keys == ("claim.lapsed",)
    assert "another clinic in this service has asked for a code" in other.detail


def test_the_right_code_wins_and_the_other_verify_is_refused_honestly(
    admin_api, other_admin_api, clinic, other_clinic, graph
):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    arrange_pending(other_clinic, claim_expires_at=timezone.now() - timedelta(minutes=1))
    MetaPins(graph)
    assert admin_api.post(REGISTER_URL, FORM, format="json").json()["status"] == "pending_otp"

    # The clinic whose code request lapsed enters the right code first: it wins.
    assert other_admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").json() == {"status": "active"}
    verified = len(graph.calls_to("POST", f"{PNID}/verify_code"))

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 409
    assert response.json()["status"] == "failed"
    assert "already connected to another clinic" in response.json()["detail"]
    assert len(graph.calls_to("POST", f"{PNID}/verify_code")) == verified  # nothing reached Meta
    assert account_of(clinic).status == "failed"
    assert account_of(other_clinic).status == "active"


def test_the_database_holds_one_proven_claim_per_number(clinic, other_clinic):
    arrange_pending(clinic, claim_expires_at=timezone.now() + timedelta(minutes=5))
    arrange_pending(other_clinic, claim_expires_at=timezone.now() + timedelta(minutes=5))  # both wait

    arrange_active(clinic, claim_expires_at=None)
    other = account_of(other_clinic)
    other.claim_expires_at = None
    with pytest.raises(IntegrityError), transaction.atomic():
        other.save()
    assert WhatsAppAccount.objects.filter(number=PHONE, claim_expires_at__isnull=True).count() == 1


# --- code requests limited ---------------------------------------------------------------------


def test_five_code_requests_an_hour_per_number(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    MetaPins(graph)

    with time_machine.travel(NOW, tick=False) as clock:
        for _ in range(5):
            assert admin_api.post(REGISTER_URL, FORM, format="json").status_code == 200
            clock.shift(timedelta(minutes=5))

        response = admin_api.post(REGISTER_URL, FORM, format="json", HTTP_ACCEPT_LANGUAGE="en")

        assert response.status_code == 429
        # The first request (at NOW) leaves the hour at NOW + 60 min; it is NOW + 25 min.
        assert response["Retry-After"] == str(35 * 60 + 1)
        assert response.json()["status"] == "pending_otp"
        assert "At most 5 codes an hour" in response.json()["detail"]
        assert len(graph.calls_to("POST", f"{PNID}/request_code")) == 5

        # Another number of the clinic is not held back by this one's limit.
        assert admin_api.post(REGISTER_URL, OTHER_FORM, format="json").status_code == 200
        clock.shift(timedelta(minutes=36))
        assert admin_api.post(REGISTER_URL, FORM, format="json").status_code == 200


def test_twenty_code_requests_a_day_per_clinic(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    MetaPins(graph)
    with time_machine.travel(NOW, tick=False):
        for i in range(20):
            CodeRequest.objects.create(
                clinic=clinic, number=f"+5037000{i:04d}", created_at=NOW - timedelta(hours=23, minutes=i)
            )

        response = admin_api.post(REGISTER_URL, FORM, format="json", HTTP_ACCEPT_LANGUAGE="es")

    assert response.status_code == 429
    # The oldest of the 20 leaves the day 41 minutes from now.
    assert response["Retry-After"] == str(41 * 60 + 1)
    assert response.json()["detail"] == (
        "Esta clínica ya pidió 20 códigos en las últimas 24 horas, el máximo permitido: cada uno es un "
        "SMS o una llamada a una persona. Vuelva a intentarlo después de las 2026-10-05 15:41 UTC."
    )
    assert graph.calls == []
    assert CodeRequest.objects.count() == 20


def test_a_refused_pin_change_after_a_lost_one_still_keeps_the_lost_one(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.fault("POST", PNID, "reset")
    lost = admin_api.put(PIN_URL, {"pin": "135790"}, format="json")
    assert lost.status_code == 502
    assert "Both the old and the new PIN are kept" in lost.json()["detail"]
    assert account_of(clinic).status == "active"
    graph.error("POST", PNID, 100)

    refused = admin_api.put(PIN_URL, {"pin": "246802"}, format="json")

    assert refused.status_code == 400
    # Meta may still have the PIN whose answer was lost: both stay until Meta accepts one.
    assert kept_pins(clinic) == {PNID: ("482915", "135790")}
