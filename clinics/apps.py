from __future__ import annotations

from django.apps import AppConfig


class ClinicsConfig(AppConfig):
    name = "clinics"
    verbose_name = "Clinics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import notifications  # noqa: F401  (e-mails the WhatsApp alerts)
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
