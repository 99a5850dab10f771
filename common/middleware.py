from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _

# Pages load only our own scripts, styles and images: no inline code, no other host.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


# Swagger UI (vendored, at /api/docs/) writes inline styles; its scripts stay 'self'-only.
DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy to every HTML response (Django 5.2 has none built in)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            policy = (
                DOCS_CONTENT_SECURITY_POLICY
                if request.path.startswith("/api/docs")
                else CONTENT_SECURITY_POLICY
            )
            response.headers.setdefault("Content-Security-Policy", policy)
        return response


class RequireContentLengthMiddleware:
    """411 for a body sent without Content-Length (chunked), before anything reads it.

    Under WSGI such a body reaches Django as an empty one: a chunked PATCH would
    answer 200 having saved nothing, and a webhook would be checked against the
    signature of zero bytes. Refusing it is honest; a buffering proxy in front
    (nginx with request buffering) sends every body with its length anyway.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.META.get("HTTP_TRANSFER_ENCODING") and not request.META.get("CONTENT_LENGTH"):
            return JsonResponse(
                {"detail": _("Send the request body with a Content-Length header, not chunked.")},
                status=411,
            )
        return self.get_response(request)
