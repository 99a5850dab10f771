"""Fixtures shared by the WhatsApp tests (and, through clinics/tests/conftest.py, the product's).

Meta is faked at the HTTP boundary with `responses` (helpers.FakeGraph), so the
real MetaClient, its timeouts, retries and error mapping run in every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from rest_framework.test import APIClient

from whatsapp import meta as meta_module
from whatsapp.tests.helpers import FakeGraph


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraph]:
    """Meta's Graph API, faked with `responses`: an unregistered call fails like a network error."""
    monkeypatch.setattr(meta_module, "_sleep", lambda _seconds: None)  # skip the GET retry pauses
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeGraph(mock)


@pytest.fixture
def admin_api(api_client, clinic_admin) -> APIClient:
    """The API as the clinic's admin."""
    return api_client(clinic_admin)
