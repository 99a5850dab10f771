"""The request's deadline in the threads that work for it (`common.deadline.run_in_threads`)."""

from __future__ import annotations

import threading
import time

import pytest

from common import deadline


def test_the_deadline_reaches_every_thread():
    with deadline.within(5.0):
        outside = deadline.remaining()
        inside = deadline.run_in_threads(
            dict.fromkeys(range(3), deadline.remaining), timed_out=lambda n: None
        )

    assert outside is not None
    assert set(inside) == {0, 1, 2}
    for left in inside.values():
        assert left is not None
        assert 4.0 < left <= outside  # the caller's deadline, not a fresh one and not none


def test_a_call_still_running_at_the_deadline_is_abandoned():
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "late"

    try:
        with deadline.within(0.5):
            started = time.monotonic()
            results = deadline.run_in_threads(
                {"fast": lambda: "ok", "slow": slow}, timed_out=lambda key: f"{key} timed out", reserve=0.2
            )
            elapsed = time.monotonic() - started
    finally:
        release.set()

    assert results == {"fast": "ok", "slow": "slow timed out"}
    assert elapsed < 0.5  # the reserve is kept back for the answer


def test_outside_a_request_it_waits_for_every_call():
    def sleepy() -> float | None:
        time.sleep(0.2)
        return deadline.remaining()

    assert deadline.run_in_threads({"x": sleepy}, timed_out=lambda _key: -1.0) == {"x": None}


def test_a_calls_exception_reaches_the_caller():
    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        deadline.run_in_threads({"x": broken}, timed_out=lambda _key: None)


def test_no_calls_no_threads():
    assert deadline.run_in_threads({}, timed_out=lambda _key: None) == {}
