"""Meta's webhook for one clinic: GET handshake, signed POST deliveries.

The signature is checked over the raw bytes before anything is parsed (Meta signs
its own `\\uXXXX`-escaped serialisation; re-serialising breaks it). Every authentic
delivery is stored once (deduplicated by Meta's ids) and answered 200 at once;
nothing here calls Meta.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from . import services
from .models import WebhookDelivery, WhatsAppAccount

logger = logging.getLogger(__name__)

_SIGNATURE_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
MAX_CHALLENGE_LENGTH = 256


def _forbidden(reason: str) -> HttpResponse:
    return HttpResponseForbidden(reason, content_type="text/plain; charset=utf-8")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def webhook(request: HttpRequest, clinic_id: UUID) -> HttpResponse:
    account = WhatsAppAccount.objects.filter(clinic_id=clinic_id).first()
    if account is None:
        return HttpResponse("Unknown webhook.", status=404, content_type="text/plain")
    if request.method == "GET":
        return _handshake(request, account)
    return _delivery(request, account)


def _handshake(request: HttpRequest, account: WhatsAppAccount) -> HttpResponse:
    mode = request.GET.get("hub.mode", "")
    given = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    expected = account.verify_token or ""
    if (
        mode != "subscribe"
        or not expected
        or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
    ):
        return _forbidden("Verify token does not match.")
    if len(challenge) > MAX_CHALLENGE_LENGTH:
        return HttpResponse("Challenge too long.", status=400, content_type="text/plain")
    return HttpResponse(challenge, content_type="text/plain; charset=utf-8")


def _read_body(request: HttpRequest) -> bytes | None:
    """The raw body up to Meta's 3 MB, or None when larger."""
    limit = settings.WHATSAPP_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    # Read the stream ourselves: Django's DATA_UPLOAD_MAX_MEMORY_SIZE is sized for the API.
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def signature_matches(body: bytes, header: str, secret: str) -> bool:
    match = _SIGNATURE_RE.match(header or "")
    if not match or not secret:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def _delivery(request: HttpRequest, account: WhatsAppAccount) -> HttpResponse:
    body = _read_body(request)
    if body is None:
        return HttpResponse("Payload too large.", status=413, content_type="text/plain")
    own_secret = account.app_secret or ""
    secret = own_secret or settings.META_APP_SECRET
    if not secret:
        return _forbidden("No app secret is configured for this webhook.")
    if not signature_matches(body, request.headers.get("X-Hub-Signature-256", ""), secret):
        logger.warning("webhook signature mismatch clinic=%s bytes=%d", account.clinic_id, len(body))
        return _forbidden("Signature does not match.")

    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    events = list(_events(payload)) if payload is not None else []
    # Stored before anything is applied, so nothing is lost; a delivery with no
    # status event (messages, statuses...) is complete as soon as it is stored.
    outcome = "stored" if payload is not None else "invalid JSON"
    delivery = _store(account, body, payload, processed=not events, outcome=outcome)
    if delivery is None:
        return JsonResponse({"status": "duplicate"})
    if events:
        outcome = _apply(account, events, across_clinics=not own_secret)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            processed_at=timezone.now(), outcome=outcome[:255]
        )
    return JsonResponse({"status": "received"})


def _dedupe_key(body: bytes, payload: Any) -> str:
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
            canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
            ids.append(f"e:{entry.get('id', '')}:{entry.get('time', '')}:{field}:{canonical}")
    if not ids:
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


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


def _store(
    account: WhatsAppAccount, body: bytes, payload: Any, *, processed: bool, outcome: str
) -> WebhookDelivery | None:
    fields = sorted({str(change.get("field", ""))[:40] for _entry, change in _changes(payload)})
    delivery = WebhookDelivery(
        clinic_id=account.clinic_id,
        dedupe_key=_dedupe_key(body, payload),
        fields=",".join(fields)[:255],
        raw_body=body.decode("utf-8", errors="replace"),
        processed_at=timezone.now() if processed else None,
        outcome=outcome if processed else "",
    )
    # In autocommit (production) a single INSERT needs no BEGIN/COMMIT around it;
    # inside a transaction a savepoint keeps a duplicate from aborting it.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            delivery.save(force_insert=True)
    except IntegrityError:
        return None  # a replay of a delivery we already have
    return delivery


@dataclass(frozen=True)
class _RoutedEvent:
    """An account event and the ids that say which accounts it is about."""

    event: services.AccountEvent
    phone_number_id: str | None
    waba_ids: tuple[str, ...]
    display_digits: str | None


def _events(payload: Any) -> Iterator[_RoutedEvent]:
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
        yield _RoutedEvent(
            event=event,
            phone_number_id=str(metadata.get("phone_number_id") or "") or None,
            waba_ids=tuple(str(x) for x in (waba_info.get("waba_id"), entry.get("id")) if x),
            display_digits=re.sub(r"\D", "", str(value.get("display_phone_number") or "")) or None,
        )


def _route(account: WhatsAppAccount, event: _RoutedEvent, *, across_clinics: bool) -> list[WhatsAppAccount]:
    """Accounts the event is about: by phone number id, WABA id, or display digits."""
    query = Q()
    if event.phone_number_id:
        query |= Q(phone_number_id=event.phone_number_id)
    if event.display_digits:
        query |= Q(number="+" + event.display_digits)
    elif event.waba_ids:
        query |= Q(business_account_id__in=event.waba_ids)
    if not query:
        return []
    # A clinic's own app secret speaks only for that clinic; the deployment's
    # secret is Meta's one app for every clinic.
    scope = WhatsAppAccount.objects.all() if across_clinics else WhatsAppAccount.objects.filter(pk=account.pk)
    return list(scope.filter(query)[:50])


def _apply(account: WhatsAppAccount, events: list[_RoutedEvent], *, across_clinics: bool) -> str:
    outcomes: list[str] = []
    for routed in events:
        for target in _route(account, routed, across_clinics=across_clinics):
            outcomes.append(services.whatsapp_apply_account_event(account=target, event=routed.event))
    return "; ".join(outcomes) or "stored"
