"""Small views any Django site of ours needs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.views.decorators.http import require_GET


@require_GET
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico on every page (the admin's too): ours, from our static files.

    Resolved per request: with the manifest storage the file's hashed name exists only after collectstatic.
    """
    return HttpResponsePermanentRedirect(static("clinics/favicon.svg"))
