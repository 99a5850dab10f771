"""Background workers that survive their database, and how their health is seen.

`manage.py run_worker` runs django-tasks-db's worker loop (the `db_worker` command) and, when
the database goes away under it (a restart, a failover, a killed connection), closes its
connections and starts the loop again after 1, 2, 4... seconds (at most
`WORKER_MAX_BACKOFF_SECONDS`) instead of exiting. Beside the loop a thread writes the worker's
heartbeat (`WorkerHeartbeat`) every `WORKER_HEARTBEAT_SECONDS` and, now and then, takes again the
tasks dead workers left `RUNNING` (`running_tasks_requeue_stalled`; `requeue_stalled` runs it too):

* a task whose worker's heartbeat is older than `WORKER_STALE_SECONDS` is set back to ready,
  with a conditional UPDATE (two sweeps reset it once), and the next worker runs it again;
* a task of a worker that never wrote a heartbeat (a plain `db_worker`) after
  `UNWATCHED_TASK_LEASE`, since nothing says whether that worker still lives.

Every task of the product is safe to run twice (the outbox claims, markers and timestamps).
`worker_alive()` answers the load balancer's `/healthz/?worker=1` and `manage.py worker_health`;
`work_waiting_without_worker()` tells the health panel that work waits and no worker runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from django_tasks import TaskResultStatus, task_backends
from django_tasks_db import DatabaseBackend
from django_tasks_db.models import DBTaskResult

from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)

# A RUNNING task of a worker that writes no heartbeat is taken again after this long.
UNWATCHED_TASK_LEASE = timedelta(minutes=30)
# Heartbeats of workers gone this long are deleted (their tasks were taken again long before).
FORGET_AFTER = timedelta(days=1)
# The heartbeat thread sweeps stalled RUNNING tasks every this many beats.
SWEEP_EVERY_BEATS = 6


def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.WORKER_STALE_SECONDS)


def worker_beat(*, worker_id: str, started_at: datetime, waiting_for: str = "") -> None:
    """Write the worker's heartbeat now."""
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "started_at": started_at,
            "last_seen_at": timezone.now(),
            "waiting_for": waiting_for[:255],
        },
    )


def worker_gone(*, worker_id: str) -> None:
    """A worker that stops cleanly removes its heartbeat: it is not a dead one."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


def worker_release_tasks(*, worker_id: str) -> int:
    """Set back to ready the tasks this worker left RUNNING (its loop failed under them)."""
    released = 0
    for pk, worker_ids, started_at in DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING
    ).values_list("pk", "worker_ids", "started_at"):
        if worker_ids and worker_ids[-1] == worker_id:
            released += _reset(pk, started_at)
    return released


def _reset(pk: UUID | str, started_at: datetime | None) -> int:
    """The conditional UPDATE that sets one RUNNING task back to ready (once, whoever sweeps)."""
    return DBTaskResult.objects.filter(pk=pk, status=TaskResultStatus.RUNNING, started_at=started_at).update(
        status=TaskResultStatus.READY, started_at=None
    )


def running_tasks_requeue_stalled(*, limit: int = 1000) -> int:
    """Set back to ready the RUNNING tasks whose worker is dead; returns how many."""
    now = timezone.now()
    heartbeats = dict(WorkerHeartbeat.objects.values_list("worker_id", "last_seen_at"))
    requeued = 0
    running = DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).values_list(
        "pk", "worker_ids", "started_at"
    )
    for pk, worker_ids, started_at in running[:limit]:
        worker = str(worker_ids[-1]) if worker_ids else ""
        last_seen = heartbeats.get(worker)
        if last_seen is not None:
            dead = last_seen < _stale_before(now)
        else:
            dead = started_at is None or started_at < now - UNWATCHED_TASK_LEASE
        if dead and _reset(pk, started_at):
            logger.warning("task %s of dead worker %s taken again", pk, worker)
            requeued += 1
    WorkerHeartbeat.objects.filter(last_seen_at__lt=now - FORGET_AFTER).delete()
    return requeued


def worker_alive() -> WorkerHeartbeat | None:
    """The most recent heartbeat if a worker wrote one within `WORKER_STALE_SECONDS`, else None."""
    return WorkerHeartbeat.objects.filter(last_seen_at__gte=_stale_before(timezone.now())).first()


def work_waiting_without_worker() -> datetime | None:
    """When the oldest waiting task became due, if it waited over `WORKER_STALE_SECONDS` and no
    worker is alive (database task backend only: other backends have their own workers)."""
    if not isinstance(task_backends["default"], DatabaseBackend):
        return None
    now = timezone.now()
    oldest = (
        DBTaskResult.objects.ready()
        .filter(enqueued_at__lt=_stale_before(now))
        .order_by("enqueued_at")
        .values_list("enqueued_at", flat=True)
        .first()
    )
    if oldest is None or worker_alive() is not None:
        return None
    return oldest


class Heartbeat(threading.Thread):
    """The worker's heartbeat, in its own thread (and its own database connection): written every
    `WORKER_HEARTBEAT_SECONDS` while the process lives, whatever the loop is doing; a database
    error skips a beat. Every few beats it also takes again the tasks of dead workers."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.started_at = timezone.now()
        self.waiting_for = ""
        self.stopped = threading.Event()

    def beat(self) -> None:
        worker_beat(worker_id=self.worker_id, started_at=self.started_at, waiting_for=self.waiting_for)

    def run(self) -> None:
        beats = 0
        while not self.stopped.is_set():
            try:
                self.beat()
                if beats % SWEEP_EVERY_BEATS == 0:
                    running_tasks_requeue_stalled()
            except DatabaseError as exc:
                logger.warning("worker %s: heartbeat not written: %s", self.worker_id, type(exc).__name__)
                _close_quietly()
            beats += 1
            self.stopped.wait(settings.WORKER_HEARTBEAT_SECONDS)
        connection.close()


def _close_quietly() -> None:
    """Drop this thread's connection after a database error; the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connection.close()
