"""What a token-authenticated request decrypts: only the secrets its answer shows.

Token authentication loads the token with its user, clinic and WhatsApp connection;
the connection's secrets stay ciphertext until the answer shows one, so a request
that shows none (a status poll, a sign-out) decrypts none.
"""

from __future__ import annotations

import pytest

from clinics import services
from clinics.models import ApiToken
from common.crypto import Keyring
from common.masking import mask_secret
from common.models import AuditEvent

from .factories import LONG_TOKEN, PROFILE_URL, SETTINGS_URL, fill_active_connection

STATUS_URL = "/api/clinics/whatsapp/status/"


@pytest.fixture
def decrypted(monkeypatch):
    """The labels of every secret decrypted while the test runs (the real decryption still happens)."""
    labels: list[str] = []
    original = Keyring.decrypt

    def counting(self, stored, *, label, row_id):
        labels.append(label.rsplit(".", 1)[-1])
        return original(self, stored, label=label, row_id=row_id)

    monkeypatch.setattr(Keyring, "decrypt", counting)
    return labels


@pytest.fixture
def connected(clinic):
    return fill_active_connection(clinic)


@pytest.fixture
def token_client(api_client, clinic_admin, connected):
    client = api_client(clinic_admin)
    client.get(PROFILE_URL)  # a token's use is written at most once a minute: this request wrote it
    return client


def test_a_profile_read_decrypts_nothing(token_client, decrypted):
    response = token_client.get(PROFILE_URL)

    assert response.status_code == 200
    assert response.json()["whatsapp_phone_number_id"] == "123456789"
    # The body shows the number's Meta ids, none of its secrets.
    assert decrypted == []


def test_a_settings_read_decrypts_only_what_it_shows(token_client, decrypted):
    response = token_client.get(SETTINGS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["whatsapp_access_token"] == mask_secret(LONG_TOKEN)
    assert body["whatsapp_verify_token"] == "verify_abc123"
    # The token is decrypted to be masked, the verify token is shown; the app secret and PIN are not read.
    assert sorted(decrypted) == ["access_token", "verify_token"]


def test_a_status_poll_decrypts_nothing(token_client, decrypted):
    response = token_client.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "active", "number": "+50377654321", "detail": None}
    assert decrypted == []


def test_signing_out_decrypts_nothing_and_records_the_revocation(token_client, clinic_admin, decrypted):
    response = token_client.post("/api/auth/logout/")

    assert response.status_code == 204
    assert not ApiToken.objects.filter(user=clinic_admin).exists()
    revoked = AuditEvent.objects.get(action="api_token.revoked")
    assert (revoked.clinic_id, revoked.door, revoked.actor) == (
        clinic_admin.clinic_id,
        "api",
        clinic_admin.email,
    )
    assert decrypted == []


def test_a_revoked_token_is_refused_on_the_next_request(token_client, clinic_admin):
    assert token_client.get(STATUS_URL).status_code == 200
    services.api_tokens_revoke(user=clinic_admin)

    assert token_client.get(STATUS_URL).status_code == 401
