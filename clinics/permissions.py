from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .selectors import clinic_for_user

NO_CLINIC_MESSAGE = _("Your account is not linked to any clinic. Ask your clinic's administrator to add you.")
INACTIVE_CLINIC_MESSAGE = _(
    "Your clinic's account is inactive, so its settings cannot be used. Contact support to reactivate it."
)
ADMIN_ONLY_MESSAGE = _("Only your clinic's administrators can do this. Ask an administrator of your clinic.")


class IsClinicMember(BasePermission):
    """The caller belongs to an active clinic; sets `request.clinic` for the view."""

    message = NO_CLINIC_MESSAGE

    def has_permission(self, request: Request, view: Any) -> bool:
        clinic = clinic_for_user(request.user)
        if clinic is None:
            self.message = NO_CLINIC_MESSAGE
            return False
        if not clinic.is_active:
            self.message = INACTIVE_CLINIC_MESSAGE
            return False
        request.clinic = clinic  # type: ignore[attr-defined]
        return True


class IsClinicAdmin(IsClinicMember):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        if request.user.role != request.user.Role.ADMIN:
            self.message = ADMIN_ONLY_MESSAGE
            return False
        return True
