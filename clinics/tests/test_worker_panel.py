"""The health panel says when work waits and no background worker runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from common.workers import worker_beat
from whatsapp.services import whatsapp_store_credentials
from whatsapp.tests.helpers import NEW_TOKEN

pytestmark = pytest.mark.django_db

STOPPED = "Messages are waiting: the background worker is not running"


def page_of(user) -> str:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(user)
    return client.get("/settings/").content.decode()


def test_the_panel_says_the_worker_is_not_running(clinic, clinic_admin, database_tasks):
    whatsapp_store_credentials(account=clinic.whatsapp, access_token=NEW_TOKEN)  # queues a check
    assert STOPPED not in page_of(clinic_admin)  # just queued

    DBTaskResult.objects.update(enqueued_at=timezone.now() - timedelta(minutes=2))
    assert STOPPED in page_of(clinic_admin)

    worker_beat(worker_id="w", started_at=timezone.now())
    assert STOPPED not in page_of(clinic_admin)
