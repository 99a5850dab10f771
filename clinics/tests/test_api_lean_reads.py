"""What a token-authenticated request loads and decrypts (issue 13).

Token authentication loads the token, its user and the clinic in one query. The
endpoints whose answer shows the WhatsApp connection join its row into that same
query (measured cheaper than a second query); its secrets stay ciphertext until
the answer shows one, and a request that shows none (a status poll) decrypts none.
"""

from __future__ import annotations

import pytest

from clinics.models import ApiToken
from common.crypto import Keyring
from common.masking import mask_secret

from .factories import LONG_TOKEN, PROFILE_URL, SETTINGS_URL, fill_active_connection

STATUS_URL = "/api/clinics/whatsapp/status/"
WHATSAPP_TABLE = "whatsapp_whatsappaccount"


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


def _one_joined_query(captured) -> str:
    (only,) = captured.captured_queries
    assert '"clinics_apitoken"' in only["sql"] and '"clinics_clinic"' in only["sql"]
    assert WHATSAPP_TABLE in only["sql"]
    return only["sql"]


def test_a_profile_read_loads_the_connection_but_decrypts_nothing(
    token_client, django_assert_num_queries, decrypted
):
    with django_assert_num_queries(1) as captured:
        response = token_client.get(PROFILE_URL)

    assert response.status_code == 200
    assert response.json()["whatsapp_phone_number_id"] == "123456789"
    _one_joined_query(captured)
    # The body shows the number's Meta ids, none of its secrets.
    assert decrypted == []


def test_a_settings_read_decrypts_only_what_it_shows(token_client, django_assert_num_queries, decrypted):
    with django_assert_num_queries(1) as captured:
        response = token_client.get(SETTINGS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["whatsapp_access_token"] == mask_secret(LONG_TOKEN)
    assert body["whatsapp_verify_token"] == "verify_abc123"
    _one_joined_query(captured)
    # The token is decrypted to be masked, the verify token is shown; the app secret and PIN are not read.
    assert sorted(decrypted) == ["access_token", "verify_token"]


def test_a_status_poll_decrypts_nothing(token_client, django_assert_num_queries, decrypted):
    with django_assert_num_queries(1) as captured:
        response = token_client.get(STATUS_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "active", "number": "+50377654321", "detail": None}
    _one_joined_query(captured)
    assert decrypted == []


def test_signing_out_loads_no_connection(token_client, django_assert_num_queries, decrypted):
    # The token's lookup, then its revocation with its audit row in one transaction:
    # savepoint, lock the chain head, insert the row, move the head, delete, release.
    with django_assert_num_queries(7) as captured:
        response = token_client.post("/api/auth/logout/")

    assert response.status_code == 204
    lookup = captured.captured_queries[0]
    assert '"clinics_apitoken"' in lookup["sql"] and '"clinics_clinic"' in lookup["sql"]
    statements = [query["sql"] for query in captured.captured_queries]
    assert not [sql for sql in statements if WHATSAPP_TABLE in sql]
    assert [sql for sql in statements if sql.startswith("DELETE") and "clinics_apitoken" in sql]
    assert [sql for sql in statements if sql.startswith("INSERT") and "common_auditevent" in sql]
    assert decrypted == []


def test_a_revoked_token_is_refused_on_the_next_request(token_client, clinic_admin):
    assert token_client.get(STATUS_URL).status_code == 200
    ApiToken.objects.filter(user=clinic_admin).delete()

    assert token_client.get(STATUS_URL).status_code == 401
