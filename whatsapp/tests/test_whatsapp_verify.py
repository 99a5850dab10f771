"""POST /api/clinics/whatsapp/verify/ (endpoint 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.models import MetaAttempt, WrongCodeAttempt
from whatsapp.tests.helpers import (
    OTHER_PNID,
    PHONE,
    PNID,
    REGISTER_URL,
    STATUS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_pending,
    form_of,
    json_of,
    snapshot,
)

pytestmark = pytest.mark.django_db


NOW = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)


def sentence(code: int) -> str:
    with translation.override("en"):
        return str(META_ERROR_SENTENCES[code])


def right_code(graph, *, meta_status: str = "CONNECTED") -> None:
    graph.verify_code()
    graph.register()
    graph.number(meta_status)
    graph.subscribe()


# --- who may call ---------------------------------------------------------------------------------


def test_it_requires_authentication(anon_client, clinic, graph):
    arrange_pending(clinic)
    assert anon_client.post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 401
    assert graph.calls == []


def test_it_requires_admin(api_client, clinic_staff, graph):
    arrange_pending(clinic_staff.clinic)
    before = snapshot(clinic_staff.clinic)
    assert api_client(clinic_staff).post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 403
    assert snapshot(clinic_staff.clinic) == before
    assert graph.calls == []


def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, graph):
    arrange_pending(inactive_clinic_admin.clinic)
    response = api_client(inactive_clinic_admin).post(VERIFY_URL, {"code": "123456"}, format="json")
    assert response.status_code == 403
    assert graph.calls == []


def test_it_does_not_touch_another_clinic(api_client, other_clinic_admin, clinic, graph):
    arrange_pending(clinic)
    before = snapshot(clinic)
    response = api_client(other_clinic_admin).post(VERIFY_URL, {"code": "123456"}, format="json")
    assert response.status_code == 409  # the other clinic has nothing pending
    assert snapshot(clinic) == before
    assert graph.calls == []


# --- status and input rules -----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["disconnected", "verifying", "active", "failed"])
def test_it_is_accepted_only_while_a_code_is_pending(admin_api, clinic, graph, status):
    arrange(clinic, status=status, phone_number_id=PNID, access_token=TOKEN, number=PHONE)
    before = snapshot(clinic)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 409
    assert response.json()["status"] == status
    assert response.json()["detail"]
    assert snapshot(clinic) == before
    assert graph.calls == []


@pytest.mark.parametrize(
    ("given", "sent"), [("123456", "123456"), ("123-456", "123456"), ("123 456", "123456"), ("1234", "1234")]
)
def test_it_normalises_the_code(admin_api, clinic, graph, given, sent):
    arrange_pending(clinic)
    right_code(graph)

    response = admin_api.post(VERIFY_URL, {"code": given}, format="json")

    assert response.status_code == 200
    assert form_of(graph.calls_to("POST", f"{PNID}/verify_code")[0]) == {"code": sent}


@pytest.mark.parametrize(
    "code", ["12ab", "123", "123456789", "", "\uff11\uff12\uff13\uff14\uff15\uff16", 123456]
)
def test_it_rejects_a_malformed_code(admin_api, clinic, graph, code):
    arrange_pending(clinic)
    before = snapshot(clinic)

    response = admin_api.post(VERIFY_URL, {"code": code}, format="json")

    assert response.status_code == 400
    assert "code" in response.json()
    assert snapshot(clinic) == before
    assert graph.calls == []
    assert WrongCodeAttempt.objects.count() == 0


# --- a right code ---------------------------------------------------------------------------------


def test_it_verifies_registers_and_activates(admin_api, clinic, graph):
    arrange_pending(clinic, subscribed_at=None)
    right_code(graph)

    response = admin_api.post(VERIFY_URL, {"code": "123-830"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "active"}
    account = account_of(clinic)
    assert account.status == "active"
    assert account.connected_at is not None
    assert account.subscribed_at is not None
    assert account.number == PHONE
    order = [(call.request.method, call.request.url.split("?")[0].rsplit("/", 2)[-1]) for call in graph.calls]
    assert order == [
        ("POST", "verify_code"),
        ("POST", "register"),
        ("GET", PNID),
        ("POST", "subscribed_apps"),
    ]
    registered = graph.calls_to("POST", f"{PNID}/register")[0]
    assert registered.request.headers["Content-Type"] == "application/json"
    assert json_of(registered) == {"messaging_product": "whatsapp", "pin": account.registration_pin}
    assert MetaAttempt.objects.filter(phone_number_id=PNID, kind="register").count() == 1


def test_it_registers_with_the_pin_generated_at_register(admin_api, clinic, graph):
    """The PIN endpoint 6 stored is the one sent to Meta, and a second registration reuses it."""
    arrange(clinic, access_token=TOKEN)
    graph.numbers((PNID, "+503 7765-4321"))
    graph.request_code()
    right_code(graph)
    form = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA}

    assert admin_api.post(REGISTER_URL, form, format="json").status_code == 200
    stored_pin = account_of(clinic).registration_pin
    assert admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").json() == {"status": "active"}

    graph.deregister()
    assert admin_api.delete("/api/clinics/whatsapp/").status_code == 200
    assert admin_api.post(REGISTER_URL, form, format="json").status_code == 200
    assert admin_api.post(VERIFY_URL, {"code": "654321"}, format="json").json() == {"status": "active"}

    pins = [json_of(call)["pin"] for call in graph.calls_to("POST", f"{PNID}/register")]
    assert pins == [stored_pin, stored_pin]
    assert account_of(clinic).registration_pin == stored_pin


def test_it_waits_for_meta_when_the_number_is_still_pending(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.verify_code()
    graph.register()
    graph.number("PENDING")

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "verifying"}
    assert account_of(clinic).status == "verifying"
    assert graph.calls_to("POST", f"{WABA}/subscribed_apps") == []

    # Later Meta reports the number connected: the status poll activates it.
    graph.mock.replace(
        "GET",
        graph.calls_to("GET", PNID)[0].request.url.split("?")[0],
        json={"status": "CONNECTED", "id": PNID, "display_phone_number": "+503 7765-4321"},
    )
    graph.subscribe()
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=30), tick=False):
        status = admin_api.get(STATUS_URL).json()

    assert status == {"status": "active", "number": PHONE, "detail": None}
    account = account_of(clinic)
    assert account.status == "active"
    assert account.connected_at is not None
    assert len(graph.calls_to("POST", f"{WABA}/subscribed_apps")) == 1


def test_it_waits_when_the_number_cannot_be_read_after_registering(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.verify_code()
    graph.register()
    graph.fault("GET", PNID, "http503")

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"status": "verifying"}
    assert len(graph.calls_to("POST", f"{PNID}/register")) == 1


def test_it_forgets_earlier_wrong_codes_after_a_right_one(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.error("POST", f"{PNID}/verify_code", 136025)
    for _ in range(3):
        admin_api.post(VERIFY_URL, {"code": "111111"}, format="json")
    assert WrongCodeAttempt.objects.filter(clinic=clinic).count() == 3

    graph.mock.replace("POST", graph.calls[0].request.url, json={"success": True})
    graph.register()
    graph.number("CONNECTED")
    graph.subscribe()
    assert admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 200

    assert WrongCodeAttempt.objects.filter(clinic=clinic).count() == 0


# --- wrong codes ----------------------------------------------------------------------------------


def test_it_keeps_pending_on_a_wrong_code(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.error("POST", f"{PNID}/verify_code", 136025)

    response = admin_api.post(VERIFY_URL, {"code": "000000"}, format="json")

    assert response.status_code == 400
    data = response.json()
    assert data["status"] == "pending_otp"
    assert data["meta_code"] == 136025
    assert data["detail"].startswith(sentence(136025))
    assert "4 attempts left" in data["detail"]
    account = account_of(clinic)
    assert (account.status, account.meta_code) == ("pending_otp", 136025)
    assert WrongCodeAttempt.objects.filter(clinic=clinic).count() == 1
    assert graph.calls_to("POST", f"{PNID}/register") == []
    assert MetaAttempt.objects.count() == 0


def test_it_stops_sending_codes_after_five_wrong_ones(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.error("POST", f"{PNID}/verify_code", 136025)

    with time_machine.travel(NOW, tick=False) as clock:
        for minute in range(5):
            response = admin_api.post(VERIFY_URL, {"code": f"00000{minute}"}, format="json")
            assert response.status_code == 400
            clock.shift(timedelta(minutes=1))
        # 15:05 now; the first wrong code (15:00) leaves the window at 15:15.

        sixth = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

        assert sixth.status_code == 429
        assert sixth.json()["status"] == "pending_otp"
        assert "Too many wrong codes" in sixth.json()["detail"]
        assert int(sixth["Retry-After"]) == 10 * 60 + 1
        assert len(graph.calls) == 5  # Meta never saw the sixth
        assert WrongCodeAttempt.objects.filter(clinic=clinic).count() == 5
        assert account_of(clinic).status == "pending_otp"

        clock.shift(timedelta(minutes=9, seconds=59))
        assert admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 429
        assert len(graph.calls) == 5

        clock.shift(timedelta(seconds=2))  # 15:15:01: the first wrong code is out of the window
        reopened = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert reopened.status_code == 400
    assert reopened.json()["meta_code"] == 136025
    assert len(graph.calls) == 6


def test_it_counts_wrong_codes_per_clinic(
    admin_api, api_client, other_clinic_admin, clinic, other_clinic, graph
):
    arrange_pending(clinic)
    graph.error("POST", f"{PNID}/verify_code", 136025)
    for _ in range(5):
        admin_api.post(VERIFY_URL, {"code": "000000"}, format="json")
    # One owner per number: the other clinic registers its own number.
    arrange_pending(
        other_clinic, phone_number_id=OTHER_PNID, number="+50370001234", pin_phone_number_id=OTHER_PNID
    )
    graph.error("POST", f"{OTHER_PNID}/verify_code", 136025)

    response = api_client(other_clinic_admin).post(VERIFY_URL, {"code": "000000"}, format="json")

    assert response.status_code == 400  # the other clinic still has its own five


# --- register fails after a right code ------------------------------------------------------------


def test_it_fails_with_the_pin_sentence_when_meta_refuses_the_pin(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.verify_code()
    graph.error("POST", f"{PNID}/register", 133005)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"status": "failed", "detail": sentence(133005), "meta_code": 133005}
    account = account_of(clinic)
    assert (account.status, account.meta_code) == ("failed", 133005)
    assert account.registration_pin == "482915"  # never replaced: Meta keeps the first PIN
    assert MetaAttempt.objects.filter(kind="register").count() == 1


def test_it_moves_to_verifying_when_register_times_out(admin_api, clinic, graph):
    """The code was right and Meta may have registered the number: polling finds out."""
    arrange_pending(clinic)
    graph.verify_code()
    graph.fault("POST", f"{PNID}/register", "timeout")

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 504
    assert response.json()["status"] == "verifying"
    assert response.json()["detail"]
    assert account_of(clinic).status == "verifying"
    assert len(graph.calls_to("POST", f"{PNID}/register")) == 1  # a POST is never retried
    assert MetaAttempt.objects.filter(kind="register").count() == 1


@pytest.mark.parametrize(("fault", "http"), [("timeout", 504), ("reset", 502), ("http500", 502)])
def test_it_stays_pending_when_verify_code_cannot_reach_meta(admin_api, clinic, graph, fault, http):
    arrange_pending(clinic)
    graph.fault("POST", f"{PNID}/verify_code", fault)
    before = snapshot(clinic)

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == http
    assert response.json()["status"] == "pending_otp"
    assert snapshot(clinic) == before
    assert WrongCodeAttempt.objects.count() == 0
