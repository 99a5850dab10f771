"""`clinics_cleanup` (daily): delete processed Meta deliveries and patients' messages past their retention, and ended API tokens."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from clinics.cleanup import clinics_cleanup


class Command(BaseCommand):
    help = (
        "Delete processed webhook deliveries older than WEBHOOK_RETENTION_DAYS, messages older than "
        "MESSAGE_RETENTION_DAYS and API tokens past API_TOKEN_TTL_DAYS (run daily; safe on several "
        "machines at once)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        cleaned = clinics_cleanup(now=timezone.now())
        self.stdout.write(
            f"{cleaned.deliveries} processed webhook deliveries, {cleaned.signature_hours} hours of "
            f"signature failures, {cleaned.messages} messages, {cleaned.conversations} conversations "
            f"and {cleaned.tokens} expired API tokens deleted"
        )
