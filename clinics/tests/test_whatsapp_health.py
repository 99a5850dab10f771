"""Endpoint 13, the settings page's health panel, the admin column and the whatsapp_health command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client

from clinics.models import Clinic
from whatsapp.health import CHECK_KEYS, whatsapp_health_check
from whatsapp.models import WhatsAppHealth
from whatsapp.tests.helpers import (
    PNID,
    WABA,
    account_of,
    arrange_active,
    debug_token,
    healthy_meta,
    phone_number,
)

pytestmark = pytest.mark.django_db

HEALTH_URL = "/api/clinics/whatsapp/health/"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def connected(clinic):
    return arrange_active(clinic, connected_at=NOW - timedelta(days=2))


def signed_in(user, language: str = "en") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(user)
    return client


# --- endpoint 13 ---------------------------------------------------------------------------------


def test_it_requires_credentials(anon_client, clinic):
    assert anon_client.get(HEALTH_URL).status_code == 401
    assert anon_client.post(HEALTH_URL).status_code == 401


def test_it_refuses_staff(api_client, clinic_staff, connected, graph):
    client = api_client(clinic_staff)
    assert client.get(HEALTH_URL).status_code == 403
    assert client.post(HEALTH_URL).status_code == 403
    assert graph.calls == []


def test_it_reads_unknown_before_the_first_check(admin_api, connected, graph):
    response = admin_api.get(HEALTH_URL.rstrip("/"))

    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "unknown"
    assert body["checked_at"] is None
    assert [check["key"] for check in body["checks"]] == list(CHECK_KEYS)
    assert all(check["ok"] is None for check in body["checks"])
    assert graph.calls == []  # GET reads, it never asks Meta


@time_machine.travel(NOW, tick=False)
def test_post_runs_the_checks_and_get_reads_them(admin_api, connected, graph):
    healthy_meta(graph, token=debug_token(expires_at=int((NOW + timedelta(days=5)).timestamp())))

    response = admin_api.post(HEALTH_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "attention"
    assert body["checked_at"] == "2026-12-01T10:00:00Z"
    assert body["token"]["expires_at"] == "2026-12-06T10:00:00Z"
    assert body["checks"][1]["detail"] == "The access token expires in 5 days, on Dec. 6, 2026."
    assert admin_api.get(HEALTH_URL).json() == body
    stored = WhatsAppHealth.objects.get(pk=connected.pk)
    assert (stored.verdict, stored.checked_at) == ("attention", NOW)


def test_post_answers_429_within_a_minute(admin_api, connected, graph):
    healthy_meta(graph)
    with time_machine.travel(NOW, tick=False):
        assert admin_api.post(HEALTH_URL).status_code == 200
    with time_machine.travel(NOW + timedelta(seconds=45), tick=False):
        response = admin_api.post(HEALTH_URL)

    assert response.status_code == 429
    assert response["Retry-After"] == "15"
    assert response.json() == {
        "status": "active",
        "detail": "The checks ran less than a minute ago. Try again in 15 seconds.",
    }
    assert len(graph.calls_to("GET", "debug_token")) == 1
    assert WhatsAppHealth.objects.get(pk=connected.pk).checked_at == NOW


def test_the_detail_is_in_the_readers_language(api_client, clinic_admin, connected, graph):
    healthy_meta(graph, apps={"data": []})
    client = api_client(clinic_admin)
    client.credentials(
        HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"], HTTP_ACCEPT_LANGUAGE="es"
    )

    body = client.post(HEALTH_URL).json()

    check = next(c for c in body["checks"] if c["key"] == "app_subscribed")
    assert check["ok"] is False
    assert check["detail"].startswith("La aplicación de este servicio no está suscrita")


def test_another_clinics_health_is_never_shown(api_client, other_clinic_admin, connected, graph):
    healthy_meta(graph)
    whatsapp_health_check(account=connected)

    body = api_client(other_clinic_admin).get(HEALTH_URL).json()

    assert body["verdict"] == "unknown"


# --- the settings page --------------------------------------------------------------------------


def test_the_page_shows_the_health_panel(clinic_admin, connected, graph):
    healthy_meta(graph, token=debug_token(expires_at=int((NOW + timedelta(days=12)).timestamp())))
    with time_machine.travel(NOW, tick=False):
        whatsapp_health_check(account=connected)
        page = signed_in(clinic_admin).get("/settings/").content.decode()

    assert 'id="health-verdict">Needs attention<' in page
    assert "expires in 12 days" in page
    assert 'id="health-quality">Good <' in page
    assert 'id="health-limit">Up to 1,000 patients a day <' in page
    assert 'id="health-name">Approved <' in page
    assert "The access token expires in 12 days" in page
    assert 'action="/settings/whatsapp/health/"' in page


def test_check_now_runs_the_checks_once_a_minute(clinic_admin, connected, graph):
    healthy_meta(graph, number=phone_number("BANNED"))
    client = signed_in(clinic_admin)

    response = client.post("/settings/whatsapp/health/", follow=True)

    assert response.redirect_chain == [("/settings/#health", 302)]
    assert "Checked: Broken." in response.content.decode()
    assert WhatsAppHealth.objects.get(pk=connected.pk).verdict == "broken"
    again = client.post("/settings/whatsapp/health/", follow=True).content.decode()
    assert "The checks ran less than a minute ago" in again
    assert len(graph.calls_to("GET", "debug_token")) == 1


def test_staff_see_the_panel_but_cannot_check(clinic_staff, connected, graph):
    client = signed_in(clinic_staff)
    page = client.get("/settings/").content.decode()
    assert "Connection health" in page
    assert 'action="/settings/whatsapp/health/"' not in page
    assert client.post("/settings/whatsapp/health/").status_code == 403
    assert graph.calls == []


# --- admin ------------------------------------------------------------------------------------------


def test_admin_lists_and_filters_by_verdict(superuser, clinic, other_clinic, graph):
    arrange_active(clinic)
    healthy_meta(graph, number=phone_number("BANNED"))
    whatsapp_health_check(account=account_of(clinic))
    client = signed_in(superuser)

    page = client.get("/admin/clinics/clinic/").content.decode()
    assert 'wa-badge--broken">Broken<' in page
    assert 'wa-badge--unknown">Not checked yet<' in page
    broken = client.get("/admin/clinics/clinic/", {"whatsapp__health__verdict": "broken"}).content.decode()
    assert clinic.name in broken and other_clinic.name not in broken


def test_admin_shows_each_deliverys_processing_state(superuser, clinic):
    from whatsapp.models import WebhookDelivery

    WebhookDelivery.objects.create(
        clinic=clinic,
        dedupe_key="k",
        raw_body="{}",
        state="retrying",
        attempts=2,
        events_total=10,
        events_done=4,
    )
    page = signed_in(superuser).get("/admin/whatsapp/webhookdelivery/").content.decode()
    assert "Failed, will retry" in page
    assert "4 / 10" in page


# --- the command ------------------------------------------------------------------------------------


def test_the_command_queues_one_check_per_connected_clinic(clinic, other_clinic, queued_tasks, capsys):
    arrange_active(clinic)

    call_command("whatsapp_health", "--enqueue")
    call_command("whatsapp_health", "--enqueue")  # a second machine, the same day

    assert [r.kwargs for r in queued_tasks if r.task.name == "check_whatsapp_health"] == [
        {"account_id": str(account_of(clinic).pk)}
    ]
    assert "1 health checks queued" in capsys.readouterr().out


def test_the_command_checks_one_clinic_in_the_foreground(clinic, graph, capsys):
    arrange_active(clinic)
    Clinic.objects.filter(pk=clinic.pk).update(language="en")
    healthy_meta(graph)

    call_command("whatsapp_health", "--clinic", clinic.slug)

    printed = json.loads(capsys.readouterr().out)
    assert printed["number"]["status"] == "CONNECTED"
    assert printed["verdict"] in ("ready", "attention")
    assert WhatsAppHealth.objects.get(pk=account_of(clinic).pk).checked_at is not None


def test_the_command_refuses_an_unknown_slug(clinic):
    with pytest.raises(CommandError, match="No clinic"):
        call_command("whatsapp_health", "--clinic", "nope")


def test_the_command_needs_a_mode():
    with pytest.raises(CommandError):
        call_command("whatsapp_health")


def test_the_waba_id_used_is_the_clinics(clinic, graph):
    arrange_active(clinic)
    healthy_meta(graph)
    whatsapp_health_check(account=account_of(clinic))
    assert graph.calls_to("GET", f"{WABA}/subscribed_apps")
    assert graph.calls_to("GET", PNID)[0].request.url.endswith("messaging_limit_tier")
