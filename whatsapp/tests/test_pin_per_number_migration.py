"""Migration 0013 keeps each clinic's stored PIN with its number, and gives a claim waiting
for its code the end it would have had (30 minutes after it was last written)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("whatsapp", "0012_count_deliveries_refused_for_volume")]
AFTER = [("whatsapp", "0013_pin_per_number_claims_and_code_requests")]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.mark.django_db(transaction=True)
def test_the_stored_pin_becomes_its_numbers_and_a_waiting_claim_gets_its_end(clinic, other_clinic):
    old = _migrate(BEFORE).get_model("whatsapp", "WhatsAppAccount")
    pending = old.objects.get(clinic_id=clinic.pk)
    pending.status, pending.number, pending.phone_number_id = "pending_otp", "+50377654321", "111"
    pending.registration_pin, pending.pin_phone_number_id = "482915", "111"
    pending.save()
    active = old.objects.get(clinic_id=other_clinic.pk)
    active.status, active.number, active.phone_number_id = "active", "+50370001234", "222"
    active.save()  # no PIN stored: nothing to keep
    written = old.objects.get(pk=pending.pk).updated_at
    try:
        apps = _migrate(AFTER)
        pins = [
            (row.clinic_id, row.phone_number_id, row.pin, row.unconfirmed_pin)
            for row in apps.get_model("whatsapp", "NumberPin").objects.all()
        ]
        accounts = apps.get_model("whatsapp", "WhatsAppAccount").objects
        claims = {row.clinic_id: row.claim_expires_at for row in accounts.all()}
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert pins == [(clinic.pk, "111", "482915", None)]
    assert claims == {clinic.pk: written + timedelta(minutes=30), other_clinic.pk: None}
