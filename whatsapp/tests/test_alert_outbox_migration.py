"""Migration 0009 turns the warning e-mails into outbox rows: each gets the state its columns
imply, and the sender's claim becomes the lease with its value kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("whatsapp", "0008_field_labels")]
AFTER = [("whatsapp", "0009_alert_emails_in_the_outbox_loop")]


@pytest.mark.django_db(transaction=True)
def test_each_alert_gets_the_state_its_columns_imply(clinic, settings):
    settings.TASK_RETRY_ATTEMPTS = 8
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps.get_model("whatsapp", "WhatsAppAlert")
    now = timezone.now()
    held_until = now + timedelta(minutes=3)
    made = {
        "sent": old.objects.create(
            clinic_id=clinic.pk, kind="broken", key="sent", notified_at=now, attempts=1
        ),
        "given_up": old.objects.create(clinic_id=clinic.pk, kind="broken", key="given_up", attempts=8),
        "held": old.objects.create(
            clinic_id=clinic.pk, kind="broken", key="held", attempts=1, claimed_until=held_until
        ),
        "unsent": old.objects.create(clinic_id=clinic.pk, kind="broken", key="unsent", attempts=2),
    }
    try:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps.get_model("whatsapp", "WhatsAppAlert")
        rows = {key: new.objects.get(pk=alert.pk) for key, alert in made.items()}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert {key: row.state for key, row in rows.items()} == {
        "sent": "done",
        "given_up": "failed",
        "held": "processing",
        "unsent": "queued",
    }
    assert rows["held"].lease_expires_at == held_until  # the claim's value, kept
    assert rows["unsent"].lease_expires_at is not None
    assert rows["unsent"].lease_expires_at <= timezone.now()  # the next sweep sends it
    assert (rows["sent"].lease_expires_at, rows["given_up"].lease_expires_at) == (None, None)
