"""On PostgreSQL: the same Idempotency-Key at the same moment makes one message, and workers racing
for one send, or for batches of the same clinic's sends, call Meta once per message."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from clinics.models import ApiToken
from clinics.tests.test_api_messages import (
    TEXT,
    URL,
    accepted,
    patients_writing,
    post,
    sent_bodies,
    wamid_per_message,
)
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


def test_workers_taking_batches_at_once_send_each_message_once(admin_api, active, graph):
    wamid_per_message(graph)
    patients_writing(active, 35)
    for index in range(35):
        assert (
            post(admin_api, {"to": f"5037100{index:04d}", "text": "Hola"}, key=f"k{index}").status_code == 202
        )
    send_ids = [str(pk) for pk in OutboundSend.objects.values_list("pk", flat=True)]

    def worker(mine: list[str]) -> list[str]:
        return [message_send_process(send_id=send_id) for send_id in mine]

    in_parallel([lambda mine=send_ids[i::4]: worker(mine) for i in range(4)])

    ours = [body["biz_opaque_callback_data"] for body in sent_bodies(graph)]
    assert sorted(ours) == sorted(str(pk) for pk in Message.objects.values_list("pk", flat=True))
    for message in Message.objects.all():
        assert (message.status, message.wamid) == ("sending", f"wamid.{message.pk}")
    assert set(OutboundSend.objects.values_list("state", "attempts")) == {("done", 1)}
