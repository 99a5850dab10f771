"""`sync_templates`: read every connected clinic's message templates from Meta again (run daily).

One clinic's failure (Meta down, a revoked token) is reported and the others go on.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from messaging.templates import message_templates_sync
from whatsapp.exceptions import MetaError
from whatsapp.models import WhatsAppAccount, WhatsAppStatus


class Command(BaseCommand):
    help = "Sync the message templates of every clinic with an active number from Meta. Run daily."

    def handle(self, *args: Any, **options: Any) -> None:
        clinic_ids = (
            WhatsAppAccount.objects.filter(status=WhatsAppStatus.ACTIVE)
            .exclude(business_account_id="")
            .values_list("clinic_id", flat=True)
        )
        synced = failed = 0
        for clinic_id in clinic_ids:
            try:
                message_templates_sync(clinic_id=clinic_id)
            except MetaError as exc:
                failed += 1
                self.stderr.write(f"clinic {clinic_id}: {type(exc).__name__} (Meta code {exc.code})")
            else:
                synced += 1
        self.stdout.write(f"templates synced for {synced} clinics, {failed} failed")
