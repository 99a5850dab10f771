"""Issue 21's statuses of a send: Meta's "wait" in a `failed` status event sends again, and every status
our side settles (refused at the worker, refused in Meta's answer, `unknown` after a lost answer)
reaches the bot like Meta's. Meta is faked at HTTP (`responses`), its status events come through the
webhook worker, and the bot is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from clinics.tests.factories import set_whatsapp
from clinics.tests.test_api_messages import (
    BSUID,
    PATIENT,
    TEXT,
    accepted,
    accepted_for_bsuid,
    bsuid_window,
    open_window,
    post,
    sent_bodies,
)
from messaging.models import BotDelivery, BotEndpoint, Conversation, Message, OutboundSend
from messaging.outbox import bot_delivery_attempt, webhook_id_for
from messaging.sending import message_send_process, message_sends_sweep
from messaging.signing import new_signing_secret
from messaging.tests import conftest as messaging_fixtures
from messaging.tests.conftest import load
from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.models import WhatsAppStatus
from whatsapp.tests.helpers import PNID, account_of, meta_bytes

__all__ = ["bsuid_window", "open_window"]

pytestmark = pytest.mark.django_db

# A real HTTP bot on 127.0.0.1 that records what it gets (messaging's fixture).
bot_server = messaging_fixtures.bot_server


@pytest.fixture
def bot(clinic, bot_server):
    """The clinic's bot switched on, its endpoint live at the recording server."""
    clinic.bot_enabled = True
    clinic.save(update_fields=["bot_enabled"])
    BotEndpoint.objects.create(clinic=clinic, url=bot_server.url, status="live", secret=new_signing_secret())
    return bot_server


def status(wamid: str, name: str, *, our_id, code: int | None = None, at: int = 1765000000) -> dict:
    """One entry of Meta's `statuses` about our message (Meta echoes our id)."""
    entry = {
        "id": wamid,
        "status": name,
        "timestamp": str(at),
        "recipient_id": PATIENT,
        "biz_opaque_callback_data": str(our_id),
    }
    if code is not None:
        entry["errors"] = [{"code": code, "title": "Meta's title", "message": "Meta's message"}]
    return entry


def meta_says(clinic, wamid: str, name: str, *, our_id, code: int | None = None, also: tuple = ()) -> None:
    """Meta posts a status event of our message (with `also`, more entries in the same delivery) to the
    webhook; the worker applies it."""
    entries = [status(wamid, name, our_id=our_id, code=code), *also]
    payload = load("webhook_messages_status_sent.json")  # Meta's envelope, our statuses in it
    payload["entry"][0]["changes"][0]["value"]["statuses"] = entries
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(payload), signed_with_clinic_secret=True
    )
    assert delivery is not None
    whatsapp_delivery_process(delivery_id=str(delivery.pk))


def refused(graph, code: int) -> None:
    graph.add(
        "POST",
        f"{PNID}/messages",
        status=400,
        json_body={"error": {"message": "no", "type": "OAuthException", "code": code, "fbtrace_id": "Ab1"}},
    )


def work_the_send() -> str:
    """The send worker runs the send's task once, the patient's 6 seconds since the last try gone by."""
    cache.clear()
    return message_send_process(send_id=str(OutboundSend.objects.get().pk))


def status_deliveries() -> list[tuple[str, int | None]]:
    return list(
        BotDelivery.objects.filter(event_type="message.status")
        .order_by("created_at")
        .values_list("event_status", "event_error_code")
    )


def bot_receives_everything(bot) -> list[dict]:
    """Every waiting delivery is attempted once; what the bot got, in order."""
    for pk in BotDelivery.objects.order_by("created_at").values_list("pk", flat=True):
        bot_delivery_attempt(delivery_id=str(pk))
    return [json.loads(received.body) for received in bot.received]


# --- Meta's `failed` status with a code that says to wait --------------------------------------------


@pytest.mark.parametrize(("code", "wait"), [(130429, 2), (131056, 6)])
def test_a_failed_status_asking_to_wait_sends_the_same_message_again(
    admin_api, open_window, graph, bot, queued_tasks, code, wait
):
    accepted(graph, "wamid.FIRST")
    accepted(graph, "wamid.SECOND")
    post(admin_api, TEXT)
    message = Message.objects.get()
    assert work_the_send() == "accepted"

    meta_says(open_window.clinic, "wamid.FIRST", "failed", our_id=message.pk, code=code)

    message.refresh_from_db()
    send = OutboundSend.objects.get()
    assert (message.status, message.wamid, message.error_code) == ("queued", "", None)
    assert (send.state, send.request_sent_at, send.attempts) == ("retrying", None, 1)
    assert wait - 1 <= (send.next_attempt_at - timezone.now()).total_seconds() <= wait
    assert {"send_id": str(send.pk)} in [task.kwargs for task in queued_tasks]
    # A try that will be made again is not a status the bot sees.
    assert status_deliveries() == []
    # Meta's duplicate of that failure, batched with another message's status, changes nothing.
    late = status("wamid.FIRST", "failed", our_id=message.pk, code=code, at=1765000009)
    meta_says(open_window.clinic, "wamid.NOT-OURS", "delivered", our_id="", also=(late,))
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("queued", None)

    assert work_the_send() == "accepted"

    first, second = sent_bodies(graph)
    assert first == second  # the same message, with our same id for Meta to echo
    assert second["biz_opaque_callback_data"] == str(message.pk)
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "wamid.SECOND")
    # The first try's failure, once more with the second's `sent`, says nothing of the message sent again.
    meta_says(open_window.clinic, "wamid.SECOND", "sent", our_id=message.pk, also=(late,))

    message.refresh_from_db()
    assert (message.status, message.wamid, message.error_code) == ("sent", "wamid.SECOND", None)
    assert OutboundSend.objects.get().state == "done"
    assert status_deliveries() == [("sent", None)]
    [received] = bot_receives_everything(bot)
    assert (received["type"], received["message"]["id"], received["message"]["status"]) == (
        "message.status",
        str(message.pk),
        "sent",
    )
    assert len(sent_bodies(graph)) == 2


def test_the_waits_are_bounded_then_the_message_fails_with_metas_code(
    admin_api, open_window, graph, bot, queued_tasks, settings
):
    settings.TASK_RETRY_ATTEMPTS = 2
    accepted(graph, "wamid.FIRST")
    accepted(graph, "wamid.SECOND")
    post(admin_api, TEXT)
    message = Message.objects.get()
    work_the_send()
    meta_says(open_window.clinic, "wamid.FIRST", "failed", our_id=message.pk, code=130429)
    work_the_send()

    meta_says(open_window.clinic, "wamid.SECOND", "failed", our_id=message.pk, code=130429)

    message.refresh_from_db()
    assert (message.status, message.wamid, message.error_code) == ("failed", "wamid.SECOND", 130429)
    assert OutboundSend.objects.get().state == "done"
    assert work_the_send() == "nothing to do"
    assert len(sent_bodies(graph)) == 2
    assert status_deliveries() == [("failed", 130429)]
    [received] = bot_receives_everything(bot)
    assert (received["message"]["status"], received["message"]["error"]) == (
        "failed",
        {
            "code": 130429,
            "detail": "Meta siguió rechazando este mensaje durante un tiempo (código 130429), así que no se envió.",
        },
    )


# Committed transactions: Meta's answer is faked in the Graph call's own thread (another connection).
@pytest.mark.django_db(transaction=True)
def test_a_wait_status_that_outruns_metas_answer_leaves_the_send_in_one_workers_hands(
    admin_api, open_window, graph, bot, queued_tasks
):
    post(admin_api, TEXT)
    message = Message.objects.get()
    wamids = iter(["wamid.FIRST", "wamid.SECOND"])
    while_out: list[str] = []

    def meta(request):
        wamid = next(wamids)
        if wamid == "wamid.FIRST":
            try:
                # Meta's webhook fails this try before its answer to the request reaches the worker.
                meta_says(open_window.clinic, wamid, "failed", our_id=message.pk, code=131056)
                # Still the first worker's: another task takes nothing while the request is out.
                while_out.append(message_send_process(send_id=str(OutboundSend.objects.get().pk)))
            finally:
                connection.close()
        return 200, {}, json.dumps({"messaging_product": "whatsapp", "messages": [{"id": wamid}]})

    graph.callback("POST", f"{PNID}/messages", meta)

    assert work_the_send() == "Meta failed it meanwhile asking to wait; queued again"
    assert while_out == ["nothing to do"]

    message.refresh_from_db()
    send = OutboundSend.objects.get()
    assert (message.status, message.wamid) == ("queued", "")
    assert (send.state, send.request_sent_at) == ("retrying", None)
    assert 5 <= (send.next_attempt_at - timezone.now()).total_seconds() <= 6
    assert len(sent_bodies(graph)) == 1

    assert work_the_send() == "accepted"

    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "wamid.SECOND")
    assert len(sent_bodies(graph)) == 2
    assert status_deliveries() == []


def test_a_wait_after_meta_said_sent_is_final(admin_api, open_window, graph, bot, queued_tasks):
    accepted(graph, "wamid.FIRST")
    post(admin_api, TEXT)
    message = Message.objects.get()
    work_the_send()
    meta_says(open_window.clinic, "wamid.FIRST", "sent", our_id=message.pk)

    meta_says(open_window.clinic, "wamid.FIRST", "failed", our_id=message.pk, code=131056)

    message.refresh_from_db()
    assert (message.status, message.error_code) == ("failed", 131056)
    assert status_deliveries() == [("sent", None), ("failed", 131056)]
    assert work_the_send() == "nothing to do"
    assert len(sent_bodies(graph)) == 1


# --- a patient known only by BSUID ------------------------------------------------------------------


def meta_says_to_bsuid(clinic, name: str, *, wamid: str = "", our_id) -> None:
    """Meta's status event of a send to a BSUID (2026 form): the patient named by `recipient_user_id`
    alone, no `recipient_id` (Meta withholds the phone), and a contact with no `wa_id`."""
    entry = status(wamid, name, our_id=our_id)
    del entry["recipient_id"]
    entry["recipient_user_id"] = BSUID
    payload = load("webhook_messages_status_sent.json")
    value = payload["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = PNID
    value["contacts"] = [{"profile": {"name": "Pablo M.", "username": "pablomorales"}, "user_id": BSUID}]
    value["statuses"] = [entry]
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(payload), signed_with_clinic_secret=True
    )
    assert delivery is not None
    whatsapp_delivery_process(delivery_id=str(delivery.pk))


def test_a_send_to_a_bsuid_is_moved_by_metas_events_that_name_no_phone(
    admin_api, bsuid_window, graph, bot, queued_tasks
):
    accepted_for_bsuid(graph, "wamid.BSUID")
    assert post(admin_api, {"to": BSUID, "text": "Le esperamos."}).status_code == 202
    message = Message.objects.get()
    assert work_the_send() == "accepted"
    [body] = sent_bodies(graph)
    assert (body["recipient"], "to" in body) == (BSUID, False)

    meta_says_to_bsuid(bsuid_window.clinic, "sent", wamid="wamid.BSUID", our_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sent", "wamid.BSUID")
    meta_says_to_bsuid(bsuid_window.clinic, "delivered", wamid="wamid.BSUID", our_id=message.pk)

    message.refresh_from_db()
    assert message.status == "delivered"
    assert status_deliveries() == [("sent", None), ("delivered", None)]
    assert [(r["message"]["id"], r["message"]["status"]) for r in bot_receives_everything(bot)] == [
        (str(message.pk), "sent"),
        (str(message.pk), "delivered"),
    ]


def test_a_lost_answer_to_a_bsuid_is_settled_by_our_id_in_metas_event(admin_api, bsuid_window, graph):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ReadTimeout("slow"))
    post(admin_api, {"to": BSUID, "text": "Le esperamos."})
    message = Message.objects.get()
    assert work_the_send() == "answer lost; waiting for Meta's status"

    meta_says_to_bsuid(bsuid_window.clinic, "delivered", wamid="wamid.LATE", our_id=message.pk)

    message.refresh_from_db()
    assert (message.status, message.wamid) == ("delivered", "wamid.LATE")


# --- statuses our side settles reach the bot too ----------------------------------------------------


def test_metas_refusal_in_its_answer_reaches_the_bot_once(admin_api, open_window, graph, bot, queued_tasks):
    refused(graph, 131026)
    post(admin_api, TEXT)
    message = Message.objects.get()

    assert work_the_send() == "failed: Meta 131026"
    assert work_the_send() == "nothing to do"

    message.refresh_from_db()
    assert (message.status, message.error_code) == ("failed", 131026)
    [delivery] = BotDelivery.objects.all()
    assert (delivery.event_type, delivery.event_status, delivery.event_error_code) == (
        "message.status",
        "failed",
        131026,
    )
    assert delivery.conversation_id == open_window.pk
    assert delivery.webhook_id == webhook_id_for(
        clinic_id=open_window.clinic_id, event="message.status", key=f"{message.pk}:failed"
    )
    [received] = bot_receives_everything(bot)
    assert bot.received[0].headers["webhook-id"] == delivery.webhook_id
    assert received["message"] | {"text": None} == received["message"] | {
        "id": str(message.pk),
        "status": "failed",
        "error": {"code": 131026, "detail": received["message"]["error"]["detail"]},
        "text": None,
    }
    assert len(sent_bodies(graph)) == 1


def test_a_text_whose_window_closed_in_the_queue_fails_before_meta(
    admin_api, open_window, graph, bot, queued_tasks, clinic_admin
):
    post(admin_api, TEXT)
    Conversation.objects.filter(pk=open_window.pk).update(window_open_until=timezone.now())

    assert work_the_send() == "failed: the window closed"

    message = Message.objects.get()
    assert (message.status, message.error_code) == ("failed", 131047)
    assert OutboundSend.objects.get().state == "done"
    assert not graph.mock.calls
    assert status_deliveries() == [("failed", 131047)]
    # The people on the page read why, in their language.
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)
    assert "More than 24 hours have passed since the patient" in page.get("/conversations/").content.decode()
    [received] = bot_receives_everything(bot)
    # Meta's code with its sentence, in the product's language (Spanish).
    assert received["message"]["error"]["code"] == 131047
    assert received["message"]["error"]["detail"].startswith("Han pasado más de 24 horas")


def test_a_number_that_stays_inactive_fails_the_send_and_tells_the_bot(
    admin_api, open_window, graph, bot, queued_tasks, settings
):
    settings.TASK_RETRY_ATTEMPTS = 2
    post(admin_api, TEXT)
    set_whatsapp(open_window.clinic, status=WhatsAppStatus.DISCONNECTED)

    assert work_the_send().startswith("retrying in")
    assert status_deliveries() == []
    assert work_the_send() == "given up"

    message = Message.objects.get()
    assert (message.status, message.error_code) == ("failed", None)
    assert OutboundSend.objects.get().state == "failed"
    assert not graph.mock.calls
    assert status_deliveries() == [("failed", None)]
    [received] = bot_receives_everything(bot)
    assert (received["message"]["status"], received["message"]["error"]) == ("failed", None)


def test_metas_try_again_until_the_retries_end_fails_with_its_code_and_says_we_stopped(
    admin_api, open_window, graph, bot, queued_tasks, settings
):
    settings.TASK_RETRY_ATTEMPTS = 2
    refused(graph, 131000)
    refused(graph, 131000)
    post(admin_api, TEXT)

    assert work_the_send().startswith("retrying in")
    assert work_the_send() == "failed: Meta 131000"

    message = Message.objects.get()
    assert (message.status, message.error_code) == ("failed", 131000)
    assert len(sent_bodies(graph)) == 2
    assert status_deliveries() == [("failed", 131000)]
    [received] = bot_receives_everything(bot)
    assert received["message"]["error"] == {
        "code": 131000,
        "detail": "Meta siguió rechazando este mensaje durante un tiempo (código 131000), así que no se envió.",
    }


def test_a_lost_answer_made_unknown_reaches_the_bot_once(admin_api, open_window, graph, bot, queued_tasks):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ReadTimeout("slow"))
    post(admin_api, TEXT)
    work_the_send()
    message = Message.objects.get()

    assert message_sends_sweep(now=timezone.now() + timedelta(minutes=11)) == 1
    assert message_sends_sweep(now=timezone.now() + timedelta(minutes=16)) == 0

    message.refresh_from_db()
    assert message.status == "unknown"
    assert status_deliveries() == [("unknown", None)]
    [received] = bot_receives_everything(bot)
    assert (received["message"]["id"], received["message"]["status"]) == (str(message.pk), "unknown")
    # Meta's event settles it later: the bot hears that too, and nothing was sent again.
    meta_says(open_window.clinic, "wamid.LATE", "delivered", our_id=message.pk)
    assert status_deliveries() == [("unknown", None), ("delivered", None)]
    assert len(graph.mock.calls) == 1


def test_with_the_bot_off_a_settled_send_queues_nothing_for_it(admin_api, open_window, graph, queued_tasks):
    refused(graph, 131026)
    post(admin_api, TEXT)

    work_the_send()

    assert Message.objects.get().status == "failed"
    assert not BotDelivery.objects.exists()


def test_a_lost_answer_that_meta_failed_asking_to_wait_is_sent_again(
    admin_api, open_window, graph, bot, queued_tasks
):
    graph.add("POST", f"{PNID}/messages", body=requests.exceptions.ReadTimeout("slow"))
    accepted(graph, "wamid.SECOND")
    post(admin_api, TEXT)
    message = Message.objects.get()
    assert work_the_send() == "answer lost; waiting for Meta's status"
    message_sends_sweep(now=timezone.now() + timedelta(minutes=11))

    # Meta never took it: its status event, matched by our id, says to wait.
    meta_says(open_window.clinic, "wamid.FIRST", "failed", our_id=message.pk, code=130429)

    message.refresh_from_db()
    assert (message.status, message.wamid, message.error_code) == ("queued", "", None)
    assert work_the_send() == "accepted"
    message.refresh_from_db()
    assert (message.status, message.wamid) == ("sending", "wamid.SECOND")
    assert len(sent_bodies(graph)) == 2
    assert status_deliveries() == [("unknown", None)]
