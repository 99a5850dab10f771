"""The WABA's message templates as last synced from Meta (endpoint 17), and the events that update them.

Synced in full (every page) on demand (at most once a minute per clinic), daily
(`manage.py sync_templates`), and by Meta's `message_template_status_update` and
`message_template_quality_update` events: the webhook worker applies each once, in
the event's transaction (`whatsapp.inbound.template_change_received`, for every
clinic whose number Meta showed in the event's WABA), through
`message_templates_apply_event`. An event about a template not synced yet queues a
sync of the clinic's templates (`sync_message_templates`, at most one a minute per
clinic). The Graph call is made with no transaction open; what it returned is
written in one short transaction after it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone
from django_tasks import task

from whatsapp.exceptions import MetaError
from whatsapp.inbound import template_change_received
from whatsapp.meta import MetaClient, TemplateInfo
from whatsapp.models import WhatsAppAccount

from .models import MessageTemplate

logger = logging.getLogger(__name__)

SYNC_INTERVAL_SECONDS = 60
STATUS_EVENT = "message_template_status_update"
QUALITY_EVENT = "message_template_quality_update"


class TemplateSyncTooSoonError(Exception):
    """The clinic synced less than a minute ago; `retry_after` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Templates were synced less than a minute ago; retry in {retry_after} s.")
        self.retry_after = retry_after


class TemplateSyncUnavailableError(Exception):
    """The clinic has no WhatsApp Business Account id or access token to ask Meta with."""


def _gate_key(clinic_id: Any) -> str:
    return f"msg:templates:sync:{clinic_id}"


def message_templates_sync(*, clinic_id: Any, on_demand: bool = False) -> list[MessageTemplate]:
    """Read every template of the clinic's WABA from Meta and store them; returns the clinic's templates.

    `on_demand` (endpoint 17's POST) is allowed once a minute per clinic, else
    `TemplateSyncTooSoonError`. Templates Meta no longer lists are removed. Meta's
    errors (`whatsapp.exceptions.MetaError`) reach the caller with nothing changed.
    """
    if on_demand:
        now = timezone.now().timestamp()
        if not cache.add(_gate_key(clinic_id), now + SYNC_INTERVAL_SECONDS, timeout=SYNC_INTERVAL_SECONDS):
            until = cache.get(_gate_key(clinic_id))
            raise TemplateSyncTooSoonError(max(1, int((until or now + 1) - now + 0.999)))
    account = WhatsAppAccount.objects.filter(clinic_id=clinic_id).first()
    if account is None or not account.business_account_id or not account.access_token:
        raise TemplateSyncUnavailableError(
            "The clinic has no WhatsApp Business Account to read templates from."
        )
    with MetaClient(account.access_token) as client:
        found = client.list_templates(account.business_account_id)
    return _store(clinic_id, found)


@transaction.atomic
def _store(clinic_id: Any, found: list[TemplateInfo]) -> list[MessageTemplate]:
    now = timezone.now()
    kept: list[Any] = []
    for info in found:
        template, _created = MessageTemplate.objects.update_or_create(
            clinic_id=clinic_id,
            name=info.name[:512],
            language=info.language[:16],
            defaults={
                "meta_id": info.id[:64],
                "status": info.status[:32],
                "category": info.category[:32],
                "quality": info.quality[:16],
                "params": info.params,
                "rejected_reason": info.rejected_reason[:255],
                "synced_at": now,
            },
        )
        kept.append(template.pk)
    MessageTemplate.objects.filter(clinic_id=clinic_id).exclude(pk__in=kept).delete()
    return list(MessageTemplate.objects.filter(clinic_id=clinic_id))


@transaction.atomic
def message_templates_apply_event(
    *, clinic_id: Any, field: str, value: dict[str, Any]
) -> MessageTemplate | None:
    """Apply one Meta template event (its change's `field` and `value`); returns the template it changed.

    A status update sets `status` (and `rejected_reason`); a quality update sets
    `quality`. Found by name and language, else by Meta's id. An event about a
    template we have not synced yet queues a sync (`queue_event_sync`), which reads it
    whole, rather than be dropped.
    """
    name = str(value.get("message_template_name") or "")
    language = str(value.get("message_template_language") or "")
    meta_id = str(value.get("message_template_id") or "")
    rows = MessageTemplate.objects.select_for_update().filter(clinic_id=clinic_id)
    template = rows.filter(name=name, language=language).first() if name and language else None
    if template is None and meta_id:
        template = rows.filter(meta_id=meta_id).first()
    if template is None:
        if field in (STATUS_EVENT, QUALITY_EVENT) and (name or meta_id):
            queue_event_sync(clinic_id=clinic_id)
        return None
    if field == STATUS_EVENT:
        event = str(value.get("event") or "").upper()
        if not event:
            return None
        template.status = event[:32]
        reason = str(value.get("reason") or "")
        template.rejected_reason = "" if reason.upper() == "NONE" else reason[:255]
    elif field == QUALITY_EVENT:
        score = str(value.get("new_quality_score") or "").upper()
        if not score:
            return None
        template.quality = score[:16]
    else:
        return None
    template.synced_at = timezone.now()
    template.save(update_fields=["status", "rejected_reason", "quality", "synced_at"])
    return template


# --- from the webhook ------------------------------------------------------------------------------


@receiver(template_change_received)
def _apply_template_change(
    sender: type, clinic_id: Any, field: str, value: dict[str, Any], **kwargs: Any
) -> None:
    """In the transaction that marks Meta's event applied: the template's change commits with it."""
    message_templates_apply_event(clinic_id=clinic_id, field=field, value=value)


def _event_gate_key(clinic_id: Any) -> str:
    return f"msg:templates:event-sync:{clinic_id}"


def queue_event_sync(*, clinic_id: Any) -> bool:
    """Queue a sync of the clinic's templates for an event about one not synced yet; True when queued.

    In the caller's transaction (with the database task backend the task row commits with
    the event's marker). At most one a minute per clinic (a cache `add`): a burst of events
    about new templates, or a clinic signing floods of them with its own app secret, costs
    one Meta call a minute. An event within that minute is read by the sync already queued
    when Meta listed its template by then, else by the next event's sync or the daily one.
    """
    if not cache.add(_event_gate_key(clinic_id), 1, timeout=SYNC_INTERVAL_SECONDS):
        return False
    sync_message_templates.enqueue(clinic_id=str(clinic_id))
    return True


@task()
def sync_message_templates(clinic_id: str) -> str:
    """The background task: sync one clinic's templates (queued by a template event); never raises
    for Meta or a connection without a WABA or token (the daily sync tries again)."""
    try:
        templates = message_templates_sync(clinic_id=clinic_id)
    except (MetaError, TemplateSyncUnavailableError) as exc:
        logger.warning("template sync for clinic %s failed: %s", clinic_id, type(exc).__name__)
        return f"not synced: {type(exc).__name__}"
    return f"{len(templates)} templates synced"
