"""/conversations/ and the settings page's "Bot" step: what members see, what admins change, nothing of another clinic."""

from __future__ import annotations

import pytest
from django.test import Client

from messaging.models import BotDelivery, BotEndpoint, Conversation
from messaging.services import messaging_record_inbound
from messaging.tests import conftest as messaging_fixtures
from messaging.tests.conftest import PNID, load, value_of
from messaging.tests.test_signing import spec_verify

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/conversations/"
SETTINGS = "/settings/"
bot_server = messaging_fixtures.bot_server


def signed_in(user, *, language: str = "en") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(user)
    return client


def patient_wrote(clinic, name: str = "webhook_messages_text.json", *, forward: bool = False) -> None:
    messaging_record_inbound(
        clinic_id=clinic.pk, phone_number_id=PNID, value=value_of(load(name)), forward=forward
    )


# --- /conversations/ ---------------------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in():
    response = Client().get(CONVERSATIONS)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_staff_see_the_clinics_conversations_needing_a_person_first(clinic, clinic_staff, other_clinic):
    patient_wrote(clinic, "webhook_messages_text_bsuid.json", forward=True)
    patient_wrote(clinic, "webhook_messages_text.json", forward=False)
    messaging_record_inbound(
        clinic_id=other_clinic.pk,
        phone_number_id=PNID,
        value=value_of(load("webhook_messages_text.json"))
        | {"contacts": [{"profile": {"name": "Otra Clínica"}, "wa_id": "16505551234"}]},
        forward=False,
    )

    response = signed_in(clinic_staff).get(CONVERSATIONS)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    needing = Conversation.objects.get(clinic=clinic, needs_human=True)
    other = Conversation.objects.get(clinic=clinic, needs_human=False)
    assert html.index(f'id="conversation-{needing.pk}"') < html.index(f'id="conversation-{other.pk}"')
    assert "Does it come in another color?" in html and "Sheena Nelson" in html
    assert "Needs a person" in html and "Patient" in html
    assert "Otra Clínica" not in html


def test_a_member_clears_needs_human(clinic, clinic_staff):
    patient_wrote(clinic)
    conversation = Conversation.objects.get()

    response = signed_in(clinic_staff).post(f"/conversations/{conversation.pk}/clear/")

    assert response.status_code == 302
    assert response["Location"] == f"/conversations/#conversation-{conversation.pk}"
    assert Conversation.objects.get().needs_human is False


def test_another_clinics_conversation_cannot_be_cleared(clinic_admin, other_clinic):
    patient_wrote(other_clinic)
    theirs = Conversation.objects.get()

    response = signed_in(clinic_admin).post(f"/conversations/{theirs.pk}/clear/")

    assert response.status_code == 404
    assert Conversation.objects.get().needs_human is True


def test_the_page_is_in_spanish(clinic, clinic_staff):
    patient_wrote(clinic)
    html = signed_in(clinic_staff, language="es").get(CONVERSATIONS).content.decode()
    assert "Conversaciones" in html and "Necesita una persona" in html


def test_a_user_without_a_clinic_gets_403(clinicless_user):
    assert signed_in(clinicless_user).get(CONVERSATIONS).status_code == 403


# --- the "Bot" step on the settings page --------------------------------------------------------------


def test_saving_the_url_shows_the_new_secret_once(clinic, clinic_admin, settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    client = signed_in(clinic_admin)

    response = client.post("/settings/bot/endpoint/", {"url": "http://127.0.0.1:9/hook"})

    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert endpoint.secret in response.content.decode()
    assert endpoint.status == "unverified"
    again = client.get(SETTINGS).content.decode()
    assert endpoint.secret not in again and endpoint.masked_secret in again


def test_a_refused_url_shows_why_and_saves_nothing(clinic_admin):
    response = signed_in(clinic_admin, language="es").post(
        "/settings/bot/endpoint/", {"url": "ftp://x.example/"}
    )
    assert response.status_code == 400
    assert "Use una URL https://." in response.content.decode()
    assert not BotEndpoint.objects.exists()


def test_staff_may_not_change_the_bot(clinic_staff, settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    response = signed_in(clinic_staff).post("/settings/bot/endpoint/", {"url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 403
    assert not BotEndpoint.objects.exists()


def test_testing_the_bot_makes_it_live(clinic, clinic_admin, bot_server):
    client = signed_in(clinic_admin)
    client.post("/settings/bot/endpoint/", {"url": bot_server.url})
    secret = BotEndpoint.objects.get().secret

    response = client.post("/settings/bot/test/", follow=True)

    assert "it is live" in response.content.decode()
    assert BotEndpoint.objects.get().status == "live"
    assert spec_verify(secret, bot_server.received[0].headers, bot_server.received[0].body)


def test_rotating_shows_the_new_secret_once(clinic, clinic_admin, settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    client = signed_in(clinic_admin)
    client.post("/settings/bot/endpoint/", {"url": "http://127.0.0.1:9/hook"})

    response = client.post("/settings/bot/secret/")

    endpoint = BotEndpoint.objects.get()
    assert endpoint.secret in response.content.decode()
    assert endpoint.previous_secret not in response.content.decode()


def test_dead_deliveries_are_listed_and_redelivered(clinic, clinic_admin, other_clinic, queued_tasks):
    patient_wrote(clinic, forward=True)
    BotDelivery.objects.update(state="failed", attempts=12, last_error="HTTP 500")
    dead = BotDelivery.objects.get()
    client = signed_in(clinic_admin)

    html = client.get(SETTINGS).content.decode()
    assert f'id="delivery-{dead.pk}"' in html and "HTTP 500" in html

    response = client.post(f"/settings/bot/deliveries/{dead.pk}/redeliver/", follow=True)

    assert "queued again" in response.content.decode()
    assert BotDelivery.objects.get().state == "queued"


def test_another_clinics_delivery_cannot_be_redelivered(clinic_admin, other_clinic):
    patient_wrote(other_clinic, forward=True)
    BotDelivery.objects.update(state="failed")
    theirs = BotDelivery.objects.get()

    response = signed_in(clinic_admin).post(f"/settings/bot/deliveries/{theirs.pk}/redeliver/")

    assert response.status_code == 404
    assert BotDelivery.objects.get().state == "failed"
