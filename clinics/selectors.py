"""Scoping queries: the caller's clinic always comes from the caller, never from input."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from whatsapp.models import WhatsAppAccount
from whatsapp.services import whatsapp_account_get_or_create

from .models import ApiToken, Clinic, User


def clinic_for_user(user: User | AnonymousUser) -> Clinic | None:
    """The clinic the user belongs to, with its WhatsApp state, or None."""
    if not isinstance(user, User) or user.clinic_id is None:
        return None
    # Token authentication has already joined the clinic and its WhatsApp state.
    if User.clinic.is_cached(user):
        clinic = user.clinic
    else:
        found = Clinic.objects.select_related("whatsapp").filter(pk=user.clinic_id).first()
        if found is None:
            return None
        user.clinic = clinic = found
    if clinic is not None:
        whatsapp_account_of(clinic)
    return clinic


def whatsapp_account_of(clinic: Clinic) -> WhatsAppAccount:
    """The clinic's WhatsApp state (cached on the clinic as `clinic.whatsapp`)."""
    try:
        return clinic.whatsapp
    except WhatsAppAccount.DoesNotExist:
        # Every clinic has its WhatsApp state; one made outside clinic_create gets it now.
        clinic.whatsapp = whatsapp_account_get_or_create(clinic_id=clinic.pk)
        return clinic.whatsapp


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """The user's own API tokens, newest first: what the settings page lists and may revoke."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")
