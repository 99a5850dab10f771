from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ClinicsConfig(AppConfig):
    name = "clinics"
    verbose_name = _("Clinics")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from whatsapp.cache import whatsapp_account_copies_end_with

        from . import (
            notifications,  # noqa: F401  (e-mails the WhatsApp alerts)
            relay,  # noqa: F401  (records patients' messages, forwards them to the bot)
            signin,  # noqa: F401  (registers the sign-in limiter's cache check)
        )
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from .services import clinic_tokens_forget

        # A cached token holds its clinic's WhatsApp connection: every write of it ends those copies.
        whatsapp_account_copies_end_with(clinic_tokens_forget)
        # Our name on every admin page, in the user's language ("Clinics", not "Django administration").
        admin.site.site_header = _("Clinics")
        admin.site.site_title = _("Clinics")
        admin.site.index_title = _("Administration")
