"""The benchmark's statement counter, against the real PostgreSQL server."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import psycopg
import pytest

from bench.pgwire import WireCounter

pytestmark = pytest.mark.postgres


@pytest.fixture
def relayed():
    url = urlsplit(os.environ.get("DATABASE_URL", ""))
    relay = WireCounter(url.hostname or "127.0.0.1", url.port or 5432)
    conninfo = (
        f"host=127.0.0.1 port={relay.port} dbname=postgres user={url.username or 'postgres'} sslmode=disable"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield relay, conn
    relay.close()


def _delta(relay: WireCounter, run) -> dict[str, int]:
    before = relay.snapshot()
    run()
    after = relay.snapshot()
    return {name: after[name] - before[name] for name in after}


def test_it_counts_a_parsed_statement_and_a_prepared_one(relayed):
    relay, conn = relayed

    parsed = _delta(relay, lambda: conn.execute("SELECT %s::int", [1], prepare=False))
    conn.execute("SELECT %s::int + 1", [1], prepare=True)
    prepared = _delta(relay, lambda: conn.execute("SELECT %s::int + 1", [2], prepare=True))

    assert parsed == {"statements": 1, "parses": 1}
    assert prepared == {"statements": 1, "parses": 0}


def test_it_counts_the_transaction_around_a_statement(relayed):
    relay, conn = relayed

    def in_a_transaction():
        with conn.transaction():
            conn.execute("SELECT 1")

    # BEGIN and COMMIT are statements the server runs too (sent as simple queries).
    assert _delta(relay, in_a_transaction) == {"statements": 3, "parses": 3}
