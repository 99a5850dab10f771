"""`whatsapp_health --enqueue` (the daily schedule) or `whatsapp_health --clinic <slug>` (one, now).

It lives in clinics because it knows clinics (their slugs);
the checks themselves are whatsapp's.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone, translation

from clinics.models import Clinic
from clinics.selectors import whatsapp_account_of
from whatsapp.health import whatsapp_health_check, whatsapp_health_schedule
from whatsapp.health_serializers import HEALTH_SHAPE


class Command(BaseCommand):
    help = (
        "--enqueue: queue one WhatsApp health check per connected clinic for today (run daily; safe on "
        "several machines at once). --clinic <slug>: check one clinic now and print the result."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--enqueue", action="store_true", help="queue today's checks for every clinic")
        group.add_argument("--clinic", metavar="SLUG", help="check this clinic now, in the foreground")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["enqueue"]:
            queued = whatsapp_health_schedule(day=timezone.localdate())
            self.stdout.write(f"{queued} health checks queued")
            return
        clinic = Clinic.objects.filter(slug=options["clinic"]).first()
        if clinic is None:
            raise CommandError(f"No clinic with slug {options['clinic']!r}.")
        health = whatsapp_health_check(account=whatsapp_account_of(clinic))
        with translation.override(clinic.language):
            body = HEALTH_SHAPE.render(health)
        self.stdout.write(json.dumps(body, indent=2, ensure_ascii=False))
