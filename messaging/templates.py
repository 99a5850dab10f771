"""The WABA's message templates as last synced from Meta (endpoint 17), and the events that update them.

Synced in full (every page) on demand (at most once a minute per clinic), daily
(`manage.py sync_templates`), and by Meta's `message_template_status_update` and
`message_template_quality_update` events (`message_templates_apply_event`, for the
webhook worker to call with the change's value). The Graph call is made with no
transaction open; what it returned is written in one short transaction after it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

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
    template we have not synced yet is left for the next sync, which reads it whole.
    """
    name = str(value.get("message_template_name") or "")
    language = str(value.get("message_template_language") or "")
    meta_id = str(value.get("message_template_id") or "")
    rows = MessageTemplate.objects.select_for_update().filter(clinic_id=clinic_id)
    template = rows.filter(name=name, language=language).first() if name and language else None
    if template is None and meta_id:
        template = rows.filter(meta_id=meta_id).first()
    if template is None:
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
