"""WhatsApp actions of the settings page. Each calls the same service as the API.

Invalid input re-renders the page with the errors next to the fields; a domain
error (Meta refused, unreachable, wrong state, a limit) becomes a message with
the service's `detail`; success redirects back to the page (Post/Redirect/Get).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.translation import gettext as _

from clinics.forms import add_service_errors
from clinics.models import Clinic
from clinics.views import back_to_settings, clinic_admin_action, render_settings

from . import services
from .exceptions import WhatsAppError
from .forms import SERVICE_FIELD_MAP, CredentialsForm, DeregisterForm, RegisterForm, ResendForm, VerifyForm
from .models import WhatsAppAccount, WhatsAppStatus

ANCHOR = "whatsapp"


def _report_outcome(request: HttpRequest, account: WhatsAppAccount, success: str) -> None:
    """Success, or the sentence the clinic can act on when Meta did not confirm."""
    if account.status == WhatsAppStatus.FAILED:
        messages.error(request, account.detail or _("Meta refused the connection."))
    elif account.detail:
        messages.info(request, f"{success} {account.detail}")
    else:
        messages.success(request, success)


@clinic_admin_action
def credentials_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    account = services.whatsapp_account_for(clinic)
    form = CredentialsForm(request.POST, has_token=account.has_access_token)
    if form.is_valid():
        data = form.cleaned_data
        try:
            account = services.whatsapp_configure(
                clinic=clinic,
                phone_number_id=data["phone_number_id"],
                business_account_id=data["business_account_id"],
                access_token=data["access_token"],
                verify_token=data["verify_token"],
                app_secret=data["app_secret"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc, SERVICE_FIELD_MAP)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(ANCHOR)
        else:
            _report_outcome(request, account, _("WhatsApp credentials saved."))
            return back_to_settings(ANCHOR)
    return render_settings(request, clinic, credentials_form=form)


@clinic_admin_action
def check_connection(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    try:
        account = services.whatsapp_check_connection(clinic=clinic)
    except WhatsAppError as exc:
        messages.error(request, exc.detail)
    else:
        _report_outcome(request, account, _("Connection checked."))
    return back_to_settings(ANCHOR)


def _register(
    request: HttpRequest,
    clinic: Clinic,
    *,
    phone: str,
    otp_method: str,
    waba_id: str,
    access_token: str | None,
) -> WhatsAppAccount:
    return services.whatsapp_register_number(
        clinic=clinic,
        phone=phone,
        otp_method=otp_method,
        waba_id=waba_id,
        access_token=access_token,
        language=translation.get_language() or "es",
    )


@clinic_admin_action
def register_number(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = RegisterForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            _register(
                request,
                clinic,
                phone=data["phone"],
                otp_method=data["otp_method"],
                waba_id=data["waba_id"],
                access_token=data["access_token"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc, SERVICE_FIELD_MAP)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(ANCHOR)
        else:
            messages.success(request, _("Meta is sending the code. Enter it below."))
            return back_to_settings(ANCHOR)
    return render_settings(request, clinic, register_form=form)


@clinic_admin_action
def resend_code(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    account = services.whatsapp_account_for(clinic)
    form = ResendForm(request.POST)
    if not form.is_valid() or not (account.number and account.business_account_id):
        messages.error(request, _("Register the number first."))
        return back_to_settings(ANCHOR)
    try:
        _register(
            request,
            clinic,
            phone=account.number,
            otp_method=form.cleaned_data["otp_method"],
            waba_id=account.business_account_id,
            access_token=None,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except WhatsAppError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, _("Meta is sending a new code."))
    return back_to_settings(ANCHOR)


@clinic_admin_action
def verify_code(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = VerifyForm(request.POST)
    if form.is_valid():
        try:
            account = services.whatsapp_verify_code(clinic=clinic, code=form.cleaned_data["code"])
        except ValidationError as exc:
            add_service_errors(form, exc, SERVICE_FIELD_MAP)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(ANCHOR)
        else:
            if account.status == WhatsAppStatus.ACTIVE:
                messages.success(request, _("The number is verified and active."))
            else:
                messages.info(request, account.detail or _("The code was right. Waiting for Meta."))
            return back_to_settings(ANCHOR)
    return render_settings(request, clinic, verify_form=form)


@clinic_admin_action
def deregister(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    account = services.whatsapp_account_for(clinic)
    form = DeregisterForm(request.POST, number=account.number)
    if form.is_valid():
        try:
            services.whatsapp_deregister(clinic=clinic)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(ANCHOR)
        messages.success(request, _("The number was disconnected and the bot turned off."))
        return back_to_settings(ANCHOR)
    return render_settings(request, clinic, deregister_form=form)
