"""Migration 0016 marks an existing account's WABA proven only where its last health check, made
after the account was last saved, found the number in that WABA (typed ids prove nothing)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from clinics import services
from whatsapp.tests.test_pin_per_number_migration import _migrate

BEFORE = [("whatsapp", "0015_health_checked_number_and_on_demand_gate")]
AFTER = [("whatsapp", "0016_waba_proven_by_meta")]
FOUND = {"key": "number_in_waba", "ok": True, "reason": "", "params": {}}
NOT_FOUND = {"key": "number_in_waba", "ok": False, "reason": "not_found", "params": {}}


@pytest.mark.django_db(transaction=True)
def test_only_a_health_check_after_the_last_save_that_found_the_number_proves_the_waba(clinic, other_clinic):
    third = services.clinic_create(name="Clínica Soyapango")
    fourth = services.clinic_create(name="Clínica Apopa")
    old = _migrate(BEFORE)
    accounts, health = (
        old.get_model("whatsapp", "WhatsAppAccount"),
        old.get_model("whatsapp", "WhatsAppHealth"),
    )
    cases = {clinic.pk: (FOUND, 1), other_clinic.pk: (FOUND, -1), third.pk: (NOT_FOUND, 1), fourth.pk: None}
    for index, (clinic_id, case) in enumerate(cases.items()):
        account = accounts.objects.get(clinic_id=clinic_id)
        account.status, account.phone_number_id = "active", f"10654035224292{index}"
        account.business_account_id = f"10229012934039{index}"
        account.save()
        if case is not None:
            check, minutes_after_save = case
            health.objects.create(
                account_id=account.pk,
                checked_at=account.updated_at + timedelta(minutes=minutes_after_save),
                checked_phone_number_id=account.phone_number_id,
                checks=[check],
            )
    try:
        new = _migrate(AFTER)
        proven = dict(
            new.get_model("whatsapp", "WhatsAppAccount").objects.values_list(
                "clinic_id", "proven_business_account_id"
            )
        )
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert proven == {
        clinic.pk: "102290129340390",  # found, after the last save
        other_clinic.pk: "",  # found, but the account was saved after the check
        third.pk: "",  # Meta did not list the number
        fourth.pk: "",  # never checked
    }
