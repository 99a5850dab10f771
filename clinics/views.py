"""The settings page: one server-rendered page, one small POST view per form (Post/Redirect/Get).

Every view reads the clinic from the signed-in user (clinic_for_user), never from
the URL or the form, and calls the same service as the API.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from whatsapp import services as whatsapp_services
from whatsapp.forms import CredentialsForm, DeregisterForm, RegisterForm, VerifyForm
from whatsapp.models import WhatsAppStatus

from . import services
from .forms import BotForm, ClinicProfileForm, EmailAuthenticationForm, add_service_errors
from .models import Clinic
from .permissions import ADMIN_ONLY_MESSAGE, INACTIVE_CLINIC_MESSAGE, NO_CLINIC_MESSAGE
from .selectors import clinic_for_user
from .throttling import sign_in_retry_after

# States in which the page shows the number's register/verify/deregister steps.
REGISTERING = (WhatsAppStatus.PENDING_OTP, WhatsAppStatus.VERIFYING)
# Register/deregister budget is worth showing once it gets low or the number is in flux.
ATTEMPTS_WORTH_SHOWING = 5

View = Callable[..., HttpResponse]


def _problem(clinic: Clinic | None) -> str | None:
    if clinic is None:
        return str(NO_CLINIC_MESSAGE)
    if not clinic.is_active:
        return str(INACTIVE_CLINIC_MESSAGE)
    return None


def clinic_admin_action(view: View) -> View:
    """POST only, signed in, an admin of an active clinic: else 403, whatever the page showed."""

    @login_required
    @require_POST
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        clinic = clinic_for_user(request.user)
        problem = _problem(clinic)
        if problem:
            raise PermissionDenied(problem)
        if not request.user.is_clinic_admin:  # type: ignore[union-attr]
            raise PermissionDenied(str(ADMIN_ONLY_MESSAGE))
        return view(request, clinic, *args, **kwargs)

    return wrapper


def settings_url() -> str:
    return reverse("clinics:settings")


def back_to_settings(anchor: str = "") -> HttpResponseRedirect:
    return redirect(settings_url() + (f"#{anchor}" if anchor else ""))


def render_settings(request: HttpRequest, clinic: Clinic, **bound: forms.Form) -> HttpResponse:
    """The whole page; `bound` replaces a default form by a submitted one with its errors."""
    account = whatsapp_services.whatsapp_account_for(clinic)
    # Without JavaScript a reload shows what polling would: the service asks Meta at
    # most once per few seconds, and only in states that can still move.
    report = whatsapp_services.whatsapp_refresh_status(clinic=clinic)
    account.refresh_from_db()
    is_admin = request.user.is_clinic_admin  # type: ignore[union-attr]
    attempts_left = None
    if account.phone_number_id and account.status != WhatsAppStatus.ACTIVE:
        left = whatsapp_services.whatsapp_attempts_left(phone_number_id=account.phone_number_id)
        if left <= ATTEMPTS_WORTH_SHOWING or account.status in REGISTERING:
            attempts_left = left

    profile_form = bound.get("profile_form") or ClinicProfileForm(
        initial={
            "name": clinic.name,
            "phone": clinic.phone,
            "address": clinic.address,
            "city": clinic.city,
            "timezone": clinic.timezone,
            "currency": clinic.currency,
        }
    )
    credentials_form = bound.get("credentials_form") or CredentialsForm(
        has_token=account.has_access_token,
        initial={
            "phone_number_id": account.phone_number_id,
            "business_account_id": account.business_account_id,
        },
    )
    register_form = bound.get("register_form") or RegisterForm(
        initial={"phone": account.number, "waba_id": account.business_account_id, "otp_method": "sms"}
    )
    context = {
        "clinic": clinic,
        "account": account,
        "report": report,
        "is_admin": is_admin,
        "statuses": WhatsAppStatus,
        "status_label": WhatsAppStatus(report.status).label,
        "status_choices": WhatsAppStatus.choices,
        "webhook_url": request.build_absolute_uri(account.webhook_path),
        "attempts_left": attempts_left,
        "profile_form": profile_form,
        "bot_form": bound.get("bot_form") or BotForm(initial={"bot_enabled": clinic.bot_enabled}),
        "credentials_form": credentials_form,
        "register_form": register_form,
        "verify_form": bound.get("verify_form") or VerifyForm(),
        "deregister_form": bound.get("deregister_form") or DeregisterForm(number=account.number),
        # Registering may (re)start from any state but active (the contract's endpoint 6).
        "show_register": report.status
        in (WhatsAppStatus.DISCONNECTED, WhatsAppStatus.FAILED, WhatsAppStatus.VERIFYING),
        "show_verify": report.status == WhatsAppStatus.PENDING_OTP,
        "poll": is_admin and report.status in REGISTERING,
        "can_deregister": report.status != WhatsAppStatus.DISCONNECTED or bool(account.number),
    }
    status = 400 if bound else 200
    response = render(request, "clinics/settings.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    clinic = clinic_for_user(request.user)
    problem = _problem(clinic)
    if problem:
        return render(request, "clinics/no_clinic.html", {"problem": problem}, status=403)
    return render_settings(request, clinic)  # type: ignore[arg-type]


@clinic_admin_action
def profile_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = ClinicProfileForm(request.POST)
    if form.is_valid():
        try:
            services.clinic_update_profile(clinic=clinic, data=form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, _("The clinic's profile was saved."))
            return back_to_settings("profile")
    return render_settings(request, clinic, profile_form=form)


@clinic_admin_action
def bot_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = BotForm(request.POST)
    if form.is_valid():
        try:
            services.clinic_update_settings(
                clinic=clinic, data={"bot_enabled": form.cleaned_data["bot_enabled"]}
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if form.cleaned_data["bot_enabled"]:
                messages.success(request, _("The bot is on."))
            else:
                messages.success(request, _("The bot is off."))
            return back_to_settings("bot")
    return render_settings(request, clinic, bot_form=form)


class SignInView(LoginView):
    """Django's sign-in view, with attempts limited per IP and per email (THROTTLE_AUTH_RATE)."""

    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = sign_in_retry_after(
            ip=request.META.get("REMOTE_ADDR", ""), email=str(request.POST.get("username", ""))
        )
        if wait:
            form = self.get_form()
            form.errors.clear()
            form.add_error(
                None,
                _("Too many sign-in attempts. Wait %(seconds)d seconds, then try again.") % {"seconds": wait},
            )
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)
