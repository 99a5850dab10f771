"""Meta's template status and quality events, posted to the webhook (signed) and applied by the worker:
to the templates of the clinics whose number Meta showed in the event's WABA, and no one else's."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from clinics.tests.test_api_templates import template
from messaging.models import MessageTemplate
from messaging.templates import sync_message_templates
from whatsapp.deliveries import whatsapp_delivery_process
from whatsapp.models import AppliedWebhookEvent
from whatsapp.tests.helpers import (
    APP_SECRET,
    DATA,
    OTHER_APP_SECRET,
    OTHER_PNID,
    OTHER_WABA,
    WABA,
    arrange_active,
    meta_bytes,
    post_webhook,
)

pytestmark = pytest.mark.django_db

DEPLOYMENT_SECRET = "d3pl0ym3nt5ecret00112233445566778899"
STATUS = json.loads((DATA / "webhook_message_template_status_update.json").read_text())
QUALITY = json.loads((DATA / "webhook_message_template_quality_update.json").read_text())


def cita(clinic, **fields) -> MessageTemplate:
    defaults = {
        "meta_id": "594425479261596",
        "name": "cita",
        "language": "es",
        "status": "APPROVED",
        "category": "UTILITY",
        "quality": "GREEN",
        "params": 2,
        "synced_at": timezone.now(),
    }
    return MessageTemplate.objects.create(clinic=clinic, **{**defaults, **fields})


def post_and_work(client, clinic, payload, queued_tasks, *, secret: str) -> list:
    """Meta posts the delivery, signed; the worker applies it. Returns the syncs that queued."""
    queued_tasks.clear()
    assert post_webhook(client, clinic, meta_bytes(payload), secret=secret).status_code == 200
    (delivery_task,) = queued_tasks
    assert delivery_task.task.name == "process_webhook_delivery"
    queued_tasks.clear()
    whatsapp_delivery_process(**delivery_task.kwargs)
    return [r for r in queued_tasks if r.task.name == "sync_message_templates"]


def stored(template: MessageTemplate) -> tuple[str, str, str]:
    template.refresh_from_db()
    return template.status, template.quality, template.rejected_reason


def test_a_status_then_a_quality_update_change_the_template(client, clinic, queued_tasks):
    arrange_active(clinic, app_secret=APP_SECRET)
    row = cita(clinic)

    post_and_work(client, clinic, STATUS, queued_tasks, secret=APP_SECRET)
    assert stored(row) == ("REJECTED", "GREEN", "INCORRECT_CATEGORY")

    post_and_work(client, clinic, QUALITY, queued_tasks, secret=APP_SECRET)
    assert stored(row) == ("REJECTED", "YELLOW", "INCORRECT_CATEGORY")
    assert AppliedWebhookEvent.objects.filter(clinic=clinic).count() == 2


def test_an_approval_clears_the_rejection_reason(client, clinic, queued_tasks):
    arrange_active(clinic, app_secret=APP_SECRET)
    row = cita(clinic, status="REJECTED", rejected_reason="INCORRECT_CATEGORY")
    approved = json.loads(json.dumps(STATUS))
    approved["entry"][0]["changes"][0]["value"].update(event="APPROVED", reason="NONE")

    post_and_work(client, clinic, approved, queued_tasks, secret=APP_SECRET)

    assert stored(row) == ("APPROVED", "GREEN", "")


def test_metas_retry_of_the_same_event_is_applied_once(client, clinic, queued_tasks):
    arrange_active(clinic, app_secret=APP_SECRET)
    row = cita(clinic)
    post_and_work(client, clinic, STATUS, queued_tasks, secret=APP_SECRET)
    MessageTemplate.objects.filter(pk=row.pk).update(status="APPROVED", rejected_reason="")  # a sync since

    # The same event again, batched with another: a new delivery, the old event not applied twice.
    batch = json.loads(json.dumps(STATUS))
    batch["entry"].append(QUALITY["entry"][0])
    post_and_work(client, clinic, batch, queued_tasks, secret=APP_SECRET)

    assert stored(row) == ("APPROVED", "YELLOW", "")


def test_a_wabas_template_event_does_not_touch_another_clinics_templates(
    settings, client, clinic, other_clinic, queued_tasks
):
    """Clinic B, active with its own number in its own WABA, typed clinic A's WABA id."""
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic)
    arrange_active(
        other_clinic,
        phone_number_id=OTHER_PNID,
        number="+50370001234",
        business_account_id=WABA,
        proven_business_account_id=OTHER_WABA,
        app_secret=OTHER_APP_SECRET,
    )
    ours, theirs = cita(clinic), cita(other_clinic)

    # Meta signs A's events with the deployment's secret; B signs what it likes with its own.
    assert post_and_work(client, clinic, STATUS, queued_tasks, secret=DEPLOYMENT_SECRET) == []
    assert post_and_work(client, other_clinic, QUALITY, queued_tasks, secret=OTHER_APP_SECRET) == []

    assert stored(theirs) == ("APPROVED", "GREEN", "")
    assert stored(ours) == ("REJECTED", "GREEN", "INCORRECT_CATEGORY")


def test_a_wabas_template_event_reaches_every_clinic_whose_number_meta_showed_in_it(
    settings, client, clinic, other_clinic, queued_tasks
):
    settings.META_APP_SECRET = DEPLOYMENT_SECRET
    arrange_active(clinic)
    arrange_active(other_clinic, phone_number_id=OTHER_PNID, number="+50370001234")
    ours, theirs = cita(clinic), cita(other_clinic)

    post_and_work(client, clinic, QUALITY, queued_tasks, secret=DEPLOYMENT_SECRET)

    assert stored(ours) == stored(theirs) == ("APPROVED", "YELLOW", "")


def test_an_event_about_a_template_not_synced_yet_queues_a_sync_that_reads_it(
    client, clinic, queued_tasks, graph
):
    arrange_active(clinic, app_secret=APP_SECRET)

    (sync,) = post_and_work(client, clinic, STATUS, queued_tasks, secret=APP_SECRET)

    assert not MessageTemplate.objects.exists()
    assert sync.kwargs == {"clinic_id": str(clinic.pk)}
    # What the worker then does: Meta lists the template, now rejected.
    rejected = {**template("cita", "es", status="REJECTED"), "id": "594425479261596"}
    rejected["rejected_reason"] = "INCORRECT_CATEGORY"
    graph.add("GET", f"{WABA}/message_templates", json_body={"data": [rejected]})
    assert sync.task.call(**sync.kwargs) == "1 templates synced"
    assert stored(MessageTemplate.objects.get(clinic=clinic)) == ("REJECTED", "GREEN", "INCORRECT_CATEGORY")


def test_events_about_unknown_templates_queue_at_most_one_sync_a_minute(client, clinic, queued_tasks):
    arrange_active(clinic, app_secret=APP_SECRET)

    first = post_and_work(client, clinic, STATUS, queued_tasks, secret=APP_SECRET)
    second = post_and_work(client, clinic, QUALITY, queued_tasks, secret=APP_SECRET)

    assert (len(first), len(second)) == (1, 0)
    assert AppliedWebhookEvent.objects.filter(clinic=clinic).count() == 2


def test_a_sync_meta_refuses_changes_nothing_and_does_not_fail_the_worker(clinic, graph):
    arrange_active(clinic)
    row = cita(clinic)
    graph.error("GET", f"{WABA}/message_templates", 190)

    assert sync_message_templates.call(clinic_id=str(clinic.pk)) == "not synced: MetaRefusedError"
    assert stored(row) == ("APPROVED", "GREEN", "")
