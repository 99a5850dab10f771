"""Retrying background tasks with backoff, on any backend of Django's task framework.

The framework runs a task once; trying again is the task's own decision. A task
that failed re-enqueues itself to run later; a backend that cannot defer (the
immediate one, in tests) runs the retry at once, still bounded by the attempts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_tasks.base import Task

# Longest pause between two attempts, whatever the attempt number.
MAX_RETRY_DELAY = timedelta(hours=6)


def retry_delay(attempt: int) -> timedelta:
    """The pause after the given failed attempt (1, 2, ...): the base, doubled each time, capped."""
    seconds = settings.TASK_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)
    return min(timedelta(seconds=seconds), MAX_RETRY_DELAY)


def enqueue_after(task: Task[Any, Any], delay: timedelta, **kwargs: Any) -> None:
    """Queue `task(**kwargs)` to run after `delay` where the backend can defer, else now."""
    if delay > timedelta(0) and task.get_backend().supports_defer:
        task = task.using(run_after=timezone.now() + delay)
    task.enqueue(**kwargs)
