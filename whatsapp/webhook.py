"""Meta's webhook for one clinic: GET handshake, signed POST deliveries.

The signature is checked over the raw bytes before anything is parsed (Meta signs
its own `\\uXXXX`-escaped serialisation; re-serialising breaks it). Every authentic
delivery is stored once (deduplicated by Meta's ids) with its processing queued in
the same transaction, and answered 200 at once; a background worker applies its
events (whatsapp.deliveries). Nothing here calls Meta or applies an event.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from common.http import json_503_when_the_database_is_down

from . import deliveries, ingress
from .models import WhatsAppAccount

logger = logging.getLogger(__name__)

_SIGNATURE_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
MAX_CHALLENGE_LENGTH = 256


def _forbidden(reason: str) -> HttpResponse:
    return HttpResponseForbidden(reason, content_type="text/plain; charset=utf-8")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@json_503_when_the_database_is_down
def webhook(request: HttpRequest, clinic_id: UUID) -> HttpResponse:
    try:
        account = WhatsAppAccount.objects.get(clinic_id=clinic_id)
    except WhatsAppAccount.DoesNotExist:
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
    header = request.headers.get("X-Hub-Signature-256", "")
    if not signature_matches(body, header, secret):
        logger.warning("webhook signature mismatch clinic=%s bytes=%d", account.clinic_id, len(body))
        if _SIGNATURE_RE.match(header):
            # Counted for the health check: Meta signing with another app's secret looks like
            # this, and is why "no messages arrive". A POST without a well-formed signature
            # is not Meta's (Meta signs every delivery): anyone's garbage is not counted.
            deliveries.whatsapp_signature_failure_record(clinic_id=account.clinic_id)
        return _forbidden("Signature does not match.")
    # Per-clinic ingress limits, spent only by authentic deliveries (whatsapp.ingress).
    retry_after = ingress.whatsapp_ingress_admit(clinic_id=account.clinic_id, size=len(body))
    if retry_after is not None:
        refused = HttpResponse("Too many deliveries for this clinic.", status=429, content_type="text/plain")
        refused["Retry-After"] = str(retry_after)
        return refused
    # Stored and queued in one transaction; a worker applies the events.
    delivery = deliveries.whatsapp_delivery_store(
        account=account, body=body, signed_with_clinic_secret=bool(own_secret)
    )
    if delivery is None:
        return JsonResponse({"status": "duplicate"})
    return JsonResponse({"status": "received"})
