"""Migration 0003 encrypts webhook bodies stored in plain text, and its reverse decrypts them."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.db import connection

from whatsapp.models import WebhookDelivery

migration = importlib.import_module("whatsapp.migrations.0003_encrypt_stored_webhook_bodies")

pytestmark = pytest.mark.django_db


def _raw_bodies() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT raw_body FROM whatsapp_webhookdelivery")
        return [row[0] for row in cursor.fetchall()]


def test_it_encrypts_plain_bodies_and_decrypts_them_back(clinic):
    delivery = WebhookDelivery(clinic=clinic, dedupe_key="k", fields="messages", raw_body="placeholder")
    delivery.save(force_insert=True)
    with connection.cursor() as cursor:  # a row as 0001 stored it: plain text
        cursor.execute("UPDATE whatsapp_webhookdelivery SET raw_body = %s", ['{"hola": "Paciente"}'])
    editor = SimpleNamespace(connection=connection)

    migration.encrypt_bodies(None, editor)
    migration.encrypt_bodies(None, editor)  # a second run changes nothing

    (stored,) = _raw_bodies()
    assert stored.startswith("enc:v1:test2:")
    assert WebhookDelivery.objects.get().raw_body == '{"hola": "Paciente"}'

    migration.decrypt_bodies(None, editor)
    assert _raw_bodies() == ['{"hola": "Paciente"}']
