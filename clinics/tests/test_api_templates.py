"""Endpoint 17: the template list (member, bot key) and the sync from Meta (admin, once a minute); template events."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.core.management import call_command
from django.utils import timezone

from clinics.tests.test_api_bot_keys import KEYS_URL, bot_client
from messaging.models import MessageTemplate
from messaging.templates import message_templates_apply_event
from whatsapp.tests.helpers import WABA

LIST_URL = "/api/clinics/templates/"
SYNC_URL = "/api/clinics/templates/sync/"


def template(
    name: str, language: str, status: str = "APPROVED", body: str = "Hola {{1}}, su cita es a las {{2}}."
):
    return {
        "id": f"{abs(hash((name, language))) % 10**15}",
        "name": name,
        "language": language,
        "status": status,
        "category": "UTILITY",
        "quality_score": {"score": "GREEN"},
        "rejected_reason": "NONE",
        "components": [{"type": "HEADER", "format": "TEXT", "text": "{{1}}"}, {"type": "BODY", "text": body}],
    }


def two_pages(graph):
    first = {
        "data": [template("cita", "es"), template("cita", "en")],
        "paging": {
            "cursors": {"before": "B1", "after": "A1"},
            "next": f"https://graph.facebook.com/v26.0/{WABA}/message_templates?after=A1&access_token=LEAK",
        },
    }
    second = {
        "data": [template("promo", "es", status="REJECTED", body="Sin parámetros")],
        "paging": {"cursors": {"before": "B2", "after": "A2"}},
    }
    graph.add("GET", f"{WABA}/message_templates", json_body=first, match=[_no_after()])
    graph.add("GET", f"{WABA}/message_templates", json_body=second, match=[_after("A1")])


def _after(value):
    def match(request):
        found = parse_qs(urlsplit(request.url).query).get("after")
        return (found == [value], f"after={found}")

    return match


def _no_after():
    def match(request):
        return ("after" not in request.url, "asked with a cursor")

    return match


def test_it_syncs_every_page(admin_api, active, graph):
    two_pages(graph)

    response = admin_api.post(SYNC_URL)

    assert response.status_code == 200
    assert {(t["name"], t["language"], t["status"], t["params"]) for t in response.json()["results"]} == {
        ("cita", "es", "APPROVED", 2),
        ("cita", "en", "APPROVED", 2),
        ("promo", "es", "REJECTED", 0),
    }
    stored = MessageTemplate.objects.get(clinic=active, name="cita", language="es")
    assert (stored.category, stored.quality, stored.rejected_reason) == ("UTILITY", "GREEN", "")
    assert all("LEAK" not in call.request.url for call in graph.mock.calls)


def test_it_removes_templates_meta_no_longer_lists(admin_api, active, graph):
    MessageTemplate.objects.create(
        clinic=active, name="old", language="es", status="APPROVED", synced_at=timezone.now()
    )
    two_pages(graph)

    admin_api.post(SYNC_URL)

    assert not MessageTemplate.objects.filter(name="old").exists()


def test_it_syncs_at_most_once_a_minute(admin_api, active, graph):
    two_pages(graph)
    assert admin_api.post(SYNC_URL).status_code == 200
    calls = len(graph.mock.calls)

    response = admin_api.post(SYNC_URL)

    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert len(graph.mock.calls) == calls


def test_meta_failing_changes_nothing(admin_api, active, graph):
    MessageTemplate.objects.create(
        clinic=active, name="old", language="es", status="APPROVED", synced_at=timezone.now()
    )
    graph.add(
        "GET", f"{WABA}/message_templates", status=500, json_body={"error": {"code": 2, "message": "down"}}
    )

    response = admin_api.post(SYNC_URL)

    assert response.status_code == 502
    assert MessageTemplate.objects.filter(name="old").exists()


def test_sync_requires_admin(api_client, clinic_staff, active, graph):
    assert api_client(clinic_staff).post(SYNC_URL).status_code == 403
    assert not graph.mock.calls


def test_sync_requires_credentials(anon_client, db):
    assert anon_client.post(SYNC_URL).status_code == 401


def test_members_and_bot_keys_list_their_clinics_templates(
    api_client, admin_api, clinic_staff, active, other_clinic
):
    MessageTemplate.objects.create(
        clinic=active, name="cita", language="es", status="APPROVED", params=2, synced_at=timezone.now()
    )
    MessageTemplate.objects.create(
        clinic=other_clinic, name="ajena", language="es", status="APPROVED", synced_at=timezone.now()
    )
    key = admin_api.post(KEYS_URL, {"name": "bot"}, format="json").json()["key"]

    for client in (api_client(clinic_staff), bot_client(key)):
        response = client.get(LIST_URL)
        assert response.status_code == 200
        assert [(t["name"], t["language"], t["params"]) for t in response.json()["results"]] == [
            ("cita", "es", 2)
        ]


def test_status_and_quality_events_update_the_template(active):
    MessageTemplate.objects.create(
        clinic=active,
        meta_id="594425479261596",
        name="cita",
        language="es",
        status="PENDING",
        synced_at=timezone.now(),
    )

    message_templates_apply_event(
        clinic_id=active.pk,
        field="message_template_status_update",
        value={
            "event": "REJECTED",
            "message_template_id": 594425479261596,
            "message_template_name": "cita",
            "message_template_language": "es",
            "reason": "INCORRECT_CATEGORY",
        },
    )
    message_templates_apply_event(
        clinic_id=active.pk,
        field="message_template_quality_update",
        value={
            "previous_quality_score": "GREEN",
            "new_quality_score": "YELLOW",
            "message_template_id": 594425479261596,
            "message_template_name": "cita",
            "message_template_language": "es",
        },
    )

    stored = MessageTemplate.objects.get()
    assert (stored.status, stored.rejected_reason, stored.quality) == (
        "REJECTED",
        "INCORRECT_CATEGORY",
        "YELLOW",
    )


def test_the_daily_command_syncs_every_active_clinic(active, graph, capsys):
    two_pages(graph)

    call_command("sync_templates")

    assert MessageTemplate.objects.filter(clinic=active).count() == 3
    assert "templates synced for 1 clinics, 0 failed" in capsys.readouterr().out


def test_one_malformed_template_does_not_stop_the_sync(admin_api, active, graph):
    graph.add(
        "GET",
        f"{WABA}/message_templates",
        json_body={"data": [{"id": "1", "status": "APPROVED"}, template("cita", "es")]},
    )

    response = admin_api.post(SYNC_URL)

    assert response.status_code == 200
    assert [(t["name"], t["language"]) for t in response.json()["results"]] == [("cita", "es")]
