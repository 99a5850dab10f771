from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    """The bot's side of the number: conversations, the signed outbox to the clinic's bot, sends.

    Between `whatsapp` (Meta) and `clinics` (the product): it knows Meta's payloads,
    never the pages, and names the clinic only as "clinics.Clinic".
    """

    name = "messaging"
    verbose_name = _("Messages")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            templates,  # noqa: F401  (applies Meta's template events from the webhook)
        )
