"""How fast the send worker may go: at most 80 messages a second per number, one every 6 seconds per patient.

Both limits live in Django's cache, so they hold across every worker and machine
that shares it (Redis in production; the local-memory cache is per process):

* per number, a counter per wall-clock second (`msg:pace:n:<pnid>:<second>`),
  created with `add` and raised with the cache's atomic `incr`: the 81st taker in
  a second is told to wait for the next one;
* per patient (conversation), a key `add`ed with a 6-second lifetime whose value
  is when it ends: `add` succeeds for one taker only, and the others are told how
  long remains.

A send that must wait is not refused: it goes back to the outbox's queue for that
long (`common.outbox.Outbox.defer`) without counting an attempt.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.core.cache import cache

# Meta's default throughput per number (130429 beyond it) and its pair rate (131056).
NUMBER_RATE_PER_SECOND = 80
PATIENT_SPACING_SECONDS = 6.0
# A counter outlives its second a little, for clocks that differ between machines.
_COUNTER_TTL = 10


def _number_key(phone_number_id: str, second: int) -> str:
    return f"msg:pace:n:{phone_number_id}:{second}"


def _patient_key(conversation_id: Any) -> str:
    return f"msg:pace:p:{conversation_id}"


def take_number_slot(phone_number_id: str, now: datetime) -> float:
    """Take one of this second's sends of the number: 0.0, or the seconds to wait for the next second."""
    instant = now.timestamp()
    second = math.floor(instant)
    key = _number_key(phone_number_id, second)
    cache.add(key, 0, timeout=_COUNTER_TTL)
    try:
        taken = cache.incr(key)
    except ValueError:  # the counter expired between add and incr (a very slow cache)
        cache.add(key, 0, timeout=_COUNTER_TTL)
        taken = cache.incr(key)
    if taken <= NUMBER_RATE_PER_SECOND:
        return 0.0
    return max(second + 1 - instant, 0.01)


def take_patient_slot(conversation_id: Any, now: datetime) -> float:
    """Take the patient's next send: 0.0, or the seconds until the last one is 6 seconds old."""
    instant = now.timestamp()
    ends = instant + PATIENT_SPACING_SECONDS
    if cache.add(_patient_key(conversation_id), ends, timeout=math.ceil(PATIENT_SPACING_SECONDS)):
        return 0.0
    held = cache.get(_patient_key(conversation_id))
    return max(float(held) - instant if held is not None else 0.0, 0.01)


def release_patient_slot(conversation_id: Any) -> None:
    """Give back a patient's slot taken for a send that did not go (the number had no slot left)."""
    cache.delete(_patient_key(conversation_id))


def take_send_slot(*, phone_number_id: str, conversation_id: Any, now: datetime) -> float:
    """Both limits at once: 0.0 when the send may go now, else how many seconds to wait."""
    wait = take_patient_slot(conversation_id, now)
    if wait:
        return wait
    wait = take_number_slot(phone_number_id, now)
    if wait:
        release_patient_slot(conversation_id)
    return wait
