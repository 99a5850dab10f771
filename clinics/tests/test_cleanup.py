"""`manage.py clinics_cleanup`: processed deliveries past WEBHOOK_RETENTION_DAYS and ended API tokens go."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from clinics.cleanup import clinics_cleanup
from clinics.models import ApiToken
from messaging.models import Conversation, Message
from messaging.services import messaging_record_inbound
from whatsapp.deliveries import whatsapp_signature_failure_record
from whatsapp.models import AppliedWebhookEvent, WebhookDelivery, WebhookSignatureFailure

NOW = timezone.now().replace(microsecond=0)


def _delivery(clinic, *, days_ago: int, state: str, key: str) -> WebhookDelivery:
    with time_machine.travel(NOW - timedelta(days=days_ago), tick=False):
        delivery = WebhookDelivery.objects.create(
            clinic=clinic, dedupe_key=key, raw_body='{"entry": []}', state=state
        )
        AppliedWebhookEvent.objects.create(clinic=clinic, key=f"event-of-{key}", delivery=delivery)
    return delivery


def _token(user, *, days_ago: int) -> str:
    with time_machine.travel(NOW - timedelta(days=days_ago), tick=False):
        _token, key = ApiToken.issue(user)
    return key


def _patient_message(wamid: str, *, wa_id: str, at) -> dict:
    """One Meta `messages` change value: a patient's text (the shape of meta-cloud-api.md's sample)."""
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "50322000001", "phone_number_id": "109000000000001"},
        "contacts": [{"profile": {"name": "Paciente"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": wamid,
                "timestamp": str(int(at.timestamp())),
                "type": "text",
                "text": {"body": "Hola"},
            }
        ],
    }


def _cleanup() -> str:
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("clinics_cleanup", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_deletes_processed_deliveries_past_the_retention_and_keeps_the_rest(clinic, other_clinic):
    old_done = _delivery(clinic, days_ago=31, state="done", key="old-done")
    other_old_done = _delivery(other_clinic, days_ago=45, state="done", key="other-old-done")
    kept = {
        _delivery(clinic, days_ago=29, state="done", key="recent-done").pk,
        _delivery(clinic, days_ago=40, state="failed", key="old-failed").pk,  # kept for whoever looks into it
        _delivery(clinic, days_ago=40, state="queued", key="old-queued").pk,  # not processed yet
    }

    output = _cleanup()

    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == kept
    assert not AppliedWebhookEvent.objects.filter(delivery__in=[old_done.pk, other_old_done.pk]).exists()
    assert AppliedWebhookEvent.objects.count() == 3
    assert output.startswith("2 processed webhook deliveries")


@pytest.mark.django_db
def test_the_retention_is_a_setting(clinic, settings):
    settings.WEBHOOK_RETENTION_DAYS = 60
    _delivery(clinic, days_ago=45, state="done", key="within-60")
    _delivery(clinic, days_ago=61, state="done", key="past-60")

    _cleanup()

    assert list(WebhookDelivery.objects.values_list("dedupe_key", flat=True)) == ["within-60"]


@pytest.mark.django_db
def test_it_deletes_ended_api_tokens_only(clinic_admin, settings):
    settings.API_TOKEN_TTL_DAYS = 30
    ended = _token(clinic_admin, days_ago=31)
    live = _token(clinic_admin, days_ago=29)

    output = _cleanup()

    assert ApiToken.objects.count() == 1
    assert ApiToken.objects.get().digest == ApiToken.hash_key(live)
    assert "1 expired API tokens deleted" in output
    with time_machine.travel(NOW, tick=False):
        assert APIClient().get("/api/clinics/me/", HTTP_AUTHORIZATION=f"Token {live}").status_code == 200
        assert APIClient().get("/api/clinics/me/", HTTP_AUTHORIZATION=f"Token {ended}").status_code == 401


@pytest.mark.django_db
def test_it_deletes_old_signature_failure_counts(clinic):
    with time_machine.travel(NOW - timedelta(days=31), tick=False):
        whatsapp_signature_failure_record(clinic_id=clinic.pk)
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        whatsapp_signature_failure_record(clinic_id=clinic.pk)

    _cleanup()

    assert WebhookSignatureFailure.objects.count() == 1


@pytest.mark.django_db
def test_it_deletes_patients_messages_past_message_retention_days(clinic, settings):
    settings.MESSAGE_RETENTION_DAYS = 30
    for days_ago, wamid in ((31, "wamid.OLD"), (29, "wamid.RECENT")):
        with time_machine.travel(NOW - timedelta(days=days_ago), tick=False):
            messaging_record_inbound(
                clinic_id=clinic.pk,
                phone_number_id="109000000000001",
                value=_patient_message(
                    wamid, wa_id=f"50370000{days_ago:03d}", at=NOW - timedelta(days=days_ago)
                ),
                forward=False,
            )

    output = _cleanup()

    assert list(Message.objects.values_list("wamid", flat=True)) == ["wamid.RECENT"]
    assert list(Conversation.objects.values_list("wa_id", flat=True)) == ["50370000029"]
    assert "1 messages, 1 conversations" in output


@pytest.mark.django_db
def test_a_second_run_deletes_nothing_more(clinic, clinic_admin):
    _delivery(clinic, days_ago=31, state="done", key="old-done")
    _token(clinic_admin, days_ago=31)

    first, second = _cleanup(), _cleanup()

    assert first.startswith("1 processed webhook deliveries")
    assert (
        second
        == "0 processed webhook deliveries, 0 hours of signature failures, 0 messages, 0 conversations "
        "and 0 expired API tokens deleted\n"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_machines_running_it_at_once_delete_each_row_once(clinic, clinic_admin):
    for n in range(1200):  # more than two batches
        WebhookDelivery.objects.create(clinic=clinic, dedupe_key=f"d{n}", raw_body="{}", state="done")
    WebhookDelivery.objects.update(received_at=NOW - timedelta(days=40))
    _token(clinic_admin, days_ago=40)
    outputs: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            cleaned = clinics_cleanup(now=NOW)
            outputs.append(f"{cleaned.deliveries} {cleaned.tokens}")
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert not WebhookDelivery.objects.exists()
    assert not ApiToken.objects.exists()
    assert sum(int(output.split()[0]) for output in outputs) == 1200, outputs
    assert sum(int(output.split()[1]) for output in outputs) == 1, outputs
