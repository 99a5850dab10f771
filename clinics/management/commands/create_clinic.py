from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from clinics import services, validators
from clinics.models import User

from ._passwords import read_password


class Command(BaseCommand):
    help = "Create a clinic and its first admin; prints the clinic's id and slug."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--country", default="El Salvador")
        parser.add_argument("--timezone", default="America/El_Salvador")
        parser.add_argument("--currency", default="USD")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            email = services.user_check_new_email(options["admin_email"])
            name = validators.normalize_name(options["name"])
            timezone = validators.normalize_timezone(options["timezone"])
            currency = validators.normalize_currency(options["currency"])
            country = options["country"].strip()
            validators.validate_plain_text(country)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        password = read_password(email=email, interactive=sys.stdin.isatty())
        with transaction.atomic():
            clinic = services.clinic_create(name=name, country=country, timezone=timezone, currency=currency)
            services.clinic_add_user(clinic=clinic, email=email, password=password, role=User.Role.ADMIN)
        self.stdout.write(f"id: {clinic.id}\nslug: {clinic.slug}\nadmin: {email}")
