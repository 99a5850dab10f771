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
        _lock_team(clinic.pk)
        member = User.objects.select_for_update().get(pk=member_id, clinic=clinic)
        new_role = member.role if isinstance(role, NotSent) else role
        new_active = member.is_active if isinstance(is_active, NotSent) else is_active
        before = {"role": member.role, "is_active": member.is_active}
        after = {"role": new_role, "is_active": new_active}
        if after == before:
            return member
        _refuse_losing_the_last_admin(member, clinic_id=clinic.pk, role=new_role, is_active=new_active)
        member.role, member.is_active = new_role, new_active
        member.save(update_fields=["role", "is_active"])
        audit_record(
            clinic_id=clinic.pk,
            action=_team_action(before, after),
            changes={"member": member.email, **audit_changes(User, before, after)},
        )
    return member


# What a superuser edits in admin's user form and the trail shows, besides the clinic.
USER_FORM_FIELDS = ("email", "full_name", "role", "is_active", "is_staff", "is_superuser")


def user_save_edited(*, user: User) -> None:
    """Save a user edited field by field (admin's user form), with the team's rules and audit rows.

    A new user is `member.added` in its clinic's trail (the platform's without a
    clinic). A user moved to another clinic is `member.left` in the old one's
    and `member.added` in the new one's; any other change is one row in the
    clinic's trail, named as the team's service names it (`member.role_changed`,
    `member.deactivated`, ...) or `member.updated`. The last active admin of a
    clinic can be neither demoted, deactivated nor moved out (`LastAdminError`,
    nothing saved). The password has its own row (`User.save`).
    """
    adding = user._state.adding
    with transaction.atomic():
        # The teams' locks first, then the member's row: the order member_update takes them in.
        was_in = None if adding else User.objects.values_list("clinic_id", flat=True).get(pk=user.pk)
        for clinic_id in sorted({str(c) for c in (user.clinic_id, was_in) if c}):
            _lock_team(clinic_id)
        stored = None if adding else User.objects.select_for_update().get(pk=user.pk)
        after = {name: getattr(user, name) for name in USER_FORM_FIELDS}
        if stored is None:
            user.save()
            audit_record(
                clinic_id=user.clinic_id,
                action="member.added",
                changes={"member": user.email, **audit_changes(User, {}, after)},
            )
            return
        before = {name: getattr(stored, name) for name in USER_FORM_FIELDS}
        moved = stored.clinic_id != user.clinic_id
        if stored.clinic_id is not None:
            stays = not moved
            _refuse_losing_the_last_admin(
                stored,
                clinic_id=stored.clinic_id,
                role=user.role if stays else "",
                is_active=user.is_active and stays,
            )
        user.save()
        if moved:
            names = dict(
                Clinic.objects.filter(pk__in=[stored.clinic_id, user.clinic_id]).values_list("pk", "name")
            )
            clinic_change = {
                "clinic": [names.get(c) if c else None for c in (stored.clinic_id, user.clinic_id)]
            }
            if stored.clinic_id is not None:
                audit_record(
                    clinic_id=stored.clinic_id,
                    action="member.left",
                    changes={"member": stored.email, **clinic_change},
                )
            audit_record(
                clinic_id=user.clinic_id,
                action="member.added",
                changes={"member": user.email, **clinic_change, **audit_changes(User, {}, after)},
            )
            return
        changes = audit_changes(User, before, after)
        if changes:
            audit_record(
                clinic_id=user.clinic_id,
                action=_team_action(before, after, otherwise="member.updated"),
                changes={"member": user.email, **changes},
            )


def member_change_refusal(
    *, member_id: Any, clinic_id: Any, role: str, is_active: bool
) -> LastAdminError | None:
    """Why a form's change to a member would be refused, read before saving (the save checks again, locked)."""
    member = User.objects.filter(pk=member_id).first()
    if member is None or member.clinic_id is None:
        return None
    stays = member.clinic_id == clinic_id
    try:
        _refuse_losing_the_last_admin(
            member, clinic_id=member.clinic_id, role=role if stays else "", is_active=is_active and stays
        )
    except LastAdminError as refused:
        return refused
    return None


def _lock_team(clinic_id: Any) -> None:
    # The clinic's row is the team's lock: the last-admin rule reads the other admins.
    Clinic.objects.select_for_update().values_list("pk", flat=True).get(pk=clinic_id)


def _refuse_losing_the_last_admin(member: User, *, clinic_id: Any, role: str, is_active: bool) -> None:
    """`LastAdminError` if `member` is the clinic's last active admin and would stop being one."""
    was_admin = member.is_active and member.role == User.Role.ADMIN
    if not was_admin or (is_active and role == User.Role.ADMIN):
        return
    admins = User.objects.filter(clinic_id=clinic_id, role=User.Role.ADMIN, is_active=True)
    if not admins.exclude(pk=member.pk).exists():
        raise LastAdminError


def _team_action(
    before: dict[str, Any], after: dict[str, Any], otherwise: str = "member.role_changed"
) -> str:
    if after["is_active"] != before["is_active"]:
        return "member.reactivated" if after["is_active"] else "member.deactivated"
    if after["role"] != before["role"]:
        return "member.role_changed"
    return otherwise
