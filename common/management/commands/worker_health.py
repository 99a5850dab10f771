"""Exit 0 when a background worker wrote its heartbeat lately, else 1 (for a monitor or a probe)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.workers import worker_alive


class Command(BaseCommand):
    help = (
        "Exit with status 0 when a background worker (manage.py run_worker) wrote its heartbeat "
        "within WORKER_STALE_SECONDS, else 1."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        alive = worker_alive()
        if alive is None:
            raise CommandError(f"no background worker wrote a heartbeat in {settings.WORKER_STALE_SECONDS} s")
        ago = (timezone.now() - alive.last_seen_at).total_seconds()
        self.stdout.write(f"worker {alive} seen {ago:.0f} s ago")
