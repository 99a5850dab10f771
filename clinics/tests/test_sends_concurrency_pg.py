"""On PostgreSQL: the same Idempotency-Key at the same moment makes one message, and workers racing
for one send call Meta once."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from clinics.models import ApiToken
from clinics.tests.test_api_messages import TEXT, URL, accepted, sent_bodies
from messaging.models import Message, OutboundSend
from messaging.sending import message_send_process
from whatsapp.tests.test_concurrency_pg import in_parallel

from .test_api_messages import open_window  # noqa: F401 - the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_same_key_at_once_makes_one_message(clinic_admin, open_window, graph):  # noqa: F811
    _token, key = ApiToken.issue(clinic_admin)

    def send() -> int:
        client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        response = client.post(URL, TEXT, format="json", HTTP_IDEMPOTENCY_KEY="same")
        return response.status_code, response.json()["id"]

    results = in_parallel([send for _ in range(4)])

    assert {status for status, _id in results} == {202}
    assert len({message_id for _status, message_id in results}) == 1
    assert Message.objects.count() == 1


def test_workers_racing_for_one_send_call_meta_once(admin_api, open_window, graph):  # noqa: F811
    accepted(graph)
    admin_api.post(URL, TEXT, format="json", HTTP_IDEMPOTENCY_KEY="k")
    send_id = str(OutboundSend.objects.get().pk)

    results = in_parallel([lambda: message_send_process(send_id=send_id) for _ in range(4)])

    assert results.count("accepted") == 1
    assert len(sent_bodies(graph)) == 1
    assert Message.objects.get().wamid
