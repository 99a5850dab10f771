"""The local guard of Meta's 10 register/deregister calls per number per 72 hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from whatsapp.models import MetaAttempt
from whatsapp.tests.helpers import (
    DEREGISTER_URL,
    PHONE,
    PNID,
    REGISTER_URL,
    STATUS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
    snapshot,
)

pytestmark = pytest.mark.django_db


NOW = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)
WINDOW = timedelta(hours=72)
FORM = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA}


def record_attempts(clinic, count: int, *, first_at: datetime, pnid: str = PNID) -> None:
    """Attempts already made for the number (one an hour from `first_at`)."""
    for i in range(count):
        MetaAttempt.objects.create(
            phone_number_id=pnid,
            kind="register" if i % 2 == 0 else "deregister",
            clinic=clinic,
            created_at=first_at + timedelta(hours=i),
        )


def meta_is_fine(graph) -> None:
    graph.numbers((PNID, "+503 7765-4321"))
    graph.request_code()
    graph.verify_code()
    graph.register()
    graph.number("CONNECTED")
    graph.subscribe()
    graph.deregister()


def posts(graph, path: str) -> int:
    return len(graph.calls_to("POST", path))


def test_it_counts_every_register_and_deregister_and_stops_at_ten(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    meta_is_fine(graph)

    with time_machine.travel(NOW, tick=False) as clock:
        for _cycle in range(5):
            assert admin_api.post(REGISTER_URL, FORM, format="json").status_code == 200
            assert admin_api.post(VERIFY_URL, {"code": "123456"}, format="json").json() == {
                "status": "active"
            }
            assert admin_api.delete(DEREGISTER_URL).json() == {"status": "disconnected"}
            # Beyond the code-request limit (5 an hour per number): this test is about Meta's budget.
            clock.shift(timedelta(minutes=15))

        kinds = list(MetaAttempt.objects.filter(phone_number_id=PNID).values_list("kind", flat=True))
        assert sorted(kinds) == ["deregister"] * 5 + ["register"] * 5
        assert posts(graph, f"{PNID}/register") == posts(graph, f"{PNID}/deregister") == 5
        request_codes = posts(graph, f"{PNID}/request_code")

        # The 11th: refused here, before Meta would block the number for 72 hours.
        response = admin_api.post(REGISTER_URL, FORM, format="json")

        assert response.status_code == 429
        data = response.json()
        assert data["status"] == "disconnected"
        assert "10" in data["detail"] and "72 hours" in data["detail"]
        # The first attempt (at NOW) leaves the window at NOW + 72 h; it is NOW + 75 min.
        assert int(response["Retry-After"]) == int((WINDOW - timedelta(minutes=75)).total_seconds()) + 1
        assert posts(graph, f"{PNID}/request_code") == request_codes  # no code sent for nothing
        assert MetaAttempt.objects.count() == 10
        assert account_of(clinic).status == "disconnected"

        clock.shift(WINDOW - timedelta(minutes=75) + timedelta(seconds=1))
        assert admin_api.post(REGISTER_URL, FORM, format="json").status_code == 200


def test_it_refuses_the_eleventh_deregister_without_calling_meta(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False):
        arrange_active(clinic)
        record_attempts(clinic, 10, first_at=NOW - timedelta(hours=70))
        graph.deregister()
        before = snapshot(clinic)

        response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 429
    assert response.json()["status"] == "active"
    assert "10" in response.json()["detail"]
    assert int(response["Retry-After"]) == 2 * 3600 + 1
    assert graph.calls == []
    assert MetaAttempt.objects.count() == 10
    assert snapshot(clinic) == before


def test_it_refuses_to_register_after_a_right_code_without_calling_meta(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False):
        arrange_pending(clinic)
        record_attempts(clinic, 10, first_at=NOW - timedelta(hours=30))
        graph.verify_code()
        graph.register()

        response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")

    assert response.status_code == 429
    assert int(response["Retry-After"]) == 42 * 3600 + 1
    assert posts(graph, f"{PNID}/register") == 0
    assert MetaAttempt.objects.count() == 10


def test_it_refuses_to_send_a_code_when_no_attempt_is_left(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False):
        arrange(clinic, status="failed", phone_number_id=PNID, number=PHONE, access_token=TOKEN)
        record_attempts(clinic, 10, first_at=NOW - timedelta(hours=71))
        graph.numbers((PNID, "+503 7765-4321"))
        graph.request_code()

        response = admin_api.post(REGISTER_URL, FORM, format="json")

    assert response.status_code == 429
    assert response.json()["status"] == "failed"
    assert "72 hours" in response.json()["detail"]
    assert int(response["Retry-After"]) == 3600 + 1
    # Only the number was looked up (a read, which Meta does not count); no code was sent.
    assert [call.request.method for call in graph.calls] == ["GET"]
    assert account_of(clinic).status == "failed"


def test_it_ignores_attempts_older_than_72_hours(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False):
        arrange_active(clinic)
        record_attempts(clinic, 10, first_at=NOW - WINDOW - timedelta(hours=10))
        graph.deregister()

        response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 200
    assert posts(graph, f"{PNID}/deregister") == 1


def test_it_counts_per_number(admin_api, clinic, graph):
    with time_machine.travel(NOW, tick=False):
        arrange_active(clinic)
        record_attempts(clinic, 10, first_at=NOW - timedelta(hours=1), pnid="999888777666555")
        graph.deregister()

        assert admin_api.delete(DEREGISTER_URL).status_code == 200


@pytest.mark.parametrize(("used", "warned"), [(6, False), (7, True), (9, True)])
def test_it_warns_when_few_attempts_are_left(admin_api, clinic, graph, used, warned):
    with time_machine.travel(NOW, tick=False):
        arrange(clinic, status="failed", phone_number_id=PNID, number=PHONE, access_token=TOKEN)
        record_attempts(clinic, used, first_at=NOW - timedelta(hours=20))
        graph.numbers((PNID, "+503 7765-4321"))
        graph.request_code()

        assert admin_api.post(REGISTER_URL, FORM, format="json").status_code == 200
        detail = admin_api.get(STATUS_URL).json()["detail"]

    assert (f"only {10 - used} more register attempts" in detail) is warned
