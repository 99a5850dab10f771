"""Standard Webhooks signatures, checked by a verifier written here from the spec alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from messaging.signing import new_signing_secret, signature_header, webhook_headers

BODY = '{"type":"message.received","text":"¿Mañana a las 9?"}'.encode()


def spec_verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: int = 300) -> bool:
    """The receiving side, from github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    to_sign = f"{msg_id}.{timestamp}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    for versioned in headers["webhook-signature"].split(" "):
        version, _, sig = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def test_a_new_secret_is_whsec_and_32_random_bytes():
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert new_signing_secret() != secret


def test_the_headers_verify_with_the_specs_algorithm():
    secret = new_signing_secret()
    now = int(time.time())
    headers = webhook_headers([secret], webhook_id="evt_abc", timestamp=now, body=BODY)

    assert headers["webhook-id"] == "evt_abc"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert spec_verify(secret, headers, BODY)
    assert not spec_verify(secret, headers, BODY + b" ")
    assert not spec_verify(new_signing_secret(), headers, BODY)
    assert not spec_verify(secret, {**headers, "webhook-id": "evt_other"}, BODY)


def test_a_known_answer_from_the_specs_example():
    # The example in the Standard Webhooks spec and its reference libraries' tests.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    header = signature_header(
        [secret],
        webhook_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_during_a_rotation_both_secrets_sign_and_either_verifies():
    old, new = new_signing_secret(), new_signing_secret()
    headers = webhook_headers([new, old], webhook_id="evt_rot", timestamp=int(time.time()), body=BODY)

    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert spec_verify(new, headers, BODY)
    assert spec_verify(old, headers, BODY)


def test_no_secret_or_a_foreign_one_is_refused():
    with pytest.raises(ValueError, match="No signing secret"):
        signature_header([], webhook_id="evt", timestamp=1, body=b"{}")
    with pytest.raises(ValueError, match="whsec_"):
        signature_header(["sk_live_abc"], webhook_id="evt", timestamp=1, body=b"{}")
