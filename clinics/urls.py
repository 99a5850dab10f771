"""Routes of the settings page and its actions (each action is a POST that redirects back)."""

from __future__ import annotations

from django.urls import path

from whatsapp import views as whatsapp_views

from . import views

app_name = "clinics"

urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("settings/profile/", views.profile_update, name="profile-update"),
    path("settings/bot/", views.bot_update, name="bot-update"),
    path("settings/whatsapp/credentials/", whatsapp_views.credentials_update, name="whatsapp-credentials"),
    path("settings/whatsapp/check/", whatsapp_views.check_connection, name="whatsapp-check"),
    path("settings/whatsapp/register/", whatsapp_views.register_number, name="whatsapp-register"),
    path("settings/whatsapp/resend/", whatsapp_views.resend_code, name="whatsapp-resend"),
    path("settings/whatsapp/verify/", whatsapp_views.verify_code, name="whatsapp-verify"),
    path("settings/whatsapp/deregister/", whatsapp_views.deregister, name="whatsapp-deregister"),
]
