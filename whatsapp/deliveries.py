"""Webhook deliveries: stored and queued in the request, applied by a background worker.

The webhook stores each authentic delivery and queues its processing in one
transaction (with the database task backend the task row commits with it, so
nothing is lost if no worker runs), then answers. `process_webhook_delivery`
applies the delivery's account events later:

* idempotently: each event applied writes an `AppliedWebhookEvent` marker in the
  same transaction as its effect, so a retried task, a duplicate worker or the
  same event inside another delivery never applies it twice;
* bounded: events are applied in transactions of `EVENTS_PER_TRANSACTION`, and a
  run stops after `EVENTS_PER_RUN` events or `SECONDS_PER_RUN` and queues the rest as
  a new task, so one huge delivery never holds a worker (or a lock) for long;
* clinic by clinic: a task applies the oldest waiting delivery of the next clinic in
  turn (the outbox's round robin), so one clinic's backlog delays another clinic's
  events by one bounded run per busy clinic, never by the whole backlog;
* in the one outbox loop (`common.outbox`, the `DELIVERIES` outbox): claimed with a
  conditional UPDATE, its state on the delivery (queued, processing, retrying, done,
  failed), a failure recorded and retried with backoff, at most TASK_RETRY_ATTEMPTS times;
* a worker that dies mid-delivery leaves its lease to expire, and the requeue sweep
  (`whatsapp_deliveries_requeue_stalled`, run by the `requeue_stalled` command) queues
  it again: it resumes where the last committed chunk ended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_tasks import task

from common.audit import Door, audit_context
from common.outbox import Outbox

from . import services
from .alerts import whatsapp_alert_record
from .inbound import MESSAGES_FIELD, TEMPLATE_FIELDS, messages_change_received, template_change_received
from .models import (
    AlertKind,
    AppliedWebhookEvent,
    WebhookDelivery,
    WebhookSignatureFailure,
    WhatsAppAccount,
    WhatsAppStatus,
)

logger = logging.getLogger(__name__)

# A few hundred events per transaction: few commits, short locks.
EVENTS_PER_TRANSACTION = 250
# A run hands the rest of a big delivery to a new task after this many events, or after this
# long: the longest another clinic's events wait for each clinic with a backlog.
EVENTS_PER_RUN = 2000
SECONDS_PER_RUN = 2.0
# Accounts one event may reach (the routing query's bound).
MAX_TARGETS = 50


# --- reading Meta's payload ----------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    """Meta's JSON object, or an empty one for anything else (a payload we do not trust the shape of)."""
    return value if isinstance(value, dict) else {}


def _changes(payload: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    if not isinstance(payload, dict):
        return
    for entry in payload.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        for change in entry.get("changes") or []:
            if isinstance(change, dict):
                yield entry, change


def _event_identity(entry: dict[str, Any], field: str, value: dict[str, Any]) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return f"e:{entry.get('id', '')}:{entry.get('time', '')}:{field}:{canonical}"


def dedupe_key(body: bytes, payload: Any) -> str:
    """Meta's own ids when it gives them: a retried delivery maps to the same key."""
    ids: list[str] = []
    for entry, change in _changes(payload):
        value = _mapping(change.get("value"))
        field = str(change.get("field", ""))
        found = False
        for message in value.get("messages") or []:
            if isinstance(message, dict) and message.get("id"):
                ids.append(f"m:{message['id']}")
                found = True
        for status in value.get("statuses") or []:
            if isinstance(status, dict) and status.get("id"):
                ids.append(f"s:{status['id']}:{status.get('status', '')}")
                found = True
        if not found:
            ids.append(_event_identity(entry, field, value))
    if not ids:
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def parse_body(body: bytes | str) -> Any:
    """The delivery's JSON, or None when it is not JSON at all."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def delivery_fields(payload: Any) -> str:
    return ",".join(sorted({str(change.get("field", ""))[:40] for _entry, change in _changes(payload)}))[:255]


@dataclass(frozen=True)
class RoutedEvent:
    """An account event, the ids that say which accounts it is about, and its identity."""

    event: services.AccountEvent
    key: str
    phone_number_id: str | None
    waba_ids: tuple[str, ...]
    display_digits: str | None


def account_events(payload: Any) -> Iterator[RoutedEvent]:
    """The changes that report on an account or number; what each means is the services' business."""
    for entry, change in _changes(payload):
        field = str(change.get("field") or "")
        if field not in services.ACCOUNT_EVENT_FIELDS:
            continue
        value = _mapping(change.get("value"))
        event = services.AccountEvent(field=field, value=value)
        if not event.is_applied:
            continue
        metadata = _mapping(value.get("metadata"))
        waba_info = _mapping(value.get("waba_info"))
        yield RoutedEvent(
            event=event,
            key=hashlib.sha256(_event_identity(entry, field, value).encode("utf-8")).hexdigest(),
            phone_number_id=str(metadata.get("phone_number_id") or "") or None,
            waba_ids=tuple(str(x) for x in (waba_info.get("waba_id"), entry.get("id")) if x),
            display_digits=re.sub(r"\D", "", str(value.get("display_phone_number") or "")) or None,
        )


# --- patients' messages and template events: handed upward (whatsapp.inbound) --------------------


def messages_events(payload: Any) -> Iterator[RoutedEvent]:
    """The `messages` changes, routed by their number's id only (never by WABA: one number's patients)."""
    for entry, change in _changes(payload):
        if change.get("field") != MESSAGES_FIELD:
            continue
        value = _mapping(change.get("value"))
        phone_number_id = str(_mapping(value.get("metadata")).get("phone_number_id") or "")
        if phone_number_id:
            yield _upward(entry, MESSAGES_FIELD, value, phone_number_id=phone_number_id, waba_ids=())


def template_events(payload: Any) -> Iterator[RoutedEvent]:
    """The template status and quality updates, routed by their WABA (`entry[].id`) only."""
    for entry, change in _changes(payload):
        field = str(change.get("field") or "")
        waba_id = str(entry.get("id") or "")
        if field in TEMPLATE_FIELDS and waba_id:
            yield _upward(
                entry, field, _mapping(change.get("value")), phone_number_id=None, waba_ids=(waba_id,)
            )


def _upward(
    entry: dict[str, Any],
    field: str,
    value: dict[str, Any],
    *,
    phone_number_id: str | None,
    waba_ids: tuple[str, ...],
) -> RoutedEvent:
    return RoutedEvent(
        event=services.AccountEvent(field=field, value=value),
        key=hashlib.sha256(_event_identity(entry, field, value).encode("utf-8")).hexdigest(),
        phone_number_id=phone_number_id,
        waba_ids=waba_ids,
        display_digits=None,
    )


def _hand_upward(targets: list[WhatsAppAccount], routed: RoutedEvent) -> None:
    """In the event's transaction: the product records what the change means with the marker."""
    for target in targets:
        value = dict(routed.event.value)  # each clinic's receiver its own copy
        if routed.event.field == MESSAGES_FIELD:
            messages_change_received.send(sender=WhatsAppAccount, clinic_id=target.clinic_id, value=value)
        else:
            template_change_received.send(
                sender=WhatsAppAccount, clinic_id=target.clinic_id, field=routed.event.field, value=value
            )


# --- routing -----------------------------------------------------------------------------------


# Accounts that hold their number: it was verified (a code, a registration) and is, or was until
# Meta took it away, connected. A claim still waiting for its code, or a disconnected account that
# kept its ids, holds nothing and hears nothing about the number or its WABA.
HOLDING_STATUSES = (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING, WhatsAppStatus.FAILED)


def _targets(delivery: WebhookDelivery, event: RoutedEvent) -> list[WhatsAppAccount]:
    """The accounts the event is about: those that hold the number it names, or whose number is in
    the WABA it names (the contract's "Events go where their number is").

    * a phone number id (`metadata.phone_number_id`): the one account holding that number;
    * display digits (name and quality updates, which carry no id): the account holding that
      number in the event's WABA (`entry[].id`, or `waba_info.waba_id`);
    * a WABA only (`account_update`, template events): the accounts holding a number that Meta
      showed to be in that WABA (`proven_business_account_id`: found in it when a code was
      requested, or by the health check).

    Saving another clinic's WABA id (or number) reaches nothing: a typed WABA id proves nothing,
    not even beside a number the clinic verified in another WABA.
    """
    holding = WhatsAppAccount.objects.filter(status__in=HOLDING_STATUSES).exclude(phone_number_id="")
    if event.phone_number_id:
        scope = holding.filter(phone_number_id=event.phone_number_id)
    elif event.display_digits:
        scope = holding.filter(number="+" + event.display_digits)
        if event.waba_ids:
            scope = scope.filter(business_account_id__in=event.waba_ids)
    elif event.waba_ids:
        scope = holding.filter(proven_business_account_id__in=event.waba_ids)
    else:
        return []
    if delivery.signed_with_clinic_secret:
        scope = scope.filter(clinic_id=delivery.clinic_id)
    return list(scope.order_by("pk")[:MAX_TARGETS])


# --- the request's side ----------------------------------------------------------------------


def whatsapp_delivery_store(
    *, account: WhatsAppAccount, body: bytes, signed_with_clinic_secret: bool
) -> WebhookDelivery | None:
    """Store an authentic delivery and queue its processing, in one transaction.

    Returns None when it is a replay of a delivery already stored (nothing is
    queued again). Nothing here applies an event or calls Meta, so the time does
    not depend on what the delivery holds.
    """
    payload = parse_body(body)
    delivery = WebhookDelivery(
        clinic_id=account.clinic_id,
        dedupe_key=dedupe_key(body, payload),
        fields=delivery_fields(payload),
        raw_body=body.decode("utf-8", errors="replace"),
        signed_with_clinic_secret=signed_with_clinic_secret,
    )
    try:
        with transaction.atomic():
            delivery.save(force_insert=True)
            DELIVERIES.enqueue(delivery)
    except IntegrityError:
        return None  # a replay of a delivery we already have
    return delivery


def whatsapp_signature_failure_record(*, clinic_id: Any) -> None:
    """Count a POST whose signature did not match (the health check reads the last 24 hours)."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    counted = WebhookSignatureFailure.objects.filter(clinic_id=clinic_id, hour=hour).update(
        count=F("count") + 1
    )
    if counted:
        return
    try:
        with transaction.atomic():
            WebhookSignatureFailure.objects.create(clinic_id=clinic_id, hour=hour, count=1)
    except IntegrityError:
        # Another request created this hour's row first.
        WebhookSignatureFailure.objects.filter(clinic_id=clinic_id, hour=hour).update(count=F("count") + 1)


# --- the worker's side -----------------------------------------------------------------------


@task()
def process_webhook_delivery(delivery_id: str, continuation: bool = False) -> str:
    """The background task: apply one stored delivery (see the module's docstring)."""
    return whatsapp_delivery_process(delivery_id=delivery_id, continuation=continuation)


DELIVERIES: Outbox[WebhookDelivery] = Outbox(
    model=WebhookDelivery,
    task=process_webhook_delivery,
    row_arg="delivery_id",
    lease=lambda: timedelta(seconds=settings.WHATSAPP_DELIVERY_LEASE_SECONDS),
    tenant="clinic",
    oldest_first="received_at",
)


def whatsapp_delivery_process(*, delivery_id: str, continuation: bool = False) -> str:
    """Apply a delivery's events from where its last committed chunk ended; never raises.

    The delivery applied is the oldest waiting one of the clinic whose turn it is (see the
    module's docstring): often the one named, not always; a continuation always goes on
    with its own. Returns what happened, for the task's result.
    """
    delivery = DELIVERIES.claim(delivery_id, continuation=continuation)
    if delivery is None:
        return "nothing to do"  # done already (a duplicate task), given up, or in another worker's hands
    # The task's result names the delivery it applied when that is not the one it was queued for.
    which = "" if str(delivery.pk) == str(delivery_id) else f"delivery {delivery.pk}: "
    try:
        return which + _process(delivery)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the delivery and retried
        logger.warning("webhook delivery %s failed (attempt %d): %r", delivery.pk, delivery.attempts, exc)
        return f"{which}{DELIVERIES.fail(delivery, exc)}: {type(exc).__name__}: {exc}"


def _process(delivery: WebhookDelivery) -> str:
    payload = parse_body(delivery.raw_body)
    if payload is None:
        return _finish(delivery, outcome="invalid JSON")
    # Template events last: the order of the events already counted in `events_done` stays as it was.
    events = [*account_events(payload), *messages_events(payload), *template_events(payload)]
    if delivery.events_total != len(events):
        delivery.events_total = len(events)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(events_total=len(events))
    budget = EVENTS_PER_RUN
    stop_at = time.monotonic() + SECONDS_PER_RUN
    while True:
        with transaction.atomic():
            # Locked: a second task for this delivery (a requeue racing a slow
            # worker) waits here, then starts after the chunk this one committed.
            locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
            start = locked.events_done
            chunk = events[start : start + EVENTS_PER_TRANSACTION]
            if not chunk:
                break
            outcomes = _apply_chunk(locked, chunk)
            locked.events_done = start + len(chunk)
            locked.outcome = _merge_outcomes(locked.outcome, outcomes)
            locked.save(update_fields=["events_done", "outcome"])
            DELIVERIES.renew(locked)
        budget -= len(chunk)
        if (budget <= 0 or time.monotonic() >= stop_at) and locked.events_done < len(events):
            # Bounded: the rest goes to a new task, behind whatever else is queued.
            DELIVERIES.hand_over(locked, continuation=True)
            return f"{locked.events_done} of {len(events)} events done, continuing"
    return _finish(locked, outcome=None)


def _apply_chunk(delivery: WebhookDelivery, chunk: list[RoutedEvent]) -> list[str]:
    """Apply the events not applied before, and mark them applied, in the caller's transaction."""
    seen = set(
        AppliedWebhookEvent.objects.filter(
            clinic_id=delivery.clinic_id, key__in=[routed.key for routed in chunk]
        ).values_list("key", flat=True)
    )
    markers: list[AppliedWebhookEvent] = []
    outcomes: list[str] = []
    # The events of a batch mostly name the same number: route each set of ids once per chunk
    # (ids, not statuses, route; the service re-reads each account under its lock).
    routes: dict[tuple[str | None, tuple[str, ...], str | None], list[WhatsAppAccount]] = {}
    for routed in chunk:
        if routed.key in seen:
            continue
        seen.add(routed.key)
        ids = (routed.phone_number_id, routed.waba_ids, routed.display_digits)
        if ids not in routes:
            routes[ids] = _targets(delivery, routed)
        if routed.event.field == MESSAGES_FIELD or routed.event.field in TEMPLATE_FIELDS:
            _hand_upward(routes[ids], routed)
            markers.append(
                AppliedWebhookEvent(clinic_id=delivery.clinic_id, key=routed.key, delivery=delivery)
            )
            continue
        for target in routes[ids]:
            # Meta's own change of the connection: the trail records it as Meta's, through the webhook.
            with audit_context(door=Door.WEBHOOK, actor="meta"):
                outcome = services.whatsapp_apply_account_event(account=target, event=routed.event)
            outcomes.append(outcome)
            if routed.event.disconnects and outcome != "stored":
                whatsapp_alert_record(
                    clinic_id=target.clinic_id,
                    kind=AlertKind.DISCONNECTED,
                    key=routed.key,
                    params={"event": routed.event.event},
                )
        markers.append(AppliedWebhookEvent(clinic_id=delivery.clinic_id, key=routed.key, delivery=delivery))
    AppliedWebhookEvent.objects.bulk_create(markers)
    return outcomes


def _merge_outcomes(previous: str, outcomes: list[str]) -> str:
    """What was done, each distinct outcome once, within the column's 255 characters."""
    parts = [part for part in previous.split("; ") if part and part != "stored"]
    for outcome in outcomes:
        if outcome != "stored" and outcome not in parts:
            parts.append(outcome)
    return "; ".join(parts)[:255]


def _finish(delivery: WebhookDelivery, *, outcome: str | None) -> str:
    final = outcome if outcome is not None else (delivery.outcome or "stored")
    DELIVERIES.succeed(delivery, processed_at=timezone.now(), outcome=final[:255])
    return final


def whatsapp_deliveries_requeue_stalled() -> int:
    """Queue again the unfinished deliveries whose lease expired (a worker died, a task was lost).

    A duplicate task would change nothing anyway (the markers); the sweep's claim
    only spares a worker's time.
    """
    return DELIVERIES.requeue_stalled()
