"""Per-clinic ingress limits on the webhook: a clinic's authentic deliveries beyond
`WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE` a minute or `WHATSAPP_WEBHOOK_BYTES_PER_HOUR` bytes an
hour are refused (`429`; Meta sends them again later), so one clinic - whose admin chooses its own
app secret, and so can sign anything - cannot fill the shared database and queue.

Counted after the signature check (garbage spends no clinic's allowance), in the shared cache
(Django's cache framework: `add` then `incr`, atomic in Redis and in local memory), in fixed
windows of a minute and an hour. A refusal is noted for the health panel in the database at most
once a minute per clinic (`WebhookVolumeRefusal`, per clinic and hour), so a flood of refused
deliveries writes almost nothing.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum

from .models import WebhookVolumeRefusal

_PREFIX = "whatsapp:ingress"


def _incr(key: str, delta: int, *, timeout: int) -> int:
    """Add `delta` to a counter that starts at 0 and ends after `timeout` seconds; atomic."""
    for _attempt in range(3):
        cache.add(key, 0, timeout)
        try:
            return int(cache.incr(key, delta))
        except ValueError:
            continue  # it expired between the add and the incr: start it again
    return delta


def whatsapp_ingress_admit(*, clinic_id: Any, size: int) -> int | None:
    """Count an authentic delivery of `size` bytes: None when it is admitted, else the seconds
    after which the clinic's window reopens (for `Retry-After`); the refusal is noted."""
    now = time.time()
    minute, hour = int(now // 60), int(now // 3600)
    count = _incr(f"{_PREFIX}:n:{clinic_id}:{minute}", 1, timeout=120)
    if count > settings.WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE:
        _note_refusal(clinic_id, now)
        return max(1, math.ceil((minute + 1) * 60 - now))
    size_key = f"{_PREFIX}:b:{clinic_id}:{hour}"
    total = _incr(size_key, size, timeout=7200)
    if total > settings.WHATSAPP_WEBHOOK_BYTES_PER_HOUR:
        # A refused body spends none of the hour's bytes: smaller deliveries may still fit.
        cache.decr(size_key, size)
        _note_refusal(clinic_id, now)
        return max(1, math.ceil((hour + 1) * 3600 - now))
    return None


def _note_refusal(clinic_id: Any, now: float) -> None:
    """Count the refusal in the cache; at most once a minute, copy the hour's count to the database."""
    hour_start = datetime.fromtimestamp(now // 3600 * 3600, tz=UTC)
    refused = _incr(f"{_PREFIX}:r:{clinic_id}:{int(now // 3600)}", 1, timeout=7200)
    if not cache.add(f"{_PREFIX}:noted:{clinic_id}:{int(now // 60)}", 1, 120):
        return
    at = datetime.fromtimestamp(now, tz=UTC)
    rows = WebhookVolumeRefusal.objects.filter(clinic_id=clinic_id, hour=hour_start)
    if rows.update(count=refused, last_at=at):
        return
    try:
        with transaction.atomic():
            WebhookVolumeRefusal.objects.create(
                clinic_id=clinic_id, hour=hour_start, count=refused, last_at=at
            )
    except IntegrityError:
        rows.update(count=refused, last_at=at)  # another server created this hour's row first


def volume_refusals_since(*, clinic_id: Any, since: datetime) -> tuple[int, datetime | None]:
    """Deliveries refused for volume since `since` (by the hour), and when the last one was noted."""
    hours = WebhookVolumeRefusal.objects.filter(
        clinic_id=clinic_id, hour__gte=since.replace(minute=0, second=0, microsecond=0)
    ).aggregate(count=Sum("count"), last_at=Max("last_at"))
    return int(hours["count"] or 0), hours["last_at"]


def volume_refusals_24h(*, clinic_id: Any, now: datetime) -> tuple[int, datetime | None]:
    return volume_refusals_since(clinic_id=clinic_id, since=now - timedelta(hours=24))
