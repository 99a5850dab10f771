"""Rules that used to live in two or three places, each now in one: tested through every door that uses it.

- which actions a status allows (WhatsAppAccount.may_*), read by the page and checked by the services;
- a new WABA forgets the old webhook subscription (whatsapp.services.credentials.assign_credentials), on
  credentials and on register alike, even when the register then fails at Meta;
- "not sent" (NOT_SENT) keeps a secret, None clears it, a masked value keeps it;
- an access token is required when none is stored (whatsapp.services.credentials.require_access_token);
- account_update events are described in the reader's language (whatsapp.services.events).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone, translation

from common.notsent import NOT_SENT
from whatsapp.exceptions import StatusConflictError, WhatsAppError
from whatsapp.models import WhatsAppAccount, WhatsAppStatus
from whatsapp.services import (
    AccountEvent,
    whatsapp_apply_account_event,
    whatsapp_deregister,
    whatsapp_register_number,
    whatsapp_resend_code,
    whatsapp_set_pin,
    whatsapp_store_credentials,
    whatsapp_verify_code,
)
from whatsapp.tests.helpers import (
    OTHER_WABA,
    PHONE,
    PNID,
    REGISTER_URL,
    TOKEN,
    WABA,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
)

pytestmark = pytest.mark.django_db


# --- which actions each status allows ------------------------------------------------------

# status -> (may_register, may_verify, may_deregister with a number, without one)
ACTIONS = {
    WhatsAppStatus.DISCONNECTED: (True, False, True, False),
    WhatsAppStatus.PENDING_OTP: (True, True, True, True),
    WhatsAppStatus.VERIFYING: (True, False, True, True),
    WhatsAppStatus.ACTIVE: (False, False, True, True),
    WhatsAppStatus.FAILED: (True, False, True, True),
}


def test_every_status_has_its_row():
    # A status added without deciding what it allows fails here.
    assert set(ACTIONS) == set(WhatsAppStatus)


@pytest.mark.parametrize("status", list(WhatsAppStatus))
def test_each_status_allows_exactly_its_actions(status):
    register, verify, deregister_with_number, deregister_without = ACTIONS[status]
    with_number = WhatsAppAccount(status=status, number="+50377654321", business_account_id=WABA)
    without = WhatsAppAccount(status=status)
    assert with_number.may_register is register
    assert with_number.may_verify is verify
    assert with_number.may_deregister is deregister_with_number
    assert without.may_deregister is deregister_without
    assert with_number.may_resend_code is register
    assert without.may_resend_code is False


def test_the_register_service_enforces_may_register(admin_api, clinic, graph):
    arrange_active(clinic)
    response = admin_api.post(
        REGISTER_URL,
        {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA},
        format="json",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 409
    assert "already has an active number" in response.json()["detail"]
    assert graph.calls == []


def test_the_resend_service_refuses_without_a_number_and_while_active(clinic, graph):
    with pytest.raises(StatusConflictError):
        whatsapp_resend_code(account=account_of(clinic), otp_method="sms", verified_name="x")
    arrange_active(clinic)
    with translation.override("en"), pytest.raises(StatusConflictError) as refused:
        whatsapp_resend_code(account=account_of(clinic), otp_method="sms", verified_name="x")
    assert "already has an active number" in refused.value.detail
    assert graph.calls == []


def test_the_page_shows_only_the_allowed_actions(clinic_admin, clinic):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(clinic_admin)
    arrange_pending(clinic)
    html = client.get("/settings/").content.decode()
    assert 'id="verify"' in html
    assert 'id="register"' not in html
    arrange(clinic, status=WhatsAppStatus.FAILED)
    html = client.get("/settings/").content.decode()
    assert 'id="verify"' not in html
    assert 'id="register"' in html


def _refused(call) -> bool:
    """Whether the service refused the action for the state (409), not Meta (unreachable here)."""
    try:
        call()
    except StatusConflictError:
        return True
    except WhatsAppError:
        return False
    return False


@pytest.mark.parametrize("status", list(WhatsAppStatus))
def test_the_services_accept_exactly_the_actions_the_page_offers(clinic_admin, clinic, graph, status):
    account = arrange(
        clinic,
        status=status,
        phone_number_id=PNID,
        business_account_id=WABA,
        access_token=TOKEN,
        number=PHONE,
    )
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)
    html = page.get("/settings/").content.decode()
    offered = {
        "verify": ('id="verify"' in html, account.may_verify),
        "pin": ('id="pin"' in html, account.may_set_pin),
        "deregister": ('id="deregister"' in html, account.may_deregister),
    }
    assert all(shown is allowed for shown, allowed in offered.values()), offered

    calls = {
        "register": (
            account.may_register,
            lambda: whatsapp_register_number(
                account=account_of(clinic),
                number=PHONE,
                otp_method="sms",
                business_account_id=WABA,
                verified_name="x",
            ),
        ),
        "verify": (
            account.may_verify,
            lambda: whatsapp_verify_code(account=account_of(clinic), code="123456"),
        ),
        "pin": (account.may_set_pin, lambda: whatsapp_set_pin(account=account_of(clinic), pin="246810")),
    }
    for name, (allowed, call) in calls.items():
        assert _refused(call) is not allowed, name


@pytest.mark.parametrize("status", list(WhatsAppStatus))
@pytest.mark.parametrize("number", ["", PHONE])
def test_the_deregister_service_acts_exactly_when_the_page_offers_it(clinic, graph, status, number):
    account = arrange(clinic, status=status, number=number, access_token=TOKEN, detail="As it was.")
    offered = account.may_deregister

    whatsapp_deregister(account=account)

    stored = account_of(clinic)
    if offered:
        assert (stored.status, stored.number, stored.detail) == ("disconnected", "", "")
    else:
        # Nothing on the Cloud API and no number to forget: nothing to do, nothing changed.
        assert (stored.status, stored.number, stored.detail) == (status, number, "As it was.")
    assert graph.calls == []  # no phone number id: nothing to take off at Meta


# --- a new WABA forgets the old subscription, on every path --------------------------------


def test_new_credentials_with_another_waba_forget_the_subscription(clinic):
    arrange_active(clinic)
    account, meta_facing = whatsapp_store_credentials(
        account=account_of(clinic), business_account_id=OTHER_WABA
    )
    assert meta_facing is True
    assert account.subscribed_at is None
    assert account_of(clinic).subscribed_at is None


def test_a_register_on_another_waba_keeps_the_old_subscription_until_it_succeeds(admin_api, clinic, graph):
    # It used to store the new WABA, fail at Meta, and keep the old WABA's subscribed_at.
    subscribed = timezone.now() - timedelta(days=3)
    arrange(
        clinic,
        status=WhatsAppStatus.FAILED,
        business_account_id=WABA,
        access_token=TOKEN,
        subscribed_at=subscribed,
    )
    graph.fault("GET", f"{OTHER_WABA}/phone_numbers", "reset")
    form = {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": OTHER_WABA}

    assert admin_api.post(REGISTER_URL, form, format="json").status_code == 502
    account = account_of(clinic)
    assert (account.business_account_id, account.subscribed_at) == (WABA, subscribed)

    graph.numbers((PNID, "+503 7765-4321"), waba=OTHER_WABA)
    graph.request_code(PNID)
    assert admin_api.post(REGISTER_URL, form, format="json").status_code == 200
    account = account_of(clinic)
    assert (account.business_account_id, account.subscribed_at) == (OTHER_WABA, None)


# --- "not sent", None and the masked value --------------------------------------------------


def test_not_sent_keeps_none_clears_masked_keeps(clinic):
    arrange(clinic, access_token=TOKEN, app_secret="s3cret-app-secret")
    account, _changed = whatsapp_store_credentials(account=account_of(clinic), access_token=NOT_SENT)
    assert account.access_token == TOKEN
    account, _changed = whatsapp_store_credentials(account=account, access_token=TOKEN[:8] + "...****")
    assert account.access_token == TOKEN
    account, changed = whatsapp_store_credentials(account=account, app_secret=None)
    assert account_of(clinic).app_secret is None
    assert changed is False  # the app secret is not something Meta checks
    account, changed = whatsapp_store_credentials(account=account, access_token=None)
    assert account_of(clinic).access_token is None
    assert changed is True


def test_the_settings_endpoint_and_endpoint_5_share_the_masked_rule(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN, phone_number_id=PNID, business_account_id=WABA)
    masked = admin_api.get("/api/clinics/settings/").json()["whatsapp_access_token"]
    assert (
        admin_api.patch(
            "/api/clinics/settings/", {"whatsapp_access_token": masked}, format="json"
        ).status_code
        == 200
    )
    assert account_of(clinic).access_token == TOKEN
    graph.number("CONNECTED")
    graph.subscribe()
    response = admin_api.put(
        "/api/clinics/whatsapp/",
        {"phoneNumberId": PNID, "businessAccountId": WABA, "accessToken": masked},
        format="json",
    )
    assert response.status_code == 200
    assert account_of(clinic).access_token == TOKEN


def test_the_token_rule_speaks_the_apis_key_on_endpoint_5(admin_api, clinic, graph):
    response = admin_api.put(
        "/api/clinics/whatsapp/",
        {"phoneNumberId": PNID, "businessAccountId": WABA},
        format="json",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 400
    assert response.json() == {"accessToken": ["Send the access token: none is stored for this clinic yet."]}
    assert account_of(clinic).phone_number_id == ""
    assert graph.calls == []


# --- account events in the reader's language ------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [("es", "Meta restringió esta cuenta: RESTRICTED_ADD_PHONE_NUMBER_ACTION"), ("en", "Meta restricted")],
)
def test_account_events_are_described_in_the_active_language(clinic, language, expected):
    arrange_active(clinic, detail="")
    event = AccountEvent(
        field="account_update",
        value={
            "event": "ACCOUNT_RESTRICTION",
            "restriction_info": [{"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION"}],
        },
    )
    # Applied by a webhook (no reader's language), read in the reader's.
    outcome = whatsapp_apply_account_event(account=account_of(clinic), event=event)
    assert outcome == "account_restriction -> active"
    with translation.override(language):
        assert expected in account_of(clinic).detail
    assert account_of(clinic).status == WhatsAppStatus.ACTIVE
