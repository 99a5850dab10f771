"""Scoping queries: the caller's clinic always comes from the caller, never from input."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser

from .models import Clinic, User


def clinic_for_user(user: User | AnonymousUser) -> Clinic | None:
    """The clinic the user belongs to, with its WhatsApp state, or None."""
    if not getattr(user, "is_authenticated", False) or user.clinic_id is None:
        return None
    # Token authentication has already joined the clinic and its WhatsApp state.
    if User.clinic.is_cached(user):
        clinic = user.clinic
    else:
        clinic = Clinic.objects.select_related("whatsapp").filter(pk=user.clinic_id).first()
        if clinic is None:
            return None
        user.clinic = clinic
    # Every clinic has its WhatsApp state; one made outside clinic_create gets it now.
    from whatsapp.services import whatsapp_account_for

    whatsapp_account_for(clinic)
    return clinic
