"""Bot keys (endpoint 14c): issue, revoke, list, and the API authentication that accepts them.

A bot key authenticates as `Authorization: Bearer <bot key>` and may call only the
views that say so (`admits_bot_keys = True`: conversations, sending, the template
list), and only where a member suffices: `clinics.permissions.IsClinicMember`
refuses a bot key with 403 everywhere else, the settings and their masked token
included. The caller is then a `BotCaller` (no user), and `request.auth` the key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from common.audit import audit_record

from .models import BotKey, Clinic

# The last use is written at most this often per key.
USE_RESOLUTION = timedelta(minutes=1)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BotCaller:
    """Who a request with a bot key is: the clinic's bot, not a person."""

    key: BotKey
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    pk: None = None

    @property
    def clinic(self) -> Clinic:
        return self.key.clinic

    def __str__(self) -> str:
        return f"bot key {self.key.prefix}"


def bot_key_issue(*, clinic: Clinic, name: str) -> tuple[BotKey, str]:
    """A new key for the clinic's bot; only its hash is kept, so the key is shown this once."""
    for _attempt in range(3):
        key = BotKey.KEY_PREFIX + secrets.token_urlsafe(BotKey.KEY_BYTES)
        bot_key = BotKey(clinic=clinic, name=name, digest=_digest(key), prefix=key[: BotKey.PREFIX_LENGTH])
        bot_key.full_clean(exclude=["digest", "prefix"])
        try:
            with transaction.atomic():
                bot_key.save(force_insert=True)
                # Named by its prefix, as 14c and admin show it; never the key.
                audit_record(
                    clinic_id=clinic.pk,
                    action="bot_key.issued",
                    changes={"name": bot_key.name, "key": f"{bot_key.prefix}…"},
                )
        except IntegrityError:
            continue  # the same prefix already names one of this clinic's keys: draw again
        return bot_key, key
    raise IntegrityError("No free bot key prefix after three draws.")


def bot_key_revoke(*, clinic: Clinic, prefix: str) -> bool:
    """End one of the clinic's keys at once; False when the clinic has no key with that prefix."""
    with transaction.atomic():
        keys = list(BotKey.objects.filter(clinic=clinic, prefix=prefix))
        for key in keys:
            audit_record(
                clinic_id=clinic.pk,
                action="bot_key.revoked",
                changes={"name": key.name, "key": f"{key.prefix}…"},
            )
        deleted, _rows = BotKey.objects.filter(pk__in=[key.pk for key in keys]).delete()
    return bool(deleted)


def bot_key_is_current(*, clinic: Clinic, key: str) -> bool:
    """Whether this key is one of the clinic's, not revoked (e.g. a key a development tool kept in a file)."""
    return BotKey.looks_like_key(key) and BotKey.objects.filter(clinic=clinic, digest=_digest(key)).exists()


def bot_keys_of(clinic: Clinic) -> QuerySet[BotKey]:
    """The clinic's bot keys, newest first."""
    return BotKey.objects.filter(clinic=clinic).order_by("-created_at", "-pk")


def bot_key_record_use(*, key: BotKey, now: datetime) -> None:
    """Note that the key was used now, unless that was noted less than a minute ago."""
    stale = now - USE_RESOLUTION
    if key.last_used_at is not None and key.last_used_at > stale:
        return
    # Conditional: of two workers that both read an old value, only one writes.
    BotKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=key.pk).update(
        last_used_at=now
    )
    key.last_used_at = now


def is_bot_key(auth: Any) -> bool:
    return isinstance(auth, BotKey)


class BotKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <bot key>`; any other key is left to the next authentication."""

    def authenticate(self, request: Request) -> tuple[BotCaller, BotKey] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            return None
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            return None
        if not BotKey.looks_like_key(key):
            return None
        try:
            bot_key = BotKey.objects.select_related("clinic").get(digest=_digest(key))
        except BotKey.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid bot key. It may have been revoked.")) from None
        bot_key_record_use(key=bot_key, now=timezone.now())
        return BotCaller(key=bot_key), bot_key

    def authenticate_header(self, request: Request) -> str:
        # First in the list, so DRF's 401 names this: the members' scheme, as before bot keys.
        return 'Token realm="api"'
