from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinics import services
from clinics.models import Clinic, User

from ._passwords import read_password


class Command(BaseCommand):
    help = "Add a user to a clinic (found by slug) as admin or staff."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("email")
        parser.add_argument("--role", choices=User.Role.values, default=User.Role.STAFF)

    def handle(self, *args: Any, **options: Any) -> None:
        clinic = Clinic.objects.filter(slug=options["slug"]).first()
        if clinic is None:
            raise CommandError(f"No clinic has the slug {options['slug']}.")
        try:
            email = services.user_check_new_email(options["email"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        password = read_password(email=email, interactive=sys.stdin.isatty())
        user = services.clinic_add_user(clinic=clinic, email=email, password=password, role=options["role"])
        self.stdout.write(f"Added {user.email} to {clinic.name} as {user.role}.")
