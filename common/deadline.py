"""A time budget for the whole request, so no slow upstream can outlast the worker.

`RequestDeadlineMiddleware` starts the clock when a request arrives
(`REQUEST_DEADLINE_SECONDS`, below gunicorn's timeout); code that waits on
another service asks `remaining()` and gives up in time to answer. Outside a
request (a task, a command) there is no deadline: `remaining()` is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


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


class RequestDeadlineMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with within(float(settings.REQUEST_DEADLINE_SECONDS)):
            return self.get_response(request)
