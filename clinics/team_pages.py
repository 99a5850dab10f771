"""The team page (admins invite and manage invitations), accepting an invitation, and password reset.

Thin views over `clinics.invitations` and Django's own reset views. A link in an
e-mail is opened by mail scanners too: its GET shows a form and changes nothing;
only the person's POST acts. Reset requests are limited per client address like a
sign-in (every request counts: the answer never says whether the address has an
account, so there is no "failure" to count).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from common.http import client_address_bucket

from .forms import AcceptInvitationForm, InvitationForm, QueuedPasswordResetForm
from .invitations import (
    InvitationError,
    clinic_invitations,
    invitation_accept,
    invitation_create,
    invitation_for_key,
    invitation_resend,
    invitation_revoke,
)
from .members import clinic_members
from .models import Clinic, Invitation, User
from .permissions import ClinicAccessDenied, clinic_for_admin
from .signin import count_in_window


def _site_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/")


def _admin_clinic(request: HttpRequest) -> Clinic:
    try:
        return clinic_for_admin(request.user)
    except ClinicAccessDenied as denied:
        raise PermissionDenied(denied.message) from None


def _team(request: HttpRequest, clinic: Clinic, form: InvitationForm, status: int = 200) -> HttpResponse:
    context = {
        "clinic": clinic,
        "members": clinic_members(clinic=clinic),
        "invitations": clinic_invitations(clinic=clinic),
        "form": form,
    }
    return render(request, "clinics/team.html", context, status=status)


@never_cache
@login_required
@require_GET
def team_page(request: HttpRequest) -> HttpResponse:
    """The clinic's members and open invitations, and the invitation form; admins only (staff 403)."""
    try:
        clinic = clinic_for_admin(request.user)
    except ClinicAccessDenied as denied:
        return render(request, "clinics/no_clinic.html", {"problem": denied.message}, status=403)
    return _team(request, clinic, InvitationForm())


@login_required
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    clinic = _admin_clinic(request)
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation_create(
                clinic=clinic,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                inviter=request.user if isinstance(request.user, User) else None,
                site_url=_site_url(request),
            )
        except InvitationError as exc:
            form.add_error("email", exc.message)
        else:
            messages.success(
                request, _("Invitation sent to %(email)s.") % {"email": form.cleaned_data["email"]}
            )
            return redirect("clinics:team")
    return _team(request, clinic, form, status=400)


@login_required
@require_POST
def invitation_resend_page(request: HttpRequest, invitation_id: int) -> HttpResponse:
    clinic = _admin_clinic(request)
    try:
        invitation = invitation_resend(
            clinic=clinic,
            invitation_id=invitation_id,
            inviter=request.user if isinstance(request.user, User) else None,
            site_url=_site_url(request),
        )
    except Invitation.DoesNotExist:
        messages.error(request, _("Your clinic has no open invitation with this id."))
    except InvitationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("A new invitation was sent to %(email)s.") % {"email": invitation.email})
    return redirect("clinics:team")


@login_required
@require_POST
def invitation_revoke_page(request: HttpRequest, invitation_id: int) -> HttpResponse:
    clinic = _admin_clinic(request)
    try:
        invitation = invitation_revoke(clinic=clinic, invitation_id=invitation_id)
    except Invitation.DoesNotExist:
        messages.error(request, _("Your clinic has no open invitation with this id."))
    else:
        messages.success(request, _("The invitation to %(email)s was revoked.") % {"email": invitation.email})
    return redirect("clinics:team")


@never_cache
def invitation_accept_page(request: HttpRequest, key: str) -> HttpResponse:
    """GET: the form (nothing changes: mail scanners open links). POST: the member is created."""
    invitation = invitation_for_key(key)
    if invitation is None:
        return render(request, "registration/invitation_invalid.html", status=404)
    form = AcceptInvitationForm(request.POST if request.method == "POST" else None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        try:
            invitation_accept(
                key=key, full_name=form.cleaned_data["full_name"], password=form.cleaned_data["password1"]
            )
        except InvitationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                _("Welcome to %(clinic)s. Sign in with your e-mail and new password.")
                % {"clinic": invitation.clinic.name},
            )
            return redirect("login")
    status = 400 if form.is_bound else 200
    context = {"form": form, "invitation": invitation}
    return render(request, "registration/invitation_accept.html", context, status=status)


# --- password reset: Django's views, a queued e-mail, a limit per address ----------------------


def _reset_limited(request: HttpRequest) -> HttpResponse | None:
    """Count one reset request from this address; past the sign-in limit, the 429 page."""
    window = int(settings.AXES_COOLOFF_TIME.total_seconds())
    if (
        count_in_window("password-reset:" + client_address_bucket(request), window)
        <= settings.AXES_FAILURE_LIMIT
    ):
        return None
    minutes = max(1, round(window / 60))
    message = ngettext(
        "Too many password reset requests. Try again in %(minutes)d minute.",
        "Too many password reset requests. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}
    response = render(
        request,
        "registration/locked_out.html",
        {"message": message, "title": _("Password reset paused")},
        status=429,
    )
    response["Retry-After"] = str(window)
    response["Cache-Control"] = "no-store"
    return response


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset request, its e-mail queued in the outbox, limited per client address."""

    form_class = QueuedPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    @method_decorator(never_cache)
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limited = _reset_limited(request)
        if limited is not None:
            return limited
        return super().post(request, *args, **kwargs)
