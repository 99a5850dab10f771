"""Background workers: a dead worker's RUNNING task is taken again; its heartbeat is seen."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_tasks import TaskResultStatus, task
from django_tasks_db.models import DBTaskResult

from common.models import WorkerHeartbeat
from common.workers import (
    running_tasks_requeue_stalled,
    work_waiting_without_worker,
    worker_beat,
    worker_release_tasks,
)

pytestmark = pytest.mark.django_db

DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@task()
def sample(n: int) -> int:
    """A task to queue (module level, as the database backend requires)."""
    return n


@pytest.fixture(autouse=True)
def _database_tasks(settings):
    settings.TASKS = DATABASE_TASKS
    settings.WORKER_STALE_SECONDS = 30


def running(worker_id: str, *, started_ago: timedelta = timedelta(0)) -> DBTaskResult:
    """A task a worker claimed (as db_worker does) `started_ago`."""
    row = DBTaskResult.objects.get(pk=sample.enqueue(n=1).id)
    row.claim(worker_id)
    DBTaskResult.objects.filter(pk=row.pk).update(started_at=timezone.now() - started_ago)
    return DBTaskResult.objects.get(pk=row.pk)


def seen(worker_id: str, ago: timedelta) -> None:
    worker_beat(worker_id=worker_id, started_at=timezone.now() - timedelta(hours=1))
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=timezone.now() - ago)


def status_of(row: DBTaskResult) -> str:
    return DBTaskResult.objects.get(pk=row.pk).status


def test_a_task_whose_worker_stopped_beating_is_taken_again():
    dead = running("dead-worker")
    alive = running("live-worker")
    seen("dead-worker", timedelta(seconds=31))
    seen("live-worker", timedelta(seconds=2))

    assert running_tasks_requeue_stalled() == 1

    assert status_of(dead) == TaskResultStatus.READY
    assert DBTaskResult.objects.ready().filter(pk=dead.pk).exists()  # the next worker takes it
    assert status_of(alive) == TaskResultStatus.RUNNING
    assert running_tasks_requeue_stalled() == 0  # reset once, however many sweeps run


def test_a_task_of_a_worker_without_heartbeat_is_taken_again_after_the_long_lease():
    recent = running("plain-db-worker", started_ago=timedelta(minutes=5))
    old = running("plain-db-worker", started_ago=timedelta(minutes=31))

    assert running_tasks_requeue_stalled() == 1

    assert status_of(recent) == TaskResultStatus.RUNNING
    assert status_of(old) == TaskResultStatus.READY


def test_the_requeue_command_sweeps_running_tasks_too():
    dead = running("dead-worker")
    seen("dead-worker", timedelta(minutes=5))

    call_command("requeue_stalled")

    assert status_of(dead) == TaskResultStatus.READY


def test_a_worker_back_from_a_database_error_releases_its_own_tasks():
    mine = running("me")
    other = running("someone-else")

    assert worker_release_tasks(worker_id="me") == 1

    assert (status_of(mine), status_of(other)) == (TaskResultStatus.READY, TaskResultStatus.RUNNING)


def test_healthz_checks_the_worker_only_when_asked(client: Client):
    assert client.get("/healthz/").json() == {"status": "ok"}
    down = client.get("/healthz/", {"worker": "1"})
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "worker": "not running"}
    with pytest.raises(CommandError, match="no background worker"):
        call_command("worker_health")

    seen("w1", timedelta(seconds=40))
    assert client.get("/healthz/", {"worker": "1"}).status_code == 503

    seen("w2", timedelta(seconds=3))
    up = client.get("/healthz/", {"worker": "1"})
    assert up.status_code == 200
    assert up.json()["worker"] == "running"
    call_command("worker_health")
    assert client.get("/healthz/").json() == {"status": "ok"}


def test_waiting_work_without_a_worker_is_noticed():
    sample.enqueue(n=1)
    assert work_waiting_without_worker() is None  # just queued: a worker may be on its way
    DBTaskResult.objects.update(enqueued_at=timezone.now() - timedelta(minutes=2))
    assert work_waiting_without_worker() is not None
    seen("w", timedelta(seconds=1))
    assert work_waiting_without_worker() is None


def test_the_admin_lists_the_workers(admin_client):
    seen("w-alive", timedelta(seconds=1))
    seen("w-dead", timedelta(minutes=3))

    page = admin_client.get("/admin/common/workerheartbeat/").content.decode()

    assert "w-alive" in page
    assert "w-dead" in page


@pytest.mark.parametrize(
    ("root", "verbosity", "shown"), [("WARNING", 1, "WARNING"), ("INFO", 1, "INFO"), ("WARNING", 2, "DEBUG")]
)
def test_the_workers_task_lines_follow_the_log_level(root, verbosity, shown):
    """`scripts/run` asks for WARNING: the worker then prints no line per task unless asked with -v 2."""
    from django_tasks_db.compat import TASKS_LOGGER

    from common.management.commands.run_worker import Command

    loggers = [logging.getLogger(), logging.getLogger(TASKS_LOGGER), logging.getLogger("django_tasks_db")]
    saved = [one.level for one in loggers]
    try:
        logging.getLogger().setLevel(root)
        Command().configure_logging(verbosity)
        assert logging.getLogger(TASKS_LOGGER).getEffectiveLevel() == logging.getLevelName(shown)
        assert logging.getLogger("django_tasks_db").getEffectiveLevel() == logging.getLevelName(shown)
    finally:
        for one, level in zip(loggers, saved, strict=True):
            one.setLevel(level)
