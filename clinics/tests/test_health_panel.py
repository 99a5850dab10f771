"""The health panel tells the truth (issue 18, item 1): nothing to check before a connection, a check
queued by every change of the connection (never a result about another number), one "check now",
Meta's values in plain words and times in the clinic's time zone. Meta is faked at HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from clinics.models import Clinic
from whatsapp.health import CHECK_KEYS, check_whatsapp_health, whatsapp_health_check
from whatsapp.models import WhatsAppAccount, WhatsAppHealth
from whatsapp.services import (
    AccountEvent,
    whatsapp_apply_account_event,
    whatsapp_configure,
    whatsapp_deregister,
)
from whatsapp.tests.helpers import (
    PNID,
    WABA,
    account_of,
    arrange_active,
    healthy_meta,
    phone_number,
    phone_numbers_list,
)

pytestmark = pytest.mark.django_db

HEALTH_URL = "/api/clinics/whatsapp/health/"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
OTHER_PNID = "1906385232743451"
OTHER_DISPLAY = "+503 7000 1234"


def page_of(user, language: str) -> str:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(user)
    return client.get("/settings/").content.decode()


def stored(clinic: Clinic) -> WhatsAppHealth:
    return WhatsAppHealth.objects.get(pk=account_of(clinic).pk)


@pytest.fixture
def checked(clinic, graph):
    """A connected number, checked once (ready)."""
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=2))
    healthy_meta(graph)
    with time_machine.travel(NOW, tick=False):
        whatsapp_health_check(account=account)
    return account


# --- 1. before any connection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "badge", "sentence"),
    [
        ("es", "Nada que comprobar todavía", "No hay ningún número de WhatsApp conectado"),
        ("en", "Nothing to check yet", "No WhatsApp number is connected"),
    ],
)
def test_before_any_connection_there_is_nothing_to_check(
    clinic_admin, clinic, graph, language, badge, sentence
):
    page = page_of(clinic_admin, language)

    assert f'id="health-verdict">{badge}<' in page
    assert sentence in page
    assert 'data-health-state="none"' in page
    assert 'action="/settings/whatsapp/health/"' not in page  # nothing for "check now" to check
    panel = page.split('id="health"')[1]
    assert "Rota" not in panel and "Broken" not in panel
    assert graph.calls == []


def test_endpoint_13_agrees_before_any_connection(admin_api, clinic, graph):
    # A token and a WABA saved, but no number: still nothing to check.
    WhatsAppAccount.objects.filter(clinic=clinic).update(business_account_id=WABA)

    for response in (admin_api.get(HEALTH_URL), admin_api.post(HEALTH_URL)):
        assert response.status_code == 200
        body = response.json()
        assert body["verdict"] == "unknown"
        assert body["checked_at"] is None
        assert body["checks"] == [{"key": key, "ok": None, "detail": None, "fix": None} for key in CHECK_KEYS]
        assert body["number"] == {
            "status": None,
            "name_status": None,
            "quality_rating": None,
            "messaging_limit": None,
        }
    assert graph.calls == []
    assert stored(clinic).verdict == "unknown"
    assert stored(clinic).checked_at is None


# --- 2. every change queues a check; never a result about another number ---------------------------


def test_a_new_number_queues_a_check_and_the_old_result_is_not_shown(
    clinic_admin, admin_api, clinic, checked, graph, queued_tasks
):
    graph.add("GET", OTHER_PNID, json_body=phone_number("CONNECTED", pnid=OTHER_PNID, display=OTHER_DISPLAY))
    queued_tasks.clear()

    whatsapp_configure(account=account_of(clinic), phone_number_id=OTHER_PNID, business_account_id=WABA)

    assert account_of(clinic).phone_number_id == OTHER_PNID
    assert [r.kwargs for r in queued_tasks] == [{"account_id": str(checked.pk)}]
    assert stored(clinic).check_queued_at is not None
    # Endpoint 13 does not describe the old number; the page says the result is being refreshed.
    body = admin_api.get(HEALTH_URL).json()
    assert (body["verdict"], body["checked_at"], body["number"]["status"]) == ("unknown", None, None)
    es, en = page_of(clinic_admin, "es"), page_of(clinic_admin, "en")
    assert 'id="health-verdict">Comprobándose<' in es
    assert "el último resultado se está actualizando" in es
    assert 'id="health-verdict">Being checked<' in en
    assert "the last result is being refreshed" in en
    assert "Ready" not in en.split('id="health"')[1]

    # The worker runs the check: now about the new number.
    healthy_meta(
        graph,
        numbers=phone_numbers_list((OTHER_PNID, OTHER_DISPLAY)),
        number=phone_number("CONNECTED", pnid=OTHER_PNID, messaging_limit_tier="TIER_250"),
    )
    graph.add(
        "GET",
        OTHER_PNID,
        json_body=phone_number("CONNECTED", pnid=OTHER_PNID, messaging_limit_tier="TIER_250"),
    )
    check_whatsapp_health.call(account_id=str(checked.pk))
    assert stored(clinic).checked_phone_number_id == OTHER_PNID
    assert admin_api.get(HEALTH_URL).json()["number"]["messaging_limit"] == "TIER_250"
    assert "Up to 250 patients a day" in page_of(clinic_admin, "en")


def test_twenty_changes_queue_one_check(clinic, checked, graph, queued_tasks):
    for number in range(20):
        pnid = f"19063852327434{number:02d}"
        graph.add("GET", pnid, json_body=phone_number("CONNECTED", pnid=pnid))
        whatsapp_configure(account=account_of(clinic), phone_number_id=pnid, business_account_id=WABA)

    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]


def test_deregistering_queues_a_check_and_the_panel_has_nothing_to_check(
    clinic_admin, admin_api, clinic, checked, graph, queued_tasks
):
    graph.add("POST", f"{PNID}/deregister", json_body={"success": True})
    queued_tasks.clear()

    whatsapp_deregister(account=account_of(clinic))

    assert account_of(clinic).status == "disconnected"
    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]
    assert admin_api.get(HEALTH_URL).json()["verdict"] == "unknown"
    assert 'id="health-verdict">Nada que comprobar todavía<' in page_of(clinic_admin, "es")
    # The queued check asks Meta nothing and forgets the old result (admin's column too).
    calls = len(graph.calls)
    check_whatsapp_health.call(account_id=str(checked.pk))
    assert len(graph.calls) == calls
    health = stored(clinic)
    assert (health.verdict, health.checked_at, health.quality_rating) == ("unknown", None, "")


def test_an_event_that_changes_the_status_queues_a_check(clinic_admin, clinic, checked, queued_tasks):
    queued_tasks.clear()

    whatsapp_apply_account_event(
        account=account_of(clinic), event=AccountEvent("account_update", {"event": "ACCOUNT_DELETED"})
    )

    assert account_of(clinic).status == "failed"
    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]
    page = page_of(clinic_admin, "en")
    # Not the stale "Ready" beside "Failed": the result is being refreshed.
    assert 'id="health-verdict">Being checked<' in page


def test_an_event_that_changes_nothing_queues_no_check(clinic, checked, queued_tasks):
    queued_tasks.clear()
    whatsapp_apply_account_event(
        account=account_of(clinic),
        event=AccountEvent(
            "phone_number_name_update", {"decision": "APPROVED", "requested_verified_name": "X"}
        ),
    )
    assert queued_tasks == []


def test_a_queued_check_uses_no_on_demand_allowance(admin_api, clinic, checked, graph):
    # `checked` ran a check queued by the product a moment ago: the clinic's POST is still allowed.
    healthy_meta(graph)
    with time_machine.travel(NOW + timedelta(seconds=5), tick=False):
        response = admin_api.post(HEALTH_URL)
    assert response.status_code == 200
    assert response.json()["verdict"] == "ready"
    assert stored(clinic).on_demand_at == NOW + timedelta(seconds=5)
    with time_machine.travel(NOW + timedelta(seconds=10), tick=False):
        assert admin_api.post(HEALTH_URL).status_code == 429


# --- 3. one "check now" --------------------------------------------------------------------------


def test_one_check_now_refreshes_the_status_and_the_health(clinic_admin, clinic, graph):
    arrange_active(clinic, status="verifying", connected_at=NOW - timedelta(days=2))
    healthy_meta(graph)
    graph.add("GET", PNID, json_body=phone_number("CONNECTED"))
    client = Client(HTTP_ACCEPT_LANGUAGE="es")
    client.force_login(clinic_admin)

    page = client.get("/settings/").content.decode()
    assert page.count("Comprobar ahora") == 1
    assert "Comprobar conexión" not in page

    response = client.post("/settings/whatsapp/health/", follow=True)

    assert response.redirect_chain == [("/settings/#health", 302)]
    assert account_of(clinic).status == "active"
    assert stored(clinic).verdict == "ready"
    assert (
        'id="health-verdict">Lista<' in response.content.decode()
        or "Comprobado: " in response.content.decode()
    )


# --- 4. plain words, the clinic's time zone ------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "words"),
    [
        (
            "es",
            ["Regular", "Algunos pacientes bloquearon", "Hasta 250 pacientes al día", "En revisión por Meta"],
        ),
        ("en", ["Fair", "Some patients blocked", "Up to 250 patients a day", "Being reviewed by Meta"]),
    ],
)
def test_metas_values_in_plain_words(clinic_admin, clinic, graph, language, words):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=2))
    healthy_meta(
        graph,
        number=phone_number(
            "CONNECTED",
            quality_rating="YELLOW",
            messaging_limit_tier="TIER_250",
            name_status="PENDING_REVIEW",
        ),
    )
    with time_machine.travel(NOW, tick=False):
        whatsapp_health_check(account=account)

    page = page_of(clinic_admin, language)

    for text in words:
        assert text in page
    for raw in ("YELLOW", "TIER_250", "PENDING_REVIEW"):
        assert raw not in page


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "Last checked Dec. 1, 2026, 4 a.m., El Salvador · Central Time (America/El_Salvador)"),
        ("es", "Última comprobación: 1 de diciembre de 2026 a las 04:00, El Salvador · hora central"),
    ],
)
def test_times_are_in_the_clinics_time_zone(clinic_admin, clinic, checked, language, text):
    Clinic.objects.filter(pk=clinic.pk).update(timezone="America/El_Salvador")  # UTC-6

    page = page_of(clinic_admin, language)

    assert text in page
    assert "UTC" not in page.split('id="health"')[1]
