from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.crypto import KeyringError, generate_key_line


class Command(BaseCommand):
    help = "Print a fresh `kid:key` entry for FIELD_ENCRYPTION_KEYS (32 random bytes, base64url)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kid", default=f"k{date.today():%Y%m%d}", help="key id: 1-16 of a-z 0-9 _ -")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.stdout.write(generate_key_line(options["kid"]))
        except KeyringError as exc:
            raise CommandError(str(exc)) from None
