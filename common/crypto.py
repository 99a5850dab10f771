"""AES-256-GCM for secrets at rest, with a keyring chosen by key id.

Format: ``enc:v1:<kid>:<base64url, no padding, of nonce[12] || ciphertext || tag[16]>``.
Each column gets its own subkey (HKDF-SHA256 over the master key, info names the
column) and the associated data binds a ciphertext to its key id, column and row,
so a value copied to another row, column or clinic fails to decrypt.
See ``../shared/docs/encryption.md`` for the design and README for operations.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.exceptions import ImproperlyConfigured

PREFIX = "enc"
VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
KID_RE = re.compile(r"^[a-z0-9_-]{1,16}$")


class KeyringError(ImproperlyConfigured):
    """FIELD_ENCRYPTION_KEYS is missing or malformed. Never carries key material."""


class EncryptionError(Exception):
    """Base of every failure to encrypt or decrypt a field value."""


class DecryptionError(EncryptionError):
    """A stored value could not be decrypted. Names where, never what."""

    reason = "cannot be decrypted"

    def __init__(self, *, label: str = "", row_id: str = "", kid: str = "", detail: str = "") -> None:
        self.label = label
        self.row_id = row_id
        self.kid = kid
        where = f"{label or 'encrypted value'} (pk={row_id or '?'}, kid={kid or '?'})"
        super().__init__(f"{where} {self.reason}" + (f": {detail}" if detail else ""))


class MalformedCiphertextError(DecryptionError):
    reason = "is not a well-formed enc:v1 value"


class UnsupportedVersionError(DecryptionError):
    reason = "uses an unsupported format version"


class UnknownKeyError(DecryptionError):
    reason = "was encrypted with a key id that is not in FIELD_ENCRYPTION_KEYS"


class TamperedCiphertextError(DecryptionError):
    reason = (
        "failed authentication: the value was altered, copied from another row or column, "
        "or the key for its kid is wrong"
    )


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _length_prefixed(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def associated_data(kid: str, label: str, row_id: str) -> bytes:
    return b"enc:v1" + _length_prefixed(kid) + _length_prefixed(label) + _length_prefixed(row_id)


def generate_key_line(kid: str) -> str:
    """A fresh `kid:key` entry for FIELD_ENCRYPTION_KEYS."""
    if not KID_RE.match(kid):
        raise KeyringError("A key id is 1-16 of a-z, 0-9, '_' and '-'.")
    return f"{kid}:{_b64encode(os.urandom(KEY_BYTES))}"


@dataclass(frozen=True)
class Keyring:
    """Master keys by kid; the first one encrypts, every one decrypts."""

    primary_kid: str
    keys: dict[str, bytes] = field(repr=False)

    def __repr__(self) -> str:  # keys never appear in a repr, a log or a traceback
        return f"Keyring(primary_kid={self.primary_kid!r}, kids={list(self.keys)!r})"

    @classmethod
    def parse(cls, entries: list[str] | str) -> Keyring:
        if isinstance(entries, str):
            entries = entries.split(",")
        entries = [e.strip() for e in entries if e.strip()]
        if not entries:
            raise KeyringError(
                "FIELD_ENCRYPTION_KEYS is empty: set it to 'kid:key' pairs "
                "(python manage.py generate_encryption_key prints one)."
            )
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            kid, sep, encoded = entry.partition(":")
            if not sep or not KID_RE.match(kid):
                raise KeyringError(
                    f"FIELD_ENCRYPTION_KEYS entry {position} must be 'kid:key' with a kid of "
                    "1-16 of a-z, 0-9, '_' and '-'."
                )
            try:
                key = _b64decode(encoded)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != KEY_BYTES or _b64encode(key) != encoded:
                raise KeyringError(
                    f"FIELD_ENCRYPTION_KEYS key '{kid}' must be base64url of exactly 32 bytes."
                )
            if kid in keys:
                raise KeyringError(f"FIELD_ENCRYPTION_KEYS lists key id '{kid}' twice.")
            if key in keys.values():
                raise KeyringError(f"FIELD_ENCRYPTION_KEYS key '{kid}' repeats another kid's key.")
            keys[kid] = key
        return cls(primary_kid=next(iter(keys)), keys=keys)

    def _aead(self, kid: str, label: str) -> AESGCM:
        return _column_cipher(self.keys[kid], label)

    def encrypt(self, plaintext: str, *, label: str, row_id: str) -> str:
        kid = self.primary_kid
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead(kid, label).encrypt(
            nonce, plaintext.encode("utf-8"), associated_data(kid, label, row_id)
        )
        return f"{PREFIX}:{VERSION}:{kid}:{_b64encode(nonce + sealed)}"

    def decrypt(self, stored: str, *, label: str, row_id: str) -> str:
        parts = stored.split(":", 3)
        if len(parts) != 4 or parts[0] != PREFIX:
            raise MalformedCiphertextError(label=label, row_id=row_id)
        _, version, kid, payload = parts
        if version != VERSION:
            raise UnsupportedVersionError(label=label, row_id=row_id, kid=kid, detail=version[:8])
        if kid not in self.keys:
            raise UnknownKeyError(label=label, row_id=row_id, kid=kid)
        try:
            blob = _b64decode(payload)
        except (binascii.Error, ValueError):
            raise MalformedCiphertextError(label=label, row_id=row_id, kid=kid) from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise MalformedCiphertextError(label=label, row_id=row_id, kid=kid)
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            plain = self._aead(kid, label).decrypt(nonce, sealed, associated_data(kid, label, row_id))
        except InvalidTag:
            raise TamperedCiphertextError(label=label, row_id=row_id, kid=kid) from None
        return plain.decode("utf-8")

    @staticmethod
    def seals_empty_text(stored: str) -> bool:
        """Whether `stored` is the ciphertext of "" (AES-GCM keeps the length), without a key.

        Ciphertext already shows the secret's length to anyone who reads the column,
        so this tells nothing more; it lets "is a secret set?" skip a decryption.
        """
        parts = stored.split(":", 3)
        if len(parts) != 4 or parts[0] != PREFIX:
            return False
        try:
            return len(_b64decode(parts[3])) == NONCE_BYTES + TAG_BYTES
        except (binascii.Error, ValueError):
            return False

    @staticmethod
    def kid_of(stored: str) -> str | None:
        parts = stored.split(":", 3)
        if len(parts) == 4 and parts[0] == PREFIX:
            return parts[2]
        return None


@lru_cache(maxsize=256)
def _column_cipher(master_key: bytes, label: str) -> AESGCM:
    # Derived once per process and column: HKDF on every request would cost throughput.
    subkey = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=b"enc-field/v1/" + label.encode("utf-8"),
    ).derive(master_key)
    return AESGCM(subkey)


_keyring_lock = threading.Lock()
_keyring_cache: dict[tuple[str, ...], Keyring] = {}


def get_keyring() -> Keyring:
    """The keyring of the current settings (cached per distinct setting value)."""
    from django.conf import settings

    entries = tuple(getattr(settings, "FIELD_ENCRYPTION_KEYS", ()) or ())
    keyring = _keyring_cache.get(entries)
    if keyring is None:
        with _keyring_lock:
            keyring = _keyring_cache.get(entries) or Keyring.parse(list(entries))
            _keyring_cache[entries] = keyring
    return keyring
