"""Encrypt webhook bodies stored in plain text before 0002 (and decrypt them on the way back)."""

import uuid

from django.db import migrations

LABEL = "whatsapp.webhookdelivery.raw_body"


def _rows(connection):
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, raw_body FROM whatsapp_webhookdelivery")
        return cursor.fetchall()


def _row_id(value):
    # SQLite returns the UUID as 32 hex digits, PostgreSQL as a UUID: the key binds str(uuid).
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _rewrite(schema_editor, transform):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for pk, body in _rows(connection):
            new_body = transform(body, _row_id(pk))
            if new_body is not None:
                cursor.execute("UPDATE whatsapp_webhookdelivery SET raw_body = %s WHERE id = %s", [new_body, pk])


def encrypt_bodies(apps, schema_editor):
    from common.crypto import get_keyring

    keyring = get_keyring()

    def encrypt(body, row_id):
        if body is None or body.startswith("enc:v1:"):
            return None
        return keyring.encrypt(body, label=LABEL, row_id=row_id)

    _rewrite(schema_editor, encrypt)


def decrypt_bodies(apps, schema_editor):
    from common.crypto import get_keyring

    keyring = get_keyring()

    def decrypt(body, row_id):
        if body is None or not body.startswith("enc:v1:"):
            return None
        return keyring.decrypt(body, label=LABEL, row_id=row_id)

    _rewrite(schema_editor, decrypt)


class Migration(migrations.Migration):
    dependencies = [("whatsapp", "0002_encrypt_webhook_bodies")]

    operations = [migrations.RunPython(encrypt_bodies, decrypt_bodies)]
