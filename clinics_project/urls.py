from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from clinics.team_pages import PasswordResetView, invitation_accept_page
from clinics.views import SignInView
from common.health import healthz
from common.views import favicon

urlpatterns = [
    re_path(r"^healthz/?$", healthz, name="healthz"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file, so the strict CSP needs no inline code.
    re_path(r"^api/docs/?$", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("clinics.api.urls")),
    path("whatsapp/", include("whatsapp.urls")),
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico on every page (the admin's too): ours, from our static files.
    path("favicon.ico", favicon),
    # Sign-in: Django's own views, with an email field (USERNAME_FIELD is email); django-axes limits it.
    path(
        "accounts/login/",
        SignInView.as_view(),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    # Password reset: Django's views; the e-mail is queued (clinics.forms.QueuedPasswordResetForm).
    path("accounts/password_reset/", PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password_reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"
    ),
    # An invitation's link: the GET shows a form, the POST accepts (clinics.team_pages).
    path("accounts/invitation/<str:key>/", invitation_accept_page, name="invitation-accept"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("clinics.urls")),
    path("", RedirectView.as_view(pattern_name="clinics:settings", permanent=False)),
]
