"""With Meta simulated, "send as the patient": the fake Meta posts a signed patient message to the real webhook."""

from __future__ import annotations

import pytest
from django.test import Client

from clinics.simulated_meta import SIMULATED_PATIENT, simulated_patient_message
from devtools.fake_graph import FakeGraphServer
from messaging.models import Conversation, Message
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
