"""Meta's webhook: GET /whatsapp/webhook/<clinic id>/ handshake and signed POST deliveries."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from whatsapp.models import WebhookDelivery, WebhookSignatureFailure
from whatsapp.services import whatsapp_store_credentials
from whatsapp.tests.helpers import (
    APP_SECRET,
    DIGITS,
    OTHER_APP_SECRET,
    OTHER_PNID,
    OTHER_WABA,
    PHONE,
    PNID,
    TOKEN,
    WABA,
    account_deleted,
    account_of,
    account_restriction,
    account_review_update,
    account_violation,
    arrange,
    arrange_active,
    disabled_update,
    meta_bytes,
    name_update,
    partner_app_uninstalled,
    post_webhook,
    quality_update,
    sign,
    snapshot,
    text_message,
    webhook_url,
)

pytestmark = pytest.mark.django_db


DEPLOYMENT_SECRET = "d3pl0ym3nt5ecret00112233445566778899"


def writes_or_other_reads(graph) -> list:
    """Meta calls other than the reads of the health check that the status change queued (tasks run
    inline here): applying an event itself asks Meta nothing."""
    health_reads = ("debug_token", "/phone_numbers", "/subscribed_apps")
    return [
        call
        for call in graph.calls
        if call.request.method != "GET"
        or not (
            urlparse(call.request.url).path.endswith(health_reads)
            or "messaging_limit_tier" in (urlparse(call.request.url).query)
        )
    ]


@pytest.fixture(autouse=True)
def _no_deployment_secret(settings):
    settings.META_APP_SECRET = ""


@pytest.fixture(autouse=True)
def _tasks_run_inline(tasks_run_inline):
    """The delivery's processing runs as soon as it is queued: these tests look at its effects."""


@pytest.fixture
def own_secret(clinic):
    """The clinic's own app secret, set through the service every front door uses."""
    whatsapp_store_credentials(account=clinic.whatsapp, app_secret=APP_SECRET)
    return APP_SECRET


# --- GET handshake --------------------------------------------------------------------------------


def test_it_echoes_the_challenge_for_the_right_token(client, clinic):
    token = account_of(clinic).verify_token

    response = client.get(
        webhook_url(clinic),
        {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"},
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content == b"1158201444"


def test_it_answers_without_a_trailing_slash(client, clinic):
    token = account_of(clinic).verify_token
    response = client.get(
        webhook_url(clinic).rstrip("/"),
        {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"},
    )
    assert response.status_code == 200
    assert response.content == b"42"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.verify_token": "RIGHT", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "RIGHT", "hub.challenge": "1"},
    ],
)
def test_it_refuses_a_wrong_handshake(client, clinic, params):
    token = account_of(clinic).verify_token
    params = {key: (token if value == "RIGHT" else value) for key, value in params.items()}

    response = client.get(webhook_url(clinic), params)

    assert response.status_code == 403
    assert response.content != b"1"


def test_it_does_not_accept_another_clinics_token(client, clinic, other_clinic):
    other_token = account_of(other_clinic).verify_token
    response = client.get(
        webhook_url(clinic), {"hub.mode": "subscribe", "hub.verify_token": other_token, "hub.challenge": "1"}
    )
    assert response.status_code == 403


def test_it_answers_404_for_an_unknown_clinic(client, clinic):
    response = client.get(
        f"/whatsapp/webhook/{uuid.uuid4()}/",
        {"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"},
    )
    assert response.status_code == 404


# --- POST signature -------------------------------------------------------------------------------


def test_it_stores_a_delivery_signed_with_the_clinics_secret(client, clinic, own_secret, graph):
    body = meta_bytes(text_message())

    response = post_webhook(client, clinic, body, secret=own_secret)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.clinic_id == clinic.pk
    assert delivery.raw_body == body.decode()
    assert delivery.fields == "messages"
    # Patients' words are encrypted at rest, bound to the delivery's row.
    with connection.cursor() as cursor:
        cursor.execute("SELECT raw_body FROM whatsapp_webhookdelivery")
        (stored,) = cursor.fetchone()
    assert stored.startswith("enc:v1:test2:")
    assert "Sheena" not in stored and body.decode() not in stored
    assert delivery.processed_at is not None
    assert graph.calls == []  # nothing inside the request calls Meta


def test_it_uses_the_deployment_secret_when_the_clinic_has_none(client, clinic, settings):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    body = meta_bytes(text_message())

    assert post_webhook(client, clinic, body, secret=DEPLOYMENT_SECRET).status_code == 200
    assert WebhookDelivery.objects.count() == 1


def test_it_prefers_the_clinics_secret_to_the_deployments(client, clinic, own_secret, settings):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    body = meta_bytes(text_message())

    assert post_webhook(client, clinic, body, secret=DEPLOYMENT_SECRET).status_code == 403
    assert post_webhook(client, clinic, body, secret=own_secret).status_code == 200


def test_it_refuses_every_post_when_no_secret_is_known(client, clinic):
    body = meta_bytes(text_message())
    assert post_webhook(client, clinic, body, secret="").status_code == 403
    assert post_webhook(client, clinic, body, signature="sha256=").status_code == 403
    assert WebhookDelivery.objects.count() == 0


def _mangle(kind: str, body: bytes) -> tuple[bytes, str | None]:
    good = sign(body, APP_SECRET)
    digest = good.removeprefix("sha256=")
    if kind == "missing":
        return body, None
    if kind == "empty":
        return body, ""
    if kind == "sha1":
        return body, "sha1=" + digest[:40]
    if kind == "no_prefix":
        return body, digest
    if kind == "non_hex":
        return body, "sha256=" + "z" * 64
    if kind == "short":
        return body, good[:-2]
    if kind == "long":
        return body, good + "00"
    if kind == "wrong_secret":
        return body, sign(body, OTHER_APP_SECRET)
    if kind == "changed_byte":
        i = body.index(b"another color")
        return body[:i] + b"A" + body[i + 1 :], good
    if kind == "reserialised":
        return json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8"), good
    if kind == "compact":
        return json.dumps(json.loads(body), separators=(",", ":")).encode("utf-8"), good
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "sha1",
        "no_prefix",
        "non_hex",
        "short",
        "long",
        "wrong_secret",
        "changed_byte",
        "reserialised",
        "compact",
    ],
)
def test_it_refuses_a_bad_signature_and_stores_nothing(client, clinic, own_secret, kind, graph):
    arrange_active(clinic)
    # Meta escapes non-ASCII (\u00ed) and signs those bytes.
    body = meta_bytes(text_message(name="José Martínez Peña"))
    assert b"\\u00e9" in body
    before = snapshot(clinic)
    sent_body, signature = _mangle(kind, body)
    assert sent_body != body or signature != sign(body, APP_SECRET)

    response = post_webhook(client, clinic, sent_body, signature=signature)

    assert response.status_code == 403
    assert WebhookDelivery.objects.count() == 0
    assert snapshot(clinic) == before


def test_it_refuses_a_status_change_with_a_bad_signature(client, clinic, own_secret):
    arrange_active(clinic)
    before = snapshot(clinic)
    body = meta_bytes(account_deleted())

    response = post_webhook(client, clinic, body, signature=sign(body, OTHER_APP_SECRET))

    assert response.status_code == 403
    assert snapshot(clinic) == before


def test_it_accepts_uppercase_hex(client, clinic, own_secret):
    body = meta_bytes(text_message())
    signature = "sha256=" + sign(body, own_secret).removeprefix("sha256=").upper()
    assert post_webhook(client, clinic, body, signature=signature).status_code == 200


def test_it_checks_the_raw_bytes_with_non_ascii_escapes(client, clinic, own_secret):
    body = meta_bytes(text_message(name="José Martínez Peña", body="¿Tienen cita mañana?"))

    response = post_webhook(client, clinic, body, secret=own_secret)

    assert response.status_code == 200
    assert WebhookDelivery.objects.get().raw_body == body.decode("ascii")


# --- size -----------------------------------------------------------------------------------------


def test_it_accepts_a_body_of_almost_3_mb(client, clinic, own_secret):
    payload = text_message(body="x" * (3 * 1024 * 1024 - 2000))
    body = meta_bytes(payload)
    assert 2_900_000 < len(body) <= 3 * 1024 * 1024

    response = post_webhook(client, clinic, body, secret=own_secret)

    assert response.status_code == 200
    assert WebhookDelivery.objects.count() == 1


def test_it_refuses_a_body_over_3_mb(client, clinic, own_secret):
    payload = text_message(body="x" * (3 * 1024 * 1024 + 10))
    body = meta_bytes(payload)

    response = post_webhook(client, clinic, body, secret=own_secret)

    assert response.status_code == 413
    assert WebhookDelivery.objects.count() == 0


# --- storing --------------------------------------------------------------------------------------


def test_it_stores_a_replayed_delivery_once(client, clinic, own_secret):
    body = meta_bytes(text_message())

    first = post_webhook(client, clinic, body, secret=own_secret)
    second = post_webhook(client, clinic, body, secret=own_secret)

    assert (first.status_code, second.status_code) == (200, 200)
    assert WebhookDelivery.objects.count() == 1


def test_it_stores_a_retry_with_other_formatting_once(client, clinic, own_secret):
    """Meta's retry of the same message id is the same delivery, whatever the bytes."""
    payload = text_message()
    post_webhook(client, clinic, meta_bytes(payload), secret=own_secret)
    pretty = json.dumps(payload, indent=2).encode()

    assert post_webhook(client, clinic, pretty, secret=own_secret).status_code == 200
    assert WebhookDelivery.objects.count() == 1


def test_it_stores_the_same_delivery_for_two_clinics(client, clinic, other_clinic, settings):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    body = meta_bytes(account_review_update())
    post_webhook(client, clinic, body, secret=DEPLOYMENT_SECRET)
    post_webhook(client, other_clinic, body, secret=DEPLOYMENT_SECRET)
    assert WebhookDelivery.objects.count() == 2


def test_it_stores_an_unknown_event_kind(client, clinic, own_secret):
    arrange_active(clinic)
    before = snapshot(clinic)
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA,
                "time": 1750000000,
                "changes": [{"field": "business_username_updates", "value": {"status": "reserved"}}],
            }
        ],
    }

    response = post_webhook(client, clinic, meta_bytes(payload), secret=own_secret)

    assert response.status_code == 200
    assert WebhookDelivery.objects.get().fields == "business_username_updates"
    assert snapshot(clinic) == before


def test_it_stores_authentic_invalid_json(client, clinic, own_secret):
    body = b'{"object": "whatsapp_business_account", "entry": [{'

    response = post_webhook(client, clinic, body, secret=own_secret)

    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert delivery.raw_body == body.decode()
    assert delivery.outcome == "invalid JSON"


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'"text"', b"{}", b'{"entry": "x"}', b'{"entry": [{"changes": [1, null]}]}']
)
def test_it_stores_authentic_json_of_another_shape(client, clinic, own_secret, body):
    assert post_webhook(client, clinic, body, secret=own_secret).status_code == 200
    assert WebhookDelivery.objects.count() == 1


def test_it_refuses_other_methods(client, clinic):
    assert client.put(webhook_url(clinic), b"{}", content_type="application/json").status_code == 405


# --- account_update events ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [disabled_update("DISABLE"), account_deleted(), partner_app_uninstalled()],
    ids=["disabled", "deleted", "partner_app_uninstalled"],
)
def test_it_fails_the_connection_on_account_loss(client, clinic, own_secret, graph, payload):
    arrange_active(clinic, detail="")

    response = post_webhook(client, clinic, meta_bytes(payload), secret=own_secret)

    assert response.status_code == 200
    account = account_of(clinic)
    assert account.status == "failed"
    assert account.detail  # what happened and what to do (in the deployment's language)
    assert writes_or_other_reads(graph) == []


def test_it_routes_partner_app_uninstalled_by_waba_info(client, clinic, other_clinic, settings, graph):
    """entry[].id is the partner's portfolio; only waba_info.waba_id names the clinic's WABA."""
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic)
    arrange_active(
        other_clinic, business_account_id=OTHER_WABA, phone_number_id=OTHER_PNID, number="+50370001234"
    )

    response = post_webhook(
        client, clinic, meta_bytes(partner_app_uninstalled(waba=OTHER_WABA)), secret=DEPLOYMENT_SECRET
    )

    assert response.status_code == 200
    assert account_of(other_clinic).status == "failed"
    assert account_of(other_clinic).subscribed_at is None
    assert account_of(clinic).status == "active"


def test_it_rechecks_on_reinstate_without_calling_meta(client, clinic, own_secret, graph):
    arrange_active(clinic, status="failed", detail="Meta disabled this WhatsApp Business Account.")

    response = post_webhook(client, clinic, meta_bytes(disabled_update("REINSTATE")), secret=own_secret)

    assert response.status_code == 200
    account = account_of(clinic)
    assert account.status == "verifying"
    assert account.status_checked_at is None
    assert account.detail != "Meta disabled this WhatsApp Business Account."
    assert writes_or_other_reads(graph) == []


@pytest.mark.parametrize(
    ("payload", "detail_has"),
    [
        (account_restriction(), "RESTRICTED_BIZ_INITIATED_MESSAGING"),
        (account_violation(), "ADULT"),
        (quality_update(), "TIER_UNLIMITED"),
        (name_update(), "APPROVED"),
        (disabled_update("SCHEDULE_FOR_DISABLE"), None),
    ],
    ids=["restriction", "violation", "quality", "name", "schedule_for_disable"],
)
def test_it_reports_but_keeps_the_status(client, clinic, own_secret, payload, detail_has):
    arrange_active(clinic, detail="")

    response = post_webhook(client, clinic, meta_bytes(payload), secret=own_secret)

    assert response.status_code == 200
    account = account_of(clinic)
    assert account.status == "active"
    if detail_has:
        assert detail_has in account.detail
    assert WebhookDelivery.objects.count() == 1


def test_it_routes_quality_updates_by_display_digits(client, clinic, other_clinic, settings):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic, detail="")
    arrange_active(other_clinic, phone_number_id=OTHER_PNID, number="+50370001234", detail="")

    post_webhook(client, clinic, meta_bytes(quality_update(digits="50370001234")), secret=DEPLOYMENT_SECRET)

    assert "TIER_UNLIMITED" in account_of(other_clinic).detail
    assert account_of(clinic).detail == ""
    assert PHONE.lstrip("+") == DIGITS


def test_it_routes_by_metadata_phone_number_id(client, clinic, other_clinic, settings):
    """A change that names the number by id reaches the clinic that has that id."""
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic, detail="")
    arrange_active(
        other_clinic, phone_number_id=OTHER_PNID, business_account_id=OTHER_WABA, number="+50370001234"
    )
    payload = account_deleted(waba="999999999999999")
    payload["entry"][0]["changes"][0]["value"]["metadata"] = {
        "display_phone_number": "",
        "phone_number_id": OTHER_PNID,
    }

    post_webhook(client, clinic, meta_bytes(payload), secret=DEPLOYMENT_SECRET)

    assert account_of(other_clinic).status == "failed"
    assert account_of(clinic).status == "active"


def test_it_routes_by_waba_with_the_deployment_secret(client, clinic, other_clinic, settings, graph):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic)
    arrange_active(
        other_clinic, business_account_id=OTHER_WABA, phone_number_id=OTHER_PNID, number="+50370001234"
    )

    post_webhook(
        client, clinic, meta_bytes(disabled_update("DISABLE", waba=OTHER_WABA)), secret=DEPLOYMENT_SECRET
    )

    assert account_of(other_clinic).status == "failed"
    assert account_of(clinic).status == "active"
    assert writes_or_other_reads(graph) == []


def test_a_clinics_own_secret_cannot_change_another_clinic(client, clinic, other_clinic, own_secret):
    arrange_active(clinic)
    arrange_active(
        other_clinic, business_account_id=OTHER_WABA, phone_number_id=OTHER_PNID, number="+50370001234"
    )
    before = snapshot(other_clinic)

    for payload in (
        disabled_update("DISABLE", waba=OTHER_WABA),
        account_deleted(waba=OTHER_WABA),
        partner_app_uninstalled(waba=OTHER_WABA),
        quality_update(digits="50370001234", waba=OTHER_WABA),
    ):
        assert post_webhook(client, clinic, meta_bytes(payload), secret=own_secret).status_code == 200

    assert snapshot(other_clinic) == before
    assert account_of(clinic).status == "active"


def test_it_ignores_events_for_unknown_accounts(client, clinic, settings):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic)
    before = snapshot(clinic)

    response = post_webhook(
        client, clinic, meta_bytes(account_deleted(waba="777777777777777")), secret=DEPLOYMENT_SECRET
    )

    assert response.status_code == 200
    assert snapshot(clinic) == before
    assert WebhookDelivery.objects.count() == 1


def test_it_applies_every_change_of_a_batch(client, clinic, own_secret):
    arrange_active(clinic, detail="")
    payload = account_violation()
    payload["entry"].append(account_deleted()["entry"][0] | {"time": 1743451999})

    post_webhook(client, clinic, meta_bytes(payload), secret=own_secret)

    assert account_of(clinic).status == "failed"


def test_it_queues_the_events_and_applies_nothing_in_the_request(
    client, clinic, own_secret, graph, database_tasks, django_assert_max_num_queries
):
    arrange(clinic, status="active", business_account_id=WABA, phone_number_id=PNID, access_token=TOKEN)
    with django_assert_max_num_queries(6):
        response = post_webhook(client, clinic, meta_bytes(account_deleted()), secret=own_secret)

    assert response.status_code == 200
    assert response.json() == {"status": "received"}
    assert account_of(clinic).status == "active"  # the worker applies it, not the request
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "queued"
    task_row = DBTaskResult.objects.get()
    assert task_row.task_path == "whatsapp.deliveries.process_webhook_delivery"
    assert task_row.args_kwargs["kwargs"] == {"delivery_id": str(delivery.pk)}
    assert graph.calls == []


def test_it_queues_a_replay_once(client, clinic, own_secret, database_tasks):
    body = meta_bytes(account_deleted())
    assert post_webhook(client, clinic, body, secret=own_secret).json() == {"status": "received"}
    assert post_webhook(client, clinic, body, secret=own_secret).json() == {"status": "duplicate"}
    assert WebhookDelivery.objects.count() == 1
    assert DBTaskResult.objects.count() == 1


def test_it_counts_signature_failures(client, clinic, own_secret):
    body = meta_bytes(text_message())
    for _ in range(3):
        assert post_webhook(client, clinic, body, signature=sign(body, OTHER_APP_SECRET)).status_code == 403

    assert WebhookSignatureFailure.objects.get(clinic=clinic).count == 3


@pytest.mark.parametrize("path", ["/whatsapp/webhook/" + "-" * 36 + "/", "/whatsapp/webhook/not-a-uuid/"])
def test_it_answers_404_for_a_malformed_clinic_id(client, path):
    assert client.get(path, {"hub.mode": "subscribe"}).status_code == 404
    assert client.post(path, b"{}", content_type="application/json").status_code == 404


def test_it_answers_the_handshake_without_the_trailing_slash(client, clinic):
    token = clinic.whatsapp.verify_token
    response = client.get(
        f"/whatsapp/webhook/{clinic.pk}",
        {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"},
    )
    assert (response.status_code, response.content) == (200, b"42")
