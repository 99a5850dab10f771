from __future__ import annotations

from django.apps import AppConfig


class WhatsAppConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            health,  # noqa: F401  (connects the new-token health check)
        )
        from .cache import end_copies_on_save

        end_copies_on_save()
