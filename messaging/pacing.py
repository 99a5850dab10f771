"""How fast the send worker may go: at most 80 messages in any 1-second window per number, one every 6 seconds per patient.

Both limits live in Django's cache, so they hold across every worker and machine
that shares it (Redis in production; the local-memory cache is per process).

Per number, a sliding window
----------------------------
Meta counts a number's sends in any second, not per clock second: 80 sends at
0.95 s and 80 more at 1.05 s are 160 in one second to Meta (130429), although each
clock second holds 80. So time is cut into 50 ms buckets, each a counter in the
cache (`msg:pace:w:<pnid>:<bucket>`, created with `add` and raised with the cache's
atomic `incr`), and a send is allowed only if every run of 21 consecutive buckets
holds at most 80 sends: a half-open second [t, t + 1) touches at most 21 buckets, so
no second ever holds more than 80.

A taker stamped in bucket j first raises j's counter, then reads buckets j - 20 to
j + 20 in one `get_many` and checks each of the 21 runs of 21 buckets that contain j.
If one holds more than 80 it lowers its counter again and is told to wait until the
first bucket where every run containing it would have room (not a blind retry: a
deferred send goes back to the outbox's queue and is claimed again, which costs the
database).

Why two takers at once never let a window pass 80: take any run W of 21 buckets and
the takers in it that were allowed, and among those the last to raise its counter,
X. Every other one raised its counter before X did (and an allowed taker never
lowers it), and X read after its own raise, so X saw all of them; W is one of the
runs containing X's bucket, which X checked, so they are at most 80. A refused
taker's raise, until it lowers it, only makes others see more: two takers at the
edge may both see each other and both be refused, which is safe (both come back
after their wait). Reading the buckets after j as well as before is what
makes this hold whatever order the takers' clocks and raises come in: a worker whose
clock is a few milliseconds behind, or that was paused between reading the clock and
raising, can not fill an earlier bucket that a later taker had already counted on
being empty. The counts are by each taker's own clock, so machines sharing a cache
must keep their clocks in step (NTP), and every taker must read from the cache server
it writes to (one Redis, no read replica). The window is on the moments slots are
taken: each request reaches Meta a little later, and a delay that differs from one
send to the next can still bunch a few together there.

The price of whole buckets is that a full window lasts 21 buckets, 1.05 s: a number
that always has work sends at most 80 per 1.05 s, about 76 a second (above the 72,
0.9 of 80, we must reach).

Per patient
-----------
A key `add`ed with a 6-second lifetime whose value is when it ends: `add` succeeds
for one taker only, and the others are told how long remains.

A send that must wait is not refused: it goes back to the outbox's queue for that
long (`common.outbox.Outbox.defer`) without counting an attempt.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime
from typing import Any

from django.core.cache import cache

# Meta's default throughput per number (130429 beyond it) and its pair rate (131056).
NUMBER_RATE_PER_SECOND = 80
PATIENT_SPACING_SECONDS = 6.0
# 20 buckets a second: finer costs a longer read per send, coarser lowers the sustained
# rate (a full window is 21 buckets, 1 + one bucket's seconds).
BUCKET_MICROSECONDS = 50_000
WINDOW_BUCKETS = 1_000_000 // BUCKET_MICROSECONDS + 1
# A counter is read until 20 buckets after its own (1 s) and a little longer on a
# machine whose clock is behind; it outlives that comfortably.
_COUNTER_TTL = 10


def _number_key(phone_number_id: str, bucket: int) -> str:
    return f"msg:pace:w:{phone_number_id}:{bucket}"


def _patient_key(conversation_id: Any) -> str:
    return f"msg:pace:p:{conversation_id}"


def _microseconds(now: datetime) -> int:
    # Whole microseconds, so that bucket edges are exact (a float epoch divided by 0.05 is not).
    return round(now.timestamp() * 1_000_000)


def _raise(key: str) -> None:
    cache.add(key, 0, timeout=_COUNTER_TTL)
    try:
        cache.incr(key)
    except ValueError:  # the counter expired between add and incr (a very slow cache)
        cache.add(key, 0, timeout=_COUNTER_TTL)
        cache.incr(key)


def _lower(key: str) -> None:
    with contextlib.suppress(ValueError):  # already expired: nothing left to give back
        cache.decr(key)


def _fullest_run(totals: list[int], bucket_index: int) -> int:
    """The most sends in any run of WINDOW_BUCKETS consecutive buckets holding the bucket at `bucket_index`.

    `totals` are running totals: totals[i] is the sends in the buckets before index i.
    """
    first = max(bucket_index - WINDOW_BUCKETS + 1, 0)
    last = min(bucket_index, len(totals) - 1 - WINDOW_BUCKETS)
    return max(totals[start + WINDOW_BUCKETS] - totals[start] for start in range(first, last + 1))


def _running_totals(counts: list[int]) -> list[int]:
    totals = [0]
    for count in counts:
        totals.append(totals[-1] + count)
    return totals


def take_number_slot(phone_number_id: str, now: datetime) -> float:
    """Take one of the number's sends: 0.0, or the seconds until every 1-second window around it has room."""
    instant = _microseconds(now)
    bucket = instant // BUCKET_MICROSECONDS
    own = _number_key(phone_number_id, bucket)
    _raise(own)
    # Buckets bucket - 20 .. bucket + 20: every run of 21 that holds this bucket.
    first = bucket - WINDOW_BUCKETS + 1
    keys = [_number_key(phone_number_id, b) for b in range(first, bucket + WINDOW_BUCKETS)]
    found = cache.get_many(keys)
    counts = [int(found.get(key, 0)) for key in keys]
    own_index = WINDOW_BUCKETS - 1
    if _fullest_run(_running_totals(counts), own_index) <= NUMBER_RATE_PER_SECOND:
        return 0.0
    _lower(own)
    counts[own_index] -= 1
    # The first later bucket where this send would fit if nobody else took one meanwhile
    # (buckets not read count as empty); 41 buckets on at the latest, when every bucket read
    # has left the runs that hold it.
    totals = _running_totals(counts + [0] * 2 * WINDOW_BUCKETS)
    later = range(own_index + 1, own_index + 2 * WINDOW_BUCKETS)
    fits = next(
        (index for index in later if _fullest_run(totals, index) < NUMBER_RATE_PER_SECOND),
        own_index + 2 * WINDOW_BUCKETS,
    )
    return ((first + fits) * BUCKET_MICROSECONDS - instant) / 1_000_000


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
