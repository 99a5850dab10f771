"""Endpoint 16: sending, with everything refused before Meta, the idempotency key, and the worker."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
import urllib3
from django.core.management import call_command
from django.utils import timezone

from clinics.tests.factories import set_whatsapp
from clinics.tests.test_api_bot_keys import KEYS_URL, bot_client
from messaging.models import Conversation, Message, MessageTemplate, OutboundSend
from messaging.pacing import NUMBER_RATE_PER_SECOND, take_number_slot
from messaging.send_errors import SendAction, send_error
from messaging.sending import SENDS, message_send_process, message_sends_sweep
from messaging.services import messaging_apply_messages_change
from whatsapp.models import WhatsAppStatus
from whatsapp.tests.helpers import PNID

URL = "/api/clinics/messages/"
PATIENT = "50370001111"
TEXT = {"to": f"+{PATIENT}", "text": "Su cita es mañana a las 10."}
TEMPLATE = {"to": PATIENT, "template": {"name": "cita", "language": "es", "params": ["Ana", "10:00"]}}
# A patient Meta names only by their business-scoped user id (no phone).
BSUID = "US.13491208655302741918"


def wrote_lately(clinic, **patient):
    """The conversation of a patient (`wa_id=` or `user_id=`) who wrote 21 hours ago: the window is open."""
    return Conversation.objects.create(
        clinic=clinic, phone_number_id=PNID, window_open_until=timezone.now() + timedelta(hours=3), **patient
    )


@pytest.fixture
def open_window(active):
    return wrote_lately(active, wa_id=PATIENT)


@pytest.fixture
def bsuid_window(active):
    """A patient known only by BSUID (Meta withheld the phone), who wrote 21 hours ago."""
    return wrote_lately(active, user_id=BSUID)


@pytest.fixture
def cita(active):
    return MessageTemplate.objects.create(
        clinic=active,
        name="cita",
        language="es",
        status="APPROVED",
        category="UTILITY",
        params=2,
        synced_at=timezone.now(),
    )


def post(client, body, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(URL, body, format="json", **headers)


def accepted(graph, wamid="wamid.HBgLNTAzNzAwMDExMTEVAgARGBI1"):
    graph.add(
        "POST",
        f"{PNID}/messages",
        json_body={
            "messaging_product": "whatsapp",
            "contacts": [{"input": f"+{PATIENT}", "wa_id": PATIENT}],
            "messages": [{"id": wamid}],
        },
    )


def sent_bodies(graph):
    return [
        json.loads(call.request.body) for call in graph.mock.calls if call.request.url.endswith("/messages")
    ]


# --- who may send ---------------------------------------------------------------------------------


def test_it_requires_credentials(anon_client, db):
    assert post(anon_client, TEXT).status_code == 401


def test_staff_may_send(api_client, clinic_staff, open_window, graph):
    response = post(api_client(clinic_staff), TEXT)

    assert response.status_code == 202
    assert Message.objects.get().sent_by == "staff@sansalvador.example"


def test_a_bot_key_may_send(admin_api, open_window, graph):
    key = admin_api.post(KEYS_URL, {"name": "bot"}, format="json").json()["key"]

    response = post(bot_client(key), TEXT)

    assert response.status_code == 202
    assert Message.objects.get().sent_by == "bot"


def test_it_sends_only_to_the_callers_clinic(api_client, other_clinic_admin, open_window, graph):
    response = post(api_client(other_clinic_admin), TEXT)

    # The other clinic's number is not active: its own refusal, and nothing of this clinic's touched.
    assert response.status_code == 409
    assert not Message.objects.exists()


# --- refused before Meta --------------------------------------------------------------------------


def test_it_requires_an_idempotency_key(admin_api, open_window, graph):
    for key in (None, "", "with space", "x" * 256):
        response = post(admin_api, TEXT, key=key)
        assert response.status_code == 400, key
        assert "Idempotency-Key" in response.json()["detail"]
    assert not Message.objects.exists()
    assert not graph.mock.calls


@pytest.mark.parametrize(
    "body",
    [
        {"to": "+503", "text": "hola"},
        {"to": PATIENT, "text": ""},
        {"to": PATIENT, "text": "x" * 4097},
        {"to": PATIENT},
        {"to": PATIENT, "text": "hola", "template": {"name": "cita", "language": "es"}},
    ],
)
def test_it_rejects_bad_bodies(admin_api, open_window, graph, body):
    response = post(admin_api, body)

    assert response.status_code == 400
    assert not Message.objects.exists()
    assert not graph.mock.calls


@pytest.mark.parametrize(
    "to",
    [
        "us.13491208655302741918",  # the country code is in capitals
        "USA.13491208655302741918",
        "US.",
        "US13491208655302741918",
        "US.1349-1208",
        "US.1349 1208",
        "US." + "1" * 129,
        "+US.13491208655302741918",
    ],
)
def test_it_rejects_a_malformed_bsuid_with_a_sentence_naming_both_forms(admin_api, bsuid_window, graph, to):
    response = post(admin_api, {"to": to, "text": "hola"})

    assert response.status_code == 400
    assert response.json()["to"] == [
        "Give the patient's number with its country code (or its wa_id), or the patient's BSUID "
        "such as US.13491208655302741918."
    ]
    assert not Message.objects.exists() and not OutboundSend.objects.exists()
    assert Conversation.objects.count() == 1
    assert not graph.mock.calls


def test_the_sentence_for_a_bad_to_is_in_the_readers_language(admin_api, active, graph):
    response = admin_api.post(
        URL,
        {"to": "hola", "text": "hola"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_ACCEPT_LANGUAGE="es",
    )

    assert response.status_code == 400
    assert response.json()["to"] == [
        "Indique el número del paciente con su código de país (o su wa_id), o el BSUID del paciente, "
        "como US.13491208655302741918."
    ]


def test_it_refuses_when_the_number_is_not_active(admin_api, open_window, graph):
    set_whatsapp(open_window.clinic, status=WhatsAppStatus.DISCONNECTED)

    response = post(admin_api, TEXT)

    assert response.status_code == 409
    assert response.json()["code"] == "number_not_active"
    assert not Message.objects.exists()
    assert not graph.mock.calls


def test_it_refuses_text_outside_the_window(admin_api, open_window, graph):
    Conversation.objects.filter(pk=open_window.pk).update(
        window_open_until=timezone.now() - timedelta(seconds=1)
    )

    response = post(admin_api, TEXT)

    assert response.status_code == 422
    assert response.json() == {
        "code": "window_closed",
        "detail": "The patient has not written in the last 24 hours: only an approved template can be sent.",
    }
    assert not Message.objects.exists()
    assert not graph.mock.calls


def test_it_refuses_text_to_a_patient_who_never_wrote(admin_api, active, graph):
    assert post(admin_api, TEXT).json()["code"] == "window_closed"
    assert not graph.mock.calls


def test_it_refuses_text_to_a_bsuid_whose_window_closed(admin_api, bsuid_window, graph):
    Conversation.objects.filter(pk=bsuid_window.pk).update(
        window_open_until=timezone.now() - timedelta(seconds=1)
    )

    response = post(admin_api, {"to": BSUID, "text": "Hola"})

    assert response.status_code == 422
    assert response.json()["code"] == "window_closed"
    assert not Message.objects.exists() and not OutboundSend.objects.exists()
    assert Conversation.objects.count() == 1
    assert not graph.mock.calls


def test_it_refuses_text_to_a_bsuid_that_never_wrote(admin_api, active, graph):
    response = post(admin_api, {"to": BSUID, "text": "Hola"})

    assert response.json()["code"] == "window_closed"
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert not graph.mock.calls


def test_the_refusal_is_in_the_readers_language(admin_api, active, graph):
    response = admin_api.post(URL, TEXT, format="json", HTTP_IDEMPOTENCY_KEY="k", HTTP_ACCEPT_LANGUAGE="es")

    assert response.json()["detail"].startswith("El paciente no ha escrito")


@pytest.mark.parametrize(
    ("template", "change", "code"),
    [
        ({"name": "otra", "language": "es", "params": ["Ana", "10:00"]}, {}, "template_unknown"),
        ({"name": "cita", "language": "en", "params": ["Ana", "10:00"]}, {}, "template_unknown"),
        (
            {"name": "cita", "language": "es", "params": ["Ana", "10:00"]},
            {"status": "PAUSED"},
            "template_not_approved",
        ),
        (
            {"name": "cita", "language": "es", "params": ["Ana", "10:00"]},
            {"status": "PENDING"},
            "template_not_approved",
        ),
        ({"name": "cita", "language": "es", "params": ["Ana"]}, {}, "template_params"),
        ({"name": "cita", "language": "es"}, {}, "template_params"),
    ],
)
def test_it_checks_the_template_before_meta(admin_api, cita, graph, template, change, code):
    MessageTemplate.objects.filter(pk=cita.pk).update(**change)

    response = post(admin_api, {"to": PATIENT, "template": template})

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert not Message.objects.exists()
    assert not graph.mock.calls


# --- accepted and sent ----------------------------------------------------------------------------


def test_it_queues_a_text_then_the_worker_sends_it_once(admin_api, open_window, graph):
    accepted(graph)

    response = post(admin_api, TEXT)

    assert response.status_code == 202
    message = Message.objects.get()
    assert response.json() == {"id": str(message.pk), "status": "queued"}
    assert (message.status, message.direction, message.text, message.sent_by) == (
        "queued",
        "out",
        TEXT["text"],
        "admin@sansalvador.example",
    )
    assert not graph.mock.calls  # nothing reaches Meta inside the request
    send = OutboundSend.objects.get()

    assert message_send_process(send_id=str(send.pk)) == "accepted"

    assert sent_bodies(graph) == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": f"+{PATIENT}",
            "type": "text",
            "text": {"preview_url": False, "body": TEXT["text"]},
            "biz_opaque_callback_data": str(message.pk),
        }
    ]
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "wamid.HBgLNTAzNzAwMDExMTEVAgARGBI1")
    send.refresh_from_db()
    assert send.state == "done" and send.request_sent_at is not None
    # A second task for the same row sends nothing more.
    assert message_send_process(send_id=str(send.pk)) == "nothing to do"
    assert len(sent_bodies(graph)) == 1


def test_it_sends_a_template_with_its_params(admin_api, cita, graph):
    accepted(graph)

    assert post(admin_api, TEMPLATE).status_code == 202
    message_send_process(send_id=str(OutboundSend.objects.get().pk))

    [body] = sent_bodies(graph)
    assert body["type"] == "template"
    assert body["template"] == {
        "name": "cita",
        "language": {"code": "es"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "10:00"}],
            }
        ],
    }


def accepted_for_bsuid(graph, wamid="wamid.HBgLQlNVSUQVAgARGBI1"):
    """Meta's answer to a send by `recipient`: the BSUID echoed as `user_id`, no `wa_id`."""
    graph.add(
        "POST",
        f"{PNID}/messages",
        json_body={
            "messaging_product": "whatsapp",
            "contacts": [{"input": BSUID, "user_id": BSUID}],
            "messages": [{"id": wamid}],
        },
    )


def test_a_text_to_a_bsuid_goes_to_meta_as_recipient_never_to(admin_api, bsuid_window, graph):
    accepted_for_bsuid(graph)

    response = post(admin_api, {"to": BSUID, "text": "Le esperamos."})

    assert response.status_code == 202
    message = Message.objects.get()
    assert (message.conversation_id, message.status) == (bsuid_window.pk, "queued")
    assert message_send_process(send_id=str(OutboundSend.objects.get().pk)) == "accepted"
    assert sent_bodies(graph) == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "recipient": BSUID,
            "type": "text",
            "text": {"preview_url": False, "body": "Le esperamos."},
            "biz_opaque_callback_data": str(message.pk),
        }
    ]
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "wamid.HBgLQlNVSUQVAgARGBI1")


def test_a_template_to_a_new_bsuid_makes_its_conversation(admin_api, cita, graph):
    accepted_for_bsuid(graph)

    response = post(admin_api, {**TEMPLATE, "to": BSUID})

    assert response.status_code == 202
    conversation = Conversation.objects.get()
    assert (conversation.wa_id, conversation.user_id) == ("", BSUID)
    message_send_process(send_id=str(OutboundSend.objects.get().pk))
    [body] = sent_bodies(graph)
    assert (body["recipient"], "to" in body, body["type"]) == (BSUID, False, "template")


def test_a_bsuid_whose_phone_meta_gave_since_is_sent_to_the_phone(admin_api, bsuid_window, graph):
    Conversation.objects.filter(pk=bsuid_window.pk).update(wa_id=PATIENT)
    accepted(graph)

    assert post(admin_api, {"to": BSUID, "text": "Hola"}).status_code == 202
    message_send_process(send_id=str(OutboundSend.objects.get().pk))

    # Never both: Meta would take `to` anyway.
    [body] = sent_bodies(graph)
    assert (body["to"], "recipient" in body) == (f"+{PATIENT}", False)
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize(
    ("language", "sentence"),
    [
        ("en", "Meta does not send this type of message to a patient known only by BSUID"),
        ("es", "Meta no envía este tipo de mensaje a un paciente conocido solo por su BSUID"),
    ],
)
def test_metas_refusal_of_a_bsuid_recipient_fails_with_its_sentence(
    admin_api, bsuid_window, graph, language, sentence
):
    graph.add(
        "POST",
        f"{PNID}/messages",
        status=400,
        json_body={
            "error": {
                "message": "BSUID recipient not supported for this message type",
                "type": "OAuthException",
                "code": 131062,
                "fbtrace_id": "Ab1",
            }
        },
    )
    post(admin_api, {"to": BSUID, "text": "Hola"})

    assert message_send_process(send_id=str(OutboundSend.objects.get().pk)) == "failed: Meta 131062"

    listed = admin_api.get(
        f"/api/clinics/conversations/{bsuid_window.pk}/messages/", HTTP_ACCEPT_LANGUAGE=language
    ).json()
    [message] = listed["results"]
    assert message["status"] == "failed"
    assert message["error"]["code"] == 131062
    assert message["error"]["detail"].startswith(sentence)
    assert len(graph.mock.calls) == 1


# --- idempotency ----------------------------------------------------------------------------------


def test_the_same_key_and_body_answer_the_same_and_send_once(admin_api, open_window, graph):
    accepted(graph)
    first = post(admin_api, TEXT, key="abc")
    message_send_process(send_id=str(OutboundSend.objects.get().pk))

    again = post(admin_api, {"text": TEXT["text"], "to": TEXT["to"]}, key="abc")

    assert again.status_code == 202
    assert again.json() == first.json()
    assert Message.objects.count() == 1
    assert len(sent_bodies(graph)) == 1


def test_the_same_key_with_another_body_is_409(admin_api, open_window, graph):
    post(admin_api, TEXT, key="abc")

    response = post(admin_api, {**TEXT, "text": "otro"}, key="abc")

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    assert Message.objects.count() == 1


def test_a_key_is_free_again_after_24_hours(admin_api, open_window, graph):
    post(admin_api, TEXT, key="abc")
    OutboundSend.objects.update(key_expires_at=timezone.now() - timedelta(seconds=1))

    response = post(admin_api, {**TEXT, "text": "otro"}, key="abc")

    assert response.status_code == 202
    assert Message.objects.count() == 2


# --- Meta's answers -------------------------------------------------------------------------------


def test_a_lost_answer_stays_sending_until_the_status_event_and_is_never_resent(
    admin_api, open_window, graph
):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ReadTimeout("slow"))
    post(admin_api, TEXT)
    send = OutboundSend.objects.get()
    message = Message.objects.get()

    assert message_send_process(send_id=str(send.pk)) == "answer lost; waiting for Meta's status"

    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "")
    # The sweep and a stray task never send it again.
    OutboundSend.objects.filter(pk=send.pk).update(state="queued")
    assert message_send_process(send_id=str(send.pk)) == "sent before; waiting for Meta's status"
    assert len(graph.mock.calls) == 1
    # Meta's status event names our id: the message is settled.
    messaging_apply_messages_change(
        clinic_id=open_window.clinic_id,
        value={
            "messaging_product": "whatsapp",
            "metadata": {"phone_number_id": PNID},
            "statuses": [
                {
                    "id": "wamid.LATE",
                    "status": "sent",
                    "timestamp": "1765000000",
                    "recipient_id": PATIENT,
                    "biz_opaque_callback_data": str(message.pk),
                }
            ],
        },
        forward=False,
    )
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sent", "wamid.LATE")
    assert message_sends_sweep(now=timezone.now() + timedelta(minutes=11)) == 0


def test_a_lost_answer_is_unknown_after_10_minutes(admin_api, open_window, graph):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ConnectionError("reset"))
    post(admin_api, TEXT)
    message_send_process(send_id=str(OutboundSend.objects.get().pk))

    assert message_sends_sweep(now=timezone.now() + timedelta(minutes=9)) == 0
    assert message_sends_sweep(now=timezone.now() + timedelta(minutes=11)) == 1

    assert Message.objects.get().status == "unknown"


@pytest.mark.parametrize("code", [131047, 131026, 132000, 190, 368])
def test_a_refusal_fails_the_message_with_metas_code(admin_api, open_window, graph, code):
    graph.add(
        "POST",
        f"{PNID}/messages",
        status=400,
        json_body={
            "error": {"message": "refused", "type": "OAuthException", "code": code, "fbtrace_id": "Ab1"}
        },
    )
    post(admin_api, TEXT)

    message_send_process(send_id=str(OutboundSend.objects.get().pk))

    message = Message.objects.get()
    assert (message.status, message.error_code) == ("failed", code)
    assert len(graph.mock.calls) == 1


@pytest.mark.parametrize("code", [130429, 131056])
def test_meta_asking_to_wait_puts_the_send_back_in_the_queue(admin_api, open_window, graph, code):
    graph.add(
        "POST",
        f"{PNID}/messages",
        status=400,
        json_body={
            "error": {"message": "slow down", "type": "OAuthException", "code": code, "fbtrace_id": "Ab1"}
        },
    )
    post(admin_api, TEXT)
    send = OutboundSend.objects.get()

    assert message_send_process(send_id=str(send.pk)) == f"Meta asked to wait ({code})"

    send.refresh_from_db()
    message = Message.objects.get()
    assert (message.status, message.error_code) == ("queued", None)
    assert send.state == "retrying" and send.request_sent_at is None
    assert send.next_attempt_at > timezone.now()


def test_a_patients_second_message_waits_in_the_queue(admin_api, open_window, graph):
    accepted(graph, "wamid.ONE")
    accepted(graph, "wamid.TWO")
    post(admin_api, TEXT, key="one")
    post(admin_api, {**TEXT, "text": "Y traiga su carné."}, key="two")
    first, second = OutboundSend.objects.order_by("message__sequence")

    # A task takes the clinic's due sends oldest first, whichever it was queued for: the first goes
    # first; the second then waits for the patient's 6 seconds, in the queue, without counting an attempt.
    assert message_send_process(send_id=str(second.pk)) == "accepted: 1; paced: 1"
    assert sent_bodies(graph)[0]["biz_opaque_callback_data"] == str(first.message_id)
    # Its own task, run early, finds it still paced: nothing more goes.
    assert message_send_process(send_id=str(second.pk)) == "paced"

    second.refresh_from_db()
    assert second.state == "retrying" and second.attempts == 0
    assert 4 <= (second.next_attempt_at - timezone.now()).total_seconds() <= 6
    assert Message.objects.get(pk=second.message_id).status == "queued"
    assert len(sent_bodies(graph)) == 1


def wamid_per_message(graph):
    """Meta's answer to each send, with a wamid of its own (made from our id, to check each landed on its message)."""

    def answer(request):
        ours = json.loads(request.body)["biz_opaque_callback_data"]
        body = {"messaging_product": "whatsapp", "contacts": [], "messages": [{"id": f"wamid.{ours}"}]}
        return 200, {}, json.dumps(body)

    graph.callback("POST", f"{PNID}/messages", answer)


def patients_writing(clinic, count):
    """`count` patients whose window is open (wa_ids 5037100 and four digits)."""
    for index in range(count):
        wrote_lately(clinic, wa_id=f"5037100{index:04d}")


def test_a_task_sends_a_batch_of_the_clinics_due_sends_oldest_first(admin_api, active, graph):
    wamid_per_message(graph)
    patients_writing(active, 12)
    for index in range(12):
        response = post(admin_api, {"to": f"5037100{index:04d}", "text": f"Hola {index}"}, key=f"k{index}")
        assert response.status_code == 202
    queued = list(OutboundSend.objects.order_by("created_at"))

    # Named for the last send, the task takes the clinic's ten oldest: one connection, ten requests.
    assert message_send_process(send_id=str(queued[-1].pk)) == "accepted: 10"

    first_ten = [str(send.message_id) for send in queued[:10]]
    assert [body["biz_opaque_callback_data"] for body in sent_bodies(graph)] == first_ten
    for send in queued[:10]:
        send.refresh_from_db()
        message = Message.objects.get(pk=send.message_id)
        assert (send.state, send.attempts, message.status) == ("done", 1, "sending")
        assert message.wamid == f"wamid.{message.pk}"  # each answer on its own message
    for send in queued[10:]:
        send.refresh_from_db()
        assert (send.state, send.attempts, send.request_sent_at) == ("queued", 0, None)
        assert Message.objects.get(pk=send.message_id).status == "queued"

    # The next task takes the two left.
    assert message_send_process(send_id=str(queued[0].pk)) == "accepted: 2"
    assert len(sent_bodies(graph)) == 12
    assert set(Message.objects.values_list("status", flat=True)) == {"sending"}


def test_a_batch_stops_at_the_numbers_pace_and_queues_the_rest_without_an_attempt(
    admin_api, active, graph, settings
):
    wamid_per_message(graph)
    patients_writing(active, 10)
    for index in range(10):
        post(admin_api, {"to": f"5037100{index:04d}", "text": f"Hola {index}"}, key=f"k{index}")
    # The number's second is spent by other workers: none of the batch may go now.
    for _ in range(NUMBER_RATE_PER_SECOND):
        assert take_number_slot(PNID, timezone.now()) == 0.0

    assert message_send_process(send_id=str(OutboundSend.objects.first().pk)) == "paced: 10"

    assert not sent_bodies(graph)
    for send in OutboundSend.objects.all():
        assert (send.state, send.attempts, send.request_sent_at) == ("retrying", 0, None)
        assert 0 < (send.next_attempt_at - timezone.now()).total_seconds() <= 1.1
    assert set(Message.objects.values_list("status", flat=True)) == {"queued"}


def test_a_batch_that_runs_long_gives_its_unsent_rows_back_to_the_queue(
    admin_api, active, graph, monkeypatch
):
    monkeypatch.setattr("messaging.sending.BATCH_SECONDS", 0.2)

    def slow_answer(request):
        time.sleep(0.3)  # Meta slow today: the first send alone outlasts the batch's time
        ours = json.loads(request.body)["biz_opaque_callback_data"]
        return 200, {}, json.dumps({"messages": [{"id": f"wamid.{ours}"}]})

    graph.callback("POST", f"{PNID}/messages", slow_answer)
    patients_writing(active, 3)
    for index in range(3):
        post(admin_api, {"to": f"5037100{index:04d}", "text": f"Hola {index}"}, key=f"k{index}")
    first, *rest = OutboundSend.objects.order_by("created_at")

    assert message_send_process(send_id=str(first.pk)) == "accepted: 1; given back: the batch ran long: 2"

    assert len(sent_bodies(graph)) == 1
    for send in rest:
        send.refresh_from_db()
        # Due at once for any worker, the attempt given back, nothing marked sent.
        assert (send.state, send.attempts, send.request_sent_at) == ("retrying", 0, None)
        assert send.next_attempt_at <= timezone.now()
        assert Message.objects.get(pk=send.message_id).status == "queued"


def test_the_five_minute_sweep_makes_lost_answers_unknown(admin_api, open_window, graph, capsys):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ConnectionError("reset"))
    post(admin_api, TEXT)
    message_send_process(send_id=str(OutboundSend.objects.get().pk))
    OutboundSend.objects.update(request_sent_at=timezone.now() - timedelta(minutes=11))

    call_command("requeue_stalled")

    assert Message.objects.get().status == "unknown"
    assert "1 sends with a lost answer now unknown" in capsys.readouterr().out


def test_a_send_that_never_reached_meta_is_tried_again(admin_api, open_window, graph):
    refused = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: refused")
    graph.add(
        "POST",
        f"{PNID}/messages",
        body=requests.exceptions.ConnectionError(
            urllib3.exceptions.MaxRetryError(None, "/messages", refused)
        ),
    )
    post(admin_api, TEXT)
    send = OutboundSend.objects.get()

    assert message_send_process(send_id=str(send.pk)).startswith("retrying in")

    send.refresh_from_db()
    assert (send.state, send.request_sent_at) == ("retrying", None)
    assert Message.objects.get().status == "queued"


def test_a_later_message_never_overtakes_one_being_sent(admin_api, open_window, graph):
    accepted(graph)
    post(admin_api, TEXT, key="one")
    post(admin_api, {**TEXT, "text": "Y traiga su carné."}, key="two")
    first, second = OutboundSend.objects.order_by("message__sequence")
    # Another worker holds the first one (claimed, not yet sent).
    assert SENDS.claim(str(first.pk)) is not None

    assert message_send_process(send_id=str(second.pk)) == "waiting behind an earlier message to the patient"

    second.refresh_from_db()
    assert (second.state, second.attempts, second.request_sent_at) == ("retrying", 0, None)
    assert not graph.mock.calls


def test_every_code_the_contract_names_has_its_action():
    fail = [
        131062,
        131047,
        131026,
        131048,
        131049,
        131050,
        132000,
        132001,
        132005,
        132007,
        132012,
        132015,
        132016,
        190,
        368,
    ]
    assert {code: send_error(code).action for code in fail} == dict.fromkeys(fail, SendAction.FAIL)
    assert send_error(130429).action == send_error(131056).action == SendAction.WAIT
    assert send_error(131056).wait_seconds >= 6
    # A code we do not know fails: retrying it could text the patient twice.
    assert send_error(999999).action == SendAction.FAIL
