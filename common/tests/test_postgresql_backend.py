"""The PostgreSQL settings the product runs with: prepared statements and a connection check with no round trip."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.core import signals
from django.db import connection

from clinics.models import Clinic

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _admin_connection() -> psycopg.Connection:
    """A second connection to the same server, outside Django (the one that ends ours)."""
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        autocommit=True,
    )


def _start_request() -> None:
    # What Django does when a request starts: connections are re-checked before their first query.
    signals.request_started.send(sender=None)


def test_it_runs_with_the_socket_check_and_prepared_statements():
    assert connection.settings_dict["ENGINE"] == "common.postgresql"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 5


def test_a_repeated_query_is_prepared_once_and_then_only_executed():
    for _ in range(6):
        list(Clinic.objects.filter(slug="no-such-clinic"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]

    assert any('FROM "clinics_clinic"' in sql and '"slug" = $1' in sql for sql in prepared)


def test_a_live_idle_connection_is_kept_and_checked_without_a_round_trip():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'last query before the check'")
    _start_request()

    connection.close_if_health_check_failed()  # what Django runs before a request's first query

    with _admin_connection() as admin:
        (query,) = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    # Django's stock check would have sent SELECT 1; the server saw nothing since the last query.
    assert query == "SELECT 'last query before the check'"
    assert Clinic.objects.count() == 0
    assert connection.connection.info.backend_pid == pid


def test_a_connection_the_server_ended_is_replaced_before_the_request_uses_it():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with _admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The server's goodbye (a FATAL message, then the socket closes) arrives shortly after.
    deadline = time.monotonic() + 5
    while connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert connection.is_usable() is False

    _start_request()

    assert Clinic.objects.count() == 0
    assert connection.connection.info.backend_pid != pid
