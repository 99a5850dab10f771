"""Conversations and messages: Meta's `messages` events recorded, numbered, and queued for the bot.

Every function here is one short transaction with no network call inside: the
conversation's row is locked only while the next `sequence` is taken, so two
workers applying events of one patient at once still number the messages 1, 2,
3... without a gap or a repeat, and Meta's duplicates (same `wamid`) add nothing.
The delivery to the bot is written in the same transaction (an outbox): a crash
loses none and adds none. Texts and names are never logged.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from .models import (
    SENT_BY_PATIENT,
    BotDelivery,
    BotEventType,
    Conversation,
    Direction,
    Message,
    MessageStatus,
    MessageType,
    OutboundSend,
)
from .outbox import BOT_DELIVERIES, webhook_id_for

logger = logging.getLogger(__name__)

# Meta's customer-service window after each patient message.
WINDOW = timedelta(hours=24)

# Sent with `clinic_id` when our side changes a message's status without a Meta event (whose
# caller decides `forward`): a receiver answers whether the clinic's bot gets the change now
# (`clinics.relay`: the bot switched on and its endpoint live or failing). No answer, no delivery.
bot_forwarding_asked = Signal()

# Inbound types Meta sends that the contract names; anything else is `unsupported`.
_INBOUND_TYPES = frozenset(MessageType.values) - {MessageType.TEMPLATE}
_MEDIA_TYPES = frozenset(
    {MessageType.IMAGE, MessageType.AUDIO, MessageType.VIDEO, MessageType.DOCUMENT, MessageType.STICKER}
)
_MEDIA_KEYS = ("id", "mime_type", "sha256", "filename")
_WA_ID_MAX = Conversation._meta.get_field("wa_id").max_length or 0
_USER_ID_MAX = Conversation._meta.get_field("user_id").max_length or 0
_WAMID_MAX = Message._meta.get_field("wamid").max_length or 0

# Statuses only move forward: sent < delivered < read. `failed` settles a message
# Meta had not yet delivered, and nothing moves it afterwards.
_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 0,
    MessageStatus.UNKNOWN: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
}
# Meta's statuses we record ("played" is a voice message listened to: read).
_META_STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "played": MessageStatus.READ,
    "failed": MessageStatus.FAILED,
}


@dataclass(frozen=True)
class _Parsed:
    wamid: str
    type: str
    text: str | None
    media: dict[str, str] | None
    details: dict[str, Any] | None
    at: datetime


def moves_forward(current: str, new: str) -> bool:
    """Whether an outbound message in status `current` may take status `new`."""
    if current == MessageStatus.FAILED:
        return False
    if new == MessageStatus.FAILED:
        return _RANK.get(current, 0) <= _RANK[MessageStatus.SENT]
    return _RANK[new] > _RANK.get(current, 0)


def _meta_time(value: Any, default: datetime) -> datetime:
    """Meta's timestamps are strings of Unix seconds."""
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def _json(value: dict[str, Any] | None) -> str | None:
    return None if not value else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _parse(raw: dict[str, Any], now: datetime) -> _Parsed:
    """One Meta message as our columns: the type, its text or caption, media reference and details."""
    meta_type = str(raw.get("type") or "")
    kind = meta_type if meta_type in _INBOUND_TYPES else MessageType.UNSUPPORTED
    body = raw.get(meta_type) if isinstance(raw.get(meta_type), dict | list) else None
    part: dict[str, Any] = body if isinstance(body, dict) else {}
    text: str | None = None
    media: dict[str, str] | None = None
    details: dict[str, Any] = {}

    if kind == MessageType.TEXT:
        text = part.get("body")
    elif kind in _MEDIA_TYPES:
        text = part.get("caption")
        media = {key: str(part[key]) for key in _MEDIA_KEYS if part.get(key) not in (None, "")}
    elif kind == MessageType.LOCATION:
        details["location"] = {
            k: part[k] for k in ("latitude", "longitude", "name", "address", "url") if k in part
        }
    elif kind == MessageType.CONTACTS:
        details["contacts"] = body if isinstance(body, list) else []
    elif kind == MessageType.INTERACTIVE:
        reply = part.get(str(part.get("type") or ""))
        if isinstance(reply, dict):
            text = reply.get("title")
        details["interactive"] = part
    elif kind == MessageType.BUTTON:
        text = part.get("text")
        details["button"] = {"payload": part.get("payload")}
    elif kind == MessageType.REACTION:
        text = part.get("emoji")
        details["reaction"] = {"wamid": part.get("message_id")}
    else:
        if meta_type and meta_type != MessageType.UNSUPPORTED:
            details["meta_type"] = meta_type
        errors = raw.get("errors")
        if isinstance(errors, list):
            details["errors"] = [
                {"code": e.get("code"), "title": e.get("title")} for e in errors if isinstance(e, dict)
            ]
    context = raw.get("context")
    if isinstance(context, dict):
        details["context"] = {
            k: v
            for k, v in (
                ("reply_to_wamid", context.get("id")),
                ("forwarded", context.get("forwarded")),
                ("frequently_forwarded", context.get("frequently_forwarded")),
            )
            if v is not None
        }
    return _Parsed(
        wamid=str(raw.get("id") or ""),
        type=kind,
        text=None if text is None else str(text),
        media=media or None,
        details=details or None,
        at=_meta_time(raw.get("timestamp"), now),
    )


def _contact_for(contacts: list[Any], wa_id: str, user_id: str) -> dict[str, Any]:
    found = [c for c in contacts if isinstance(c, dict)]
    for contact in found:
        if (wa_id and contact.get("wa_id") == wa_id) or (user_id and contact.get("user_id") == user_id):
            return contact
    if len(found) == 1:
        # The only contact, unless it names someone else.
        only = found[0]
        other_phone = wa_id and only.get("wa_id") and only.get("wa_id") != wa_id
        other_user = user_id and only.get("user_id") and only.get("user_id") != user_id
        if not other_phone and not other_user:
            return only
    return {}


def _find_conversation(clinic_id: Any, phone_number_id: str, wa_id: str, user_id: str) -> Conversation | None:
    rows = Conversation.objects.filter(clinic_id=clinic_id, phone_number_id=phone_number_id)
    if wa_id:
        found = rows.filter(wa_id=wa_id).first()
        if found is not None:
            return found
    if user_id:
        return rows.filter(user_id=user_id).first()
    return None


def _conversation_locked(clinic_id: Any, phone_number_id: str, wa_id: str, user_id: str) -> Conversation:
    """The patient's conversation on this number, created if new, its row locked until commit.

    Two workers may create the same conversation at once: the unique constraints
    let one insert win, and the other finds that row.
    """
    for _attempt in range(2):
        found = _find_conversation(clinic_id, phone_number_id, wa_id, user_id)
        if found is None:
            try:
                with transaction.atomic():
                    found = Conversation.objects.create(
                        clinic_id=clinic_id, phone_number_id=phone_number_id, wa_id=wa_id, user_id=user_id
                    )
            except IntegrityError:
                continue
        conversation = Conversation.objects.select_for_update().get(pk=found.pk)
        # Meta names a patient by phone, by user id, or both: keep what was missing.
        changed = []
        if wa_id and not conversation.wa_id:
            conversation.wa_id = wa_id
            changed.append("wa_id")
        if user_id and not conversation.user_id:
            conversation.user_id = user_id
            changed.append("user_id")
        if changed:
            conversation.save(update_fields=changed)
        return conversation
    raise IntegrityError("The conversation could not be created or found.")


def _append(conversation: Conversation, **fields: Any) -> Message:
    """The next message of a conversation whose row this transaction holds locked."""
    conversation.last_sequence += 1
    message = Message(
        conversation=conversation,
        clinic_id=conversation.clinic_id,
        sequence=conversation.last_sequence,
        **fields,
    )
    message.save(force_insert=True)
    return message


def _enqueue(
    message: Message, event: str, *, key: str, status: str = "", error_code: int | None = None
) -> BotDelivery:
    """The delivery and its task, in the caller's transaction (the outbox)."""
    delivery = BotDelivery.objects.create(
        clinic_id=message.clinic_id,
        webhook_id=webhook_id_for(clinic_id=message.clinic_id, event=event, key=key),
        event_type=event,
        conversation_id=message.conversation_id,
        message=message,
        event_status=status,
        event_error_code=error_code,
    )
    BOT_DELIVERIES.enqueue(delivery)
    return delivery


def messaging_bot_forwards(*, clinic_id: Any) -> bool:
    """Whether the clinic's bot gets its events now (the product answers `bot_forwarding_asked`)."""
    answers: list[tuple[Any, Any]] = bot_forwarding_asked.send(sender=BotDelivery, clinic_id=clinic_id)
    return any(answer is True for _receiver, answer in answers)


def _enqueue_status(message: Message) -> BotDelivery | None:
    """The `message.status` delivery of the message's new status, its id derived from our ids and the status.

    A change the bot already has (`unknown` twice, after a send went back to the
    queue) adds no second row.
    """
    key = f"{message.wamid or message.pk}:{message.status}"
    webhook_id = webhook_id_for(clinic_id=message.clinic_id, event=BotEventType.MESSAGE_STATUS, key=key)
    if BotDelivery.objects.filter(clinic_id=message.clinic_id, webhook_id=webhook_id).exists():
        return None
    return _enqueue(
        message, BotEventType.MESSAGE_STATUS, key=key, status=message.status, error_code=message.error_code
    )


@transaction.atomic
def messaging_record_inbound(
    *, clinic_id: Any, phone_number_id: str, value: dict[str, Any], forward: bool
) -> list[Message]:
    """Record the patient messages of one Meta `messages` change value; returns the new ones.

    Each new message takes its conversation's next `sequence`, opens the window
    for 24 hours from Meta's time, and, when `forward` (the clinic's bot is on and
    live: the caller decides), gets one `message.received` delivery whose
    `webhook-id` is derived from the `wamid`. Without `forward` the conversation
    needs a person. A `wamid` already recorded adds nothing.
    """
    now = timezone.now()
    contacts: list[Any] = value.get("contacts") or []
    if not isinstance(contacts, list):
        contacts = []
    messages = value.get("messages")
    created: list[Message] = []
    for raw in messages if isinstance(messages, list) else []:
        if not isinstance(raw, dict):
            continue
        wa_id = str(raw.get("from") or "")
        user_id = str(raw.get("from_user_id") or "")
        contact = _contact_for(contacts, wa_id, user_id)
        wa_id = wa_id or str(contact.get("wa_id") or "")
        user_id = user_id or str(contact.get("user_id") or "")
        if not wa_id and not user_id:
            logger.warning("A message for clinic %s names no sender; skipped", clinic_id)
            continue
        parsed = _parse(raw, now)
        if len(wa_id) > _WA_ID_MAX or len(user_id) > _USER_ID_MAX or len(parsed.wamid) > _WAMID_MAX:
            # Not Meta's shapes: storing them would fail the whole event, and every retry of it.
            logger.warning("A message for clinic %s has ids longer than Meta's; skipped", clinic_id)
            continue
        conversation = _conversation_locked(clinic_id, phone_number_id, wa_id, user_id)
        # Under the conversation's lock: a duplicate being recorded by another worker is committed by now.
        if parsed.wamid and Message.objects.filter(clinic_id=clinic_id, wamid=parsed.wamid).exists():
            continue
        message = _append(
            conversation,
            wamid=parsed.wamid,
            direction=Direction.IN,
            type=parsed.type,
            text=parsed.text,
            media=_json(parsed.media),
            details=_json(parsed.details),
            sent_by=SENT_BY_PATIENT,
            meta_timestamp=parsed.at,
            created_at=parsed.at,
        )
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        if name and name != conversation.profile_name:
            conversation.profile_name = str(name)
        window = parsed.at + WINDOW
        if conversation.window_open_until is None or window > conversation.window_open_until:
            conversation.window_open_until = window
        if conversation.last_message_at is None or parsed.at > conversation.last_message_at:
            conversation.last_message_at = parsed.at
        if not forward:
            conversation.needs_human = True
        conversation.save(
            update_fields=[
                "last_sequence",
                "profile_name",
                "window_open_until",
                "last_message_at",
                "needs_human",
            ]
        )
        if forward:
            _enqueue(message, BotEventType.MESSAGE_RECEIVED, key=parsed.wamid or str(message.pk))
        created.append(message)
    return created


def _outbound_for_status(clinic_id: Any, phone_number_id: str, entry: dict[str, Any]) -> Message | None:
    """The outbound message a status entry is about, locked: by `wamid`, else by our id echoed back."""
    ours = Message.objects.select_for_update().filter(
        clinic_id=clinic_id, direction=Direction.OUT, conversation__phone_number_id=phone_number_id
    )
    wamid = str(entry.get("id") or "")
    if wamid:
        found = ours.filter(wamid=wamid).first()
        if found is not None:
            return found
    # A send whose answer was lost has no wamid yet; Meta echoes our id in biz_opaque_callback_data.
    try:
        our_id = uuid.UUID(str(entry.get("biz_opaque_callback_data") or ""))
    except ValueError:
        return None
    found = ours.filter(pk=our_id, wamid="").first()
    if found is not None and wamid:
        superseded = OutboundSend.objects.filter(message_id=found.pk).values_list(
            "superseded_wamids", flat=True
        )
        if wamid in (superseded.first() or "").split():
            # A try Meta failed with "wait": the message was sent again since, this says nothing of it.
            return None
        found.wamid = wamid
    return found


@transaction.atomic
def messaging_record_status(
    *, clinic_id: Any, phone_number_id: str, status: dict[str, Any], forward: bool
) -> Message | None:
    """Apply one entry of a Meta `statuses` array to our outbound message; returns it if it changed.

    Statuses only move forward (`read` never goes back to `delivered`); `failed`
    keeps Meta's error code. Each actual change, when `forward`, is one
    `message.status` delivery whose `webhook-id` is derived from the `wamid` and
    the status, so Meta's duplicates give the same id and no second row.

    A `failed` whose code says to wait (130429, 131056) for a message Meta has not
    yet said `sent` is not a change the bot sees: the send goes back to the queue
    (`messaging.sending.message_send_again_after_wait`), a few times at most; the
    last one is `failed` like any other.
    """
    new = _META_STATUSES.get(str(status.get("status") or ""))
    if new is None:
        return None
    message = _outbound_for_status(clinic_id, phone_number_id, status)
    if message is None or not moves_forward(message.status, new):
        return None
    code: int | None = None
    if new == MessageStatus.FAILED:
        errors = status.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        found = first.get("code")
        code = found if isinstance(found, int) else None
        # Imported here: sending imports this module to append the messages it queues.
        from .sending import message_send_again_after_wait

        if message_send_again_after_wait(message, code=code):
            return message
    message.status = new
    message.meta_timestamp = _meta_time(status.get("timestamp"), timezone.now())
    if new == MessageStatus.FAILED:
        message.error_code = code
    message.save(update_fields=["wamid", "status", "meta_timestamp", "error_code"])
    if forward:
        _enqueue_status(message)
    return message


@transaction.atomic
def messaging_settle_outbound(
    *, message_id: Any, status: str, error_code: int | None = None, only_from: tuple[str, ...], **still: Any
) -> Message | None:
    """Our side settles an outbound message that no Meta status event will settle; returns it if it changed.

    `failed` (refused when the worker came to send it, or by Meta's own answer to
    the send) or `unknown` (its answer lost 10 minutes ago). Applied only while the
    message is still in one of `only_from` (and matches `still`): a status event
    that got there first wins. The change and its `message.status` delivery (when
    the clinic's bot gets its events) commit together, like Meta's changes.
    """
    message = (
        Message.objects.select_for_update(of=("self",))
        .filter(pk=message_id, direction=Direction.OUT, status__in=only_from, **still)
        .first()
    )
    if message is None:
        return None
    message.status = status
    message.error_code = error_code
    message.save(update_fields=["status", "error_code"])
    if messaging_bot_forwards(clinic_id=message.clinic_id):
        _enqueue_status(message)
    return message


@transaction.atomic
def messaging_record_outbound(
    *,
    clinic_id: Any,
    phone_number_id: str,
    wa_id: str,
    user_id: str = "",
    type: str,
    text: str | None,
    sent_by: str,
    media: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> Message:
    """Append a message to the patient (by `wa_id`, or by `user_id` when Meta gave no phone), `queued` for sending."""
    if type not in MessageType.values:
        raise ValueError(f"Unknown message type {type!r}.")
    if not wa_id and not user_id:
        raise ValueError("A message needs its patient: wa_id or user_id.")
    now = timezone.now()
    conversation = _conversation_locked(clinic_id, phone_number_id, wa_id, user_id)
    message = _append(
        conversation,
        direction=Direction.OUT,
        type=type,
        text=text,
        media=_json(media),
        details=_json(details),
        sent_by=sent_by,
        status=MessageStatus.QUEUED,
        created_at=now,
    )
    conversation.last_message_at = now
    conversation.save(update_fields=["last_sequence", "last_message_at"])
    return message


def _delete_in_batches(rows: QuerySet[Any], batch_size: int) -> int:
    """Delete the rows a query selects, a batch per short transaction; returns how many went.

    Each batch is deleted through the same query, so a row that stopped matching
    meanwhile (a conversation that just got a message) is kept.
    """
    label = rows.model._meta.label
    total = 0
    while batch := list(rows.values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            deleted = rows.filter(pk__in=batch).delete()[1].get(label, 0)
        if not deleted:
            break
        total += deleted
    return total


def messaging_delete_expired(*, now: datetime | None = None, batch_size: int = 500) -> tuple[int, int]:
    """Delete messages older than `MESSAGE_RETENTION_DAYS`, then conversations left empty and as old.

    In short batches, so the daily clean-up never holds a long transaction.
    Returns (messages deleted, conversations deleted).
    """
    cutoff = (now or timezone.now()) - timedelta(days=int(settings.MESSAGE_RETENTION_DAYS))
    messages = _delete_in_batches(Message.objects.filter(created_at__lt=cutoff), batch_size)
    empty_and_old = Conversation.objects.filter(messages__isnull=True, created_at__lt=cutoff).filter(
        Q(last_message_at__lt=cutoff) | Q(last_message_at__isnull=True)
    )
    return messages, _delete_in_batches(empty_and_old, batch_size)


@dataclass(frozen=True)
class AppliedChange:
    """What one Meta `messages` change did: the new inbound messages, the outbound ones whose status moved."""

    received: list[Message]
    updated: list[Message]


@transaction.atomic
def messaging_apply_messages_change(*, clinic_id: Any, value: dict[str, Any], forward: bool) -> AppliedChange:
    """Apply one Meta change of field `messages`: its patient messages and its statuses, in one transaction.

    The number is `value.metadata.phone_number_id`. The webhook worker calls this
    in the transaction that marks the event applied, so the messages, the status
    changes and their deliveries to the bot commit with it or not at all.
    """
    metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
    phone_number_id = str((metadata or {}).get("phone_number_id") or "")
    received = messaging_record_inbound(
        clinic_id=clinic_id, phone_number_id=phone_number_id, value=value, forward=forward
    )
    updated = []
    statuses = value.get("statuses")
    for entry in statuses if isinstance(statuses, list) else []:
        if isinstance(entry, dict):
            message = messaging_record_status(
                clinic_id=clinic_id, phone_number_id=phone_number_id, status=entry, forward=forward
            )
            if message is not None:
                updated.append(message)
    return AppliedChange(received=received, updated=updated)


def conversation_clear_needs_human(*, clinic_id: Any, conversation_id: Any) -> Conversation:
    """A member has seen to the patient: the conversation no longer needs a person.

    Scoped by the caller's clinic: another clinic's conversation is `Conversation.DoesNotExist`.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id, clinic_id=clinic_id)
        if conversation.needs_human:
            conversation.needs_human = False
            conversation.save(update_fields=["needs_human"])
    return conversation
