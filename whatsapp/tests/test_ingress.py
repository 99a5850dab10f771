"""Per-clinic ingress limits on the webhook: 600 deliveries a minute, 50 MB an hour, then 429."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from whatsapp.models import WebhookDelivery, WebhookVolumeRefusal
from whatsapp.services import whatsapp_store_credentials
from whatsapp.tests.helpers import APP_SECRET, OTHER_APP_SECRET, post_webhook

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _secrets(clinic, other_clinic, settings):
    settings.META_APP_SECRET = ""
    whatsapp_store_credentials(account=clinic.whatsapp, app_secret=APP_SECRET)
    whatsapp_store_credentials(account=other_clinic.whatsapp, app_secret=OTHER_APP_SECRET)


def delivery(n: int, padding: int = 0) -> bytes:
    """A distinct authentic delivery (Meta's envelope; `padding` bytes of text make it bigger)."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "102290129340398", "time": n, "changes": [{"field": "x", "value": {"p": "a" * padding}}]}
        ],
    }
    return json.dumps(payload).encode()


@time_machine.travel(NOW, tick=False)
def test_the_601st_delivery_in_a_minute_is_refused_and_stores_nothing(client, clinic, other_clinic):
    for n in range(600):
        assert post_webhook(client, clinic, delivery(n), secret=APP_SECRET).status_code == 200
    assert WebhookDelivery.objects.filter(clinic=clinic).count() == 600

    refused = post_webhook(client, clinic, delivery(600), secret=APP_SECRET)

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 55  # the minute's window reopens at 10:01:00
    assert WebhookDelivery.objects.filter(clinic=clinic).count() == 600
    noted = WebhookVolumeRefusal.objects.get(clinic=clinic)
    assert (noted.count, noted.last_at) == (1, NOW)
    # Another clinic is unaffected.
    assert post_webhook(client, other_clinic, delivery(0), secret=OTHER_APP_SECRET).status_code == 200
    assert WebhookDelivery.objects.filter(clinic=other_clinic).count() == 1
    # The next minute, the clinic's deliveries are taken again.
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        assert post_webhook(client, clinic, delivery(600), secret=APP_SECRET).status_code == 200
    assert WebhookDelivery.objects.filter(clinic=clinic).count() == 601


@time_machine.travel(NOW, tick=False)
def test_unsigned_garbage_spends_no_allowance(client, clinic, settings):
    settings.WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE = 2
    for n in range(5):
        assert post_webhook(client, clinic, delivery(n), signature="sha256=" + "0" * 64).status_code == 403
        assert post_webhook(client, clinic, delivery(n)).status_code == 403

    assert post_webhook(client, clinic, delivery(1), secret=APP_SECRET).status_code == 200
    assert post_webhook(client, clinic, delivery(2), secret=APP_SECRET).status_code == 200
    assert post_webhook(client, clinic, delivery(3), secret=APP_SECRET).status_code == 429


@time_machine.travel(NOW, tick=False)
def test_beyond_the_hours_bytes_a_delivery_is_refused(client, clinic, other_clinic, settings):
    body = delivery(0, padding=100_000)
    settings.WHATSAPP_WEBHOOK_BYTES_PER_HOUR = 3 * len(body)
    for n in range(3):
        assert (
            post_webhook(client, clinic, delivery(n, padding=100_000), secret=APP_SECRET).status_code == 200
        )

    refused = post_webhook(client, clinic, delivery(3, padding=100_000), secret=APP_SECRET)

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 3595
    assert WebhookDelivery.objects.filter(clinic=clinic).count() == 3
    assert post_webhook(client, other_clinic, body, secret=OTHER_APP_SECRET).status_code == 200


@time_machine.travel(NOW, tick=False)
def test_the_health_panel_and_object_say_deliveries_were_refused(
    client, clinic, clinic_admin, settings, api_client
):
    settings.WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE = 1
    assert post_webhook(client, clinic, delivery(0), secret=APP_SECRET).status_code == 200
    for n in range(1, 4):
        assert post_webhook(client, clinic, delivery(n), secret=APP_SECRET).status_code == 429
    # Noted once a minute: the next minute's refusal brings the hour's count up to date.
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        assert post_webhook(client, clinic, delivery(4), secret=APP_SECRET).status_code == 200
        assert post_webhook(client, clinic, delivery(5), secret=APP_SECRET).status_code == 429

        page = Client(HTTP_ACCEPT_LANGUAGE="en")
        page.force_login(clinic_admin)
        html = page.get("/settings/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
        body = api_client(clinic_admin).get("/api/clinics/whatsapp/health/").json()

    assert "4 deliveries from Meta were refused in the last 24 hours" in html
    assert "more than 1 deliveries a minute" in html
    assert body["webhook"]["volume_refusals_24h"] == 4
    assert body["webhook"]["last_volume_refusal_at"] == "2026-12-01T10:01:05Z"
    assert body["webhook"]["signature_failures_24h"] == 0
