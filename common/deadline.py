"""A time budget for the whole request, so no slow upstream can outlast the worker.

`RequestDeadlineMiddleware` starts the clock when a request arrives
(`REQUEST_DEADLINE_SECONDS`, below gunicorn's timeout); code that waits on
another service asks `remaining()` and gives up in time to answer. Outside a
request (a task, a command) there is no deadline: `remaining()` is None.

The deadline is a context variable, and threads do not inherit context
variables: a plain `ThreadPoolExecutor` would run its work with no deadline at
all. `run_in_threads` is the one way to do a request's work in threads: each call
runs in a copy of the caller's context variables (the deadline among them), and
the caller waits no longer than the deadline; a call still running then is
abandoned and reported as timed out.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def remaining() -> float | None:
    """Seconds left before the current request must be answered, or None outside a request."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run the block under a deadline `seconds` from now (or the current one, if sooner)."""
    deadline = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(deadline if current is None else min(current, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


def run_in_threads(
    calls: Mapping[K, Callable[[], T]], *, timed_out: Callable[[K], T], reserve: float = 0.0
) -> dict[K, T]:
    """Run the calls at once, one thread each, and return each one's result by its key.

    Every call runs in its own copy of the caller's context, so `remaining()` inside
    it is the caller's. The wait ends `reserve` seconds before the deadline (none
    outside a request): a call still running then is abandoned - its thread ends on
    its own, its result is ignored - and `timed_out(key)` stands in for it. An
    exception raised by a call is raised here.
    """
    if not calls:
        return {}
    left = remaining()
    pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="request")
    try:
        # One copy per call: a context can be entered by one thread at a time.
        futures: dict[K, Future[T]] = {
            key: pool.submit(contextvars.copy_context().run, call) for key, call in calls.items()
        }
        wait(futures.values(), timeout=None if left is None else max(0.0, left - reserve))
    finally:
        # Never wait for a straggler: it is abandoned, not joined.
        pool.shutdown(wait=False, cancel_futures=True)
    return {
        key: future.result() if future.done() and not future.cancelled() else timed_out(key)
        for key, future in futures.items()
    }


class RequestDeadlineMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with within(float(settings.REQUEST_DEADLINE_SECONDS)):
            return self.get_response(request)
