"""The health checks (endpoint 13's service) against Meta faked at the HTTP boundary, and the verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from whatsapp.deliveries import whatsapp_signature_failure_record
from whatsapp.exceptions import AttemptsExhaustedError
from whatsapp.health import (
    CHECK_KEYS,
    verdict_of,
    whatsapp_health_check,
    whatsapp_health_run_now,
    whatsapp_health_schedule,
)
from whatsapp.health_serializers import HEALTH_SHAPE
from whatsapp.models import WebhookDelivery, WhatsAppAlert, WhatsAppHealth
from whatsapp.services import whatsapp_store_credentials
from whatsapp.tests import helpers
from whatsapp.tests.helpers import (
    DATA,
    PNID,
    TOKEN,
    WABA,
    account_of,
    arrange_active,
    debug_token,
    healthy_meta,
    phone_number,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def connected(clinic):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=30))
    # An authentic event a day ago: the webhook is alive.
    delivery = WebhookDelivery.objects.create(clinic=clinic, dedupe_key="x", raw_body="{}", state="done")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(received_at=NOW - timedelta(days=1))
    return account


def checks_of(health: WhatsAppHealth) -> dict[str, bool | None]:
    return {check["key"]: check["ok"] for check in health.checks}


@time_machine.travel(NOW, tick=False)
def test_it_finds_a_healthy_connection_ready(connected, graph):
    healthy_meta(graph)

    health = whatsapp_health_check(account=connected)

    assert health.verdict == "ready"
    assert checks_of(health) == dict.fromkeys(CHECK_KEYS, True)
    stored = WhatsAppHealth.objects.get(pk=connected.pk)
    assert stored.checked_at == NOW
    assert stored.token_type == "SYSTEM_USER"
    assert stored.token_expires_at is None  # Meta's 0: never
    assert stored.quality_rating == "GREEN"
    assert stored.messaging_limit == "TIER_1K"
    assert stored.name_status == "APPROVED"
    assert stored.last_event_at == NOW - timedelta(days=1)
    # The token went to Meta in the header and as input_token, and nowhere else.
    call = graph.calls_to("GET", "debug_token")[0]
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


@time_machine.travel(NOW, tick=False)
def test_it_renders_the_contracts_health_object(connected, graph):
    healthy_meta(graph, token=debug_token(expires_at=int((NOW + timedelta(days=10)).timestamp())))

    body = HEALTH_SHAPE.render(whatsapp_health_check(account=connected))

    assert list(body) == ["verdict", "checked_at", "checks", "token", "number", "webhook"]
    assert body["verdict"] == "attention"
    assert body["checked_at"] == "2026-12-01T10:00:00Z"
    assert [check["key"] for check in body["checks"]] == list(CHECK_KEYS)
    expiry = body["checks"][1]
    assert expiry["ok"] is False
    assert "10 days" in expiry["detail"] or "10 días" in expiry["detail"]
    assert expiry["fix"]
    assert body["checks"][0] == {"key": "token_valid", "ok": True, "detail": None, "fix": None}
    assert body["token"] == {
        "expires_at": "2026-12-11T10:00:00Z",
        "type": "SYSTEM_USER",
        "scopes": ["whatsapp_business_management", "whatsapp_business_messaging", "public_profile"],
    }
    assert body["number"] == {
        "status": "CONNECTED",
        "name_status": "APPROVED",
        "quality_rating": "GREEN",
        "messaging_limit": "TIER_1K",
    }
    assert body["webhook"] == {
        "last_event_at": "2026-11-30T10:00:00Z",
        "signature_failures_24h": 0,
        "volume_refusals_24h": 0,
        "last_volume_refusal_at": None,
    }


def test_it_is_unknown_before_the_first_check(clinic):
    body = HEALTH_SHAPE.render(WhatsAppHealth(account=account_of(clinic)))
    assert body["verdict"] == "unknown"
    assert body["checked_at"] is None
    assert [(c["key"], c["ok"]) for c in body["checks"]] == [(key, None) for key in CHECK_KEYS]


# --- each check failing --------------------------------------------------------------------------


def _failing(graph, case: str) -> None:
    if case == "token_valid":
        status, body = helpers.ERRORS[190]
        graph.add("GET", "debug_token", status=status, json_body=body)
        graph.add("GET", f"{WABA}/phone_numbers", status=status, json_body=body)
        graph.add("GET", f"{WABA}/subscribed_apps", status=status, json_body=body)
        graph.add("GET", PNID, status=status, json_body=body)
    elif case == "token_expiry":
        healthy_meta(graph, token=debug_token(expires_at=int((NOW + timedelta(days=3)).timestamp())))
    elif case == "token_expiry_temporary":
        issued = int((NOW - timedelta(hours=2)).timestamp())
        healthy_meta(graph, token=debug_token(type="USER", issued_at=issued, expires_at=issued + 86400))
    elif case == "token_scopes":
        healthy_meta(graph, token=debug_token(scopes=["whatsapp_business_management"]))
    elif case == "token_scopes_other_waba":
        token = debug_token()
        for grant in token["data"]["granular_scopes"]:
            grant["target_ids"] = ["999999999999999"]
        healthy_meta(graph, token=token)
    elif case == "number_in_waba":
        healthy_meta(graph, numbers=helpers.phone_numbers_list(("1906385232743451", "+1 631-555-5555")))
    elif case == "app_subscribed":
        healthy_meta(graph, apps={"data": []})
    elif case == "number_registered":
        healthy_meta(graph, number=phone_number("DISCONNECTED", platform_type="NOT_APPLICABLE"))
    elif case == "name_approved":
        healthy_meta(graph, number=phone_number("CONNECTED", name_status="DECLINED"))
    elif case == "can_send":
        healthy_meta(graph, number=phone_number("RESTRICTED"))
    else:  # pragma: no cover
        raise ValueError(case)


@pytest.mark.parametrize(
    ("case", "key", "verdict"),
    [
        ("token_valid", "token_valid", "broken"),
        ("token_expiry", "token_expiry", "attention"),
        ("token_expiry_temporary", "token_expiry", "attention"),
        ("token_scopes", "token_scopes", "broken"),
        ("token_scopes_other_waba", "token_scopes", "broken"),
        ("number_in_waba", "number_in_waba", "broken"),
        ("app_subscribed", "app_subscribed", "attention"),
        ("number_registered", "number_registered", "broken"),
        ("name_approved", "name_approved", "attention"),
        ("can_send", "can_send", "broken"),
    ],
)
@time_machine.travel(NOW, tick=False)
def test_it_reports_each_failing_check(connected, graph, case, key, verdict):
    _failing(graph, case)

    health = whatsapp_health_check(account=connected)

    assert checks_of(health)[key] is False
    assert health.verdict == verdict
    check = next(c for c in HEALTH_SHAPE.render(health)["checks"] if c["key"] == key)
    assert check["detail"] and check["fix"]


@time_machine.travel(NOW, tick=False)
def test_it_flags_a_quiet_webhook(clinic, graph):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=30))
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    assert checks_of(health)["webhook_recent"] is False
    assert health.verdict == "attention"


@time_machine.travel(NOW, tick=False)
def test_it_does_not_judge_a_new_numbers_webhook(clinic, graph):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=2))
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    assert checks_of(health)["webhook_recent"] is None
    assert health.verdict == "ready"


@time_machine.travel(NOW, tick=False)
def test_it_flags_signature_failures_without_an_authentic_event(clinic, graph):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=2))
    for _ in range(4):
        whatsapp_signature_failure_record(clinic_id=clinic.pk)
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    assert health.signature_failures_24h == 4
    check = next(c for c in HEALTH_SHAPE.render(health)["checks"] if c["key"] == "webhook_recent")
    assert check["ok"] is False
    assert "4" in check["detail"]


@time_machine.travel(NOW, tick=False)
def test_it_stays_unknown_when_meta_cannot_be_reached(connected, graph):
    for path in ("debug_token", f"{WABA}/phone_numbers", f"{WABA}/subscribed_apps", PNID):
        graph.fault("GET", path, "http503")

    health = whatsapp_health_check(account=connected, read_retries=0)

    assert health.verdict == "unknown"
    assert checks_of(health)["token_valid"] is None
    assert "Meta" in HEALTH_SHAPE.render(health)["checks"][0]["detail"]


@time_machine.travel(NOW, tick=False)
def test_it_asks_again_without_a_field_meta_dropped(connected, graph):
    healthy_meta(graph, number=None)
    graph.mock.replace(
        "GET",
        helpers.graph_url(PNID),
        status=400,
        json=json.loads((DATA / "error_100_nonexisting_field.json").read_text()),
    )
    graph.add("GET", PNID, json_body=phone_number("CONNECTED"))

    health = whatsapp_health_check(account=connected)

    assert health.verdict == "ready"
    assert health.messaging_limit == ""
    assert len(graph.calls_to("GET", PNID)) == 2


def test_a_token_never_appears_in_the_logs(connected, graph, caplog):
    graph.fault("GET", "debug_token", "reset")
    graph.fault("GET", "debug_token", "reset")
    graph.fault("GET", "debug_token", "reset")
    caplog.set_level("DEBUG")

    whatsapp_health_check(account=connected)

    assert TOKEN not in caplog.text


# --- the verdict ---------------------------------------------------------------------------------


def _checks(**oks) -> list[dict]:
    values = dict.fromkeys(CHECK_KEYS, True) | oks
    return [{"key": key, "ok": values[key]} for key in CHECK_KEYS]


@pytest.mark.parametrize(
    ("oks", "verdict"),
    [
        ({}, "ready"),
        ({"webhook_recent": None}, "ready"),
        ({"name_approved": None}, "ready"),
        ({"token_expiry": False}, "attention"),
        ({"app_subscribed": False}, "attention"),
        ({"name_approved": False}, "attention"),
        ({"webhook_recent": False}, "attention"),
        (
            {"token_expiry": False, "app_subscribed": False, "name_approved": False, "webhook_recent": False},
            "attention",
        ),
        ({"token_valid": False}, "broken"),
        ({"token_scopes": False}, "broken"),
        ({"number_in_waba": False}, "broken"),
        ({"number_registered": False}, "broken"),
        ({"can_send": False}, "broken"),
        ({"can_send": False, "token_expiry": False}, "broken"),
        ({"token_valid": False, "token_scopes": None}, "broken"),
        ({"token_valid": None}, "unknown"),
        ({"can_send": None, "token_expiry": False}, "unknown"),
        ({"number_in_waba": None, "can_send": False}, "broken"),
    ],
)
def test_the_verdict_table(oks, verdict):
    assert verdict_of(_checks(**oks)) == verdict


def test_no_checks_is_unknown():
    assert verdict_of([]) == "unknown"


# --- on demand and scheduled ----------------------------------------------------------------------


def test_it_runs_on_demand_at_most_once_a_minute(connected, graph):
    healthy_meta(graph)
    with time_machine.travel(NOW, tick=False):
        assert whatsapp_health_run_now(account=connected).verdict == "ready"
    with (
        time_machine.travel(NOW + timedelta(seconds=20), tick=False),
        pytest.raises(AttemptsExhaustedError) as refused,
    ):
        whatsapp_health_run_now(account=connected)
    assert refused.value.retry_after == 40
    assert len(graph.calls_to("GET", "debug_token")) == 1
    healthy_meta(graph)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        assert whatsapp_health_run_now(account=connected).verdict == "ready"


def test_two_schedulers_queue_one_check_per_clinic(clinic, other_clinic, queued_tasks):
    arrange_active(clinic)
    arrange_active(other_clinic, phone_number_id="1906385232743451", number="+50370001234")
    day = timezone.localdate()

    first = whatsapp_health_schedule(day=day)
    second = whatsapp_health_schedule(day=day)

    assert (first, second) == (2, 0)
    queued = sorted(r.kwargs["account_id"] for r in queued_tasks if r.task.name == "check_whatsapp_health")
    assert queued == sorted([str(account_of(clinic).pk), str(account_of(other_clinic).pk)])
    # The next day, each clinic is checked again.
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        assert whatsapp_health_schedule(day=day + timedelta(days=1)) == 2


def test_the_scheduler_skips_clinics_without_a_number(clinic, queued_tasks):
    assert whatsapp_health_schedule(day=timezone.localdate()) == 0
    assert queued_tasks == []


def test_a_new_token_queues_a_check(clinic, queued_tasks):
    whatsapp_store_credentials(account=account_of(clinic), access_token=helpers.NEW_TOKEN)
    whatsapp_store_credentials(account=account_of(clinic), app_secret="another-secret-0123")

    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]
    assert queued_tasks[0].kwargs == {"account_id": str(account_of(clinic).pk)}


def test_twenty_token_saves_queue_one_check(clinic, graph, queued_tasks):
    account = account_of(clinic)
    for n in range(20):
        whatsapp_store_credentials(account=account, access_token=f"{helpers.NEW_TOKEN}{n}")

    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]
    assert WhatsAppHealth.objects.get(pk=account.pk).check_queued_at is not None

    # The check starts: it clears the mark, and the next save queues a new one.
    healthy_meta(graph)
    whatsapp_health_check(account=account)
    assert WhatsAppHealth.objects.get(pk=account.pk).check_queued_at is None
    whatsapp_store_credentials(account=account, access_token=helpers.NEW_TOKEN)
    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"] * 2


def test_the_scheduler_adds_no_check_to_one_already_waiting(clinic, queued_tasks):
    arrange_active(clinic)
    whatsapp_store_credentials(account=account_of(clinic), access_token=helpers.NEW_TOKEN)

    assert whatsapp_health_schedule(day=timezone.localdate()) == 0
    assert [r.task.name for r in queued_tasks] == ["check_whatsapp_health"]


# --- warnings ------------------------------------------------------------------------------------


def test_it_records_a_broken_episode_once(connected, graph):
    for day in range(3):
        _failing(graph, "can_send")
        with time_machine.travel(NOW + timedelta(days=day), tick=False):
            whatsapp_health_check(account=connected)
    healthy_meta(graph)
    with time_machine.travel(NOW + timedelta(days=3), tick=False):
        whatsapp_health_check(account=connected)
    _failing(graph, "can_send")
    with time_machine.travel(NOW + timedelta(days=4), tick=False):
        whatsapp_health_check(account=connected)

    alerts = list(WhatsAppAlert.objects.filter(kind="broken").order_by("created_at"))
    assert len(alerts) == 2  # two episodes, not five checks
    assert [c["key"] for c in alerts[0].params["checks"]] == ["can_send"]
