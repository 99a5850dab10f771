"""Fixtures for the fake Graph server's tests: the server on a free port, a session, the real client."""

from __future__ import annotations

import pytest
import requests

from devtools.fake_graph import FakeGraphServer
from whatsapp.meta import MetaClient

TOKEN = "EAAFakeGraphSECRETtoken42"
WABA = "102290129340398"
# Generous for a busy 2-core machine (the fake runs in this process); the delay faults wait well past it.
READ_TIMEOUT = 1.0


@pytest.fixture
def fake():
    with FakeGraphServer() as server:
        yield server


@pytest.fixture
def session():
    # The fake is on loopback: never route it through a proxy from the environment.
    with requests.Session() as http:
        http.trust_env = False
        yield http


@pytest.fixture
def client(fake, session) -> MetaClient:
    return MetaClient(
        TOKEN,
        base_url=fake.base_url,
        connect_timeout=READ_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        session=session,
        read_retries=0,
    )


def control(fake, session, method: str, path: str, body: dict | None = None):
    response = session.request(method, f"{fake.control_url}/{path}", json=body, timeout=5)
    assert response.status_code < 300, response.text
    return response.json()
