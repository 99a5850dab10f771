"""Fixtures for the fake Graph server's tests: the server on a free port, a session, the real client."""

from __future__ import annotations

import pytest
import requests

from devtools.fake_graph import FakeGraphServer
from whatsapp.meta import MetaClient

TOKEN = "EAAFakeGraphSECRETtoken42"
WABA = "102290129340398"
# The fake runs in this process, on a shared 2-core machine where a thread may wait seconds for a
# core: an ordinary call gets a timeout such a machine keeps. Only the fault tests use the short one,
# which their 3-second delay faults outlast.
READ_TIMEOUT = 10.0
FAULT_READ_TIMEOUT = 1.0


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


def _client(fake, session, timeout: float) -> MetaClient:
    return MetaClient(
        TOKEN,
        base_url=fake.base_url,
        connect_timeout=timeout,
        read_timeout=timeout,
        session=session,
        read_retries=0,
    )


@pytest.fixture
def client(fake, session) -> MetaClient:
    return _client(fake, session, READ_TIMEOUT)


@pytest.fixture
def fault_client(fake, session) -> MetaClient:
    """A client that gives up after a second: a delay fault must time it out."""
    return _client(fake, session, FAULT_READ_TIMEOUT)


def control(fake, session, method: str, path: str, body: dict | None = None):
    response = session.request(method, f"{fake.control_url}/{path}", json=body, timeout=5)
    assert response.status_code < 300, response.text
    return response.json()
