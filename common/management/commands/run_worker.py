"""The background worker that survives its database: django-tasks-db's `db_worker`, restarted in
place with backoff when the database goes away, with a heartbeat (see common.workers)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django_tasks_db.compat import TASKS_LOGGER
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand

from common.workers import Heartbeat, worker_gone, worker_release_tasks

logger = logging.getLogger("common.workers")

# What a database restart looks like to the loop: the connection is refused or was closed.
DATABASE_DOWN = (OperationalError, InterfaceError)


def _close_connections() -> None:
    for conn in connections.all(initialized_only=True):
        with contextlib.suppress(*DATABASE_DOWN):  # already broken: closing it is all that was wanted
            conn.close()


class Command(DbWorkerCommand):
    help = (
        "Run the database background worker (db_worker's options), surviving database restarts: "
        "on a database error it closes its connections and starts again after a short backoff. "
        "Writes a heartbeat every few seconds (admin, /healthz/?worker=1, manage.py worker_health)."
    )

    def configure_logging(self, verbosity: int) -> None:
        """At the default verbosity, django-tasks' loggers follow the deployment's `LOG_LEVEL`.

        db_worker sets them to INFO (a line per task) whatever the settings say;
        `scripts/run` asks for WARNING, so only what needs a person shows there.
        `-v 2` still shows everything, `-v 0` nothing.
        """
        super().configure_logging(verbosity)
        wanted = logging.getLogger().getEffectiveLevel()
        if verbosity == 1 and wanted > logging.INFO:
            for name in (TASKS_LOGGER, "django_tasks_db"):
                logging.getLogger(name).setLevel(wanted)

    def handle(self, *args: Any, **options: Any) -> None:
        # No autoreloader: the loop below is the process's main loop.
        options["reload"] = False
        worker_id = options["worker_id"]
        heartbeat = Heartbeat(worker_id)
        heartbeat.start()
        backoff = 1.0
        try:
            while True:
                try:
                    if heartbeat.waiting_for:
                        # Back after a database error: what this worker was running runs again.
                        released = worker_release_tasks(worker_id=worker_id)
                        heartbeat.waiting_for = ""
                        backoff = 1.0
                        logger.warning(
                            "worker %s: database back; %d task(s) queued again", worker_id, released
                        )
                    super().handle(*args, **options)
                    return  # --batch or --max-tasks: the worker ends as db_worker does
                except DATABASE_DOWN as exc:
                    heartbeat.waiting_for = type(exc).__name__
                    logger.warning(
                        "worker %s: database error (%s); trying again in %.0f s",
                        worker_id,
                        type(exc).__name__,
                        backoff,
                    )
                    _close_connections()
                    time.sleep(backoff)
                    backoff = min(backoff * 2, settings.WORKER_MAX_BACKOFF_SECONDS)
        finally:
            heartbeat.stopped.set()
            with contextlib.suppress(*DATABASE_DOWN):  # else its heartbeat goes stale instead
                worker_gone(worker_id=worker_id)
