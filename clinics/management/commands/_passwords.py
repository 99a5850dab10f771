from __future__ import annotations

import getpass
import os

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from clinics.models import User


def read_password(*, email: str, interactive: bool) -> str:
    """CLINIC_USER_PASSWORD from the environment, else a prompt (never an argument: shells keep history)."""
    password = os.environ.get("CLINIC_USER_PASSWORD")
    if password is None:
        if not interactive:
            raise CommandError("Set CLINIC_USER_PASSWORD or run the command in a terminal to be asked.")
        password = getpass.getpass(f"Password for {email}: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
    try:
        # With the user, so a password that resembles the email is refused too.
        validate_password(password, user=User(email=email))
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    return password
