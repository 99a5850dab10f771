from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ClinicsConfig(AppConfig):
    name = "clinics"
    verbose_name = _("Clinics")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from . import (
            notifications,  # noqa: F401  (e-mails the WhatsApp alerts)
            relay,  # noqa: F401  (records patients' messages, forwards them to the bot)
        )
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)

        # Our name on every admin page, in the user's language ("Clinics", not "Django administration").
        admin.site.site_header = _("Clinics")
        admin.site.site_title = _("Clinics")
        admin.site.index_title = _("Administration")
