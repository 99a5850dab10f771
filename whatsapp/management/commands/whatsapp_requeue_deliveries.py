"""Queue again the webhook deliveries a dead worker left unfinished.

`manage.py requeue_stalled` does this and the same for every other outbox (the warning
e-mails); this command sweeps the deliveries alone.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from whatsapp.deliveries import whatsapp_deliveries_requeue_stalled


class Command(BaseCommand):
    help = (
        "Queue again the webhook deliveries whose processing stalled (a worker died, a task was lost). "
        "Safe to run on several machines at once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        queued = whatsapp_deliveries_requeue_stalled()
        self.stdout.write(f"{queued} stalled deliveries queued again")
