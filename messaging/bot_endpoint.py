"""The clinic's bot endpoint (contract endpoints 14, 14a, 14b): its URL, its signing secret, its ping.

The URL is checked (and its host resolved) before any transaction opens, and the
ping waits on the bot with none open: what the bot said is recorded afterwards,
and only if the URL is still the one pinged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from common.audit import audit_changes, audit_record

from .exceptions import BotAddressRefusedError, BotError, BotResolutionError, BotTimeoutError
from .models import BotEndpoint, BotEndpointStatus
from .outbox import encode, new_ping_id, ping_body
from .poster import (
    MAX_URL_LENGTH,
    TIMEOUT_SECONDS,
    allow_private,
    parse_bot_url,
    post_to_bot,
    resolve_allowed_within,
)
from .signing import new_signing_secret, webhook_headers

logger = logging.getLogger(__name__)

_URL_REFUSALS = {
    "invalid": _("Enter a valid URL."),
    "too_long": _("Use a URL of at most %(limit)d characters."),
    "scheme": _("Use an https:// URL."),
    "credentials": _("Leave user names and passwords out of the URL."),
    "address": _(
        "This host is on a private, loopback, link-local, multicast or reserved address; "
        "the bot must be reachable on the public internet."
    ),
    "dns": _("This host name does not resolve."),
}


def _url_error(reason: str) -> ValidationError:
    message = _URL_REFUSALS[reason]
    params = {"limit": MAX_URL_LENGTH} if reason == "too_long" else None
    return ValidationError({"url": [ValidationError(message, code=reason, params=params)]})


def bot_endpoint_check_url(url: str) -> None:
    """Refuse (`ValidationError` on `url`) a URL we would not connect to; resolves its host."""
    schemes = ["http", "https"] if allow_private() else ["https"]
    try:
        URLValidator(schemes=schemes)(url)
    except ValidationError:
        try:
            parse_bot_url(url)
        except BotAddressRefusedError as exc:
            raise _url_error(exc.reason) from None
        raise _url_error("invalid") from None
    try:
        resolve_allowed_within(parse_bot_url(url), TIMEOUT_SECONDS)
    except BotAddressRefusedError as exc:
        raise _url_error(exc.reason) from None
    except (BotResolutionError, BotTimeoutError):
        raise _url_error("dns") from None


@dataclass(frozen=True)
class SavedBotEndpoint:
    endpoint: BotEndpoint
    # The signing secret in full when this save created it (shown once), else None.
    new_secret: str | None


def bot_endpoint_save_url(*, clinic_id: Any, url: str) -> SavedBotEndpoint:
    """Save the clinic's bot URL: checked, then `unverified` until a ping gets a `2xx`.

    An empty URL removes the bot (`none`). The same URL saved again changes
    nothing. The first save generates the signing secret and returns it in full.
    """
    url = url.strip()
    if url:
        bot_endpoint_check_url(url)  # resolves the host: before the transaction
    with transaction.atomic():
        endpoint, _created = BotEndpoint.objects.select_for_update().get_or_create(clinic_id=clinic_id)
        before = _audited(endpoint)
        new_secret = None
        if not endpoint.secret:
            new_secret = endpoint.secret = new_signing_secret()
        if url != endpoint.url or (url and endpoint.status == BotEndpointStatus.NONE):
            endpoint.url = url
            endpoint.status = BotEndpointStatus.UNVERIFIED if url else BotEndpointStatus.NONE
            endpoint.failing_since = None
        endpoint.full_clean(exclude=["clinic", "url"])
        endpoint.save()
        if changes := audit_changes(BotEndpoint, before, _audited(endpoint)):
            audit_record(clinic_id=clinic_id, action="bot_endpoint.updated", changes=changes)
    return SavedBotEndpoint(endpoint=endpoint, new_secret=new_secret)


def bot_endpoint_rotate_secret(*, clinic_id: Any) -> str:
    """A new signing secret, returned in full this once; the previous one keeps signing for 24 hours."""
    with transaction.atomic():
        endpoint, _created = BotEndpoint.objects.select_for_update().get_or_create(clinic_id=clinic_id)
        before = _audited(endpoint)
        secret = new_signing_secret()
        if endpoint.secret:
            endpoint.previous_secret = endpoint.secret
            endpoint.rotated_at = timezone.now()
        endpoint.secret = secret
        endpoint.save()
        audit_record(
            clinic_id=clinic_id,
            action="bot_endpoint.secret_rotated",
            changes=audit_changes(BotEndpoint, before, _audited(endpoint)),
        )
    return secret


def _audited(endpoint: BotEndpoint) -> dict[str, Any]:
    """What the audit trail compares (the secret by its fingerprint: `BotEndpoint.audit_secrets`)."""
    return {"url": endpoint.url, "status": endpoint.status, "secret": endpoint.secret}


@dataclass(frozen=True)
class PingResult:
    """What the bot answered to a signed `ping`."""

    live: bool
    status_code: int | None
    # "" when live; else "http_status", or the BotError's code ("timeout", "refused_address"...).
    error: str
    elapsed_ms: int | None


def bot_endpoint_ping(*, clinic_id: Any) -> PingResult:
    """Send a signed `ping` to the clinic's bot; a `2xx` within 10 seconds makes the endpoint `live`.

    A failed ping changes nothing (an unverified endpoint stays so; a live one's
    health is the deliveries' business). `ValidationError` on `url` when none is saved.
    """
    endpoint = BotEndpoint.objects.filter(clinic_id=clinic_id).first()
    if endpoint is None or not endpoint.url:
        raise ValidationError({"url": [ValidationError(_("Save the bot's URL first."), code="required")]})
    url = endpoint.url
    now = timezone.now()
    body = encode(ping_body(clinic_id))
    headers = webhook_headers(
        endpoint.signing_secrets(now), webhook_id=new_ping_id(), timestamp=int(now.timestamp()), body=body
    )
    try:
        answer = post_to_bot(url, body=body, headers=headers)
    except BotError as exc:
        logger.info("Ping of the bot of clinic %s failed: %s", clinic_id, exc.code)
        return PingResult(live=False, status_code=None, error=exc.code, elapsed_ms=None)
    if not answer.ok:
        return PingResult(
            live=False, status_code=answer.status, error="http_status", elapsed_ms=answer.elapsed_ms
        )
    # Only the URL that answered becomes live: one saved meanwhile stays unverified.
    BotEndpoint.objects.filter(pk=endpoint.pk, url=url).exclude(status=BotEndpointStatus.NONE).update(
        status=BotEndpointStatus.LIVE, last_success_at=timezone.now(), failing_since=None
    )
    return PingResult(live=True, status_code=answer.status, error="", elapsed_ms=answer.elapsed_ms)
