"""The fake Graph server's side of the health checks: debug_token, subscribed apps, quality and
messaging limit fields, and a fault for each, driven over real HTTP by the real MetaClient."""

from __future__ import annotations

import time

import pytest

from devtools.tests.conftest import TOKEN, WABA, control
from whatsapp.meta import MetaRefusedError, MetaTimeoutError, MetaUnavailableError


@pytest.fixture
def number(fake, session):
    return control(
        fake,
        session,
        "POST",
        "numbers",
        {"waba_id": WABA, "cc": "503", "phone_number": "77654321", "status": "CONNECTED"},
    )


def test_debug_token_describes_a_never_expiring_system_user_token_by_default(client):
    info = client.debug_token()

    assert info.is_valid is True
    assert info.type == "SYSTEM_USER"
    assert info.expires_at is None
    assert "whatsapp_business_management" in info.scopes
    assert "whatsapp_business_messaging" in info.scopes
    assert info.target_ids["whatsapp_business_messaging"] is None  # every asset


def test_debug_token_says_what_the_control_api_configured(fake, session, client):
    control(
        fake,
        session,
        "POST",
        "tokens",
        {
            "token": TOKEN,
            "type": "USER",
            "expires_in_seconds": 3600,
            "issued_seconds_ago": 60,
            "scopes": ["whatsapp_business_management"],
            "waba_ids": [WABA],
        },
    )

    info = client.debug_token()

    assert info.type == "USER"
    assert info.expires_at is not None and 3500 < info.expires_at - time.time() <= 3600
    assert info.issued_at is not None and 50 < time.time() - info.issued_at <= 70
    assert info.scopes == ("whatsapp_business_management",)
    assert info.target_ids == {"whatsapp_business_management": (WABA,)}
    # The token is in debug_token's query, but the fake's log keeps only a fingerprint.
    logged = control(fake, session, "GET", "requests?path=debug_token")
    assert TOKEN not in str(logged)
    assert logged[0]["params"]["input_token"].startswith("sha256:")


def test_a_token_stops_working_when_it_expires(fake, session, client):
    control(fake, session, "POST", "tokens", {"token": TOKEN, "expires_in_seconds": 60})
    assert client.debug_token().is_valid
    control(fake, session, "POST", "settings", {"advance_seconds": 61})

    with pytest.raises(MetaRefusedError) as refused:
        client.debug_token()
    assert refused.value.code == 190


def test_subscribed_apps_are_read_back(client, number):
    assert client.get_subscribed_apps(WABA) == []
    client.subscribe_app(WABA)

    (app,) = client.get_subscribed_apps(WABA)
    assert app.id == client.debug_token().app_id


def test_quality_and_messaging_limit_are_read(fake, session, client, number):
    control(
        fake,
        session,
        "POST",
        f"numbers/{number['id']}",
        {"quality_rating": "YELLOW", "messaging_limit_tier": "TIER_10K"},
    )

    info = client.get_phone_number_health(number["id"])

    assert (info.status, info.quality_rating, info.messaging_limit_tier) == (
        "CONNECTED",
        "YELLOW",
        "TIER_10K",
    )
    assert info.name_status == "APPROVED"


def test_a_version_without_the_messaging_limit_is_asked_again_without_it(fake, session, client, number):
    control(fake, session, "POST", "settings", {"removed_fields": ["messaging_limit_tier"]})

    info = client.get_phone_number_health(number["id"])

    assert info.status == "CONNECTED" and info.messaging_limit_tier is None
    assert len(control(fake, session, "GET", f"requests?path={number['id']}$")) == 2


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("debug_token", lambda c, n: c.debug_token()),
        ("subscribed_apps", lambda c, n: c.get_subscribed_apps(WABA)),
        ("NUMBER$", lambda c, n: c.get_phone_number_health(n)),
    ],
    ids=["debug_token", "subscribed_apps", "number_fields"],
)
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "status", "status": 503}, MetaUnavailableError),
        ({"kind": "html"}, MetaUnavailableError),
        ({"kind": "invalid_json"}, MetaUnavailableError),
        ({"kind": "reset"}, MetaUnavailableError),
        ({"kind": "delay", "seconds": 3.0}, MetaTimeoutError),
        ({"kind": "status", "status": 400, "code": 100}, MetaRefusedError),
    ],
    ids=["503", "html", "invalid_json", "reset", "delay", "refused"],
)
def test_each_health_call_maps_each_fault(fake, session, fault_client, number, path, call, fault, error):
    control(fake, session, "POST", "faults", {**fault, "path": path.replace("NUMBER", number["id"])})

    with pytest.raises(error):
        call(fault_client, number["id"])
