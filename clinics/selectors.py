"""Scoping queries: the caller's clinic always comes from the caller, never from input."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from whatsapp.cache import whatsapp_account_changed
from whatsapp.models import WhatsAppAccount
from whatsapp.services import whatsapp_account_get_or_create

from . import token_cache
from .models import ApiToken, Clinic, User


def api_token_for_key(key: str) -> ApiToken:
    """The token of this API key, with its user, the user's clinic and the clinic's WhatsApp connection.

    One query, whose result the shared cache keeps (clinics.token_cache says who ends
    a copy when). The user's password hash is left out, so it never reaches the cache;
    the connection's secrets stay the ciphertext the database holds until read
    (EncryptedTextField decrypts on first access). Raises ApiToken.DoesNotExist when no
    token has this key.
    """
    digest = ApiToken.hash_key(key)
    may_keep = False
    if token_cache.enabled():
        copy, may_keep = token_cache.cached(digest)
        if isinstance(copy, ApiToken):
            return copy
    token = (
        ApiToken.objects.select_related("user__clinic__whatsapp").defer("user__password").get(digest=digest)
    )
    if may_keep:
        token_cache.keep(digest, token)
    return token


def clinic_for_user(user: User | AnonymousUser) -> Clinic | None:
    """The clinic the user belongs to, or None.

    Token authentication loads it with the token; a session's user loads it here.
    """
    if not isinstance(user, User) or user.clinic_id is None:
        return None
    return user.clinic


def whatsapp_account_of(clinic: Clinic) -> WhatsAppAccount:
    """The clinic's WhatsApp state: one query the first time, then cached on the clinic as `clinic.whatsapp`.

    Its secrets stay ciphertext until read (EncryptedTextField decrypts on first access).
    """
    try:
        return clinic.whatsapp
    except WhatsAppAccount.DoesNotExist:
        # Every clinic has its WhatsApp state; one made outside clinic_create gets it now.
        clinic.whatsapp = whatsapp_account_get_or_create(clinic_id=clinic.pk)
        whatsapp_account_changed(clinic_id=clinic.pk)
        return clinic.whatsapp


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """The user's own API tokens, newest first: what the settings page lists and may revoke."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")
