"""Sending to patients (endpoint 16): the checks before Meta, the idempotency key, the send outbox and its worker.

`message_send` checks everything it can before anything reaches Meta - the
number `active`, the window open for a text, the template known, in that
language, `APPROVED`, with as many params as placeholders - and refuses with
`SendRefusedError` (nothing stored, no Meta call). Otherwise, in one
transaction, it appends the `queued` message and its `OutboundSend` row (the
send outbox, `common.outbox`) keyed by the caller's `Idempotency-Key` (kept 24
hours, per clinic): the same key with the same body answers with the same
message; with another body, `IdempotencyConflictError`.

The worker (`message_send_process`) takes a batch of the clinic's due rows (up to
`SEND_BATCH`, oldest first, with one claim), keeps one patient's messages in
order, and for each send keeps the pace (`messaging.pacing`), marks the row
`request_sent_at` in its own committed transaction *before* the request to Meta
leaves, and calls Meta with no transaction open, over one connection for the
batch. Our message id goes to Meta as `biz_opaque_callback_data`. The answers
of the batch are recorded together once its requests are done. Afterwards:

* accepted: the `wamid` is recorded, the message stays `sending` until Meta's
  status events move it (`messaging.services.messaging_record_status`);
* never reached (connection refused, name not resolved, connect timeout): back
  to the queue, retried with the outbox's backoff;
* answer lost (a read timeout, a connection broken after the request went out): the
  message stays `sending` with no `wamid`; Meta's status event finds it by our
  id, or `message_sends_sweep` makes it `unknown` after 10 minutes. A row with
  `request_sent_at` is never sent again, whatever happens to its worker;
* refused: `messaging.send_errors` says what the code means: `failed` with the
  code, or wait and try again (130429, 131056).

Meta may also take the message and fail it a moment later in a `failed` status
event with a code that says to wait: `message_send_again_after_wait` (called by
`messaging_record_status` in the event's transaction) clears `request_sent_at` and
puts the row back in the queue after the wait, same message and same id, a few
times at most; the bot is told nothing of a try that will be made again. While
the worker that sent it still holds the row (Meta's event came before its
answer), that worker queues it when it is done, so one send is never in two
workers' hands.

Every status our side settles without a Meta event - `failed` when the worker
refuses it (the window closed meanwhile, the number not active for good) or when
Meta's answer refuses it, `unknown` after a lost answer - goes through
`messaging.services.messaging_settle_outbound`: one `message.status` delivery in
the transaction of the change, as for Meta's events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django_tasks import task

from common.outbox import UNFINISHED, Outbox, OutboxState
from whatsapp.exceptions import MetaRefusedError, MetaTimeoutError, MetaUnavailableError
from whatsapp.meta import MetaClient, never_reached_meta
from whatsapp.models import WhatsAppAccount, WhatsAppStatus

from .models import (
    Conversation,
    Message,
    MessageStatus,
    MessageTemplate,
    MessageType,
    OutboundSend,
    TemplateStatus,
)
from .pacing import release_patient_slot, take_number_slot, take_patient_slot
from .send_errors import SendAction, send_error
from .services import messaging_record_outbound, messaging_settle_outbound

logger = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# A send whose answer was lost is `unknown` after this long without Meta's status event.
UNKNOWN_AFTER = timedelta(minutes=10)
# A worker holds a send this long: far above Meta's timeouts.
SEND_LEASE = timedelta(minutes=2)
# How long a send waits behind an earlier message to the same patient before looking again.
ORDER_WAIT = timedelta(seconds=1)
# Sends one task works at most: a batch shares its claim, its loads and its connection to Meta.
SEND_BATCH = 10
# A wait for the number's pace up to this long is slept through (see `_number_slot`).
SLEEP_THROUGH_PACE = 0.25
# After this long a batch gives its unsent rows back: with Meta's timeouts (at most 20 s a send)
# no row is held near its lease.
BATCH_SECONDS = 20
# Meta's code for a text outside the window: the worker's own refusal says the same.
WINDOW_CLOSED_CODE = 131047
# A wa_id is digits; a BSUID (`US.13491208655302741918`) never is.
_DIGITS_RE = re.compile(r"[0-9]+")


class SendRefusedError(Exception):
    """A send refused before Meta: `status` (409, 422), a stable `code`, and a sentence for the reader."""

    def __init__(self, status: int, code: str, detail: Promise | str) -> None:
        super().__init__(str(detail))
        self.status = status
        self.code = code
        self._detail = detail

    @property
    def detail(self) -> str:
        return str(self._detail)


class IdempotencyConflictError(Exception):
    """The `Idempotency-Key` was used within 24 hours with another body."""


@dataclass(frozen=True)
class SendRequest:
    """What a caller asks to send: a text, or a template with its params, to `to`.

    `to` is the digits of the patient's wa_id, or (anything else) their BSUID, the
    business-scoped user id Meta names a patient with when it withholds their phone.
    """

    to: str
    text: str | None = None
    template_name: str | None = None
    template_language: str | None = None
    template_params: tuple[str, ...] = ()

    @property
    def user_id(self) -> str:
        """`to` when it is a BSUID (the conversation's `user_id`), else empty."""
        return "" if _DIGITS_RE.fullmatch(self.to) else self.to

    @property
    def wa_id(self) -> str:
        """`to` when it is a wa_id (the conversation's `wa_id`), else empty."""
        return "" if self.user_id else self.to

    @property
    def digest(self) -> str:
        """The body's fingerprint: the same request, however its JSON was spaced or ordered."""
        canonical = json.dumps(
            [self.to, self.text, self.template_name, self.template_language, list(self.template_params)],
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@task()
def send_message_to_meta(send_id: str) -> str:
    """The background task: send one queued message to Meta (see the module's docstring)."""
    return message_send_process(send_id=send_id)


SENDS: Outbox[OutboundSend] = Outbox(
    model=OutboundSend,
    task=send_message_to_meta,
    row_arg="send_id",
    lease=lambda: SEND_LEASE,
    tenant="clinic",
    oldest_first="created_at",
)


# --- the request's side ----------------------------------------------------------------------


def _replay(clinic_id: Any, key: str, digest: str, now: Any) -> Message | None:
    """The message an earlier request with this key made, if the key is still kept; frees an old key."""
    earlier = OutboundSend.objects.filter(clinic_id=clinic_id, idempotency_key=key).first()
    if earlier is None:
        return None
    if earlier.key_expires_at <= now:
        # Kept 24 hours: after that the key is free for a new message.
        OutboundSend.objects.filter(pk=earlier.pk).update(idempotency_key="")
        return None
    if earlier.body_digest != digest:
        raise IdempotencyConflictError(key)
    return Message.objects.get(pk=earlier.message_id)


def _check_template(clinic_id: Any, request: SendRequest) -> None:
    named = MessageTemplate.objects.filter(clinic_id=clinic_id, name=request.template_name)
    if not named.exists():
        raise SendRefusedError(
            422, "template_unknown", _("No template of this name is known. Sync the templates and try again.")
        )
    template = named.filter(language=request.template_language).first()
    if template is None:
        raise SendRefusedError(
            422,
            "template_unknown",
            _("This template has no version in that language. Sync the templates or pick another language."),
        )
    if template.status != TemplateStatus.APPROVED:
        raise SendRefusedError(
            422, "template_not_approved", _("This template is not approved by Meta, so it cannot be sent.")
        )
    if len(request.template_params) != template.params:
        raise SendRefusedError(
            422,
            "template_params",
            _("This template needs %(count)d parameters.") % {"count": template.params},
        )


def _check(clinic_id: Any, account: WhatsAppAccount | None, request: SendRequest) -> WhatsAppAccount:
    """Every refusal the contract lists, in its order (raises `SendRefusedError`); returns the active account."""
    if account is None or account.status != WhatsAppStatus.ACTIVE or not account.phone_number_id:
        raise SendRefusedError(
            409, "number_not_active", _("The clinic's WhatsApp number is not active, so nothing can be sent.")
        )
    if request.text is not None:
        patient = {"user_id": request.user_id} if request.user_id else {"wa_id": request.wa_id}
        conversation = Conversation.objects.filter(
            clinic_id=clinic_id, phone_number_id=account.phone_number_id, **patient
        ).first()
        if conversation is None or not conversation.window_is_open(timezone.now()):
            raise SendRefusedError(
                422,
                "window_closed",
                _("The patient has not written in the last 24 hours: only an approved template can be sent."),
            )
        return account
    _check_template(clinic_id, request)
    return account


def message_send(*, clinic_id: Any, request: SendRequest, idempotency_key: str, sent_by: str) -> Message:
    """Queue a message for the patient, or answer again for a key already used; returns the message.

    Raises `SendRefusedError` (nothing stored, nothing sent) or `IdempotencyConflictError`.
    """
    now = timezone.now()
    digest = request.digest
    replayed = _replay(clinic_id, idempotency_key, digest, now)
    if replayed is not None:
        return replayed
    account = _check(clinic_id, WhatsAppAccount.objects.filter(clinic_id=clinic_id).first(), request)
    try:
        with transaction.atomic():
            message = _queue(
                clinic_id, account.phone_number_id, request, idempotency_key, digest, sent_by, now
            )
    except IntegrityError:
        # Another request with this key won the race: answer as it did (or 409 for another body).
        replayed = _replay(clinic_id, idempotency_key, digest, now)
        if replayed is None:
            raise
        return replayed
    return message


def _queue(
    clinic_id: Any,
    phone_number_id: str,
    request: SendRequest,
    key: str,
    digest: str,
    sent_by: str,
    now: Any,
) -> Message:
    if request.text is not None:
        message = messaging_record_outbound(
            clinic_id=clinic_id,
            phone_number_id=phone_number_id,
            wa_id=request.wa_id,
            user_id=request.user_id,
            type=MessageType.TEXT,
            text=request.text,
            sent_by=sent_by,
        )
    else:
        message = messaging_record_outbound(
            clinic_id=clinic_id,
            phone_number_id=phone_number_id,
            wa_id=request.wa_id,
            user_id=request.user_id,
            type=MessageType.TEMPLATE,
            text=None,
            sent_by=sent_by,
            details={
                "template": {
                    "name": request.template_name,
                    "language": request.template_language,
                    "params": list(request.template_params),
                }
            },
        )
    row = OutboundSend.objects.create(
        clinic_id=clinic_id,
        message=message,
        idempotency_key=key,
        body_digest=digest,
        key_expires_at=now + IDEMPOTENCY_WINDOW,
    )
    SENDS.enqueue(row)
    return message


# --- the worker's side -----------------------------------------------------------------------


def meta_payload(message: Message, wa_id: str) -> dict[str, Any]:
    """The message object for `POST /{pnid}/messages`, with our id as `biz_opaque_callback_data`.

    Addressed `to` the patient's `+wa_id`; without one (a patient Meta names only by
    BSUID), to the conversation's `user_id` as `recipient`. Never both: Meta would
    take `to`.
    """
    patient = {"to": f"+{wa_id}"} if wa_id else {"recipient": message.conversation.user_id}
    payload: dict[str, Any] = {**patient, "biz_opaque_callback_data": str(message.pk)}
    if message.type == MessageType.TEMPLATE:
        template = (message.details_info or {}).get("template") or {}
        parameters = [{"type": "text", "text": str(value)} for value in template.get("params") or []]
        body: dict[str, Any] = {"name": template.get("name"), "language": {"code": template.get("language")}}
        if parameters:
            body["components"] = [{"type": "body", "parameters": parameters}]
        payload.update(type="template", template=body)
    else:
        payload.update(type="text", text={"preview_url": False, "body": message.text or ""})
    return payload


def message_send_process(*, send_id: str) -> str:
    """Work a batch of the outbox's sends (the clinic's turn may give others than the one named); never raises.

    The batch shares its claim, its loads, one connection to Meta and the recording of
    Meta's answers; each send in it is still paced, marked sent and sent on its own.
    """
    rows = SENDS.claim_batch(send_id, limit=SEND_BATCH)
    if not rows:
        return "nothing to do"
    outcomes: Counter[str] = Counter()
    account = WhatsAppAccount.objects.filter(clinic_id=rows[0].clinic_id).first()
    # The token to send with, empty unless the number is active: then every send of the batch waits.
    token = ""
    if account is not None and account.status == WhatsAppStatus.ACTIVE:
        token = account.access_token or ""
    messages = Message.objects.select_related("conversation").in_bulk([row.message_id for row in rows])
    unsent = _unsent_sequences({message.conversation_id for message in messages.values()})
    accepted: list[_Answer] = []
    number_wait = 0.0
    give_back_after = time.monotonic() + BATCH_SECONDS
    with contextlib.ExitStack() as stack:
        client: MetaClient | None = None
        for row in rows:
            try:
                if time.monotonic() > give_back_after:
                    # Meta is slow today: the rest of the batch goes back to the queue for any worker,
                    # long before its lease would run out.
                    SENDS.defer(row, timedelta(0))
                    outcomes["given back: the batch ran long"] += 1
                    continue
                if number_wait:
                    # The number had no slot left for an earlier send of the batch: none for this one either.
                    SENDS.defer(row, timedelta(seconds=number_wait))
                    outcomes["paced"] += 1
                    continue
                ready = _ready(row, messages.get(row.message_id), bool(token), unsent)
                if isinstance(ready, str):
                    outcomes[ready] += 1
                    continue
                message = ready
                conversation = message.conversation
                wait = take_patient_slot(conversation.pk, timezone.now())
                if wait:
                    SENDS.defer(row, timedelta(seconds=wait))
                    outcomes["paced"] += 1
                    continue
                sent_at = _mark_sent(row, message)
                if sent_at is None:
                    release_patient_slot(conversation.pk)
                    outcomes["taken by another worker"] += 1
                    continue
                # The number's slot last, just before the request: Meta counts arrivals, and a slow
                # commit between the two would let sends bunch up at Meta beyond the pace.
                try:
                    wait = _number_slot(conversation.phone_number_id)
                except Exception:
                    _unsend(row, message)  # the request never left: the retry may send it
                    raise
                if wait:
                    release_patient_slot(conversation.pk)
                    _unsend(row, message)
                    SENDS.defer(row, timedelta(seconds=wait))
                    number_wait = wait
                    outcomes["paced"] += 1
                    continue
                unsent.get(message.conversation_id, set()).discard(message.sequence)
            except Exception as exc:  # noqa: BLE001 - recorded on the row and retried (the request never left)
                logger.warning(
                    "send %s failed before reaching Meta (attempt %d): %r", row.pk, row.attempts, exc
                )
                outcomes[_retry(row, exc)] += 1
                continue
            if client is None:
                client = stack.enter_context(MetaClient(token))
            answer = _send(client, row, message, sent_at)
            if isinstance(answer, str):
                outcomes[answer] += 1
            else:
                accepted.append(answer)
    for outcome in _answered(accepted):
        outcomes[outcome] += 1
    if sum(outcomes.values()) == 1:
        return next(iter(outcomes))
    return "; ".join(f"{outcome}: {count}" for outcome, count in sorted(outcomes.items()))


@dataclass(frozen=True)
class _Answer:
    """A send Meta took (its `wamid`), or whose answer was lost (`lost`): recorded with the batch's others."""

    row: OutboundSend
    sent_at: Any
    wamid: str | None
    lost: BaseException | None = None


def _retry(row: OutboundSend, error: BaseException | str) -> str:
    outcome = SENDS.fail(row, error)
    if outcome == "given up":
        messaging_settle_outbound(
            message_id=row.message_id, status=MessageStatus.FAILED, only_from=(MessageStatus.QUEUED,)
        )
    return outcome


def _unsent_sequences(conversation_ids: set[Any]) -> dict[Any, set[int]]:
    """Per conversation, the sequences of its messages still waiting to be sent (the batch's own too).

    The batch takes a message out once its request is leaving or it left the queue, so a
    later message of the same patient in the batch is not held behind it.
    """
    unsent: dict[Any, set[int]] = {}
    rows = OutboundSend.objects.filter(
        message__conversation_id__in=conversation_ids, request_sent_at__isnull=True, state__in=UNFINISHED
    ).values_list("message__conversation_id", "message__sequence")
    for conversation_id, sequence in rows:
        unsent.setdefault(conversation_id, set()).add(sequence)
    return unsent


def _ready(
    row: OutboundSend,
    message: Message | None,
    active: bool,
    unsent: dict[Any, set[int]],
) -> Message | str:
    """The message when the send may go (its pace still to keep), else what became of the row."""
    if row.request_sent_at is not None:
        # A worker died after the request left (or may have): never send it again.
        SENDS.succeed(row)
        return "sent before; waiting for Meta's status"
    if message is None or message.status != MessageStatus.QUEUED:
        SENDS.succeed(row)
        if message is not None:
            unsent.get(message.conversation_id, set()).discard(message.sequence)
        return f"message already {message.status if message else 'gone'}"
    conversation = message.conversation
    if not active:
        return _retry(row, "the number is not active")
    if message.type == MessageType.TEXT and not conversation.window_is_open(timezone.now()):
        # The window closed while the text waited: Meta would refuse it (131047) after the call is spent.
        with transaction.atomic():
            messaging_settle_outbound(
                message_id=message.pk,
                status=MessageStatus.FAILED,
                error_code=WINDOW_CLOSED_CODE,
                only_from=(MessageStatus.QUEUED,),
            )
            SENDS.succeed(row, last_error="the window closed before sending")
        unsent.get(conversation.pk, set()).discard(message.sequence)
        return "failed: the window closed"
    if any(sequence < message.sequence for sequence in unsent.get(conversation.pk, ())):
        SENDS.defer(row, ORDER_WAIT)
        return "waiting behind an earlier message to the patient"
    return message


def _number_slot(phone_number_id: str) -> float:
    """Take one of the number's sends: 0.0 to send now, else how long to wait.

    At the number's full rate the wait is mostly a few milliseconds (a slot of the
    last second frees up); the worker sleeps through one that short instead of
    queueing the send again, which would cost a task and a claim per row.
    """
    slept = 0.0
    while True:
        wait = take_number_slot(phone_number_id, timezone.now())
        if not wait or wait > SLEEP_THROUGH_PACE or slept >= SLEEP_THROUGH_PACE * 4:
            # Many workers racing for the same slots: past a second of naps the send queues instead.
            return wait
        time.sleep(wait)
        slept += wait


def _mark_sent(row: OutboundSend, message: Message) -> Any:
    """Commit that the request is leaving (from here on it is never sent again); its time, or None if not ours."""
    sent_at = timezone.now()
    with transaction.atomic():
        if not OutboundSend.objects.filter(pk=row.pk, request_sent_at__isnull=True).update(
            request_sent_at=sent_at
        ):
            return None
        Message.objects.filter(pk=message.pk, status=MessageStatus.QUEUED).update(
            status=MessageStatus.SENDING
        )
    return sent_at


def _send(client: MetaClient, row: OutboundSend, message: Message, sent_at: Any) -> _Answer | str:
    """The request to Meta, with no transaction open: its answer, or the outcome of a refusal or a retry."""
    conversation = message.conversation
    payload = meta_payload(message, conversation.wa_id)
    try:
        wamid = client.send_message(conversation.phone_number_id, payload)
    except MetaRefusedError as exc:
        return _refused(row, message, exc)
    except (MetaTimeoutError, MetaUnavailableError) as exc:
        code = getattr(exc, "code", None)
        answered_retry = (
            isinstance(exc, MetaUnavailableError) and code and send_error(code).action == SendAction.RETRY
        )
        if answered_retry or never_reached_meta(exc):
            # Meta answered that it did not take the message, or no connection was ever made: safe to try again.
            _unsend(row, message)
            return _retry(row, exc)
        return _Answer(row, sent_at, None, exc)
    return _Answer(row, sent_at, wamid)


def _answered(answers: list[_Answer]) -> list[str]:
    """Meta took these sends (a `wamid`, or an answer lost): done, unless Meta's status event was faster.

    That event may have failed a try with a code saying to wait and cleared
    `request_sent_at` while the request was out: then the row is queued again now,
    by the worker that held it, after the wait the event set.
    """
    if not answers:
        return []
    outcomes: list[str] = []
    with transaction.atomic():
        # The messages' rows first, then the sends': the order Meta's status events take them in.
        list(
            Message.objects.select_for_update()
            .filter(pk__in=[answer.row.message_id for answer in answers])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        current = OutboundSend.objects.select_for_update().order_by("pk").in_bulk([a.row.pk for a in answers])
        wamids: dict[Any, str] = {}
        done: list[OutboundSend] = []
        lost: dict[str, list[OutboundSend]] = {}
        for answer in answers:
            row = current.get(answer.row.pk)
            if row is None:
                outcomes.append("the message is gone")
            elif row.request_sent_at != answer.sent_at:
                wait = (row.next_attempt_at or timezone.now()) - timezone.now()
                SENDS.defer(row, max(wait, timedelta(0)), counts=True)
                outcomes.append("Meta failed it meanwhile asking to wait; queued again")
            elif answer.lost is not None:
                lost.setdefault(f"answer lost: {type(answer.lost).__name__}", []).append(row)
                outcomes.append("answer lost; waiting for Meta's status")
            else:
                wamids[row.message_id] = answer.wamid or ""
                done.append(row)
                outcomes.append("accepted")
        if wamids:
            # A status event may have recorded a wamid first (matched by our id): keep what is there.
            Message.objects.filter(pk__in=wamids, wamid="").update(
                wamid=Case(
                    *(When(pk=pk, then=Value(wamid)) for pk, wamid in wamids.items()), default=F("wamid")
                )
            )
        SENDS.succeed_all(done)
        for error, rows in lost.items():
            SENDS.succeed_all(rows, last_error=error)
    return outcomes


def _unsend(row: OutboundSend, message: Message) -> None:
    """Meta said it did not take the message: back to `queued`, the row free to send again."""
    with transaction.atomic():
        OutboundSend.objects.filter(pk=row.pk).update(request_sent_at=None)
        Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING, wamid="").update(
            status=MessageStatus.QUEUED
        )


def _refused(row: OutboundSend, message: Message, exc: MetaRefusedError) -> str:
    meaning = send_error(exc.code)
    if meaning.action == SendAction.WAIT and row.attempts < settings.TASK_RETRY_ATTEMPTS:
        _unsend(row, message)
        SENDS.defer(row, timedelta(seconds=meaning.wait_seconds * row.attempts), counts=True)
        return f"Meta asked to wait ({exc.code})"
    if meaning.action == SendAction.RETRY and row.attempts < settings.TASK_RETRY_ATTEMPTS:
        _unsend(row, message)
        return _retry(row, f"Meta {exc.code}")
    with transaction.atomic():
        messaging_settle_outbound(
            message_id=message.pk,
            status=MessageStatus.FAILED,
            error_code=exc.code,
            only_from=(MessageStatus.SENDING,),
        )
        SENDS.succeed(row, last_error=f"Meta refused: {exc.code}")
    return f"failed: Meta {exc.code}"


def message_send_again_after_wait(message: Message, *, code: int | None) -> bool:
    """Meta failed a send it had taken with a code saying to wait: queue it again instead; whether it did.

    Called in the transaction of Meta's status event, the message's row locked.
    Only a message Meta has not said `sent` (`sending`, or `unknown` after a lost
    answer), and only while the row has attempts left; otherwise the `failed` is
    final. The message goes back to `queued` with no `wamid` (Meta's id of the
    failed try is kept as superseded), the row's `request_sent_at` is cleared, and
    the row waits what the code says, longer at each attempt. If a worker still
    holds the row (the event came before Meta's answer), that worker queues it.
    """
    meaning = send_error(code)
    if meaning.action != SendAction.WAIT or message.status not in (
        MessageStatus.SENDING,
        MessageStatus.UNKNOWN,
    ):
        return False
    row = OutboundSend.objects.select_for_update().filter(message_id=message.pk).first()
    if row is None or row.request_sent_at is None or row.attempts >= settings.TASK_RETRY_ATTEMPTS:
        return False
    now = timezone.now()
    wait = timedelta(seconds=meaning.wait_seconds * max(row.attempts, 1))
    superseded = "\n".join(filter(None, [row.superseded_wamids, message.wamid]))
    OutboundSend.objects.filter(pk=row.pk).update(
        request_sent_at=None, superseded_wamids=superseded, last_error=f"Meta failed it: {code}"
    )
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.QUEUED, wamid="", error_code=None)
    message.status, message.wamid, message.error_code = MessageStatus.QUEUED, "", None
    in_flight = (
        row.state == OutboxState.PROCESSING
        and row.lease_expires_at is not None
        and row.lease_expires_at > now
    )
    if in_flight:
        # Its worker queues it once Meta's answer is in (`_answered`); if it dies, the sweep does.
        OutboundSend.objects.filter(pk=row.pk).update(next_attempt_at=now + wait)
    else:
        SENDS.defer(row, wait, counts=True)
    return True


def message_sends_sweep(*, now: Any = None) -> int:
    """Sends whose answer was lost 10 minutes ago and that no status event settled become `unknown`.

    Each is one short transaction with its `message.status` delivery. Run every few
    minutes (`manage.py requeue_stalled`). Returns how many changed.
    """
    cutoff = (now or timezone.now()) - UNKNOWN_AFTER
    lost: dict[str, Any] = {"wamid": "", "send__request_sent_at__lt": cutoff}
    changed = 0
    for pk in Message.objects.filter(status=MessageStatus.SENDING, **lost).values_list("pk", flat=True):
        settled = messaging_settle_outbound(
            message_id=pk, status=MessageStatus.UNKNOWN, only_from=(MessageStatus.SENDING,), **lost
        )
        changed += settled is not None
    return changed


def message_sends_requeue_stalled() -> int:
    """Queue again the sends whose worker died or whose task was lost (their lease ran out)."""
    return SENDS.requeue_stalled()
