"""Who may act: a member of an active clinic reads, its admins write. One home for the API and the page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .models import BotKey, Clinic, User
from .selectors import clinic_for_user

NO_CLINIC_MESSAGE = _("Your account is not linked to any clinic. Ask your clinic's administrator to add you.")
INACTIVE_CLINIC_MESSAGE = _(
    "Your clinic's account is inactive, so its settings cannot be used. Contact support to reactivate it."
)
ADMIN_ONLY_MESSAGE = _("Only your clinic's administrators can do this. Ask an administrator of your clinic.")
BOT_KEY_MESSAGE = _(
    "A bot key may only read conversations and templates and send messages. Use a member's token for this."
)


class ClinicAccessDenied(Exception):
    """Why the caller may not act on a clinic, in a sentence they can act on."""

    def __init__(self, message: Any) -> None:
        self.message = str(message)
        super().__init__(self.message)


def clinic_for_member(user: User | AnonymousUser) -> Clinic:
    """The caller's clinic when they may read it, else ClinicAccessDenied."""
    clinic = clinic_for_user(user)
    if clinic is None:
        raise ClinicAccessDenied(NO_CLINIC_MESSAGE)
    if not clinic.is_active:
        raise ClinicAccessDenied(INACTIVE_CLINIC_MESSAGE)
    return clinic


def clinic_for_admin(user: User | AnonymousUser) -> Clinic:
    """The caller's clinic when they may change it (one of its admins), else ClinicAccessDenied."""
    clinic = clinic_for_member(user)
    if not (isinstance(user, User) and user.is_clinic_admin):
        raise ClinicAccessDenied(ADMIN_ONLY_MESSAGE)
    return clinic


class IsClinicMember(BasePermission):
    """The caller belongs to an active clinic; sets `request.clinic` for the view.

    A bot key (clinics.bot_keys) is its clinic's member only on a view that sets
    `admits_bot_keys = True`, and never where an admin is needed: 403 elsewhere.
    """

    message: Any = NO_CLINIC_MESSAGE
    resolve = staticmethod(clinic_for_member)
    bot_keys_may_pass = True

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, BotKey):
            return self._bot_key_may(request, view, request.auth)
        try:
            request.clinic = self.resolve(request.user)  # type: ignore[attr-defined]
        except ClinicAccessDenied as denied:
            self.message = denied.message
            return False
        return True

    def _bot_key_may(self, request: Request, view: Any, key: BotKey) -> bool:
        if not (self.bot_keys_may_pass and getattr(view, "admits_bot_keys", False)):
            self.message = BOT_KEY_MESSAGE
            return False
        if not key.clinic.is_active:
            self.message = INACTIVE_CLINIC_MESSAGE
            return False
        request.clinic = key.clinic  # type: ignore[attr-defined]
        return True


class IsClinicAdmin(IsClinicMember):
    resolve = staticmethod(clinic_for_admin)
    bot_keys_may_pass = False


class IsNotBotKey(BasePermission):
    """For the few views that need no clinic (signing out): a bot key is refused there too."""

    message: Any = BOT_KEY_MESSAGE

    def has_permission(self, request: Request, view: Any) -> bool:
        return not isinstance(request.auth, BotKey)
