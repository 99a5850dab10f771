from __future__ import annotations

import re

import pytest
import responses


@pytest.fixture
def meta_refuses():
    """Every Graph call answers a Graph error (code 100): nothing leaves the process."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        body = {"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}}
        for method in (responses.GET, responses.POST, responses.DELETE):
            mock.add(method, re.compile(r"https?://.*"), json=body, status=400)
        yield mock
