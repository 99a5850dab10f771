from __future__ import annotations

from django.urls import re_path

from .views import WhatsAppViewSet

app_name = "whatsapp-api"

urlpatterns = [
    re_path(
        r"^clinics/whatsapp/?$",
        WhatsAppViewSet.as_view({"put": "configure", "delete": "deregister"}),
        name="whatsapp",
    ),
    re_path(r"^clinics/whatsapp/register/?$", WhatsAppViewSet.as_view({"post": "register"}), name="register"),
    re_path(r"^clinics/whatsapp/verify/?$", WhatsAppViewSet.as_view({"post": "verify"}), name="verify"),
    re_path(r"^clinics/whatsapp/status/?$", WhatsAppViewSet.as_view({"get": "status"}), name="status"),
]
