"""`{% bot_step %}`: the settings page's "Bot" step (clinics/messaging_pages.py), from the page's context."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from clinics.messaging_pages import bot_step_context

register = template.Library()


@register.inclusion_tag("clinics/_bot_step.html", takes_context=True)
def bot_step(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    clinic = context["clinic"]
    # A POST that made a new secret (or failed validation) renders the page with its own step.
    step = getattr(request, "bot_step", None) or bot_step_context(clinic)
    return {
        **step,
        "clinic": clinic,
        "is_admin": context.get("is_admin", False),
        "account": context.get("account"),
        "meta_simulated": settings.META_SIMULATED,
        "csrf_token": context.get("csrf_token"),
        "request": request,
    }
