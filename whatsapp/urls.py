from __future__ import annotations

from django.urls import re_path

from . import webhook

app_name = "whatsapp"

urlpatterns = [
    re_path(
        r"^webhook/(?P<clinic_id>[0-9a-fA-F-]{36})/?$",
        webhook.webhook,
        name="webhook",
    ),
]
