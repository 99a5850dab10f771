from __future__ import annotations

from django.urls import re_path

from . import activity, members, views

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
    re_path(r"^clinics/members/(?P<member_id>[0-9]+)/?$", members.MemberView.as_view(), name="member"),
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
]
