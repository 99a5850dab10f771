"""Who may act: a member of an active clinic reads, its admins write. One home for the API and the page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .models import Clinic, User
from .selectors import clinic_for_user

NO_CLINIC_MESSAGE = _("Your account is not linked to any clinic. Ask your clinic's administrator to add you.")
INACTIVE_CLINIC_MESSAGE = _(
    "Your clinic's account is inactive, so its settings cannot be used. Contact support to reactivate it."
)
ADMIN_ONLY_MESSAGE = _("Only your clinic's administrators can do this. Ask an administrator of your clinic.")


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
    """The caller belongs to an active clinic; sets `request.clinic` for the view."""

    message: Any = NO_CLINIC_MESSAGE
    resolve = staticmethod(clinic_for_member)

    def has_permission(self, request: Request, view: Any) -> bool:
        try:
            request.clinic = self.resolve(request.user)  # type: ignore[attr-defined]
        except ClinicAccessDenied as denied:
            self.message = denied.message
            return False
        return True


class IsClinicAdmin(IsClinicMember):
    resolve = staticmethod(clinic_for_admin)
