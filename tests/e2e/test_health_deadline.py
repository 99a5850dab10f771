"""Endpoint 13's POST asks Meta four things at once, in threads: a Meta that trickles every answer
never keeps it past the request's deadline. The fake Graph server over real HTTP sends each
answer one byte at a time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from devtools.fake_graph import FakeGraphServer
from whatsapp.models import WhatsAppHealth
from whatsapp.tests.helpers import arrange_active

pytestmark = pytest.mark.django_db

HEALTH_URL = "/api/clinics/whatsapp/health/"


def test_post_answers_json_within_the_deadline_when_meta_trickles(api_client, clinic_admin, settings):
    account = arrange_active(clinic_admin.clinic, connected_at=timezone.now() - timedelta(days=2))
    # Read timeouts as in production: each byte arrives in time, only the deadline can end the calls.
    settings.REQUEST_DEADLINE_SECONDS = 3.0
    settings.META_READ_TIMEOUT = 5.0
    with FakeGraphServer() as fake:
        settings.META_GRAPH_URL = fake.base_url
        # Each of the four calls is answered one byte every half second.
        fault = {"kind": "trickle", "method": "GET", "path": ".", "seconds": 0.5, "times": 4}
        requests.post(f"{fake.control_url}/faults", json=fault, timeout=5).raise_for_status()

        started = time.monotonic()
        response = api_client(clinic_admin).post(HEALTH_URL)
        elapsed = time.monotonic() - started

        calls = requests.get(f"{fake.control_url}/requests", timeout=5).json()
    assert len(calls) == 4  # all four were asked
    assert elapsed < 3.0 + 1.0, elapsed  # the deadline, with room for a busy machine
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["verdict"] == "unknown"
    token_valid = body["checks"][0]
    assert (token_valid["key"], token_valid["ok"]) == ("token_valid", None)
    assert token_valid["detail"].startswith("Meta could not be reached for this check")
    assert WhatsAppHealth.objects.get(pk=account.pk).verdict == "unknown"
