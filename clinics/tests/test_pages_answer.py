"""/conversations/: a member answers the patient through endpoint 16's service, and sees what happened."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from clinics.tests.test_api_messages import BSUID, PATIENT, accepted, accepted_for_bsuid, sent_bodies
from messaging.models import Conversation, Message, MessageTemplate, OutboundSend
from messaging.sending import message_send_process
from whatsapp.models import WhatsAppStatus
from whatsapp.tests.helpers import PNID

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/conversations/"


def signed_in(user, *, language: str = "en") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(user)
    return client


def conversation(clinic, *, open_for: timedelta | None = timedelta(hours=3)) -> Conversation:
    return Conversation.objects.create(
        clinic=clinic,
        phone_number_id=PNID,
        wa_id=PATIENT,
        needs_human=True,
        window_open_until=timezone.now() + open_for if open_for is not None else None,
    )


def template(clinic, *, name="cita", language="es", status="APPROVED", params=2) -> MessageTemplate:
    return MessageTemplate.objects.create(
        clinic=clinic,
        name=name,
        language=language,
        status=status,
        category="UTILITY",
        params=params,
        synced_at=timezone.now(),
    )


def form_key(client: Client, chat: Conversation) -> str:
    """The idempotency key the page put in this conversation's answer form."""
    html = client.get(CONVERSATIONS).content.decode()
    form = html[html.index(f'id="answer-{chat.pk}"') :]
    match = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', form)
    assert match
    return match.group(1)


def run_worker() -> None:
    for send in OutboundSend.objects.all():
        message_send_process(send_id=str(send.pk))


def answer(client: Client, chat: Conversation, **fields):
    return client.post(f"/conversations/{chat.pk}/answer/", fields)


def test_a_member_answers_inside_the_window_and_the_worker_sends_it_once(active, clinic_admin, graph):
    chat = conversation(active)
    client = signed_in(clinic_admin)
    key = form_key(client, chat)
    assert f'id="answer-text-{chat.pk}"' in client.get(CONVERSATIONS).content.decode()

    response = answer(client, chat, idempotency_key=key, text="Le esperamos mañana.")
    again = answer(client, chat, idempotency_key=key, text="Le esperamos mañana.")

    assert response.status_code == 302 and again.status_code == 302
    message = Message.objects.get()
    assert (message.text, message.status, message.sent_by) == (
        "Le esperamos mañana.",
        "queued",
        clinic_admin.email,
    )
    assert not graph.mock.calls
    accepted(graph)
    run_worker()
    assert [body["text"]["body"] for body in sent_bodies(graph)] == ["Le esperamos mañana."]
    html = client.get(CONVERSATIONS).content.decode()
    assert "Le esperamos mañana." in html and clinic_admin.email in html and "Sending" in html


def test_staff_may_answer(active, clinic_staff, graph):
    chat = conversation(active)
    client = signed_in(clinic_staff)

    response = answer(client, chat, idempotency_key=form_key(client, chat), text="Hola")

    assert response.status_code == 302
    assert Message.objects.get().sent_by == clinic_staff.email


def test_outside_the_window_a_template_is_picked_with_its_params(active, clinic_staff, graph):
    chat = conversation(active, open_for=None)
    template(active)
    template(active, name="en_ingles", language="en")
    template(active, name="pausada", status="PAUSED")
    client = signed_in(clinic_staff)
    html = client.get(CONVERSATIONS).content.decode()
    assert f'id="answer-text-{chat.pk}"' not in html
    assert '<option value="cita">' in html
    assert "en_ingles" not in html and "pausada" not in html

    response = answer(
        client, chat, idempotency_key=form_key(client, chat), template="cita", param=["Ana", "10:00", "", ""]
    )

    assert response.status_code == 302
    message = Message.objects.get()
    assert message.type == "template" and message.status == "queued"
    accepted(graph)
    run_worker()
    (body,) = sent_bodies(graph)
    assert body["template"]["name"] == "cita" and body["template"]["language"]["code"] == "es"


@pytest.mark.parametrize(
    ("fields", "status", "sentence"),
    [
        ({"text": "Hola"}, 422, "solo se puede enviar una plantilla aprobada"),
        ({"template": "cita", "param": ["Ana"]}, 422, "Esta plantilla necesita 2 parámetros."),
        ({"template": "desconocida"}, 422, "No se conoce ninguna plantilla con este nombre"),
    ],
)
def test_a_refusal_shows_the_services_sentence_and_nothing_reaches_meta(
    active, clinic_staff, graph, fields, status, sentence
):
    chat = conversation(active, open_for=None)
    template(active)
    client = signed_in(clinic_staff, language="es")

    response = answer(client, chat, idempotency_key=form_key(client, chat), **fields)

    assert response.status_code == status
    html = response.content.decode()
    form = html[html.index(f'id="answer-{chat.pk}"') :]
    alert = re.search(r'class="message message--error answer-error" role="alert">([^<]*)</p>', form)
    assert alert and sentence in alert.group(1)
    assert alert.start() < form.index("</form>")
    assert not Message.objects.exists() and not OutboundSend.objects.exists()
    run_worker()
    assert not graph.mock.calls


def test_a_number_not_active_is_refused(active, clinic_staff, graph):
    chat = conversation(active)
    active.whatsapp.status = WhatsAppStatus.DISCONNECTED
    active.whatsapp.save(update_fields=["status"])
    client = signed_in(clinic_staff)

    response = answer(client, chat, idempotency_key=form_key(client, chat), text="Hola")

    assert response.status_code == 409
    assert "is not active" in response.content.decode()
    assert not Message.objects.exists() and not graph.mock.calls


def test_another_clinics_conversation_is_a_404(active, other_clinic_admin, graph):
    chat = conversation(active)

    response = answer(signed_in(other_clinic_admin), chat, idempotency_key="k", text="Hola")

    assert response.status_code == 404
    assert not Message.objects.exists()


def test_answering_needs_a_signed_in_member_and_csrf(active, clinic_staff):
    chat = conversation(active)
    assert Client().post(f"/conversations/{chat.pk}/answer/", {"text": "x"}).status_code == 302
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinic_staff)

    response = client.post(f"/conversations/{chat.pk}/answer/", {"idempotency_key": "k", "text": "Hola"})

    assert response.status_code == 403
    assert not Message.objects.exists()


def test_an_empty_answer_is_refused_next_to_the_form(active, clinic_staff, graph):
    chat = conversation(active)
    client = signed_in(clinic_staff, language="es")

    response = answer(client, chat, idempotency_key=form_key(client, chat), text="   ")

    assert response.status_code == 400
    assert "Escriba una respuesta o elija una plantilla." in response.content.decode()
    assert not Message.objects.exists() and not graph.mock.calls


def test_a_patient_known_only_by_bsuid_is_answered_by_recipient(active, clinic_staff, graph):
    chat = Conversation.objects.create(
        clinic=active,
        phone_number_id=PNID,
        user_id=BSUID,
        window_open_until=timezone.now() + timedelta(hours=3),
    )
    client = signed_in(clinic_staff)

    response = answer(client, chat, idempotency_key=form_key(client, chat), text="Hola")

    assert response.status_code == 302
    message = Message.objects.get()
    assert (message.conversation_id, message.text, message.status) == (chat.pk, "Hola", "queued")
    assert Conversation.objects.count() == 1
    accepted_for_bsuid(graph)
    run_worker()
    [body] = sent_bodies(graph)
    assert (body["recipient"], "to" in body, body["text"]["body"]) == (BSUID, False, "Hola")


def test_a_patient_known_only_by_bsuid_gets_a_template_outside_the_window(active, clinic_staff, graph):
    chat = Conversation.objects.create(clinic=active, phone_number_id=PNID, user_id=BSUID)
    template(active)
    client = signed_in(clinic_staff)

    response = answer(
        client, chat, idempotency_key=form_key(client, chat), template="cita", param=["Ana", "10:00"]
    )

    assert response.status_code == 302
    assert Message.objects.get().conversation_id == chat.pk
    accepted_for_bsuid(graph)
    run_worker()
    [body] = sent_bodies(graph)
    assert (body["recipient"], "to" in body, body["template"]["name"]) == (BSUID, False, "cita")
