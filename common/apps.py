from __future__ import annotations

import logging
import sys

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .crypto import Keyring, KeyringError, generate_key_line

logger = logging.getLogger(__name__)


class CommonConfig(AppConfig):
    """Domain-free plumbing: the encrypted field's keyring, system checks, shared commands."""

    name = "common"
    verbose_name = "Common"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        keys = list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []) or [])
        if not keys and settings.DEBUG:
            # Development only: data saved under this key is unreadable after a
            # restart. `make run` / scripts/run write a lasting key into .env.
            line = generate_key_line("dev")
            settings.FIELD_ENCRYPTION_KEYS = [line]
            sys.stderr.write(
                "WARNING: FIELD_ENCRYPTION_KEYS is not set; using a temporary development key. "
                "Secrets saved now cannot be read after a restart. "
                "Run `python manage.py generate_encryption_key` and put the line in .env.\n"
            )
            return
        try:
            Keyring.parse(keys)
        except KeyringError as exc:
            if not settings.DEBUG:
                # Production refuses to start rather than write secrets it cannot keep.
                raise ImproperlyConfigured(str(exc)) from None
            logger.warning("%s", exc)
