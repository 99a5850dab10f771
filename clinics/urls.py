"""Routes of the settings page and its actions (each action is a POST that redirects back)."""

from __future__ import annotations

from django.urls import path

from . import messaging_pages, team_pages, views

app_name = "clinics"

urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("activity/", views.activity_page, name="activity"),
    path("team/", team_pages.team_page, name="team"),
    path("team/invite/", team_pages.invite, name="team-invite"),
    path(
        "team/invitations/<int:invitation_id>/resend/", team_pages.invitation_resend_page, name="team-resend"
    ),
    path(
        "team/invitations/<int:invitation_id>/revoke/", team_pages.invitation_revoke_page, name="team-revoke"
    ),
    path("settings/profile/", views.profile_update, name="profile-update"),
    path("settings/bot/", views.bot_update, name="bot-update"),
    path("settings/api-tokens/revoke/", views.api_tokens_revoke, name="api-tokens-revoke"),
    path("settings/whatsapp/credentials/", views.whatsapp_credentials_update, name="whatsapp-credentials"),
    path("settings/whatsapp/account/", views.whatsapp_account_update, name="whatsapp-account"),
    path("settings/whatsapp/check/", views.whatsapp_check, name="whatsapp-check"),
    path("settings/whatsapp/health/", views.whatsapp_health_check, name="whatsapp-health"),
    path("settings/whatsapp/register/", views.whatsapp_register, name="whatsapp-register"),
    path("settings/whatsapp/resend/", views.whatsapp_resend, name="whatsapp-resend"),
    path("settings/whatsapp/verify/", views.whatsapp_verify, name="whatsapp-verify"),
    path("settings/whatsapp/pin/", views.whatsapp_pin, name="whatsapp-pin"),
    path("settings/whatsapp/deregister/", views.whatsapp_deregister, name="whatsapp-deregister"),
    # The bot's side of the number: clinics/messaging_pages.py.
    path("settings/bot/endpoint/", messaging_pages.bot_url_update, name="bot-url"),
    path("settings/bot/test/", messaging_pages.bot_test, name="bot-test"),
    path("settings/bot/secret/", messaging_pages.bot_secret_rotate, name="bot-secret"),
    path(
        "settings/bot/deliveries/<uuid:delivery_id>/redeliver/",
        messaging_pages.bot_redeliver,
        name="bot-redeliver",
    ),
    path("settings/bot/patient-message/", messaging_pages.patient_message, name="patient-message"),
    path("conversations/", messaging_pages.conversations_page, name="conversations"),
    path(
        "conversations/<uuid:conversation_id>/clear/",
        messaging_pages.conversation_clear,
        name="conversation-clear",
    ),
    path(
        "conversations/<uuid:conversation_id>/answer/",
        messaging_pages.conversation_answer,
        name="conversation-answer",
    ),
]
