"""The action lease: two actions on one clinic never run at once, and none holds a
transaction while Meta is asked; what Meta did is recorded the moment it answers."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.models import WebhookDelivery, WhatsAppAccount
from whatsapp.services import whatsapp_store_credentials
from whatsapp.services.state import lease_length
from whatsapp.tests.helpers import (
    CONFIGURE_URL,
    PHONE,
    PNID,
    REGISTER_URL,
    STATUS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_deleted,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
    meta_bytes,
    phone_number,
    phone_numbers_list,
    snapshot,
)

pytestmark = pytest.mark.django_db

BUSY = "Another change to this connection is in progress; try again in a moment."
PIN_URL = "/api/clinics/whatsapp/pin/"


def hold_lease(clinic, *, seconds: float = 30) -> None:
    """Another request's action, running now (its lease taken `seconds` ago would end later)."""
    WhatsAppAccount.objects.filter(clinic=clinic).update(
        action_lease_until=timezone.now() + timedelta(seconds=seconds), action_lease_owner="another-request"
    )


def lease_of(clinic) -> tuple[Any, str]:
    account = account_of(clinic)
    return account.action_lease_until, account.action_lease_owner


ACTIONS = {
    "register": (
        lambda api: api.post(
            REGISTER_URL, {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA}, format="json"
        ),
        lambda clinic: arrange(clinic, access_token=TOKEN, business_account_id=WABA),
        "disconnected",
    ),
    "verify": (
        lambda api: api.post(VERIFY_URL, {"code": "123456"}, format="json"),
        arrange_pending,
        "pending_otp",
    ),
    "configure": (
        lambda api: api.put(
            CONFIGURE_URL,
            {"phoneNumberId": PNID, "businessAccountId": WABA, "accessToken": TOKEN},
            format="json",
        ),
        lambda clinic: None,
        "disconnected",
    ),
    "pin": (lambda api: api.put(PIN_URL, {"pin": "246810"}, format="json"), arrange_active, "active"),
    "deregister": (lambda api: api.delete(CONFIGURE_URL), arrange_active, "active"),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_action_while_another_runs_gets_409_and_changes_nothing(
    api_client, clinic_admin, clinic, graph, action
):
    call, arrange_state, status = ACTIONS[action]
    arrange_state(clinic)
    hold_lease(clinic)
    before = snapshot(clinic)
    api = api_client(clinic_admin)
    api.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"

    response = call(api)

    assert response.status_code == 409
    assert response.json()["status"] == status
    assert response.json()["detail"] == BUSY
    assert graph.calls == []
    assert snapshot(clinic) == before


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", BUSY), ("es", "Otro cambio de esta conexión está en curso; inténtelo de nuevo en un momento.")],
)
def test_the_page_says_another_change_is_in_progress(clinic_admin, clinic, graph, language, expected):
    arrange_pending(clinic)
    hold_lease(clinic)
    page = Client(HTTP_ACCEPT_LANGUAGE=language)
    page.force_login(clinic_admin)

    response = page.post("/settings/whatsapp/verify/", {"code": "123456"}, follow=True)

    assert response.status_code == 200
    assert expected in response.content.decode()
    assert graph.calls == []
    assert account_of(clinic).status == "pending_otp"


def test_an_expired_lease_is_taken_over(admin_api, clinic, graph):
    # A process killed mid-action strands nothing: its lease ends by itself.
    arrange_pending(clinic)
    hold_lease(clinic, seconds=-1)
    graph.verify_code()
    graph.register()
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "active"
    assert lease_of(clinic) == (None, "")


def test_the_lease_is_released_after_a_success_and_after_a_failure(admin_api, clinic, graph):
    arrange_pending(clinic)
    graph.fault("POST", f"{PNID}/verify_code", "http503")

    failed = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert failed.status_code == 502
    assert lease_of(clinic) == (None, "")
    graph.verify_code()
    graph.register()
    graph.number("CONNECTED")
    graph.subscribe()
    assert admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 200
    assert lease_of(clinic) == (None, "")


def test_a_status_poll_during_an_action_answers_the_stored_status(admin_api, clinic, graph):
    arrange_active(clinic, status="verifying", detail="")
    hold_lease(clinic)

    response = admin_api.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "verifying", "number": PHONE, "detail": None}
    assert graph.calls == []


def test_the_lease_outlasts_a_request_and_its_last_meta_call():
    longest = (
        settings.REQUEST_DEADLINE_SECONDS + settings.META_CONNECT_TIMEOUT + 2 * settings.META_READ_TIMEOUT
    )
    assert lease_length() > timedelta(seconds=longest)


def test_the_account_handed_back_brings_no_lease_back_when_saved(clinic):
    account, _changed = whatsapp_store_credentials(account=account_of(clinic), phone_number_id=PNID)

    account.save()

    assert lease_of(clinic) == (None, "")


# --- webhook events respect the lease ------------------------------------------------------------


def test_an_event_during_an_action_is_applied_after_it(clinic, queued_tasks):
    arrange_active(clinic)
    hold_lease(clinic)
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(account_deleted()), signed_with_clinic_secret=True
    )
    assert delivery is not None

    whatsapp_delivery_process(delivery_id=str(delivery.pk))

    # Not applied under a running action (it would overwrite, or be overwritten by, its result)...
    assert account_of(clinic).status == "active"
    assert WebhookDelivery.objects.get(pk=delivery.pk).state == "retrying"
    # ...but once the action is done, the retry applies it.
    WhatsAppAccount.objects.filter(clinic=clinic).update(action_lease_until=None, action_lease_owner="")
    whatsapp_delivery_process(delivery_id=str(delivery.pk))
    assert account_of(clinic).status == "failed"
    assert WebhookDelivery.objects.get(pk=delivery.pk).state == "done"


# --- no transaction while Meta is asked; each answer recorded at once -----------------------------


class Watch:
    """Graph answers that note, at the moment Meta is asked, whether a transaction is open
    and what the database already holds."""

    def __init__(self, clinic) -> None:
        self.clinic = clinic
        self.in_transaction: list[bool] = []
        self.seen: dict[str, WhatsAppAccount] = {}

    def answer(self, name: str, body: dict[str, Any]):
        def callback(_request):
            self.in_transaction.append(connection.in_atomic_block)
            self.seen[name] = account_of(self.clinic)
            return 200, {}, json.dumps(body)

        return callback


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_meta_registers_a_number(clinic, clinic_admin, api_client, graph):
    arrange(clinic, access_token=TOKEN, business_account_id=WABA)
    watch = Watch(clinic)
    graph.callback(
        "GET", f"{WABA}/phone_numbers", watch.answer("list", phone_numbers_list((PNID, "+503 7765-4321")))
    )
    graph.callback("POST", f"{PNID}/request_code", watch.answer("request_code", {"success": True}))
    graph.callback("POST", f"{PNID}/verify_code", watch.answer("verify_code", {"success": True}))
    graph.callback("POST", f"{PNID}/register", watch.answer("register", {"success": True}))
    graph.callback("GET", PNID, watch.answer("status", phone_number("CONNECTED")))
    graph.callback("POST", f"{WABA}/subscribed_apps", watch.answer("subscribe", {"success": True}))
    api = api_client(clinic_admin)

    registered = api.post(
        REGISTER_URL, {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA}, format="json"
    )
    pin = account_of(clinic).registration_pin
    verified = api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert (registered.status_code, verified.status_code) == (200, 200)
    assert verified.json()["status"] == "active"
    assert watch.in_transaction == [False] * 6
    # The code Meta sent was recorded before the next call: the verify found it committed.
    assert (watch.seen["verify_code"].status, watch.seen["verify_code"].number) == ("pending_otp", PHONE)
    # Meta registered the number with our PIN: kept before its status was read.
    before_status_read = watch.seen["status"]
    assert (before_status_read.registration_pin, before_status_read.pin_phone_number_id) == (pin, PNID)
    assert before_status_read.status == "verifying"
    # The lease is held while Meta is asked, and only then.
    assert watch.seen["request_code"].action_lease_owner != ""
    assert lease_of(clinic) == (None, "")
