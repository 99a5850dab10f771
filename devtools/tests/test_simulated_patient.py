"""With Meta simulated, "send as the patient": the fake Meta posts a signed patient message to the real webhook."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from clinics.simulated_meta import SIMULATED_PATIENT, simulated_patient_message
from devtools.fake_graph import FakeGraphServer
from messaging.models import Conversation, Message, OutboundSend
from messaging.sending import SendRequest, message_send, message_send_process
from whatsapp.deliveries import whatsapp_delivery_process
from whatsapp.models import WebhookDelivery
from whatsapp.tests.helpers import account_of, arrange_active

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def simulated_meta(settings):
    with FakeGraphServer() as fake:
        settings.META_SIMULATED = True
        settings.META_GRAPH_URL = fake.base_url
        yield fake


def test_the_fake_meta_delivers_a_signed_patient_message_that_becomes_a_conversation(
    clinic, simulated_meta, live_server, queued_tasks
):
    account = arrange_active(clinic, app_secret="simulated-app-secret")

    sent = simulated_patient_message(
        account, "Hola, ¿tienen cita?", webhook_url=f"{live_server.url}{account.webhook_path}"
    )

    assert sent is True
    delivery = WebhookDelivery.objects.get(clinic=clinic)
    whatsapp_delivery_process(delivery_id=str(delivery.pk))
    conversation = Conversation.objects.get(clinic=clinic)
    assert (conversation.wa_id, conversation.profile_name, conversation.needs_human) == (
        SIMULATED_PATIENT["wa_id"],
        SIMULATED_PATIENT["name"],
        True,
    )
    assert Message.objects.get().text == "Hola, ¿tienen cita?"


def test_a_wrong_secret_is_refused_by_the_webhook_and_reported(clinic, simulated_meta, live_server):
    account = arrange_active(clinic, app_secret="simulated-app-secret")
    account.app_secret = "not-the-secret-the-webhook-checks"

    assert (
        simulated_patient_message(account, "Hola", webhook_url=f"{live_server.url}{account.webhook_path}")
        is False
    )
    assert not WebhookDelivery.objects.exists()


def test_the_page_box_is_shown_only_with_meta_simulated(clinic, clinic_admin, settings):
    arrange_active(clinic)
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(clinic_admin)
    settings.META_SIMULATED = False
    assert 'id="write-as-patient"' not in client.get("/settings/").content.decode()
    settings.META_SIMULATED = True
    assert 'id="write-as-patient"' in client.get("/settings/").content.decode()
    assert account_of(clinic).phone_number_id


def _process_deliveries(clinic, done: set[str]) -> None:
    for delivery in (
        WebhookDelivery.objects.filter(clinic=clinic).exclude(pk__in=done).order_by("received_at")
    ):
        whatsapp_delivery_process(delivery_id=str(delivery.pk))
        done.add(delivery.pk)


def test_an_answer_gets_its_statuses_from_the_fake_at_the_numbers_webhook(
    clinic, simulated_meta, live_server, queued_tasks
):
    account = arrange_active(clinic, app_secret="simulated-app-secret")
    simulated_meta.graph.create_number(
        {
            "id": account.phone_number_id,
            "waba_id": account.business_account_id,
            "cc": "503",
            "phone_number": "77654321",
            "verified_name": "Clínica",
            "status": "CONNECTED",
        }
    )
    simulated_meta.graph.set_status_webhooks({"delays": [0.05, 0.1, 0.15]})
    done: set[str] = set()
    # The patient's message tells the fake where the number's webhook is.
    assert simulated_patient_message(account, "Hola", webhook_url=f"{live_server.url}{account.webhook_path}")
    _process_deliveries(clinic, done)

    answer = message_send(
        clinic_id=clinic.pk,
        request=SendRequest(to=SIMULATED_PATIENT["wa_id"], text="Recibido"),
        idempotency_key="answer-1",
        sent_by="bot",
    )
    assert message_send_process(send_id=str(OutboundSend.objects.get().pk)) == "accepted"

    deadline = time.monotonic() + 10
    while WebhookDelivery.objects.filter(clinic=clinic).count() < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    _process_deliveries(clinic, done)
    answer.refresh_from_db()
    assert (answer.status, answer.wamid.startswith("wamid.")) == ("read", True)
