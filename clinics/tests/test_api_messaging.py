"""The bot's side of the number in the API: 14 (bot endpoint), 14a (test), 14b (secret), 15 (conversations
and messages), 18 (deliveries to the bot and redelivery). Always the caller's clinic."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from messaging.models import BotDelivery, BotEndpoint, Conversation, Message
from messaging.services import messaging_record_inbound
from messaging.tests import conftest as messaging_fixtures
from messaging.tests.conftest import PNID, load, value_of
from messaging.tests.test_signing import spec_verify

pytestmark = pytest.mark.django_db

# A real HTTP bot on 127.0.0.1 that records what it gets (messaging's fixture).
bot_server = messaging_fixtures.bot_server

BOT = "/api/clinics/bot/"
TEST = "/api/clinics/bot/test/"
SECRET = "/api/clinics/bot/secret/"
CONVERSATIONS = "/api/clinics/conversations/"
DELIVERIES = "/api/clinics/bot/deliveries/"


def messages_url(conversation_id) -> str:
    return f"{CONVERSATIONS}{conversation_id}/messages/"


def redeliver_url(delivery_id) -> str:
    return f"{DELIVERIES}{delivery_id}/redeliver/"


def patient_wrote(clinic, name: str = "webhook_messages_every_type.json", *, forward: bool = True) -> None:
    messaging_record_inbound(
        clinic_id=clinic.pk, phone_number_id=PNID, value=value_of(load(name)), forward=forward
    )


def a_dead_delivery(clinic) -> BotDelivery:
    patient_wrote(clinic, "webhook_messages_text.json")
    delivery = BotDelivery.objects.get(clinic=clinic)
    BotDelivery.objects.filter(pk=delivery.pk).update(
        state="failed",
        attempts=12,
        first_attempt_at=timezone.now(),
        last_error="HTTP 500",
        last_status_code=500,
    )
    return delivery


# --- who may call -----------------------------------------------------------------------------------

CALLS = [
    ("get", BOT),
    ("put", BOT),
    ("post", TEST),
    ("post", SECRET),
    ("get", CONVERSATIONS),
    ("get", messages_url(uuid.uuid4())),
    ("get", DELIVERIES),
    ("post", redeliver_url(uuid.uuid4())),
]
ADMIN_ONLY = [call for call in CALLS if call[0] != "get" or call[1] == DELIVERIES]


@pytest.mark.parametrize(("method", "url"), CALLS)
def test_every_endpoint_needs_credentials(anon_client, clinic, method, url):
    response = getattr(anon_client, method)(url, {}, format="json")
    assert response.status_code == 401
    assert not BotEndpoint.objects.exists()


@pytest.mark.parametrize(("method", "url"), ADMIN_ONLY)
def test_staff_may_not_change_the_bot_or_see_its_deliveries(api_client, clinic_staff, clinic, method, url):
    response = getattr(api_client(clinic_staff), method)(
        url, {"url": "https://bot.example.com/"}, format="json"
    )
    assert response.status_code == 403
    assert "administrators" in response.json()["detail"]
    assert not BotEndpoint.objects.exists()


@pytest.mark.parametrize("url", [BOT, BOT.rstrip("/"), CONVERSATIONS, CONVERSATIONS.rstrip("/")])
def test_staff_read_the_bot_and_the_conversations_with_or_without_the_slash(api_client, clinic_staff, url):
    response = api_client(clinic_staff).get(url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


# --- 14: the bot endpoint ---------------------------------------------------------------------------


def test_without_a_bot_the_endpoint_object_says_none(api_client, clinic_admin):
    response = api_client(clinic_admin).get(BOT)
    assert response.json() == {
        "url": "",
        "status": "none",
        "secret": None,
        "last_success_at": None,
        "failing_since": None,
        "pending": 0,
        "dead": 0,
    }


def test_saving_a_url_makes_it_unverified_and_shows_the_new_secret_once(
    api_client, clinic_admin, clinic, settings
):
    settings.BOT_URL_ALLOW_PRIVATE = True
    client = api_client(clinic_admin)

    response = client.put(BOT.rstrip("/"), {"url": "http://127.0.0.1:9/hook"}, format="json")

    assert response.status_code == 200
    body = response.json()
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert (body["url"], body["status"], body["secret"]) == (
        "http://127.0.0.1:9/hook",
        "unverified",
        endpoint.secret,
    )
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    again = client.get(BOT).json()["secret"]
    assert again.startswith("whsec_") and again.endswith("****") and endpoint.secret[-8:] not in again


@pytest.mark.parametrize(
    ("url", "language", "why"),
    [
        ("ftp://bot.example.com/", "en", "Use an https:// URL."),
        ("http://bot.example.com/", "es", "Use una URL https://."),
        ("https://127.0.0.1/hook", "en", "private, loopback"),
        ("https://user:pw@bot.example.com/", "en", "user names and passwords"),
    ],
)
def test_a_refused_url_is_400_in_the_readers_language_and_saves_nothing(
    api_client, clinic_admin, url, language, why
):
    response = api_client(clinic_admin).put(BOT, {"url": url}, format="json", HTTP_ACCEPT_LANGUAGE=language)

    assert response.status_code == 400
    assert why in response.json()["url"][0]
    assert not BotEndpoint.objects.exists()


def test_another_clinics_bot_is_never_shown(api_client, clinic_admin, other_clinic, settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    BotEndpoint.objects.create(
        clinic=other_clinic, url="http://127.0.0.1:9/x", status="live", secret="whsec_x"
    )
    assert api_client(clinic_admin).get(BOT).json()["status"] == "none"


# --- 14a: test ------------------------------------------------------------------------------------


def test_a_2xx_to_the_signed_ping_makes_the_bot_live(api_client, clinic_admin, clinic, bot_server):
    client = api_client(clinic_admin)
    secret = client.put(BOT, {"url": bot_server.url}, format="json").json()["secret"]

    response = client.post(TEST)

    assert (response.status_code, response.json()) == (200, {"status": "live"})
    [ping] = bot_server.received
    assert spec_verify(secret, ping.headers, ping.body)
    assert BotEndpoint.objects.get(clinic=clinic).status == "live"


def test_a_bot_answering_500_stays_unverified_and_the_answer_says_so(
    api_client, clinic_admin, clinic, bot_server
):
    client = api_client(clinic_admin)
    client.put(BOT, {"url": bot_server.url}, format="json")
    bot_server.answer = lambda _r: (500, {}, b"boom")

    response = client.post(TEST, HTTP_ACCEPT_LANGUAGE="es")

    assert response.status_code == 400
    assert response.json()["status_code"] == 500
    assert "HTTP 500" in response.json()["detail"] and "respondió" in response.json()["detail"]
    assert BotEndpoint.objects.get(clinic=clinic).status == "unverified"


def test_testing_without_a_url_is_400(api_client, clinic_admin):
    response = api_client(clinic_admin).post(TEST)
    assert response.status_code == 400 and "url" in response.json()


# --- 14b: secret ---------------------------------------------------------------------------------


def test_rotating_shows_the_new_secret_in_full_once(api_client, clinic_admin, clinic, settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    client = api_client(clinic_admin)
    old = client.put(BOT, {"url": "http://127.0.0.1:9/hook"}, format="json").json()["secret"]

    response = client.post(SECRET)

    assert response.status_code == 200
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert response.json()["secret"] == endpoint.secret != old
    assert endpoint.previous_secret == old
    assert client.get(BOT).json()["secret"].endswith("****")


# --- 15: conversations and messages -----------------------------------------------------------------


def test_conversations_newest_first_with_their_last_message(api_client, clinic_staff, clinic, other_clinic):
    patient_wrote(clinic, "webhook_messages_text.json", forward=False)
    patient_wrote(clinic, "webhook_messages_text_bsuid.json", forward=False)
    patient_wrote(other_clinic, "webhook_messages_every_type.json", forward=False)

    body = api_client(clinic_staff).get(CONVERSATIONS).json()

    ours = Conversation.objects.filter(clinic=clinic).order_by("-last_message_at")
    assert [c["id"] for c in body["results"]] == [str(c.pk) for c in ours]
    assert body["next"] is None
    [sheena] = [c for c in body["results"] if c["wa_id"] == "16505551234"]
    assert (sheena["needs_human"], sheena["profile_name"]) == (True, "Sheena Nelson")
    assert sheena["last_message"]["text"] == "Does it come in another color?"
    assert sheena["last_message"]["sent_by"] == "patient"


def test_messages_page_newest_first_with_a_cursor(api_client, clinic_staff, clinic):
    patient_wrote(clinic)
    conversation = Conversation.objects.get(wa_id="16505551234")
    total = Message.objects.filter(conversation=conversation).count()
    client = api_client(clinic_staff)

    pages = [client.get(messages_url(conversation.pk), {"limit": 2}).json()]
    while pages[-1]["next"]:
        pages.append(client.get(pages[-1]["next"]).json())

    assert [m["sequence"] for m in pages[0]["results"]] == [total, total - 1]
    assert [m["sequence"] for page in pages for m in page["results"]] == list(range(total, 0, -1))
    assert len(pages) == (total + 1) // 2


def test_another_clinics_conversation_is_404(api_client, clinic_admin, other_clinic):
    patient_wrote(other_clinic)
    theirs = Conversation.objects.filter(clinic=other_clinic).first()

    response = api_client(clinic_admin).get(messages_url(theirs.pk))

    assert response.status_code == 404
    assert "Sheena" not in response.content.decode()


def test_at_most_50_per_page(api_client, clinic_staff, clinic):
    patient_wrote(clinic)
    response = api_client(clinic_staff).get(CONVERSATIONS, {"limit": 500})
    assert response.status_code == 200 and len(response.json()["results"]) <= 50


# --- 18: deliveries to the bot -------------------------------------------------------------------------


def test_dead_deliveries_are_listed_and_redelivered(api_client, clinic_admin, clinic, queued_tasks):
    dead = a_dead_delivery(clinic)
    client = api_client(clinic_admin)

    listed = client.get(DELIVERIES, {"state": "dead"}).json()

    [row] = listed["results"]
    assert (row["id"], row["state"], row["attempts"], row["last_status_code"]) == (
        str(dead.pk),
        "dead",
        12,
        500,
    )
    assert client.get(DELIVERIES, {"state": "pending"}).json()["results"] == []
    assert client.get(BOT).json()["dead"] == 1

    response = client.post(redeliver_url(dead.pk).rstrip("/"))

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["attempts"]) == ("pending", 0)
    row = BotDelivery.objects.get(pk=dead.pk)
    assert (row.state, row.webhook_id) == ("queued", dead.webhook_id)
    assert [task.kwargs for task in queued_tasks][-1] == {"delivery_id": str(dead.pk)}


def test_redelivering_one_that_is_not_dead_is_409(api_client, clinic_admin, clinic):
    patient_wrote(clinic, "webhook_messages_text.json")
    pending = BotDelivery.objects.get()

    response = api_client(clinic_admin).post(redeliver_url(pending.pk), HTTP_ACCEPT_LANGUAGE="es")

    assert response.status_code == 409
    assert BotDelivery.objects.get().state == "queued"


def test_another_clinics_delivery_is_404_and_unchanged(api_client, clinic_admin, other_clinic):
    theirs = a_dead_delivery(other_clinic)
    client = api_client(clinic_admin)

    assert client.post(redeliver_url(theirs.pk)).status_code == 404
    assert client.get(DELIVERIES).json()["results"] == []
    assert BotDelivery.objects.get().state == "failed"


def test_an_unknown_state_is_400(api_client, clinic_admin):
    response = api_client(clinic_admin).get(DELIVERIES, {"state": "lost"})
    assert response.status_code == 400 and "state" in response.json()
