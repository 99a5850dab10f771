"""Known product failures found by the fuzzer: strict xfails, so a fix turns them into errors to remove.

No check is excluded or loosened; each entry names the operation, the input and the answer.
"""

from __future__ import annotations

import pytest

# Operations whose schema or behaviour the fuzzer proved wrong, each with the input and the answer.
# Fixed so far: undocumented 400s and 429, PUT bodies marked required, WhatsApp 400 shapes.
KNOWN_FAILURES: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.nodeid.startswith("tests/fuzz/"):
            continue
        for label, reason in KNOWN_FAILURES.items():
            if (
                item.name.startswith("test_api_conforms_to_its_schema") and item.name.endswith(f"[{label}]")
            ) or getattr(item, "originalname", "").endswith(f"[{label}]"):
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Schemathesis calls the WSGI app directly, so Django's request signals fire and
    close_old_connections() would close the connection holding the test's transaction
    (on PostgreSQL: "the connection is closed"). Django's own test Client disconnects it
    the same way."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)
