"""GET /api/clinics/whatsapp/status/ (endpoint 8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.utils import translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.tests.helpers import (
    PHONE,
    PNID,
    STATUS_URL,
    TOKEN,
    WABA,
    account_of,
    arrange,
    arrange_active,
    snapshot,
)

pytestmark = pytest.mark.django_db


NOW = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)


def arrange_verifying(clinic, **fields):
    defaults = {
        "status": "verifying",
        "phone_number_id": PNID,
        "business_account_id": WABA,
        "access_token": TOKEN,
        "number": PHONE,
        "detail": "Registered. Waiting for Meta to confirm the number.",
    }
    defaults.update(fields)
    return arrange(clinic, **defaults)


# --- who may call ---------------------------------------------------------------------------------


def test_it_requires_authentication(anon_client, clinic, graph):
    assert anon_client.get(STATUS_URL).status_code == 401


def test_it_requires_admin(api_client, clinic_staff, graph):
    arrange_verifying(clinic_staff.clinic)
    assert api_client(clinic_staff).get(STATUS_URL).status_code == 403
    assert graph.calls == []


def test_it_refuses_an_inactive_clinic(api_client, inactive_clinic_admin, graph):
    assert api_client(inactive_clinic_admin).get(STATUS_URL).status_code == 403


def test_it_shows_only_the_callers_clinic(api_client, other_clinic_admin, clinic, graph):
    arrange_active(clinic)
    response = api_client(other_clinic_admin).get(STATUS_URL)
    assert response.json() == {"status": "disconnected", "number": None, "detail": None}


# --- shape and refresh ----------------------------------------------------------------------------


def test_it_answers_a_disconnected_clinic_without_asking_meta(admin_api, clinic, graph):
    response = admin_api.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "disconnected", "number": None, "detail": None}
    assert response["Cache-Control"] == "no-store"
    assert graph.calls == []


@pytest.mark.parametrize("status", ["disconnected", "pending_otp", "failed"])
def test_it_never_asks_meta_about_settled_states(admin_api, clinic, graph, status):
    arrange_verifying(clinic, status=status, detail="As it was.")

    response = admin_api.get(STATUS_URL)

    assert response.json() == {"status": status, "number": PHONE, "detail": "As it was."}
    assert graph.calls == []


def test_it_activates_a_verifying_number_meta_reports_connected(admin_api, clinic, graph):
    arrange_verifying(clinic)
    graph.number("CONNECTED")
    graph.subscribe()

    response = admin_api.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "active", "number": PHONE, "detail": None}
    account = account_of(clinic)
    assert account.status == "active"
    assert account.connected_at is not None
    assert account.subscribed_at is not None
    assert account.status_checked_at is not None


def test_it_rechecks_a_stale_active_number(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False) as clock:
        arrange_active(clinic)
        graph.number("CONNECTED")

        admin_api.get(STATUS_URL)
        assert graph.calls == []  # fresh

        clock.shift(timedelta(minutes=6))
        cache.clear()
        admin_api.get(STATUS_URL)
    assert len(graph.calls_to("GET", PNID)) == 1


@pytest.mark.parametrize(
    ("meta_status", "ours", "detail_has"),
    [
        ("CONNECTED", "active", None),
        ("PENDING", "verifying", "still setting up"),
        ("BANNED", "failed", "banned"),
        ("RESTRICTED", "failed", "restricted"),
        ("FLAGGED", "failed", "flagged"),
        ("DISCONNECTED", "disconnected", "DISCONNECTED"),
        ("DELETED", "disconnected", "DELETED"),
        ("MIGRATED", "disconnected", "MIGRATED"),
        ("UNVERIFIED", "failed", "not verified"),
        ("RATE_LIMITED", "active", "limiting"),
        ("SOMETHING_NEW", "verifying", "SOMETHING_NEW"),
        (None, "verifying", "unexpected status"),
    ],
)
def test_it_maps_every_meta_status(admin_api, clinic, graph, meta_status, ours, detail_has):
    arrange_verifying(clinic)
    graph.number(meta_status)
    graph.subscribe()

    data = admin_api.get(STATUS_URL).json()

    assert data["status"] == ours
    assert account_of(clinic).status == ours
    if detail_has is None:
        assert data["detail"] is None
    else:
        assert detail_has in data["detail"]
        assert account_of(clinic).detail == data["detail"]


def test_it_asks_meta_once_however_often_it_is_polled(admin_api, clinic, graph):
    arrange_verifying(clinic)
    graph.number("PENDING")

    with time_machine.travel(NOW, tick=False) as clock:
        for _ in range(10):
            assert admin_api.get(STATUS_URL).json()["status"] == "verifying"
        assert len(graph.calls) == 1

        clock.shift(timedelta(seconds=settings.WHATSAPP_STATUS_REFRESH_SECONDS - 1))
        admin_api.get(STATUS_URL)
        assert len(graph.calls) == 1

        clock.shift(timedelta(seconds=2))
        for _ in range(5):
            admin_api.get(STATUS_URL)
    assert len(graph.calls) == 2


def test_it_asks_again_once_the_gate_is_gone(admin_api, clinic, graph):
    arrange_verifying(clinic)
    graph.number("PENDING")
    admin_api.get(STATUS_URL)
    cache.delete(f"whatsapp:refresh:{account_of(clinic).pk}")

    admin_api.get(STATUS_URL)

    assert len(graph.calls) == 2


@pytest.mark.parametrize("fault", ["reset", "http503", "timeout", "bad_json", "html"])
def test_it_shows_the_last_known_status_when_meta_is_unreachable(admin_api, clinic, graph, fault):
    arrange_verifying(clinic)
    graph.fault("GET", PNID, fault)
    before = snapshot(clinic)

    response = admin_api.get(STATUS_URL)

    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "verifying"
    assert data["number"] == PHONE
    assert "could not be reached" in data["detail"]
    assert "last known status" in data["detail"]
    assert snapshot(clinic) == before
    assert len(graph.calls) == 3  # one GET, retried twice


def test_it_marks_failed_when_meta_refuses_the_token(admin_api, clinic, graph):
    arrange_verifying(clinic)
    graph.error("GET", PNID, 190)

    data = admin_api.get(STATUS_URL).json()

    with translation.override("en"):
        expected = str(META_ERROR_SENTENCES[190])
    assert data == {"status": "failed", "number": PHONE, "detail": expected}
    assert account_of(clinic).meta_code == 190


def test_it_answers_without_a_trailing_slash(admin_api, clinic, graph):
    assert admin_api.get(STATUS_URL.rstrip("/")).status_code == 200
