"""EncryptedTextField and common.crypto: format, binding, errors and lookups.

Spec: ../shared/docs/encryption.md, "Tests that prove it" 3, 4, 5 and 8, plus a
property test. The canary (1, 2), rotation (6) and keyring (7) live in the
sibling test_encryption_*.py files, which import the raw-SQL helpers below.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import FieldError
from django.db import connection, models, transaction
from django.db.models import F, Q, Value
from django.test.utils import isolate_apps
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from common import crypto
from common.crypto import (
    DecryptionError,
    Keyring,
    MalformedCiphertextError,
    TamperedCiphertextError,
    UnknownKeyError,
    UnsupportedVersionError,
)
from common.fields import Ciphertext, EncryptedTextField, EncryptedValueError
from whatsapp.models import WhatsAppAccount

pytestmark = pytest.mark.django_db

ENCRYPTED_COLUMNS = ("access_token", "verify_token", "app_secret", "registration_pin")
LABEL = "whatsapp.whatsappaccount.access_token"


# -- helpers shared with the sibling files -------------------------------------


def _pk_param(model: type[models.Model], pk: object) -> object:
    # sqlite stores a UUID as 32 hex chars, PostgreSQL as uuid: let the field decide.
    return model._meta.pk.get_db_prep_value(pk, connection)


def raw_value(model: type[models.Model], pk: object, column: str) -> str | None:
    """The column exactly as the database holds it, read with a plain cursor."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {qn(column)} FROM {qn(model._meta.db_table)} WHERE {qn(model._meta.pk.column)} = %s",  # noqa: S608
            [_pk_param(model, pk)],
        )
        row = cursor.fetchone()
    assert row is not None, f"no row {pk} in {model._meta.db_table}"
    return row[0]


def raw_write(model: type[models.Model], pk: object, column: str, value: str | None) -> None:
    """Write a column behind the ORM's back (what an attacker with SQL access can do)."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {qn(model._meta.db_table)} SET {qn(column)} = %s WHERE {qn(model._meta.pk.column)} = %s",  # noqa: S608
            [value, _pk_param(model, pk)],
        )
        assert cursor.rowcount == 1


def keyring_entry(kid: str) -> bytes:
    """The master key bytes of one kid of the current settings."""
    for entry in settings.FIELD_ENCRYPTION_KEYS:
        name, _, encoded = entry.partition(":")
        if name == kid:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    raise KeyError(kid)


# -- an implementation of the format written from the spec, independent of common.crypto --


def _lp(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def _subkey(master: bytes, label: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"enc-field/v1/" + label.encode()
    ).derive(master)
    return AESGCM(derived)


def ref_encrypt(plaintext: str, *, key: bytes, kid: str, label: str, row_id: str, nonce: bytes) -> str:
    aad = b"enc:v1" + _lp(kid) + _lp(label) + _lp(row_id)
    sealed = _subkey(key, label).encrypt(nonce, plaintext.encode("utf-8"), aad)
    payload = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
    return f"enc:v1:{kid}:{payload}"


def ref_decrypt(stored: str, *, key: bytes, label: str, row_id: str) -> str:
    prefix, version, kid, payload = stored.split(":", 3)
    assert (prefix, version) == ("enc", "v1")
    assert "=" not in payload, "base64url without padding"
    blob = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    aad = b"enc:v1" + _lp(kid) + _lp(label) + _lp(row_id)
    return _subkey(key, label).decrypt(blob[:12], blob[12:], aad).decode("utf-8")


def _flip_bit(stored: str, index: int) -> str:
    prefix, payload = stored.rsplit(":", 1)
    blob = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    blob[index] ^= 0x01
    return prefix + ":" + base64.urlsafe_b64encode(bytes(blob)).rstrip(b"=").decode("ascii")


def _fresh(account: WhatsAppAccount) -> WhatsAppAccount:
    return WhatsAppAccount.objects.get(pk=account.pk)


@pytest.fixture
def account(clinic) -> WhatsAppAccount:
    return clinic.whatsapp


@pytest.fixture
def other_account(other_clinic) -> WhatsAppAccount:
    return other_clinic.whatsapp


# -- 3. fresh nonces and a known-answer vector ------------------------------------


def test_it_gives_two_rows_with_the_same_value_different_ciphertexts(account, other_account):
    account.access_token = other_account.access_token = "EAAsame-token-value-123"
    account.save()
    other_account.save()

    first = raw_value(WhatsAppAccount, account.pk, "access_token")
    second = raw_value(WhatsAppAccount, other_account.pk, "access_token")

    assert first != second
    assert first.startswith("enc:v1:test2:") and second.startswith("enc:v1:test2:")
    # Different nonces, not just different associated data.
    assert first.split(":")[3][:16] != second.split(":")[3][:16]
    assert _fresh(account).access_token == _fresh(other_account).access_token == "EAAsame-token-value-123"


def test_it_gives_the_same_row_assigned_the_same_value_twice_a_new_ciphertext(account):
    account.access_token = "EAAsame-token-value-123"
    account.save()
    first = raw_value(WhatsAppAccount, account.pk, "access_token")

    account.access_token = "EAAsame-token-value-123"
    account.save()
    second = raw_value(WhatsAppAccount, account.pk, "access_token")

    loaded = _fresh(account)
    loaded.access_token = "EAAsame-token-value-123"
    loaded.save(update_fields=["access_token"])
    third = raw_value(WhatsAppAccount, account.pk, "access_token")

    assert len({first, second, third}) == 3
    assert _fresh(account).access_token == "EAAsame-token-value-123"


def test_it_writes_back_the_same_bytes_when_a_secret_is_only_read(account):
    account.access_token = "EAAread-only-token"
    account.save()
    before = raw_value(WhatsAppAccount, account.pk, "access_token")

    loaded = _fresh(account)
    assert loaded.access_token == "EAAread-only-token"
    loaded.status = "failed"
    loaded.save()

    assert raw_value(WhatsAppAccount, account.pk, "access_token") == before


# A fixed vector. The expected ciphertext was computed with ref_encrypt above
# (AESGCM + HKDF from `cryptography`, nothing from common.crypto) and frozen here:
# if the product's format ever changes, stored secrets become unreadable.
KAT_KEY = bytes(range(32))
KAT_KID = "kat1"
KAT_LABEL = "whatsapp.whatsappaccount.access_token"
KAT_ROW_ID = "6f1c2b7e-3d4a-4b5c-9d8e-0a1b2c3d4e5f"
KAT_NONCE = bytes(range(0xA0, 0xAC))
KAT_PLAINTEXT = "EAAGm0PX4ZCpsBA-known-answer-ñ-✓"
KAT_CIPHERTEXT = (
    "enc:v1:kat1:oKGio6Slpqeoqaqr9u89b82ZXbL4W-9HCeVwPWFF2Vy8VSd40b22e61WO2l2QWA72E9R9g0agIQ17PGsvJAv"
)
KAT_KEYRING_LINE = "kat1:" + base64.urlsafe_b64encode(KAT_KEY).rstrip(b"=").decode()


def test_it_matches_the_known_answer_vector_of_an_independent_implementation():
    assert (
        ref_encrypt(
            KAT_PLAINTEXT, key=KAT_KEY, kid=KAT_KID, label=KAT_LABEL, row_id=KAT_ROW_ID, nonce=KAT_NONCE
        )
        == KAT_CIPHERTEXT
    )
    assert ref_decrypt(KAT_CIPHERTEXT, key=KAT_KEY, label=KAT_LABEL, row_id=KAT_ROW_ID) == KAT_PLAINTEXT

    keyring = Keyring.parse([KAT_KEYRING_LINE])
    assert keyring.decrypt(KAT_CIPHERTEXT, label=KAT_LABEL, row_id=KAT_ROW_ID) == KAT_PLAINTEXT


def test_it_produces_the_known_answer_ciphertext_for_the_known_nonce(monkeypatch):
    real_urandom = os.urandom
    monkeypatch.setattr(crypto.os, "urandom", lambda n: KAT_NONCE if n == 12 else real_urandom(n))

    keyring = Keyring.parse([KAT_KEYRING_LINE])
    produced = keyring.encrypt(KAT_PLAINTEXT, label=KAT_LABEL, row_id=KAT_ROW_ID)

    assert produced == KAT_CIPHERTEXT


def test_it_stores_a_ciphertext_that_plain_aesgcm_and_hkdf_decrypt(account):
    account.access_token = "EAAfield-to-reference"
    account.save()
    stored = raw_value(WhatsAppAccount, account.pk, "access_token")

    assert stored.startswith("enc:v1:test2:")
    assert (
        ref_decrypt(stored, key=keyring_entry("test2"), label=LABEL, row_id=str(account.pk))
        == "EAAfield-to-reference"
    )
    # Nonce (12) + plaintext + tag (16), base64url without padding.
    blob = base64.urlsafe_b64decode(stored.split(":")[3] + "==")
    assert len(blob) == 12 + len(b"EAAfield-to-reference") + 16


def test_it_decrypts_a_ciphertext_the_test_built_itself(account):
    built = ref_encrypt(
        "EAAbuilt-by-the-test",
        key=keyring_entry("test1"),
        kid="test1",
        label=LABEL,
        row_id=str(account.pk),
        nonce=os.urandom(12),
    )
    raw_write(WhatsAppAccount, account.pk, "access_token", built)

    assert _fresh(account).access_token == "EAAbuilt-by-the-test"


def test_it_chooses_the_key_by_kid_and_never_tries_the_others(account):
    # Sealed with test2's key but labelled test1: a keyring that tried each key would accept it.
    forged = ref_encrypt(
        "EAAwrong-key-for-kid",
        key=keyring_entry("test2"),
        kid="test1",
        label=LABEL,
        row_id=str(account.pk),
        nonce=os.urandom(12),
    )
    raw_write(WhatsAppAccount, account.pk, "access_token", forged)

    with pytest.raises(TamperedCiphertextError):
        _fresh(account).access_token  # noqa: B018


def test_it_derives_each_column_key_once_and_reuses_it(account):
    account.access_token = "EAAwarm-the-cache"
    account.save()
    before = crypto._column_cipher.cache_info()

    for n in range(5):
        account.access_token = f"EAAhot-path-{n}"
        account.save(update_fields=["access_token"])
        assert _fresh(account).access_token == f"EAAhot-path-{n}"

    after = crypto._column_cipher.cache_info()
    assert after.misses == before.misses
    assert after.hits >= before.hits + 10


# -- None, "" and look-alikes --------------------------------------------------


def test_it_stores_none_as_null_and_the_empty_string_encrypted(account):
    account.access_token = None
    account.app_secret = ""
    account.save()

    assert raw_value(WhatsAppAccount, account.pk, "access_token") is None
    assert raw_value(WhatsAppAccount, account.pk, "app_secret").startswith("enc:v1:test2:")
    loaded = _fresh(account)
    assert loaded.access_token is None
    assert loaded.app_secret == ""


def test_it_encrypts_a_plaintext_that_looks_like_ciphertext(account, other_account):
    other_account.access_token = "EAAreal-secret-of-other"
    other_account.save()
    lookalike = raw_value(WhatsAppAccount, other_account.pk, "access_token")

    account.access_token = lookalike  # a str from a form or the API, not a Ciphertext
    account.save()

    stored = raw_value(WhatsAppAccount, account.pk, "access_token")
    assert stored != lookalike
    assert _fresh(account).access_token == lookalike


# -- 4. each failure has its own clear error; nothing returns ciphertext ---------------


def _assert_names_where_not_what(exc: DecryptionError, account: WhatsAppAccount, kid: str, *secrets: str):
    message = str(exc)
    assert "WhatsAppAccount" in message
    assert "access_token" in message
    assert f"pk={account.pk}" in message
    assert f"kid={kid}" in message
    for secret in secrets:
        assert secret not in message
        assert secret not in repr(exc)


def _stored_secret(account: WhatsAppAccount, value: str = "EAAsecret-plaintext-value-42") -> str:
    account.access_token = value
    account.save()
    return raw_value(WhatsAppAccount, account.pk, "access_token")


@pytest.mark.parametrize("where", [0, 11, 12, -17, -1], ids=["nonce", "nonce-end", "body", "tag", "tag-end"])
def test_it_raises_tampered_ciphertext_error_for_a_flipped_bit(account, where):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Ciphertext(_flip_bit(stored, where)))
    loaded = _fresh(account)

    with pytest.raises(TamperedCiphertextError) as excinfo:
        loaded.access_token  # noqa: B018

    _assert_names_where_not_what(excinfo.value, account, "test2", "EAAsecret-plaintext-value-42")


def test_it_raises_unknown_key_error_for_an_unknown_kid(account):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(
        access_token=Ciphertext(stored.replace("enc:v1:test2:", "enc:v1:gone2025:", 1))
    )

    with pytest.raises(UnknownKeyError) as excinfo:
        _fresh(account).access_token  # noqa: B018

    _assert_names_where_not_what(excinfo.value, account, "gone2025", "EAAsecret-plaintext-value-42")


@pytest.mark.parametrize(
    "payload",
    ["", "!!!!", "QUJD", "A", "enc:v1:test2:" + "x" * 5, "too:many:colons:in:payload"],
    ids=["empty", "not-base64", "too-short", "bad-length", "nested", "colons"],
)
def test_it_raises_malformed_ciphertext_error_for_a_malformed_payload(account, payload):
    _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Ciphertext(f"enc:v1:test2:{payload}"))

    with pytest.raises(MalformedCiphertextError) as excinfo:
        _fresh(account).access_token  # noqa: B018

    _assert_names_where_not_what(excinfo.value, account, "test2", "EAAsecret-plaintext-value-42")


@pytest.mark.parametrize(
    "stored", ["EAAlegacy-plaintext-token", "enc", "enc:v1", "enc:v1:test2", "xyz:v1:a:b"]
)
def test_it_raises_malformed_ciphertext_error_for_a_value_that_is_not_enc_v1(account, stored):
    raw_write(WhatsAppAccount, account.pk, "access_token", stored)

    with pytest.raises(MalformedCiphertextError) as excinfo:
        _fresh(account).access_token  # noqa: B018

    message = str(excinfo.value)
    assert "WhatsAppAccount.access_token" in message and f"pk={account.pk}" in message
    assert "kid=" in message
    assert "EAAlegacy-plaintext-token" not in message


def test_it_raises_malformed_ciphertext_error_for_a_truncated_payload(account):
    stored = _stored_secret(account)
    prefix, payload = stored.rsplit(":", 1)
    # Shorter than nonce + tag.
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Ciphertext(prefix + ":" + payload[:30]))

    with pytest.raises(MalformedCiphertextError) as excinfo:
        _fresh(account).access_token  # noqa: B018

    _assert_names_where_not_what(excinfo.value, account, "test2", "EAAsecret-plaintext-value-42")


def test_it_raises_unsupported_version_error_for_an_unknown_version(account):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(
        access_token=Ciphertext(stored.replace("enc:v1:", "enc:v2:", 1))
    )

    with pytest.raises(UnsupportedVersionError) as excinfo:
        _fresh(account).access_token  # noqa: B018

    _assert_names_where_not_what(excinfo.value, account, "test2", "EAAsecret-plaintext-value-42")


def test_it_gives_each_failure_its_own_error_class():
    classes = [MalformedCiphertextError, UnsupportedVersionError, UnknownKeyError, TamperedCiphertextError]
    assert len(set(classes)) == 4
    for cls in classes:
        assert issubclass(cls, DecryptionError)
        for other in classes:
            assert cls is other or not issubclass(cls, other)


def test_it_never_returns_the_ciphertext_as_the_value(account):
    stored = _stored_secret(account)
    tampered = _flip_bit(stored, 20)
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Ciphertext(tampered))
    loaded = _fresh(account)

    for _attempt in range(2):  # the second read fails too: no cached fallback
        with pytest.raises(TamperedCiphertextError):
            loaded.access_token  # noqa: B018
    with pytest.raises(TamperedCiphertextError):
        loaded.masked_access_token  # noqa: B018
    # "Is a token stored?" reads no plaintext, so it does not decrypt (a status poll decrypts
    # nothing); the first use of the token fails as above.
    assert loaded.has_access_token is True
    with pytest.raises(TamperedCiphertextError):
        loaded.access_token  # noqa: B018
    # The other, intact secrets of the row are still readable.
    assert loaded.verify_token and not loaded.verify_token.startswith("enc:")
    # Ciphertext itself never shows its content in a repr.
    assert tampered not in repr(Ciphertext(tampered))


def test_it_fails_closed_in_the_api_when_the_stored_token_cannot_be_decrypted(
    account, clinic_admin, api_client
):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Ciphertext(_flip_bit(stored, 20)))
    client = api_client(clinic_admin)
    client.raise_request_exception = False

    response = client.get("/api/clinics/settings/")

    assert response.status_code == 500
    body = response.content.decode()
    assert stored.split(":")[3][:20] not in body
    assert "enc:v1" not in body


# -- 5. a ciphertext copied to another row or column fails ----------------------------


def test_it_refuses_a_ciphertext_copied_to_another_clinics_row(account, other_account):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=other_account.pk).update(access_token=Ciphertext(stored))

    with pytest.raises(TamperedCiphertextError) as excinfo:
        _fresh(other_account).access_token  # noqa: B018

    assert f"pk={other_account.pk}" in str(excinfo.value)
    assert _fresh(account).access_token == "EAAsecret-plaintext-value-42"


def test_it_refuses_a_ciphertext_copied_to_another_row_with_raw_sql(account, other_account):
    stored = _stored_secret(account)
    raw_write(WhatsAppAccount, other_account.pk, "access_token", stored)

    with pytest.raises(TamperedCiphertextError):
        _fresh(other_account).access_token  # noqa: B018


@pytest.mark.parametrize("column", ["verify_token", "app_secret", "registration_pin"])
def test_it_refuses_a_ciphertext_copied_to_another_column(account, column):
    stored = _stored_secret(account)
    WhatsAppAccount.objects.filter(pk=account.pk).update(**{column: Ciphertext(stored)})

    with pytest.raises(TamperedCiphertextError) as excinfo:
        getattr(_fresh(account), column)

    assert f"WhatsAppAccount.{column}" in str(excinfo.value)


def test_it_refuses_a_column_copied_with_an_f_expression(account):
    _stored_secret(account)
    # The queryset refuses the copy outright; a copy made under it (the manager
    # bypassed) would still fail to decrypt, since the label is in the associated data.
    with pytest.raises(EncryptedValueError):
        WhatsAppAccount.objects.filter(pk=account.pk).update(app_secret=F("access_token"))
    models.QuerySet(WhatsAppAccount).filter(pk=account.pk).update(app_secret=F("access_token"))

    with pytest.raises(TamperedCiphertextError):
        _fresh(account).app_secret  # noqa: B018


def test_it_refuses_a_ciphertext_of_the_same_row_under_another_label(account):
    # Same key, kid and row; only the column in the label differs.
    forged = ref_encrypt(
        "EAAother-label",
        key=keyring_entry("test2"),
        kid="test2",
        label="whatsapp.whatsappaccount.app_secret",
        row_id=str(account.pk),
        nonce=os.urandom(12),
    )
    raw_write(WhatsAppAccount, account.pk, "access_token", forged)

    with pytest.raises(TamperedCiphertextError):
        _fresh(account).access_token  # noqa: B018


# -- 8. lookups, updates and refused options ---------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        lambda qs: qs.filter(access_token="x"),
        lambda qs: qs.filter(access_token__exact="x"),
        lambda qs: qs.filter(access_token__iexact="x"),
        lambda qs: qs.filter(access_token__contains="x"),
        lambda qs: qs.filter(access_token__icontains="x"),
        lambda qs: qs.filter(access_token__startswith="EAA"),
        lambda qs: qs.filter(access_token__endswith="x"),
        lambda qs: qs.filter(access_token__in=["x", "y"]),
        lambda qs: qs.filter(access_token__gt="x"),
        lambda qs: qs.filter(access_token__regex="^EAA"),
        lambda qs: qs.filter(access_token__lower="x"),
        lambda qs: qs.exclude(access_token="x"),
        lambda qs: qs.filter(Q(verify_token="x") | Q(status="active")),
        lambda qs: qs.get(app_secret="x"),
        lambda qs: qs.filter(registration_pin__in=["123456"]),
    ],
    ids=[
        "filter",
        "exact",
        "iexact",
        "contains",
        "icontains",
        "startswith",
        "endswith",
        "in",
        "gt",
        "regex",
        "transform",
        "exclude",
        "q-object",
        "get",
        "pin-in",
    ],
)
def test_it_raises_field_error_for_every_lookup_but_isnull(account, query):
    with pytest.raises(FieldError):
        list(query(WhatsAppAccount.objects.all()))


def test_it_supports_the_isnull_lookup(account, other_account):
    account.access_token = "EAAhas-a-token"
    account.save()

    assert list(WhatsAppAccount.objects.filter(access_token__isnull=False)) == [account]
    assert list(WhatsAppAccount.objects.filter(access_token__isnull=True)) == [other_account]
    assert WhatsAppAccount.objects.exclude(access_token__isnull=True).count() == 1


def test_it_refuses_a_plaintext_update_so_it_never_reaches_sql(account):
    account.access_token = "EAAoriginal"
    account.save()
    before = raw_value(WhatsAppAccount, account.pk, "access_token")

    # A savepoint, so the failed statement does not poison the test's transaction.
    with pytest.raises(EncryptedValueError), transaction.atomic():
        WhatsAppAccount.objects.filter(pk=account.pk).update(access_token="EAAplain-through-update")

    assert raw_value(WhatsAppAccount, account.pk, "access_token") == before
    # NULL is not a secret: clearing through update() is allowed.
    WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=None)
    assert raw_value(WhatsAppAccount, account.pk, "access_token") is None


def test_it_refuses_a_plaintext_update_wrapped_in_a_value_expression(account):
    try:
        with transaction.atomic():
            WhatsAppAccount.objects.filter(pk=account.pk).update(access_token=Value("EAAplain-through-value"))
    except EncryptedValueError:
        pass  # refused: the fix

    stored = raw_value(WhatsAppAccount, account.pk, "access_token")
    assert stored is None or "EAAplain-through-value" not in stored


@isolate_apps("clinics")
@pytest.mark.parametrize("option", ["unique", "db_index", "primary_key"])
def test_it_reports_clinics_e010_for_an_indexed_or_unique_field(option):
    class ThrowawaySecretHolder(models.Model):
        id = models.UUIDField(primary_key=option != "primary_key", default=uuid.uuid4)
        secret = EncryptedTextField(**{option: True})

        class Meta:
            app_label = "clinics"

        def __str__(self) -> str:
            return "throwaway"

    errors = ThrowawaySecretHolder._meta.get_field("secret").check()

    e010 = [error for error in errors if error.id == "clinics.E010"]
    assert len(e010) == 1
    assert option in e010[0].msg


@isolate_apps("clinics")
def test_it_reports_no_e010_for_a_plain_encrypted_field():
    class ThrowawayPlainHolder(models.Model):
        id = models.UUIDField(primary_key=True, default=uuid.uuid4)
        secret = EncryptedTextField(null=True, blank=True)

        class Meta:
            app_label = "clinics"

        def __str__(self) -> str:
            return "throwaway"

    assert [e.id for e in ThrowawayPlainHolder._meta.get_field("secret").check()] == []


def test_it_keeps_the_secret_readable_when_an_instance_is_copied_with_the_orm(account, other_clinic):
    account.access_token = "EAAcopied-with-the-orm"
    account.save()
    WhatsAppAccount.objects.filter(clinic=other_clinic).delete()
    copy = _fresh(account)
    assert copy.access_token == "EAAcopied-with-the-orm"

    # Django's documented way to copy an instance.
    copy.pk = None
    copy._state.adding = True
    copy.clinic = other_clinic
    copy.save()

    assert copy.pk != account.pk
    assert _fresh(copy).access_token == "EAAcopied-with-the-orm"


def test_it_keeps_keys_out_of_deconstruct():
    for column in ENCRYPTED_COLUMNS:
        _name, path, args, kwargs = WhatsAppAccount._meta.get_field(column).deconstruct()
        assert path == "common.fields.EncryptedTextField"
        text = repr((args, kwargs))
        for entry in settings.FIELD_ENCRYPTION_KEYS:
            assert entry.partition(":")[2] not in text


# -- property: any text round-trips and stays bound to its row and column ------------------


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(secret=st.text())
def test_it_round_trips_any_text_bound_to_row_and_column(account, other_account, secret):
    account.access_token = secret
    account.save()

    stored = raw_value(WhatsAppAccount, account.pk, "access_token")
    assert stored.startswith("enc:v1:test2:")
    assert stored.isascii()
    if len(secret) >= 4:
        assert secret not in stored
    assert _fresh(account).access_token == secret
    assert ref_decrypt(stored, key=keyring_entry("test2"), label=LABEL, row_id=str(account.pk)) == secret

    WhatsAppAccount.objects.filter(pk=other_account.pk).update(access_token=Ciphertext(stored))
    WhatsAppAccount.objects.filter(pk=account.pk).update(app_secret=Ciphertext(stored))
    with pytest.raises(TamperedCiphertextError):
        _fresh(other_account).access_token  # noqa: B018
    with pytest.raises(TamperedCiphertextError):
        _fresh(account).app_secret  # noqa: B018
    with pytest.raises(InvalidTag):
        ref_decrypt(stored, key=keyring_entry("test2"), label=LABEL, row_id=str(other_account.pk))


def test_it_tells_whether_a_secret_is_set_without_decrypting(account, monkeypatch):
    account.access_token = ""
    account.app_secret = None
    account.save()
    loaded = _fresh(account)
    assert isinstance(loaded.__dict__["access_token"], Ciphertext)  # "" is encrypted like any text
    decrypted: list[str] = []
    original = Keyring.decrypt

    def counting(self, stored, *, label, row_id):
        decrypted.append(label)
        return original(self, stored, label=label, row_id=row_id)

    monkeypatch.setattr(Keyring, "decrypt", counting)

    def is_set(name: str) -> bool:
        field = WhatsAppAccount._meta.get_field(name)
        assert isinstance(field, EncryptedTextField)
        return field.is_set(loaded)

    assert (is_set("access_token"), is_set("app_secret"), is_set("verify_token")) == (False, False, True)
    assert loaded.has_access_token is False
    assert decrypted == []
    # Once read, the answer comes from the plaintext.
    assert loaded.verify_token and is_set("verify_token")
    assert decrypted == ["whatsapp.whatsappaccount.verify_token"]
