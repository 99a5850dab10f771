"""Invitations: a clinic's admins bring a person into the team by e-mail (endpoint 19's POST, the team page).

The e-mail carries a one-use link valid `INVITATION_TTL`; only the SHA-256 of its
token is stored. Opening the link (a GET, which mail scanners do too) changes
nothing: the person chooses a name and a password and sends them with a POST,
which creates the member. Resending makes a new token (the old link ends);
revoking ends the link. An address that already has an account is refused: a
person belongs to one clinic. Each change is recorded in the audit trail in its
own transaction, with the e-mail queued in the same one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _

from common.audit import audit_record

from .mail import clinic_language, email_queue
from .models import Clinic, Invitation, OutgoingEmail, User, canonical_email

INVITATION_TTL = timedelta(hours=72)


class InvitationError(Exception):
    """The invitation cannot be made, resent or accepted; the message says why (400)."""

    def __init__(self, message: str, field: str = "email") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def clinic_invitations(*, clinic: Clinic) -> QuerySet[Invitation]:
    """The clinic's invitations still waiting for an answer (not accepted, not revoked), newest first."""
    return Invitation.objects.filter(clinic=clinic, accepted_at=None, revoked_at=None).order_by("-id")


def _accept_link(site_url: str, key: str) -> str:
    return site_url.rstrip("/") + reverse("invitation-accept", args=[key])


def _queue_email(invitation: Invitation, clinic: Clinic, key: str, site_url: str, inviter: str) -> None:
    with translation.override(clinic_language(clinic)):
        subject = _("You are invited to join %(clinic)s") % {"clinic": clinic.name}
        role = User.Role(invitation.role).label
        lines = [
            _("Hello,"),
            _("%(inviter)s invites you to the team of %(clinic)s on Clinics, as %(role)s.")
            % {"inviter": inviter, "clinic": clinic.name, "role": str(role).lower()},
            _("Open this link to choose your name and password (it works once, until %(date)s UTC):")
            % {"date": formats.date_format(invitation.expires_at, "DATETIME_FORMAT")},
            _accept_link(site_url, key),
            _("If you did not expect this invitation, ignore this e-mail."),
        ]
    email_queue(
        kind=OutgoingEmail.Kind.INVITATION,
        to=invitation.email,
        subject=subject,
        body="\n\n".join(lines),
        clinic=clinic,
    )


def _inviter_name(inviter: User | None) -> str:
    if inviter is None:
        return _("An administrator")
    return inviter.full_name or inviter.email


def invitation_create(
    *, clinic: Clinic, email: str, role: str, inviter: User | None, site_url: str
) -> Invitation:
    """Invite `email` to the clinic with `role`, and queue the e-mail; `InvitationError` when refused."""
    address = canonical_email(email)
    with transaction.atomic():
        Clinic.objects.select_for_update().values_list("pk", flat=True).get(pk=clinic.pk)
        if User.objects.filter(email=address).exists():
            raise InvitationError(_("This e-mail address already has an account."))
        pending = clinic_invitations(clinic=clinic).filter(email=address, expires_at__gt=timezone.now())
        if pending.exists():
            raise InvitationError(_("This address is already invited: resend its invitation instead."))
        key, digest = Invitation.new_key()
        now = timezone.now()
        invitation = Invitation.objects.create(
            clinic=clinic,
            email=address,
            role=role,
            digest=digest,
            invited_by=inviter,
            sent_at=now,
            expires_at=now + INVITATION_TTL,
        )
        audit_record(clinic_id=clinic.pk, action="member.invited", changes={"member": address, "role": role})
        _queue_email(invitation, clinic, key, site_url, _inviter_name(inviter))
    return invitation


def _pending_for_update(clinic: Clinic, invitation_id: Any) -> Invitation:
    """The clinic's invitation still open, locked; `Invitation.DoesNotExist` otherwise."""
    return Invitation.objects.select_for_update().get(
        pk=invitation_id, clinic=clinic, accepted_at=None, revoked_at=None
    )


def invitation_resend(
    *, clinic: Clinic, invitation_id: Any, inviter: User | None, site_url: str
) -> Invitation:
    """A new link for 72 more hours (the old link ends), e-mailed again."""
    with transaction.atomic():
        invitation = _pending_for_update(clinic, invitation_id)
        if User.objects.filter(email=invitation.email).exists():
            raise InvitationError(_("This e-mail address already has an account."))
        key, invitation.digest = Invitation.new_key()
        invitation.sent_at = timezone.now()
        invitation.expires_at = invitation.sent_at + INVITATION_TTL
        invitation.save(update_fields=["digest", "sent_at", "expires_at"])
        audit_record(
            clinic_id=clinic.pk,
            action="member.invited",
            changes={"member": invitation.email, "role": invitation.role, "resent": True},
        )
        _queue_email(invitation, clinic, key, site_url, _inviter_name(inviter))
    return invitation


def invitation_revoke(*, clinic: Clinic, invitation_id: Any) -> Invitation:
    """End the invitation's link for good."""
    with transaction.atomic():
        invitation = _pending_for_update(clinic, invitation_id)
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit_record(clinic_id=clinic.pk, action="invitation.revoked", changes={"member": invitation.email})
    return invitation


def invitation_for_key(key: str) -> Invitation | None:
    """The open invitation this link's token names (None for a used, revoked, expired or unknown one)."""
    invitation = Invitation.objects.select_related("clinic").filter(digest=Invitation.hash_key(key)).first()
    if invitation is None or not invitation.is_pending or not invitation.clinic.is_active:
        return None
    return invitation


def invitation_accept(*, key: str, full_name: str, password: str) -> User:
    """Create the member the invitation names, with this name and password; the link ends.

    `InvitationError` when the link no longer works or the address got an account meanwhile;
    the password must have passed Django's validators (`AcceptInvitationForm`).
    """
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(digest=Invitation.hash_key(key)).first()
        if invitation is None or not invitation.is_pending:
            raise InvitationError(
                _("This invitation link no longer works. Ask an administrator for a new one."), ""
            )
        clinic = Clinic.objects.get(pk=invitation.clinic_id)
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    email=invitation.email,
                    password=password,
                    full_name=full_name,
                    clinic=clinic,
                    role=invitation.role,
                )
        except IntegrityError:
            raise InvitationError(_("This e-mail address already has an account."), "") from None
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        audit_record(
            clinic_id=clinic.pk,
            action="member.joined",
            changes={"member": user.email, "role": user.role},
            actor=user.email,
        )
    return user
