"""Queue again the background work a dead worker or a lost task left (run every few minutes).

Every outbox of the product goes through the one loop of `common.outbox`; this sweeps
each of them: webhook deliveries, the warning e-mails to clinics' admins, the e-mails to
people (invitations, password resets, sign-in alerts), the deliveries to
clinics' bots and the sends to Meta; it makes `unknown` the sends whose answer was lost more
than 10 minutes ago, and sets back to ready the task rows a dead worker left running
(`common.workers`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from clinics.mail import emails_requeue_stalled
from clinics.notifications import clinic_alerts_requeue_stalled
from common.workers import running_tasks_requeue_stalled
from messaging.outbox import bot_deliveries_requeue_stalled
from messaging.sending import message_sends_requeue_stalled, message_sends_sweep
from whatsapp.deliveries import whatsapp_deliveries_requeue_stalled


class Command(BaseCommand):
    help = (
        "Queue again the webhook deliveries, warning e-mails and deliveries to bots whose worker died "
        "or whose task was lost (their lease ran out), and the tasks a dead worker left running. Run "
        "every few minutes; safe on several machines at once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        tasks = running_tasks_requeue_stalled()
        deliveries = whatsapp_deliveries_requeue_stalled()
        emails = clinic_alerts_requeue_stalled() + emails_requeue_stalled()
        to_bots = bot_deliveries_requeue_stalled()
        self.stdout.write(
            f"{deliveries} stalled deliveries, {emails} stalled e-mails and {to_bots} stalled deliveries "
            f"to bots queued again; {tasks} tasks of dead workers taken again"
        )
        sends = message_sends_requeue_stalled()
        unknown = message_sends_sweep()
        self.stdout.write(
            f"{sends} stalled sends queued again; {unknown} sends with a lost answer now unknown"
        )
