"""Refused signatures warn about the app secret only when they look like Meta's and no authentic
delivery arrived in the same 24 hours (anyone can post garbage to the URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from whatsapp.health import whatsapp_health_check
from whatsapp.health_serializers import HEALTH_SHAPE
from whatsapp.models import WebhookDelivery, WebhookSignatureFailure
from whatsapp.services import whatsapp_store_credentials
from whatsapp.tests.helpers import (
    APP_SECRET,
    OTHER_APP_SECRET,
    arrange_active,
    healthy_meta,
    meta_bytes,
    post_webhook,
    sign,
    text_message,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _webhook_check(health) -> dict:
    return next(check for check in HEALTH_SHAPE.render(health)["checks"] if check["key"] == "webhook_recent")


@pytest.fixture
def account(clinic):
    account = arrange_active(clinic, connected_at=NOW - timedelta(days=30))
    whatsapp_store_credentials(account=account, app_secret=APP_SECRET)
    return account


def _authentic_delivery(clinic, *, hours_ago: float) -> None:
    delivery = WebhookDelivery.objects.create(
        clinic=clinic, dedupe_key=f"d{hours_ago}", raw_body="{}", state="done"
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(received_at=NOW - timedelta(hours=hours_ago))


@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", "sha256=not-hex", "sha1=" + "0" * 40, "0" * 64],
    ids=["no header", "empty", "no digest", "not hex", "sha1", "no prefix"],
)
def test_posts_without_a_well_formed_signature_are_refused_and_not_counted(
    client, clinic, account, graph, signature
):
    """The finding: three unsigned POSTs from anyone made the panel say the app secret was wrong."""
    body = meta_bytes(text_message())
    for _ in range(3):
        answer = (
            post_webhook(client, clinic, body)
            if signature is None
            else post_webhook(client, clinic, body, signature=signature)
        )
        assert answer.status_code == 403
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    assert not WebhookSignatureFailure.objects.exists()
    assert health.signature_failures_24h == 0
    assert "firma" not in (_webhook_check(health)["detail"] or "")


@time_machine.travel(NOW, tick=False)
def test_signed_posts_with_another_secret_warn_when_no_authentic_delivery_came(
    client, clinic, account, graph
):
    _authentic_delivery(clinic, hours_ago=25)
    body = meta_bytes(text_message())
    for _ in range(3):
        assert post_webhook(client, clinic, body, signature=sign(body, OTHER_APP_SECRET)).status_code == 403
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    check = _webhook_check(health)
    assert health.signature_failures_24h == 3
    assert check["ok"] is False
    assert check["detail"].startswith("3 entregas de las últimas 24 horas tenían una firma incorrecta")


@time_machine.travel(NOW, tick=False)
def test_an_authentic_delivery_in_the_same_24_hours_silences_them(client, clinic, account, graph):
    _authentic_delivery(clinic, hours_ago=23)
    body = meta_bytes(text_message())
    for _ in range(3):
        assert post_webhook(client, clinic, body, signature=sign(body, OTHER_APP_SECRET)).status_code == 403
    healthy_meta(graph)

    health = whatsapp_health_check(account=account)

    assert health.signature_failures_24h == 3  # still counted, and shown as a number
    assert _webhook_check(health)["ok"] is True
