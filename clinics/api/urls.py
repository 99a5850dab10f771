from __future__ import annotations

from django.urls import re_path

from . import activity, members, messaging_views, sending_views, views

app_name = "clinics-api"

whatsapp = views.WhatsAppViewSet.as_view

# `/?$`: both slash forms answer directly; a redirected POST would lose its body.
urlpatterns = [
    re_path(r"^auth/token/?$", views.ObtainTokenView.as_view(), name="token"),
    re_path(r"^auth/logout/?$", views.LogoutView.as_view(), name="logout"),
    re_path(r"^clinics/settings/?$", views.ClinicSettingsView.as_view(), name="settings"),
    re_path(r"^clinics/me/?$", views.ClinicProfileView.as_view(), name="profile"),
    re_path(r"^clinics/activity/?$", activity.ClinicActivityView.as_view(), name="activity"),
    re_path(r"^clinics/members/?$", members.MembersView.as_view(), name="members"),
    re_path(r"^clinics/members/invitations/?$", members.InvitationsView.as_view(), name="invitations"),
    re_path(
        r"^clinics/members/invitations/(?P<invitation_id>[^/]+)/?$",
        members.InvitationView.as_view(),
        name="invitation",
    ),
    re_path(
        r"^clinics/members/invitations/(?P<invitation_id>[^/]+)/resend/?$",
        members.InvitationResendView.as_view(),
        name="invitation-resend",
    ),
    # After the invitations' paths: a member's id is anything else under members/.
    re_path(r"^clinics/members/(?P<member_id>[^/]+)/?$", members.MemberView.as_view(), name="member"),
    re_path(
        r"^clinics/whatsapp/?$",
        whatsapp({"put": "configure", "delete": "deregister"}),
        name="whatsapp",
    ),
    re_path(r"^clinics/whatsapp/register/?$", whatsapp({"post": "register"}), name="whatsapp-register"),
    re_path(r"^clinics/whatsapp/verify/?$", whatsapp({"post": "verify"}), name="whatsapp-verify"),
    re_path(r"^clinics/whatsapp/status/?$", whatsapp({"get": "status"}), name="whatsapp-status"),
    re_path(r"^clinics/whatsapp/pin/?$", whatsapp({"put": "pin"}), name="whatsapp-pin"),
    re_path(
        r"^clinics/whatsapp/health/?$",
        whatsapp({"get": "health", "post": "check_health"}),
        name="whatsapp-health",
    ),
    # The bot's side of the number (14, 14a, 14b, 15, 18): clinics/api/messaging_views.py.
    re_path(r"^clinics/bot/?$", messaging_views.BotEndpointView.as_view(), name="bot"),
    re_path(r"^clinics/bot/test/?$", messaging_views.BotTestView.as_view(), name="bot-test"),
    re_path(r"^clinics/bot/secret/?$", messaging_views.BotSecretView.as_view(), name="bot-secret"),
    re_path(
        r"^clinics/bot/deliveries/?$", messaging_views.BotDeliveryListView.as_view(), name="bot-deliveries"
    ),
    re_path(
        r"^clinics/bot/deliveries/(?P<delivery_id>[^/]+)/redeliver/?$",
        messaging_views.BotRedeliverView.as_view(),
        name="bot-redeliver",
    ),
    re_path(
        r"^clinics/conversations/?$", messaging_views.ConversationListView.as_view(), name="conversations"
    ),
    re_path(
        r"^clinics/conversations/(?P<conversation_id>[^/]+)/messages/?$",
        messaging_views.ConversationMessagesView.as_view(),
        name="conversation-messages",
    ),
    # Endpoints 14c, 16 and 17 (clinics.api.sending_views).
    re_path(r"^clinics/bot/keys/?$", sending_views.BotKeysView.as_view(), name="bot-keys"),
    re_path(
        r"^clinics/bot/keys/(?P<prefix>[^/]+)/?$",
        sending_views.BotKeyDetailView.as_view(),
        name="bot-key",
    ),
    re_path(r"^clinics/messages/?$", sending_views.MessagesView.as_view(), name="messages"),
    re_path(r"^clinics/templates/?$", sending_views.TemplatesView.as_view(), name="templates"),
    re_path(r"^clinics/templates/sync/?$", sending_views.TemplatesSyncView.as_view(), name="templates-sync"),
]
