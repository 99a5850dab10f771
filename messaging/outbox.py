"""Deliveries to the clinic's bot: the body, one signed attempt, and what it means for the row.

The deliveries are the `BOT_DELIVERIES` outbox of common's lease, claim and retry
loop: clinic by clinic in turn (one clinic's backlog never holds another's), and
one conversation's deliveries one at a time, oldest first (its lane), so the bot
sees a patient's messages in `sequence` order. A task (`bot_delivery_attempt`)
claims the row whose turn it is, calls `deliver_one(delivery)` outside any
transaction, then `bot_delivery_record_outcome` with what came back. The
`requeue_stalled` sweep queues again a row whose worker died. Contract: "Forwarding" in api-contract.md: a `2xx` within
10 seconds acknowledges; anything else is retried after about 5 s, 30 s, 2 min,
10 min, 30 min, then hourly, for 24 hours from the first try, waiting at least
what the bot's `Retry-After` asks (up to an hour); then the delivery is `dead`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django_tasks import task

from common.outbox import UNFINISHED, Outbox, OutboxState
from whatsapp.alerts import whatsapp_alert_record
from whatsapp.models import AlertKind

from .exceptions import BotDeliveryNotDeadError, BotError
from .models import (
    BotDelivery,
    BotEndpoint,
    BotEndpointStatus,
    BotEventType,
    Conversation,
    Message,
)
from .poster import post_to_bot
from .send_errors import send_error_detail
from .signing import webhook_headers

logger = logging.getLogger(__name__)

RETRY_DELAYS_SECONDS = (5, 30, 120, 600, 1800)
RETRY_HOURLY_SECONDS = 3600
GIVE_UP_AFTER = timedelta(hours=24)
# Failures for this long, with no success between, make a live endpoint `failing`.
FAILING_AFTER = timedelta(minutes=10)


def webhook_id_for(*, clinic_id: Any, event: str, key: str) -> str:
    """A `webhook-id` derived from Meta's ids: the same for every retry and every Meta duplicate."""
    digest = hashlib.sha256(f"{clinic_id}\n{event}\n{key}".encode()).digest()
    return "evt_" + base64.b32encode(digest).decode("ascii")[:32].lower()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def conversation_body(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "wa_id": conversation.wa_id or None,
        "user_id": conversation.user_id or None,
        "profile_name": conversation.profile_name,
        "window_open_until": _iso(conversation.window_open_until),
        "needs_human": conversation.needs_human,
        "last_message_at": _iso(conversation.last_message_at),
    }


def message_body(
    message: Message, *, status: str | None = None, error_code: int | None = None
) -> dict[str, Any]:
    """The contract's message object; a status event passes the status it reports."""
    status = message.status if status is None else status
    code = message.error_code if error_code is None else error_code
    return {
        "id": str(message.pk),
        "wamid": message.wamid or None,
        "direction": message.direction,
        "type": message.type,
        "text": message.text,
        "media": message.media_info,
        "details": message.details_info,
        "sent_by": message.sent_by,
        "status": status or None,
        "error": None if code is None else message_error_body(code),
        "created_at": _iso(message.created_at),
        "sequence": message.sequence,
    }


def message_error_body(code: int) -> dict[str, Any]:
    """Meta's code with its sentence, in the product's language (`LANGUAGE_CODE`): a bot has none of its own."""
    with translation.override(settings.LANGUAGE_CODE):
        return {"code": code, "detail": send_error_detail(code)}


def delivery_body(delivery: BotDelivery) -> dict[str, Any]:
    """What the bot receives for a delivery: `{"type", "clinic_id", "conversation", "message"}`."""
    message = delivery.message
    conversation = delivery.conversation
    return {
        "type": delivery.event_type,
        "clinic_id": str(delivery.clinic_id),
        "conversation": None if conversation is None else conversation_body(conversation),
        "message": None
        if message is None
        else message_body(
            message,
            status=delivery.event_status if delivery.event_type == BotEventType.MESSAGE_STATUS else None,
            error_code=delivery.event_error_code,
        ),
    }


def ping_body(clinic_id: Any) -> dict[str, Any]:
    return {
        "type": BotEventType.PING.value,
        "clinic_id": str(clinic_id),
        "conversation": None,
        "message": None,
    }


def new_ping_id() -> str:
    return "evt_ping_" + secrets.token_hex(12)


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes posted and signed."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: acknowledged, retry at `retry_at`, or dead. `error` holds no patient data."""

    ACKNOWLEDGED = "acknowledged"
    RETRY = "retry"
    DEAD = "dead"

    kind: str
    attempted_at: datetime
    retry_at: datetime | None = None
    status_code: int | None = None
    error: str = ""


def next_attempt_at(
    *, attempt: int, first_attempt_at: datetime, now: datetime, retry_after_seconds: int | None = None
) -> datetime | None:
    """When to try again after failed attempt number `attempt` (1 for the first), or None: give up."""
    delays, hourly, give_up_after = _schedule()
    delay = delays[attempt - 1] if attempt <= len(delays) else hourly
    if retry_after_seconds is not None:
        delay = max(delay, retry_after_seconds)
    when = now + timedelta(seconds=delay)
    return None if when > first_attempt_at + give_up_after else when


def _schedule() -> tuple[tuple[int, ...], int, timedelta]:
    """The retry delays, the hourly pause and the give-up horizon (BOT_RETRY_SCALE shortens them for tests)."""
    scale = float(settings.BOT_RETRY_SCALE)
    return (
        tuple(max(1, int(d * scale)) for d in RETRY_DELAYS_SECONDS),
        max(1, int(RETRY_HOURLY_SECONDS * scale)),
        GIVE_UP_AFTER * scale,
    )


def _failed(
    delivery: BotDelivery,
    now: datetime,
    error: str,
    *,
    status_code: int | None = None,
    retry_after: int | None = None,
) -> Outcome:
    when = next_attempt_at(
        attempt=max(delivery.attempts, 1),  # counted by the claim
        first_attempt_at=delivery.first_attempt_at or now,
        now=now,
        retry_after_seconds=retry_after,
    )
    kind = Outcome.DEAD if when is None else Outcome.RETRY
    return Outcome(kind=kind, attempted_at=now, retry_at=when, status_code=status_code, error=error)


def deliver_one(delivery: BotDelivery) -> Outcome:
    """Post one delivery to the clinic's bot, signed, and say what came of it. Changes nothing.

    Call it with no transaction open: the POST may take up to 10 seconds.
    """
    now = timezone.now()
    endpoint = BotEndpoint.objects.filter(clinic_id=delivery.clinic_id).first()
    if endpoint is None or not endpoint.url:
        return _failed(delivery, now, "no bot URL")
    signing = endpoint.signing_secrets(now)
    if not signing:
        return _failed(delivery, now, "no signing secret")
    body = encode(delivery_body(delivery))
    headers = webhook_headers(
        signing, webhook_id=delivery.webhook_id, timestamp=int(now.timestamp()), body=body
    )
    try:
        answer = post_to_bot(endpoint.url, body=body, headers=headers)
    except BotError as exc:
        logger.info("Bot delivery %s failed: %s", delivery.webhook_id, exc.code)
        return _failed(delivery, now, f"{exc.code}: {exc}"[:255])
    if answer.ok:
        return Outcome(kind=Outcome.ACKNOWLEDGED, attempted_at=now, status_code=answer.status)
    logger.info("Bot delivery %s answered HTTP %s", delivery.webhook_id, answer.status)
    return _failed(
        delivery,
        now,
        f"HTTP {answer.status}",
        status_code=answer.status,
        retry_after=answer.retry_after_seconds,
    )


@task()
def deliver_to_bot(delivery_id: str) -> str:
    """The background task: one attempt of the delivery whose turn it is."""
    return bot_delivery_attempt(delivery_id=delivery_id)


# A worker holds a delivery this long (the POST takes at most 10 seconds); then the sweep queues it again.
DELIVERY_LEASE = timedelta(minutes=2)

BOT_DELIVERIES: Outbox[BotDelivery] = Outbox(
    model=BotDelivery,
    task=deliver_to_bot,
    row_arg="delivery_id",
    lease=lambda: DELIVERY_LEASE,
    tenant="clinic",
    oldest_first="created_at",
    lane="conversation",
)


def bot_delivery_attempt(*, delivery_id: Any) -> str:
    """Claim the delivery whose turn it is, post it to the bot with no transaction open, record the outcome."""
    delivery = BOT_DELIVERIES.claim(delivery_id)
    if delivery is None:
        return "nothing to do"
    try:
        outcome = deliver_one(delivery)
    except Exception as exc:
        logger.exception("Bot delivery %s could not be attempted", delivery.webhook_id)
        outcome = _failed(delivery, timezone.now(), type(exc).__name__)
    return bot_delivery_record_outcome(delivery=delivery, outcome=outcome)


@transaction.atomic
def bot_delivery_record_outcome(*, delivery: BotDelivery, outcome: Outcome) -> str:
    """Write what an attempt gave to its row, and to the endpoint's health, in one short transaction.

    A success makes a `failing` endpoint `live` again; failures for 10 minutes with
    no success make a `live` one `failing`: the clinic's admins are warned once for
    the episode, and the conversations still waiting for a delivery need a person.
    A row already delivered or dead is left alone. Returns what happens next.
    """
    now = outcome.attempted_at
    if not BotDelivery.objects.filter(pk=delivery.pk, state__in=UNFINISHED).exists():
        return "already settled"
    columns: dict[str, Any] = {
        "first_attempt_at": Coalesce(F("first_attempt_at"), now),
        "last_status_code": outcome.status_code,
    }
    endpoints = BotEndpoint.objects.filter(clinic_id=delivery.clinic_id)
    if outcome.kind == Outcome.ACKNOWLEDGED:
        BOT_DELIVERIES.succeed(delivery, delivered_at=now, **columns)
        endpoints.update(last_success_at=now, failing_since=None)
        endpoints.filter(status=BotEndpointStatus.FAILING).update(status=BotEndpointStatus.LIVE)
        return "delivered"
    error = outcome.error[:255]
    if outcome.kind == Outcome.RETRY:
        result = BOT_DELIVERIES.fail(delivery, error, retry_at=outcome.retry_at, **columns)
    else:
        result = BOT_DELIVERIES.fail(delivery, error, give_up=True, **columns)
    endpoints.filter(failing_since__isnull=True).update(failing_since=now)
    turned = endpoints.filter(status=BotEndpointStatus.LIVE, failing_since__lte=now - FAILING_AFTER).update(
        status=BotEndpointStatus.FAILING
    )
    if turned:
        _bot_failing(delivery.clinic_id)
    return result


def _bot_failing(clinic_id: Any) -> None:
    """The endpoint just turned `failing`: one warning for the episode, and a person for the waiting patients."""
    since = BotEndpoint.objects.filter(clinic_id=clinic_id).values_list("failing_since", flat=True).first()
    whatsapp_alert_record(
        clinic_id=clinic_id,
        kind=AlertKind.BOT_FAILING,
        key=f"bot_failing:{_iso(since)}",
        params={"failing_since": _iso(since)},
    )
    Conversation.objects.filter(
        Q(bot_deliveries__state__in=UNFINISHED), clinic_id=clinic_id, needs_human=False
    ).update(needs_human=True)


def bot_deliveries_requeue_stalled() -> int:
    """Queue again the deliveries whose lease ran out (a worker died, a task was lost)."""
    return BOT_DELIVERIES.requeue_stalled()


@transaction.atomic
def bot_delivery_redeliver(*, clinic_id: Any, delivery_id: Any) -> BotDelivery:
    """Put a dead delivery of this clinic back in the queue, due now, with a fresh 24 hours of retries.

    It keeps its `webhook-id` (the bot deduplicates on it) and, being older, heads
    its conversation's line again. `BotDelivery.DoesNotExist` for another clinic's
    delivery; `BotDeliveryNotDeadError` unless it is dead.
    """
    delivery = BotDelivery.objects.select_for_update().get(pk=delivery_id, clinic_id=clinic_id)
    if delivery.state != OutboxState.FAILED:
        raise BotDeliveryNotDeadError(delivery.public_state)
    delivery.state = OutboxState.QUEUED
    delivery.attempts = 0
    delivery.first_attempt_at = None
    delivery.next_attempt_at = None
    delivery.save(update_fields=["state", "attempts", "first_attempt_at", "next_attempt_at"])
    BOT_DELIVERIES.enqueue(delivery)
    return delivery
