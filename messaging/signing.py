"""Standard Webhooks v1 signatures (github.com/standard-webhooks/standard-webhooks, spec).

The secret is `whsec_` + base64 of 32 random bytes; the HMAC key is those bytes.
A signature is `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, and
during a rotation the header carries one per secret, space-separated, so a bot
that still holds the previous secret keeps verifying.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("A signing secret starts with whsec_.")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def signature(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the body as sent."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: list[str], *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret, space-separated."""
    if not secrets_:
        raise ValueError("No signing secret.")
    return " ".join(signature(s, webhook_id=webhook_id, timestamp=timestamp, body=body) for s in secrets_)


def webhook_headers(secrets_: list[str], *, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (the timestamp is fresh on each)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets_, webhook_id=webhook_id, timestamp=timestamp, body=body
        ),
    }
