"""How long Meta's deliveries are kept: processed ones go after the deployment's retention.

A delivery's body holds patients' messages; once its events are applied it is
only history, and the table is where one clinic's flood would otherwise pile up.
The markers of the events it applied go with it (Meta resends a delivery for 7
days at most, and the retention is never shorter: settings refuses less), and
so do the hourly counts of refused signatures of the same age.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from common.outbox import OutboxState

from .models import AppliedWebhookEvent, WebhookDelivery, WebhookSignatureFailure

# Rows deleted per transaction: short transactions, bounded memory, whatever the backlog.
BATCH = 500


def whatsapp_deliveries_delete_processed(*, received_before: datetime) -> int:
    """Delete the done deliveries received before the date (and their events' markers); how many.

    Safe on several machines at once: each batch deletes by primary key, and a row
    another run deleted first is simply not counted.
    """
    deleted = 0
    while True:
        batch = list(
            WebhookDelivery.objects.filter(state=OutboxState.DONE, received_at__lt=received_before)
            .order_by()
            .values_list("pk", flat=True)[:BATCH]
        )
        if not batch:
            return deleted
        with transaction.atomic():
            AppliedWebhookEvent.objects.filter(delivery_id__in=batch).delete()
            deleted += (
                WebhookDelivery.objects.filter(pk__in=batch, state=OutboxState.DONE)
                .delete()[1]
                .get(WebhookDelivery._meta.label, 0)
            )


def whatsapp_signature_failures_delete(*, counted_before: datetime) -> int:
    """Delete the hourly counts of refused signatures older than the date; how many hours."""
    return WebhookSignatureFailure.objects.filter(hour__lt=counted_before).delete()[0]
