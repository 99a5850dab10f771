from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from clinics import services
from clinics.models import User

DEMO_EMAIL = "admin@demo.clinic"


class Command(BaseCommand):
    help = "Development only: make sure a demo clinic and its admin exist, and print a fresh login."

    def handle(self, *args: Any, **options: Any) -> None:
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                clinic = services.clinic_create(name="Clínica Demo San Salvador", city="San Salvador")
                user = services.clinic_add_user(
                    clinic=clinic, email=DEMO_EMAIL, password=password, role=User.Role.ADMIN
                )
            else:
                # A new password each start: it is printed here and nowhere else.
                user.set_password(password)
                user.save(update_fields=["password"])
        self.stdout.write(
            "\n  Demo clinic ready. Sign in at http://127.0.0.1:8000/accounts/login/\n"
            f"    email:    {DEMO_EMAIL}\n"
            f"    password: {password}\n"
        )
