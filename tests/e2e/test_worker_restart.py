"""The worker survives its database (PostgreSQL): `manage.py run_worker` keeps processing after
what a database restart looks like to it - its connections terminated (`pg_terminate_backend`)
and new ones refused for a few seconds - on this test's throwaway database only (the shared
server is never restarted). `db_worker` alone exits at the first refused connection, for good.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from whatsapp.tests.helpers import many_quality_updates

from .conftest import run_manage
from .test_background import WABA, _connect, _markers, _post_delivery
from .test_background import stack as stack  # the fixture, used by name

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(300)]

# libpq names the worker's connections (PGAPPNAME), so only they are dropped: not gunicorn's, not ours.
APP_NAME = "clinics-e2e-worker"
DOWN_SECONDS = 3


def _admin(db) -> str:
    return urlsplit(db.url)._replace(path="/postgres").geturl()


def _worker_backends(conn: psycopg.Connection) -> int:
    ((count,),) = conn.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
    ).fetchall()
    return int(count)


@contextlib.contextmanager
def _database_restart(db) -> Iterator[None]:
    """The worker's connections end and new ones are refused until the block ends."""
    name = urlsplit(db.url).path.lstrip("/")
    with psycopg.connect(_admin(db), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (APP_NAME,),
            )
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _wait_connected(db, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(_admin(db), autocommit=True) as conn:
        while time.monotonic() < deadline:
            if _worker_backends(conn):
                return
            time.sleep(0.1)
    raise AssertionError("the worker never connected")


def test_the_worker_keeps_processing_after_its_database_restarts(stack, processes, capsys):
    display, _session = _connect(stack)
    digits = "".join(ch for ch in display if ch.isdigit())
    db = stack["db"]
    env = {**stack["env"], "PGAPPNAME": APP_NAME, "WORKER_HEARTBEAT_SECONDS": "0.5"}

    # 1. Before: db_worker dies at the restart, and stays dead.
    plain = processes.worker(env, name="db-worker", command="db_worker")
    _wait_connected(db)
    with _database_restart(db):
        assert plain.proc is not None
        assert plain.proc.wait(timeout=30) != 0
    assert "OperationalError" in plain.log()

    # 2. run_worker applies a delivery, lives through a restart, and applies the next one.
    worker = processes.worker(env, name="run-worker")
    _wait_connected(db)
    _elapsed, first = _post_delivery(stack, many_quality_updates(50, digits=digits, waba=WABA, start=1))
    db.wait_for(first, lambda d: d["state"] == "done", timeout=60)

    with _database_restart(db):
        time.sleep(DOWN_SECONDS)
    up_at = time.monotonic()
    _elapsed, second = _post_delivery(stack, many_quality_updates(50, digits=digits, waba=WABA, start=10_000))
    done = db.wait_for(second, lambda d: d["state"] == "done", timeout=60)
    resumed_in = time.monotonic() - up_at
    assert done["events_done"] == 50

    # 3. A restart in the middle of a big delivery: the delivery's lease (2 s here) runs out, the
    # sweep queues it again and the same worker finishes it, each event applied once.
    _elapsed, third = _post_delivery(
        stack, many_quality_updates(3000, digits=digits, waba=WABA, start=20_000)
    )
    db.wait_for(third, lambda d: d["events_done"] > 0, timeout=60)
    with _database_restart(db):
        time.sleep(DOWN_SECONDS)
    deadline = time.monotonic() + 120
    while db.delivery(third)["state"] != "done" and time.monotonic() < deadline:
        run_manage(stack["env"], "requeue_stalled")
        time.sleep(1)
    finished = db.delivery(third)
    assert (finished["state"], finished["events_done"]) == ("done", 3000)
    assert _markers(stack, finished["id"]) == (3000, 3000)

    assert worker.proc is not None and worker.proc.poll() is None  # it never exited
    assert "database error" in worker.log()
    ((fresh,),) = db.rows(
        "SELECT COUNT(*) FROM common_workerheartbeat WHERE last_seen_at > now() - interval '5 seconds'"
    )
    assert fresh == 1
    # No task is left RUNNING by run_worker; what db_worker was running when it died still is
    # (taken again only after common.workers.UNWATCHED_TASK_LEASE: it wrote no heartbeat).
    running = db.rows("SELECT worker_ids FROM django_tasks_database_dbtaskresult WHERE status = 'RUNNING'")
    (worker_id,) = db.rows("SELECT worker_id FROM common_workerheartbeat")[0]
    assert all(ids[-1] != worker_id for (ids,) in running), running
    with capsys.disabled():
        print(
            f"\nrun_worker after a {DOWN_SECONDS} s database restart: the next delivery applied "
            f"{resumed_in:.1f} s after the database was back"
        )
