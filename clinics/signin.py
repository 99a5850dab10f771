"""The sign-in limiter's two hooks into django-axes: whose bucket, and what a locked-out caller sees.

django-axes counts failed sign-ins on every door that calls Django's
`authenticate()` (the API's token endpoint, `/accounts/login/`, `/admin/login/`)
in the shared cache, per account and per client address (settings.AXES_*), and
refuses further attempts before any password is hashed. Successful sign-ins
count against no one.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .models import canonical_email

API_NAMESPACE = "clinics-api"


def sign_in_account(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """The per-account bucket: the canonical e-mail, so every spelling of one account shares it.

    axes keys both buckets by the bare value, so a "username" written like an IP
    address would count against that address (and lock out everyone behind it).
    A string without "@" is no account: it gets a prefix no address can have.
    """
    raw = (credentials or {}).get("username")
    if raw is None:
        raw = request.POST.get("username", "")
    account = canonical_email(str(raw))
    return account if "@" in account else f"not-an-email:{account}"


def retry_after_seconds() -> int:
    """How long a lock lasts: the cool-off, counted from the failure that set it."""
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def sign_in_locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """429 with Retry-After: the API's JSON body, or a page that says how long to wait."""
    seconds = retry_after_seconds()
    minutes = max(1, round(seconds / 60))
    message = ngettext(
        "Too many failed sign-in attempts. Try again in %(minutes)d minute.",
        "Too many failed sign-in attempts. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}
    match = getattr(request, "resolver_match", None)
    if match is not None and API_NAMESPACE in match.namespaces:
        locked: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        locked = render(
            request,
            "registration/locked_out.html",
            {"message": message, "title": _("Sign-in paused")},
            status=429,
        )
        locked["Cache-Control"] = "no-store"
    locked["Retry-After"] = str(seconds)
    return locked
