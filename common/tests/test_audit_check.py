"""The system check fails closed: an encrypted field without a rule for the audit trail stops start-up."""

# The throwaway models below need no __str__.
# ruff: noqa: DJ008

from __future__ import annotations

from django.db import models
from django.test.utils import isolate_apps

from common import audit
from common.checks import check_audit_rules
from common.fields import EncryptedTextField


@isolate_apps("common")
def test_it_names_an_encrypted_field_without_a_rule():
    class Forgotten(models.Model):
        api_key = EncryptedTextField(null=True)
        name = models.CharField(max_length=10)

    class Covered(models.Model):
        api_key = EncryptedTextField(null=True)
        pin = EncryptedTextField(null=True)
        audit_secrets = {"api_key": audit.FINGERPRINT, "pin": audit.CHANGED}

    class Misspelled(models.Model):
        api_key = EncryptedTextField(null=True)
        audit_secrets = {"api_key": "mask"}

    assert audit.encrypted_fields_without_rule([Forgotten, Covered, Misspelled]) == [
        "common.Forgotten.api_key",
        "common.Misspelled.api_key",
    ]


def test_every_encrypted_field_of_the_project_has_a_rule(db):
    assert check_audit_rules() == []


def test_the_check_is_an_error_with_a_hint(monkeypatch):
    monkeypatch.setattr("common.checks.encrypted_fields_without_rule", lambda _models: ["app.Model.secret"])

    [error] = check_audit_rules()

    assert error.id == "clinics.E003"
    assert error.is_serious()
    assert "app.Model.secret" in error.msg
