"""A canary secret saved through the API never appears in clear anywhere it could leak.

Spec: ../shared/docs/encryption.md, "Tests that prove it" 1 and 2 (the admin HTML
is covered elsewhere). Works on SQLite and PostgreSQL: the raw scan reads every
table the introspection lists, with a plain cursor.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from io import StringIO

import pytest
import responses
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.tests.test_encryption import raw_value
from whatsapp.models import WhatsAppAccount

pytestmark = pytest.mark.django_db

SETTINGS_URL = "/api/clinics/settings/"
PROFILE_URL = "/api/clinics/me/"


@pytest.fixture
def canary() -> str:
    return "EAACANARY" + uuid.uuid4().hex


def _contains(value: object, needle: str) -> bool:
    if value is None:
        return False
    if isinstance(value, memoryview | bytes | bytearray):
        return needle.encode() in bytes(value)
    if isinstance(value, str):
        return needle in value
    if isinstance(value, dict | list):
        return needle in json.dumps(value, default=str)
    return needle in str(value)


def _scan_database(needle: str) -> tuple[list[str], dict[str, int], list[object]]:
    """(hits as table.column, rows read per table, every value read) for the whole database."""
    qn = connection.ops.quote_name
    hits: list[str] = []
    rows_per_table: dict[str, int] = {}
    values: list[object] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            description = connection.introspection.get_table_description(cursor, table)
            columns = [column.name for column in description]
            assert columns, table
            cursor.execute(f"SELECT {', '.join(qn(c) for c in columns)} FROM {qn(table)}")  # noqa: S608
            rows = cursor.fetchall()
            rows_per_table[table] = len(rows)
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    values.append(value)
                    if _contains(value, needle):
                        hits.append(f"{table}.{column}")
    return hits, rows_per_table, values


def _patch_token(client, canary: str, **extra: str):
    return client.patch(SETTINGS_URL, {"whatsapp_access_token": canary, **extra}, format="json")


# -- 1. absent from the raw database ---------------------------------------------------


def test_it_keeps_the_api_saved_canary_out_of_every_table_and_column(
    clinic, clinic_admin, api_client, canary
):
    client = api_client(clinic_admin)

    with CaptureQueriesContext(connection) as queries:
        response = _patch_token(client, canary)

    assert response.status_code == 200, response.content
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert account.access_token == canary  # it really was saved

    stored = raw_value(WhatsAppAccount, account.pk, "access_token")
    assert stored.startswith("enc:v1:test2:")
    assert canary not in stored

    hits, rows_per_table, values = _scan_database(canary)
    assert hits == []
    # The scan did reach the data: the clinic's tables, with the ciphertext in them.
    assert rows_per_table[WhatsAppAccount._meta.db_table] >= 1
    assert rows_per_table["clinics_clinic"] >= 1
    assert any(value == stored for value in values)
    assert len(rows_per_table) >= 10

    # And the plaintext never travelled in an SQL statement either.
    assert queries.captured_queries
    assert not [q["sql"] for q in queries.captured_queries if canary in q["sql"]]


def test_it_keeps_every_encrypted_column_out_of_the_raw_database(clinic, canary):
    account = clinic.whatsapp
    secrets = {column: f"{canary}-{column}" for column in ("verify_token", "app_secret", "registration_pin")}
    for column, secret in secrets.items():
        setattr(account, column, secret)
    account.save()

    for column, secret in secrets.items():
        assert raw_value(WhatsAppAccount, account.pk, column).startswith("enc:v1:test2:")
        assert getattr(WhatsAppAccount.objects.get(pk=account.pk), column) == secret
    hits, _rows, _values = _scan_database(canary)
    assert hits == []


# -- 2. absent from responses, logs, dumpdata, repr() ---------------------------------


def test_it_keeps_the_canary_out_of_api_responses(clinic, clinic_admin, clinic_staff, api_client, canary):
    admin = api_client(clinic_admin)
    saved = _patch_token(admin, canary)
    assert saved.status_code == 200
    assert canary not in saved.content.decode()

    for client in (admin, api_client(clinic_staff)):
        for url in (SETTINGS_URL, PROFILE_URL):
            response = client.get(url)
            assert response.status_code == 200, (url, response.content)
            body = response.content.decode()
            assert canary not in body
            assert "enc:v1" not in body

    shown = admin.get(SETTINGS_URL).json()["whatsapp_access_token"]
    assert shown == canary[:8] + "...****"
    # Sending the masked value back keeps the stored token.
    assert admin.patch(SETTINGS_URL, {"whatsapp_access_token": shown}, format="json").status_code == 200
    assert WhatsAppAccount.objects.get(clinic=clinic).access_token == canary


def test_it_keeps_the_canary_out_of_the_logs_of_the_request(clinic, clinic_admin, api_client, canary, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.db.backends", "django.request", "clinics", "whatsapp", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = api_client(clinic_admin)
    graph = settings.META_GRAPH_URL

    with responses.RequestsMock(assert_all_requests_are_fired=False) as meta:
        number = meta.get(
            re.compile(re.escape(graph) + r"/123456789012345(\?.*)?$"),
            json={
                "id": "123456789012345",
                "display_phone_number": "+503 7000 0000",
                "verified_name": "Clinica",
                "status": "CONNECTED",
                "code_verification_status": "VERIFIED",
            },
        )
        # With the debug cursor on, every SQL statement is logged with its parameters.
        with CaptureQueriesContext(connection):
            response = _patch_token(client, canary, whatsapp_phone_number_id="123456789012345")
            client.get(SETTINGS_URL)
            client.get(PROFILE_URL)
        # The token did travel, to Meta, in the header: the logs had a chance to see it.
        assert number.call_count >= 1
        assert meta.calls[0].request.headers["Authorization"] == f"Bearer {canary}"

    assert response.status_code == 200, response.content

    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any(record.name.startswith("django.db.backends") for record in caplog.records)
    assert canary not in caplog.text
    for record in caplog.records:
        assert canary not in record.getMessage()
        assert canary not in repr(record.args)
        assert canary not in (record.exc_text or "")


def test_it_keeps_the_canary_out_of_dumpdata(clinic, clinic_admin, api_client, canary):
    assert _patch_token(api_client(clinic_admin), canary).status_code == 200
    stored = raw_value(WhatsAppAccount, clinic.whatsapp.pk, "access_token")

    everything = StringIO()
    call_command("dumpdata", stdout=everything)
    one_app = StringIO()
    call_command("dumpdata", "whatsapp.whatsappaccount", format="json", indent=2, stdout=one_app)

    assert canary not in everything.getvalue()
    assert canary not in one_app.getvalue()
    # The value is dumped as it is on disk, not dropped.
    [row] = [r for r in json.loads(one_app.getvalue()) if r["pk"] == str(clinic.whatsapp.pk)]
    assert row["fields"]["access_token"] == stored


def test_it_keeps_the_canary_out_of_dumpdata_of_a_freshly_assigned_instance(clinic, canary):
    from django.core import serializers

    account = clinic.whatsapp
    account.access_token = canary
    account.save()
    # The instance in memory holds the plaintext; serialising it must still write ciphertext.
    text = serializers.serialize("json", [account])

    assert canary not in text
    assert json.loads(text)[0]["fields"]["access_token"].startswith("enc:v1:test2:")


def test_it_loads_back_what_dumpdata_wrote(clinic, canary, tmp_path):
    account = clinic.whatsapp
    account.access_token = canary
    account.save()
    fixture = tmp_path / "whatsapp.json"
    call_command("dumpdata", "whatsapp.whatsappaccount", output=str(fixture))
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=None)

    call_command("loaddata", str(fixture), verbosity=0)

    assert WhatsAppAccount.objects.get(pk=account.pk).access_token == canary


def test_it_keeps_the_canary_out_of_repr_and_str(clinic, clinic_admin, api_client, canary):
    assert _patch_token(api_client(clinic_admin), canary).status_code == 200
    loaded = WhatsAppAccount.objects.get(clinic=clinic)
    assert loaded.access_token == canary  # decrypted in memory now

    assigned = clinic.whatsapp
    assigned.access_token = canary
    for instance in (loaded, assigned):
        for text in (repr(instance), str(instance), repr(instance.clinic), str(instance.clinic)):
            assert canary not in text
        assert canary not in repr(loaded._meta.get_field("access_token"))
    assert canary not in repr(list(WhatsAppAccount.objects.filter(pk=loaded.pk)))
    stored = WhatsAppAccount.objects.values_list("access_token", flat=True).get(pk=loaded.pk)
    assert repr(stored) == "Ciphertext(<hidden>)"


def test_it_keeps_the_canary_out_of_the_audit_trail_and_everywhere_it_is_shown(
    clinic, clinic_admin, superuser, api_client, canary, caplog
):
    from django.test import Client

    from common.audit import fingerprint
    from common.models import AuditEvent

    caplog.set_level(logging.DEBUG)
    admin_api = api_client(clinic_admin)
    with CaptureQueriesContext(connection):
        assert _patch_token(admin_api, canary).status_code == 200
        activity = admin_api.get("/api/clinics/activity/")
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)
    site_admin = Client(HTTP_ACCEPT_LANGUAGE="en")
    site_admin.force_login(superuser)

    row = AuditEvent.objects.get(clinic_id=clinic.pk, action="whatsapp.credentials_updated")
    shown = fingerprint(canary)
    assert row.changes["access_token"] == [None, shown]
    assert shown.endswith(canary[-4:])
    screens = {
        "api": activity.content.decode(),
        "page": page.get("/activity/").content.decode(),
        "admin history": site_admin.get(
            f"/admin/clinics/clinic/{clinic.pk}/history/", follow=True
        ).content.decode(),
        "admin row": site_admin.get(f"/admin/common/auditevent/{row.pk}/change/").content.decode(),
    }
    for where, text in screens.items():
        assert canary not in text, where
        assert canary[-4:] in text, where  # the fingerprint is there: the screen did show the row
    assert canary not in json.dumps(list(AuditEvent.objects.values()), default=str)
    assert canary not in caplog.text
