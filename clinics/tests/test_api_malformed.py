"""Malformed request bodies on the write endpoints: always a 4xx, never a 500, nothing saved."""

from __future__ import annotations

import json

import pytest

from clinics.models import ApiToken

from .factories import PROFILE_URL, SETTINGS_URL, fill_clinic, snapshot

JSON = "application/json"
DEEP = 1000  # ~2 KB of brackets: deeper than Python's default recursion limit

MALFORMED = [
    # (body, content type, expected status)
    pytest.param(("[" * DEEP + "]" * DEEP).encode(), JSON, 400, id="deep-array"),
    pytest.param(("[" * 100_000 + "]" * 100_000).encode(), JSON, 400, id="200kb-deep-array"),
    pytest.param(
        ('{"city": "Santa Tecla", "name": ' + "[" * DEEP + "]" * DEEP + "}").encode(),
        JSON,
        400,
        id="deep-array-in-name",
    ),
    pytest.param(
        ('{"city": "Santa Tecla", "name": ' + '{"a": ' * 400 + "1" + "}" * 400 + "}").encode(),
        JSON,
        400,
        id="deep-object-in-name",
    ),
    pytest.param(
        json.dumps({"city": "Santa Tecla", "name": "x" * 1024 * 1024}).encode(), JSON, 413, id="1mb-name"
    ),
    pytest.param(
        json.dumps({"city": "Santa Tecla", "address": "x" * 300 * 1024}).encode(), JSON, 413, id="300kb-body"
    ),
    pytest.param(b'{"city": "Santa Tecla"}', "text/plain", 415, id="text-plain"),
    pytest.param(b"city=Santa+Tecla", "application/x-www-form-urlencoded", 415, id="form-encoded"),
    pytest.param(
        b'--b\r\nContent-Disposition: form-data; name="city"\r\n\r\nSanta Tecla\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        415,
        id="multipart",
    ),
    pytest.param(b'{"city": "Santa Tecla",', JSON, 400, id="truncated-json"),
    pytest.param(b"{'city': 'Santa Tecla'}", JSON, 400, id="single-quotes"),
    pytest.param(b'{"city": "Santa Tecla", "name": NaN}', JSON, 400, id="nan"),
    pytest.param(b'{"city": "Santa Tecla", "name": Infinity}', JSON, 400, id="infinity"),
    pytest.param(b'[{"city": "Santa Tecla"}]', JSON, 400, id="top-level-array"),
    pytest.param(b'"Santa Tecla"', JSON, 400, id="top-level-string"),
    pytest.param(b"42", JSON, 400, id="top-level-number"),
    pytest.param(b"null", JSON, 400, id="top-level-null"),
    pytest.param(b'{"city": "Santa \xff Tecla"}', JSON, 400, id="invalid-utf8"),
]

# Both views and both methods; the JSON parser is shared by every endpoint.
ENDPOINTS = [
    pytest.param("patch", SETTINGS_URL, id="settings-patch"),
    pytest.param("put", PROFILE_URL, id="profile-put"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
@pytest.mark.parametrize(("body", "content_type", "status"), MALFORMED)
def test_it_refuses_malformed_bodies_and_saves_nothing(
    api_client, clinic_admin, clinic, method, url, body, content_type, status
):
    fill_clinic(clinic)
    client = api_client(clinic_admin)
    before = snapshot(clinic)

    response = client.generic(method.upper(), url, body, content_type=content_type)

    assert response.status_code == status
    assert isinstance(response.json(), dict)  # a JSON error body (detail, or DRF's field errors)
    assert snapshot(clinic) == before


@pytest.mark.parametrize(("body", "content_type", "status"), MALFORMED)
def test_it_refuses_malformed_login_bodies(anon_client, clinic_admin, body, content_type, status):
    response = anon_client.generic("POST", "/api/auth/token/", body, content_type=content_type)

    assert 400 <= response.status_code < 500
    if status in (413, 415):
        assert response.status_code == status
    assert not ApiToken.objects.exists()
