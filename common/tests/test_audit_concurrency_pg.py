"""Concurrent writers for one clinic on real PostgreSQL (skipped on SQLite): the chain never forks."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connections, transaction

from common.audit import audit_record
from common.models import AuditEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WRITERS = 6


def test_parallel_writers_queue_on_the_chain_head(clinic):
    audit_record(clinic_id=clinic.pk, action="test.first")  # the head exists: every writer locks it
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait()
            with transaction.atomic():
                audit_record(clinic_id=clinic.pk, action=f"test.parallel.{n}")
                time.sleep(0.05)  # hold the head while the others arrive
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = list(AuditEvent.objects.filter(clinic_id=clinic.pk).order_by("seq"))
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))
    assert len([row for row in rows if row.action.startswith("test.parallel.")]) == WRITERS
    call_command("verify_audit_trail")
