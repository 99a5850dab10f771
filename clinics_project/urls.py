from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from clinics.views_health import healthz

urlpatterns = [
    re_path(r"^healthz/?$", healthz, name="healthz"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("clinics.api.urls")),
    path("api/", include("whatsapp.api.urls")),
    path("whatsapp/", include("whatsapp.urls")),
    path("admin/", admin.site.urls),
]
