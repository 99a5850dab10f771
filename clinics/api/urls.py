from __future__ import annotations

from django.urls import re_path

from . import views

app_name = "clinics-api"

# `/?$`: both slash forms answer directly; a redirected POST would lose its body.
urlpatterns = [
    re_path(r"^auth/token/?$", views.ObtainTokenView.as_view(), name="token"),
    re_path(r"^auth/logout/?$", views.LogoutView.as_view(), name="logout"),
    re_path(r"^clinics/settings/?$", views.ClinicSettingsView.as_view(), name="settings"),
    re_path(r"^clinics/me/?$", views.ClinicProfileView.as_view(), name="profile"),
]
