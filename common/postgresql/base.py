"""Django's PostgreSQL backend, subclassed as Django's documentation describes, with a cheaper health check.

With CONN_HEALTH_CHECKS, Django checks a persistent connection once per request
before its first query, and its PostgreSQL backend does that with a `SELECT 1`:
a round trip on every request (4 % to 13 % of each endpoint measured in
bench/reports/2026-12-01-issue13.md).

An idle connection hears nothing from the server unless the server is ending it:
when PostgreSQL restarts, or an administrator or idle timeout terminates the
backend, the server sends a FATAL message and closes the socket. So a poll of
the socket with no timeout tells a dead idle connection from a live one without
a round trip: anything to read (or a hang-up) means the connection is replaced
before the request uses it. A connection that is not idle (inside a transaction
or after an error) gets Django's own `SELECT 1` check.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status != TransactionStatus.IDLE:
            return bool(super().is_usable())
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)
