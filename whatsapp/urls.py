from __future__ import annotations

from django.urls import path

from . import webhook

app_name = "whatsapp"

# The uuid converter hands the view a real UUID (anything else is a 404), and
# both slash forms answer directly: a redirected POST would lose its body.
urlpatterns = [
    path("webhook/<uuid:clinic_id>/", webhook.webhook, name="webhook"),
    path("webhook/<uuid:clinic_id>", webhook.webhook),
]
