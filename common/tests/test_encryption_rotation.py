"""Key rotation without downtime: old keys read, the first key writes, the command converts.

Spec: ../shared/docs/encryption.md, "Rotation without downtime" and "Tests that
prove it" 6. Every row in these tests is created inside the override, so the
keyring of the test settings (test2, test1) never meets the generated keys.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from clinics import services
from common.crypto import UnknownKeyError, generate_key_line
from common.fields import EncryptedTextField
from common.management.commands.rotate_encryption_keys import encrypted_fields
from common.tests.test_encryption import ENCRYPTED_COLUMNS, raw_value
from whatsapp.models import WhatsAppAccount

pytestmark = pytest.mark.django_db


@pytest.fixture
def old_key() -> str:
    return generate_key_line("old2025")


@pytest.fixture
def new_key() -> str:
    return generate_key_line("new2026")


def _raw_rows() -> dict[tuple[str, str], str | None]:
    return {
        (str(pk), column): raw_value(WhatsAppAccount, pk, column)
        for pk in WhatsAppAccount.objects.order_by("pk").values_list("pk", flat=True)
        for column in ENCRYPTED_COLUMNS
    }


def _plaintexts() -> dict[tuple[str, str], str | None]:
    return {
        (str(account.pk), column): getattr(account, column)
        for account in WhatsAppAccount.objects.order_by("pk")
        for column in ENCRYPTED_COLUMNS
    }


def _rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_encryption_keys", *args, stdout=out)
    return out.getvalue()


def _make_clinics(count: int) -> list[WhatsAppAccount]:
    accounts = []
    for n in range(count):
        clinic = services.clinic_create(name=f"Clínica Rotación {n}")
        account = clinic.whatsapp
        account.access_token = f"EAArotate-access-{n}"
        account.app_secret = f"app-secret-{n}"
        if n % 2 == 0:  # some NULLs too: they stay NULL
            account.registration_pin = f"{n:06d}"
        account.save()
        accounts.append(account)
    return accounts


def test_it_reads_with_a_key_added_last_and_still_writes_with_the_first(old_key, new_key):
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        [account] = _make_clinics(1)
        before = _raw_rows()

    # Step 1: the new key is added at the end everywhere; it decrypts but does not encrypt yet.
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key, new_key]):
        assert WhatsAppAccount.objects.get(pk=account.pk).access_token == "EAArotate-access-0"
        account.access_token = "EAAwritten-during-step-1"
        account.save()
        assert raw_value(WhatsAppAccount, account.pk, "access_token").startswith("enc:v1:old2025:")
        assert _raw_rows()[(str(account.pk), "app_secret")] == before[(str(account.pk), "app_secret")]


def test_it_rotates_every_row_to_the_first_key_and_a_second_run_changes_nothing(old_key, new_key):
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        accounts = _make_clinics(3)
        before_raw = _raw_rows()
        before_plain = _plaintexts()
    stored_before = [value for value in before_raw.values() if value is not None]
    assert len(stored_before) == 3 * 3 + 2  # access, app secret, verify token; 2 PINs
    assert all(value.startswith("enc:v1:old2025:") for value in stored_before)

    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        # Step 2: the old key still reads, new writes use the first key.
        assert _plaintexts() == before_plain
        fresh = WhatsAppAccount.objects.get(pk=accounts[0].pk)
        fresh.access_token = "EAAwritten-after-step-2"
        fresh.save()
        written = raw_value(WhatsAppAccount, fresh.pk, "access_token")
        assert written.startswith("enc:v1:new2026:")
        before_plain[(str(fresh.pk), "access_token")] = "EAAwritten-after-step-2"

        # --check fails while any value uses another key, and changes nothing.
        with pytest.raises(CommandError) as excinfo:
            _rotate("--check")
        assert "10 value(s)" in str(excinfo.value)
        assert excinfo.value.returncode == 1  # manage.py exits 1
        assert _raw_rows()[(str(fresh.pk), "app_secret")] == before_raw[(str(fresh.pk), "app_secret")]

        # Step 3: rotate, in small batches to cross batch boundaries.
        output = _rotate("--batch-size", "2")
        assert "Re-encrypted 10 value(s) with key 'new2026'" in output

        after_raw = _raw_rows()
        for (pk, column), value in after_raw.items():
            if before_raw[(pk, column)] is None:
                assert value is None, (pk, column)
                continue
            assert value.startswith("enc:v1:new2026:"), (pk, column)
            if (pk, column) != (str(fresh.pk), "access_token"):
                assert value != before_raw[(pk, column)]
        # A value already under the first key is left alone.
        assert after_raw[(str(fresh.pk), "access_token")] == written
        assert _plaintexts() == before_plain

        # A second run changes nothing, byte for byte.
        second = _rotate()
        assert "Re-encrypted 0 value(s)" in second
        assert _raw_rows() == after_raw

        # --check passes now.
        assert "All values use key 'new2026'" in _rotate("--check")

    # Step 4: the old key can go; everything still reads.
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert _plaintexts() == before_plain


def test_it_needs_the_old_key_until_rotation_is_done(old_key, new_key):
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        [account] = _make_clinics(1)

    # Dropping the old key before rotating makes its values unreadable, loudly.
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        with pytest.raises(UnknownKeyError) as excinfo:
            WhatsAppAccount.objects.get(pk=account.pk).access_token  # noqa: B018
        assert "kid=old2025" in str(excinfo.value)
        with pytest.raises(CommandError):
            _rotate("--check")


def test_it_reaches_every_model_with_an_encrypted_field():
    from django.apps import apps

    expected = {
        model: [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        for model in apps.get_models()
    }
    expected = {model: names for model, names in expected.items() if names}
    found = {model: [f.name for f in fields] for model, fields in encrypted_fields()}

    assert found == expected
    assert found[WhatsAppAccount] == list(ENCRYPTED_COLUMNS)
