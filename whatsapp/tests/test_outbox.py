"""The one outbox loop (`common.outbox`) as the webhook deliveries use it: a claim is taken once,
a dead worker's row is taken again after its lease, a continuation keeps its attempt."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from whatsapp.deliveries import DELIVERIES, whatsapp_delivery_store
from whatsapp.models import WebhookDelivery
from whatsapp.tests.helpers import account_deleted, account_of, meta_bytes

pytestmark = pytest.mark.django_db


def stored(clinic) -> WebhookDelivery:
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(account_deleted()), signed_with_clinic_secret=True
    )
    assert delivery is not None
    return delivery


def test_a_row_is_claimed_once(clinic, queued_tasks, settings):
    settings.WHATSAPP_DELIVERY_LEASE_SECONDS = 60
    delivery = stored(clinic)

    first = DELIVERIES.claim(delivery.pk)
    second = DELIVERIES.claim(delivery.pk)

    assert first is not None
    assert (first.state, first.attempts) == ("processing", 1)
    assert second is None  # another worker holds it


def test_a_dead_workers_row_is_taken_again_after_its_lease(clinic, queued_tasks, settings):
    settings.WHATSAPP_DELIVERY_LEASE_SECONDS = 60
    delivery = stored(clinic)
    assert DELIVERIES.claim(delivery.pk) is not None  # ...and the worker dies

    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        again = DELIVERIES.claim(delivery.pk)

    assert again is not None
    assert (again.state, again.attempts) == ("processing", 2)


def test_a_continuation_goes_on_with_its_attempt(clinic, queued_tasks):
    delivery = stored(clinic)
    claimed = DELIVERIES.claim(delivery.pk)
    assert claimed is not None
    queued_tasks.clear()

    DELIVERIES.hand_over(claimed, continuation=True)

    (task,) = queued_tasks
    assert task.kwargs == {"delivery_id": str(delivery.pk), "continuation": True}
    again = DELIVERIES.claim(delivery.pk, continuation=True)
    assert again is not None
    assert again.attempts == 1


def test_a_finished_row_is_never_taken_again(clinic, queued_tasks):
    delivery = stored(clinic)
    claimed = DELIVERIES.claim(delivery.pk)
    assert claimed is not None
    DELIVERIES.succeed(claimed, outcome="done here")

    assert DELIVERIES.claim(delivery.pk) is None
    assert DELIVERIES.claim(delivery.pk, continuation=True) is None
    assert DELIVERIES.requeue_stalled() == 0
    done = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (done.state, done.outcome, done.lease_expires_at) == ("done", "done here", None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_a_row_take_it_once(clinic, queued_tasks):
    delivery = stored(clinic)
    start = threading.Barrier(6)
    won: list[bool] = []

    def worker() -> None:
        try:
            start.wait()
            won.append(DELIVERIES.claim(delivery.pk) is not None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won) == [False] * 5 + [True]
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 1
