"""A clinic's team: its admins change roles, deactivate and reactivate members (endpoint 19).

Nobody is ever deleted: a member who left is deactivated, which ends their API
tokens (`User.save`) and their browser sessions (Django's ModelBackend refuses
an inactive user on the next request) at once. The last active admin of a
clinic can be neither demoted nor deactivated: the clinic would be left with
nobody who can run it. Changes to one clinic's team queue on the clinic's row,
so two admins demoting each other at once cannot both succeed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from common.audit import audit_changes, audit_record
from common.notsent import NOT_SENT, NotSent

from .models import Clinic, User


class LastAdminError(Exception):
    """The change would leave the clinic without an active admin (409)."""

    def __init__(self) -> None:
        super().__init__(
            _("This is the clinic's last active administrator: make another member an administrator first.")
        )


def clinic_members(*, clinic: Clinic) -> QuerySet[User]:
    """The clinic's members, newest first (active or not)."""
    return User.objects.filter(clinic=clinic).order_by("-id")


def member_update(
    *,
    clinic: Clinic,
    member_id: Any,
    role: str | NotSent = NOT_SENT,
    is_active: bool | NotSent = NOT_SENT,
) -> User:
    """Change a member's role and/or activity; `User.DoesNotExist` for anyone outside `clinic`.

    Recorded as `member.deactivated`, `member.reactivated` or `member.role_changed`.
    """
    with transaction.atomic():
        # The clinic's row is the team's lock: the last-admin rule reads the other admins.
        Clinic.objects.select_for_update().values_list("pk", flat=True).get(pk=clinic.pk)
        member = User.objects.select_for_update().get(pk=member_id, clinic=clinic)
        new_role = member.role if isinstance(role, NotSent) else role
        new_active = member.is_active if isinstance(is_active, NotSent) else is_active
        before = {"role": member.role, "is_active": member.is_active}
        after = {"role": new_role, "is_active": new_active}
        if after == before:
            return member
        was_admin = member.is_active and member.role == User.Role.ADMIN
        if was_admin and not (new_active and new_role == User.Role.ADMIN):
            admins = User.objects.filter(clinic=clinic, role=User.Role.ADMIN, is_active=True)
            if not admins.exclude(pk=member.pk).exists():
                raise LastAdminError
        if new_active != member.is_active:
            action = "member.reactivated" if new_active else "member.deactivated"
        else:
            action = "member.role_changed"
        member.role, member.is_active = new_role, new_active
        member.save(update_fields=["role", "is_active"])
        audit_record(
            clinic_id=clinic.pk,
            action=action,
            changes={"member": member.email, **audit_changes(User, before, after)},
        )
    return member
