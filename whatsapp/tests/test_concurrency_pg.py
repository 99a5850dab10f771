"""Parallel requests against real PostgreSQL (skipped on SQLite): the action lease, the constraints.

Each thread is its own Django request with its own database connection,
closed when the thread ends. `responses` patches requests for every thread;
its callbacks count calls under a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from clinics.models import ApiToken, Clinic
from whatsapp.models import WhatsAppAccount
from whatsapp.tests.helpers import (
    PHONE,
    PNID,
    REGISTER_URL,
    SETTINGS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_pending,
    graph_error,
    phone_number,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class CallCounter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def respond(self, name: str, status: int, body: dict[str, Any], *, delay: float = 0.0) -> Callable:
        def callback(_request):
            with self.lock:
                self.counts[name] += 1
            if delay:
                time.sleep(delay)  # keep the action running while the other requests arrive
            return status, {}, json.dumps(body)

        return callback


def client_for(user) -> APIClient:
    _token, key = ApiToken.issue(user)
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def in_parallel(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs at the same moment, one thread and one DB connection each."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = job()
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    errors = [result for result in results if isinstance(result, Exception)]
    assert not errors, errors
    return results


def test_two_right_codes_register_the_number_once(clinic, clinic_admin, graph):
    arrange_pending(clinic)
    counter = CallCounter()
    graph.callback("POST", f"{PNID}/verify_code", counter.respond("verify_code", 200, {"success": True}))
    graph.callback("POST", f"{PNID}/register", counter.respond("register", 200, {"success": True}, delay=0.3))
    graph.callback("GET", PNID, counter.respond("get", 200, phone_number("CONNECTED")))
    graph.callback("POST", f"{WABA}/subscribed_apps", counter.respond("subscribe", 200, {"success": True}))
    clients = [client_for(clinic_admin) for _ in range(2)]

    responses_ = in_parallel(
        [lambda c=c: c.post(VERIFY_URL, {"code": "123456"}, format="json") for c in clients]
    )

    codes = sorted(r.status_code for r in responses_)
    assert codes == [200, 409]
    done = next(r for r in responses_ if r.status_code == 200)
    refused = next(r for r in responses_ if r.status_code == 409)
    assert done.json()["status"] == "active"
    # The second arrived while the first was registering: refused at once, with the status then.
    assert refused.json()["status"] == "pending_otp"
    assert "in progress" in refused.json()["detail"]
    assert counter.counts["register"] == 1
    assert counter.counts["verify_code"] == 1
    assert counter.counts["subscribe"] == 1
    assert account_of(clinic).status == "active"


def test_twenty_wrong_codes_reach_meta_at_most_five_times(clinic, clinic_admin, graph):
    arrange_pending(clinic)
    counter = CallCounter()
    wrong = graph_error(136025, "(#136025) Verify code error", details="Verify code error")
    graph.callback("POST", f"{PNID}/verify_code", counter.respond("verify_code", 400, wrong, delay=0.02))
    clients = [client_for(clinic_admin) for _ in range(20)]

    responses_ = in_parallel(
        [
            lambda c=c, i=i: c.post(VERIFY_URL, {"code": f"{i:06d}"}, format="json")
            for i, c in enumerate(clients)
        ]
    )

    codes = Counter(r.status_code for r in responses_)
    assert counter.counts["verify_code"] <= 5
    assert codes[400] == counter.counts["verify_code"] >= 1
    # The others were refused without reaching Meta: while another code was being
    # checked (409, the action lease), or after five wrong ones (429).
    assert codes[409] + codes[429] == 20 - codes[400]
    assert all(r.has_header("Retry-After") for r in responses_ if r.status_code == 429)
    assert all("in progress" in r.json()["detail"] for r in responses_ if r.status_code == 409)
    assert account_of(clinic).status == "pending_otp"


def test_parallel_settings_changes_lose_no_update(clinic, clinic_admin, graph):
    name_client, city_client = client_for(clinic_admin), client_for(clinic_admin)

    for round_ in range(10):
        results = in_parallel(
            [
                lambda r=round_: name_client.patch(
                    SETTINGS_URL, {"name": f"Clínica Ronda {r}"}, format="json"
                ),
                lambda r=round_: city_client.patch(SETTINGS_URL, {"city": f"Ciudad {r}"}, format="json"),
            ]
        )
        assert [r.status_code for r in results] == [200, 200]
        clinic_now = Clinic.objects.get(pk=clinic.pk)
        assert (clinic_now.name, clinic_now.city) == (f"Clínica Ronda {round_}", f"Ciudad {round_}")
    assert graph.calls == []


def test_two_clinics_registering_one_number_at_once_leave_one_owner(
    clinic, clinic_admin, other_clinic, other_clinic_admin, graph
):
    # Both may pass the "is it someone else's?" check at the same moment: a code request only
    # claims the number (30 minutes at most). The first right code wins; the database decides.
    arrange(clinic, access_token=TOKEN)
    arrange(other_clinic, access_token=TOKEN)
    counter = CallCounter()
    listing = {"data": [phone_number("PENDING")], "paging": {"cursors": {"before": "a", "after": "b"}}}
    graph.callback("GET", f"{WABA}/phone_numbers", counter.respond("list", 200, listing))
    graph.callback(
        "POST", f"{PNID}/request_code", counter.respond("request_code", 200, {"success": True}, delay=0.3)
    )
    graph.callback(
        "POST", f"{PNID}/verify_code", counter.respond("verify_code", 200, {"success": True}, delay=0.3)
    )
    graph.callback("POST", f"{PNID}/register", counter.respond("register", 200, {"success": True}))
    graph.callback("GET", PNID, counter.respond("number", 200, phone_number("CONNECTED")))
    graph.callback("POST", f"{WABA}/subscribed_apps", counter.respond("subscribe", 200, {"success": True}))
    form = {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA}
    first, second = client_for(clinic_admin), client_for(other_clinic_admin)

    asked = in_parallel(
        [
            lambda: first.post(REGISTER_URL, form, format="json"),
            lambda: second.post(REGISTER_URL, form, format="json"),
        ]
    )
    assert 200 in [r.status_code for r in asked]
    pending = [
        client for client, response in zip((first, second), asked, strict=True) if response.status_code == 200
    ]
    if len(pending) == 2:
        results = in_parallel(
            [
                lambda: first.post(VERIFY_URL, {"code": "123456"}, format="json"),
                lambda: second.post(VERIFY_URL, {"code": "123456"}, format="json"),
            ]
        )
        assert sorted(r.status_code for r in results) == [200, 409]
        refused = next(r for r in results if r.status_code == 409)
        assert "already connected to another clinic" in refused.json()["detail"]
        assert refused.json()["status"] == "failed"
    else:
        refused = next(r for r in asked if r.status_code == 409)
        assert "is connecting this number" in refused.json()["detail"]
        assert pending[0].post(VERIFY_URL, {"code": "123456"}, format="json").status_code == 200

    holders = WhatsAppAccount.objects.filter(number=PHONE, claim_expires_at__isnull=True)
    assert list(holders.values_list("status", flat=True)) == ["active"]
    assert WhatsAppAccount.objects.filter(status="active", phone_number_id=PNID).count() == 1
