"""The send worker's pace: at most 80 in any 1-second window per number, one every 6 seconds per patient.

The cache holds both; the clock is the `now` each taker passes, so these tests set it.
"""

from __future__ import annotations

import heapq
import random
import sys
import threading
import uuid
from bisect import bisect_left
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.core.cache import cache

from messaging.pacing import take_number_slot, take_send_slot

AT = datetime(2026, 12, 7, 13, 0, 0, 250000, tzinfo=UTC)
SECOND = datetime(2026, 12, 7, 13, 0, 0, tzinfo=UTC)  # a whole second
NUMBER = "106540352242922"
REDIS_DB = 11  # this module's own


def _at(seconds: float) -> datetime:
    return SECOND + timedelta(seconds=seconds)


def most_in_one_second(times: list[float]) -> int:
    """The most takers in any half-open window [t, t + 1), sliding over every taker's time."""
    ordered = sorted(times)
    return max((bisect_left(ordered, start + 1.0) - i for i, start in enumerate(ordered)), default=0)


def paced(arrivals: list[float], until: float) -> list[float]:
    """When each send went, each arriving at its time and, when told to wait, coming back after the wait."""
    queue = [(t, i) for i, t in enumerate(arrivals)]
    heapq.heapify(queue)
    went = []
    while queue:
        t, i = heapq.heappop(queue)
        if t >= until:
            continue
        wait = take_number_slot(NUMBER, _at(t))
        if wait:
            assert wait > 0
            heapq.heappush(queue, (t + wait, i))
        else:
            went.append(t)
    return went


def test_80_at_the_end_of_a_second_keep_the_81st_out_of_the_next_one_until_the_window_has_room():
    assert [take_number_slot(NUMBER, _at(0.95)) for _ in range(80)] == [0.0] * 80

    # 1.05 s is another clock second, but [0.95, 1.95) would hold 81: it waits for the first
    # 50 ms step where the window has room (0.95 + 1.05 s), not a blind retry.
    wait = take_number_slot(NUMBER, _at(1.05))
    assert wait == pytest.approx(0.95)
    assert take_number_slot(NUMBER, _at(1.999999)) == pytest.approx(0.000001)
    # At 2.0 the 80 of 0.95 have left, and the refused takers gave their counts back: 80 go.
    assert [take_number_slot(NUMBER, _at(2.0)) for _ in range(80)] == [0.0] * 80
    assert take_number_slot(NUMBER, _at(2.0)) > 0
    # Another number never shared this one's.
    assert take_number_slot("1906385232743451", _at(2.0)) == 0.0


def test_a_taker_whose_clock_is_behind_can_not_overfill_a_window_already_counted():
    # Another worker's clock is 40 ms behind, or this one paused between its clock and its take:
    # it comes after 80 stamped 1.0 with a stamp of 0.96, and [0.96, 1.96) would hold 81.
    assert [take_number_slot(NUMBER, _at(1.0)) for _ in range(80)] == [0.0] * 80

    assert take_number_slot(NUMBER, _at(0.96)) == pytest.approx(2.05 - 0.96)
    assert take_number_slot(NUMBER, _at(0.5)) > 0


def test_a_steady_76_a_second_all_go_and_no_window_holds_more_than_80():
    arrivals = [i / 76 for i in range(76 * 10)]

    went = paced(arrivals, until=12.0)

    assert most_in_one_second(went) <= 80
    per_second = Counter(int(t) for t in went)
    assert min(per_second[s] for s in range(10)) >= 72
    assert len(went) == len(arrivals)


def test_a_flood_is_held_to_80_in_any_window_and_still_sends_at_least_72_a_second():
    # Far more than the number may send (120 a second for 5 s, each told to wait coming back).
    arrivals = [i / 120 for i in range(120 * 5)]

    went = paced(arrivals, until=5.0)

    assert most_in_one_second(went) == 80
    assert len(went) >= 72 * 5


def test_a_patients_second_message_waits_about_6_seconds():
    patient = uuid.uuid4()

    assert take_send_slot(phone_number_id="1", conversation_id=patient, now=AT) == 0.0
    wait = take_send_slot(phone_number_id="1", conversation_id=patient, now=AT + timedelta(seconds=1))

    assert 4.9 <= wait <= 5.0
    # Another patient goes at once.
    assert take_send_slot(phone_number_id="1", conversation_id=uuid.uuid4(), now=AT) == 0.0


def test_a_patient_slot_is_given_back_when_the_number_has_none():
    patient = uuid.uuid4()
    for _ in range(80):
        take_number_slot("2", AT)

    wait = take_send_slot(phone_number_id="2", conversation_id=patient, now=AT)
    assert wait == pytest.approx(1.05)
    # The patient was not charged for the send that did not go: it goes when the number may.
    assert (
        take_send_slot(phone_number_id="2", conversation_id=patient, now=AT + timedelta(seconds=wait)) == 0.0
    )


@pytest.fixture(params=["local memory", "redis"])
def shared_cache(request, settings):
    if request.param == "redis":
        try:
            redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=1).ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("no Redis at 127.0.0.1:6379")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://127.0.0.1:6379/{REDIS_DB}",
            }
        }
        cache.clear()
        yield
        cache.clear()
    else:
        yield


def test_takers_in_many_threads_at_once_never_put_more_than_80_in_a_window(shared_cache):
    # 8 workers, each taking 60 sends stamped at random over 3 seconds, in no order: the
    # stamps of takers racing each other come in any order, as between machines.
    start = threading.Barrier(8)
    went: list[float] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        stamps = [rng.uniform(0.0, 3.0) for _ in range(60)]
        start.wait()
        for t in stamps:
            if take_number_slot(NUMBER, _at(t)) == 0.0:
                with lock:
                    went.append(t)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, between any two cache calls
    try:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    assert most_in_one_second(went) <= 80
    # The number was not starved by the race: 3 s of stamps hold at least two full windows.
    assert len(went) >= 160
