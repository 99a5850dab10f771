"""Sign-in attempts, counted per IP and per email in the shared cache: one limiter for every door.

The API's token endpoint and the sign-in page both count here, in the same
buckets, so alternating between them does not double anyone's budget. The
counters live in the cache (Redis in production), so they hold across servers.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _rate() -> tuple[int, int]:
    # "10/min" -> (10, 60), the notation of DRF's throttle rates.
    count, period = str(settings.SIGN_IN_RATE).split("/")
    return int(count), _PERIODS[period[0]]


def _hit(kind: str, ident: str, window: int, now: float) -> int:
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()
    key = f"signin:{kind}:{digest}:{int(now // window)}"
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 1)
        return 1


def sign_in_retry_after(*, ip: str, email: str) -> int:
    """Count one sign-in attempt: 0 when it may proceed, else the seconds to wait."""
    limit, window = _rate()
    now = time.time()
    hits = [_hit("ip", ip, window, now)]
    if email:
        hits.append(_hit("email", email.strip().lower(), window, now))
    if max(hits) <= limit:
        return 0
    return int(window - now % window) + 1
