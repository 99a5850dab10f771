"""The settings page: one server-rendered page, one small POST view per form (Post/Redirect/Get).

Every view reads the clinic from the signed-in user (clinics.permissions), never
from the URL or the form, and calls the same service as the API. Invalid input
re-renders the page with the errors next to the fields; a WhatsApp domain error
(Meta refused, unreachable, wrong state, a limit) becomes a message with the
service's `detail`; success redirects back to the page.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from common.forms import add_service_errors
from common.validators import format_international
from whatsapp import health as whatsapp_health
from whatsapp import health_words
from whatsapp import services as whatsapp_services
from whatsapp.exceptions import WhatsAppError
from whatsapp.forms import (
    AccountForm,
    CredentialsForm,
    DeregisterForm,
    PinForm,
    RegisterForm,
    ResendForm,
    VerifyForm,
)
from whatsapp.health_serializers import HEALTH_SHAPE
from whatsapp.models import HealthVerdict, WhatsAppAccount, WhatsAppStatus

from . import choices, services
from .forms import BotForm, ClinicProfileForm, EmailAuthenticationForm, RevokeTokensForm
from .models import Clinic
from .permissions import ClinicAccessDenied, clinic_for_admin, clinic_for_member
from .selectors import api_tokens_of, whatsapp_account_of
from .simulated_meta import simulated_code, simulated_numbers

# Register/deregister budget is worth showing once it gets low or the number is in flux.
ATTEMPTS_WORTH_SHOWING = 5
WHATSAPP_ANCHOR = "whatsapp"
HEALTH_ANCHOR = "health"
TOKENS_ANCHOR = "api-tokens"
# Input a form sent back with errors, kept so that a language switch (or a reload) shows it again.
UNSAVED_KEY = "settings_unsaved"
RESTORE_KEY = "settings_restore"

# The simulated Meta's number states (its raw CONNECTED, PENDING...) in plain words.
SIMULATED_STATES = {
    "CONNECTED": gettext_lazy("already on the WhatsApp Cloud API"),
    "PENDING": gettext_lazy("not on the WhatsApp Cloud API yet"),
    "DISCONNECTED": gettext_lazy("taken off the WhatsApp Cloud API"),
}

View = Callable[..., HttpResponse]


def clinic_admin_action(view: View) -> View:
    """POST only, signed in, an admin of an active clinic: else 403, whatever the page showed.

    A GET (a reload after a form error, a language switch) is no dead end: it goes back
    to the page, keeping any message.
    """

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            # The page this GET replaces showed a form with errors: show its input again.
            if UNSAVED_KEY in request.session:
                request.session[RESTORE_KEY] = request.session.pop(UNSAVED_KEY)
            return back_to_settings()
        request.session.pop(UNSAVED_KEY, None)
        try:
            clinic = clinic_for_admin(request.user)
        except ClinicAccessDenied as denied:
            raise PermissionDenied(denied.message) from None
        return view(request, clinic, *args, **kwargs)

    return wrapper


def back_to_settings(anchor: str = "") -> HttpResponseRedirect:
    return redirect(reverse("clinics:settings") + (f"#{anchor}" if anchor else ""))


def _stash_unsaved(request: HttpRequest, bound: dict[str, forms.Form]) -> None:
    """Keep what was typed in a form sent back with errors (never a secret) for the next page."""
    for name, form in bound.items():
        if name not in FORM_FACTORIES or not form.is_bound:
            continue
        keep = [
            field.name
            for field in form
            if not isinstance(field.field.widget, forms.PasswordInput) and field.name in form.data
        ]
        data = form.data
        values = {key: data.getlist(key) if isinstance(data, QueryDict) else [data[key]] for key in keep}
        request.session[UNSAVED_KEY] = {"form": name, "data": values}


def _restored_form(request: HttpRequest, clinic: Clinic) -> dict[str, forms.Form]:
    """The form kept by _stash_unsaved, bound again (its errors now in the page's language)."""
    kept = request.session.pop(RESTORE_KEY, None)
    if not isinstance(kept, dict) or kept.get("form") not in FORM_FACTORIES:
        return {}
    data = QueryDict(mutable=True)
    for key, values in (kept.get("data") or {}).items():
        data.setlist(key, [str(value) for value in values])
    form = FORM_FACTORIES[kept["form"]](clinic, data)
    form.is_valid()
    messages.warning(request, _("What you typed is shown again below; it is not saved yet."))
    return {kept["form"]: form}


def render_settings(
    request: HttpRequest, clinic: Clinic, *, restored: bool = False, **bound: forms.Form
) -> HttpResponse:
    """The whole page; `bound` replaces a default form by a submitted one with its errors."""
    if not restored:
        _stash_unsaved(request, bound)
    # Without JavaScript a reload shows what polling would: the service asks Meta at
    # most once per few seconds, and only in states that can still move.
    report = whatsapp_services.whatsapp_refresh_status(account=whatsapp_account_of(clinic))
    account = WhatsAppAccount.objects.get(pk=whatsapp_account_of(clinic).pk)
    is_admin = request.user.is_clinic_admin  # type: ignore[union-attr]
    in_flux = account.status in (WhatsAppStatus.PENDING_OTP, WhatsAppStatus.VERIFYING)
    attempts_left = None
    if account.status != WhatsAppStatus.ACTIVE:
        left = whatsapp_services.whatsapp_attempts_left(account=account)
        if left is not None and (left <= ATTEMPTS_WORTH_SHOWING or in_flux):
            attempts_left = left

    initial = {name: getattr(clinic, name) for name in services.PROFILE_FIELDS}
    initial["phone"] = format_international(clinic.phone)
    profile_form = bound.get("profile_form") or _profile_form(clinic, initial=initial)
    credentials_form = bound.get("credentials_form") or CredentialsForm(
        has_token=account.has_access_token,
        initial={
            "phone_number_id": account.phone_number_id,
            "business_account_id": account.business_account_id,
        },
    )
    account_form = bound.get("account_form") or AccountForm(
        initial={"business_account_id": account.business_account_id}
    )
    register_form = bound.get("register_form") or RegisterForm(
        initial={
            "number": account.number,
            "business_account_id": account.business_account_id,
            "otp_method": "sms",
        }
    )
    panel = whatsapp_health.whatsapp_health_panel(account=account)
    health_body = HEALTH_SHAPE.render(panel.health)
    context = {
        "health": panel.health,
        "health_state": panel.state,
        "health_body": health_body,
        "health_verdict_label": HealthVerdict(health_body["verdict"]).label,
        # The last result's problems only while it stands: not while it is being refreshed.
        "health_problems": [check for check in health_body["checks"] if check["detail"]]
        if panel.state == "current"
        else [],
        "health_quality": health_words.quality_words(panel.health.quality_rating),
        "health_limit": health_words.limit_words(panel.health.messaging_limit),
        "health_name": health_words.name_words(panel.health.name_status),
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
        "account_form": account_form,
        # A form sent back with its errors stays on screen, whatever step the clinic is at.
        "step": "number"
        if "register_form" in bound
        else "code"
        if "verify_form" in bound
        else _connection_step(account),
        "credentials_ready": bool(account.access_token and account.business_account_id),
        "simulated_numbers": _simulated_numbers(account) if is_admin else [],
        "recheck": _needs_recheck(account),
        "country_display": choices.country_label(clinic.country) if clinic.country else "",
        "timezone_display": choices.timezone_display(clinic.timezone),
        "currency_display": choices.currency_display(clinic.currency),
        "simulated_code": simulated_code(account.phone_number_id) if account.may_verify else None,
        "register_form": register_form,
        "verify_form": bound.get("verify_form") or VerifyForm(),
        "pin_form": bound.get("pin_form") or PinForm(new_pin=not account.needs_existing_pin),
        "show_pin": account.may_set_pin,
        "deregister_form": bound.get("deregister_form") or DeregisterForm(number=account.number),
        # While a code is awaited the verify step (with "send a new code") replaces the register form.
        "show_register": account.may_register and not account.may_verify,
        "show_verify": account.may_verify,
        "poll": is_admin and in_flux,
        "can_deregister": account.may_deregister,
        # Every member manages their own tokens, staff included.
        "api_tokens": list(api_tokens_of(request.user)),  # type: ignore[arg-type]
        "token_ttl_days": settings.API_TOKEN_TTL_DAYS,
    }
    status = 400 if bound and not restored else 200
    # The page's times in the clinic's time zone.
    with timezone.override(clinic.timezone):
        context["health_notes"] = whatsapp_health.whatsapp_health_notes(account=account)
        response = render(request, "clinics/settings.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    try:
        clinic = clinic_for_member(request.user)
    except ClinicAccessDenied as denied:
        return render(request, "clinics/no_clinic.html", {"problem": denied.message}, status=403)
    if not request.user.is_clinic_admin:  # type: ignore[union-attr]
        request.session.pop(RESTORE_KEY, None)
        return render_settings(request, clinic)
    return render_settings(request, clinic, restored=True, **_restored_form(request, clinic))


def _simulated_numbers(account: WhatsAppAccount) -> list[dict[str, Any]]:
    # A PIN the clinic keeps is its own (never shown), not "from another provider".
    kept = whatsapp_services.whatsapp_numbers_with_kept_pin(account=account)
    return [
        {
            **vars(number),
            "state": SIMULATED_STATES.get(number.status, number.status.lower()),
            "has_pin": number.has_pin and number.id not in kept,
        }
        for number in simulated_numbers(account.business_account_id)
    ]


def _needs_recheck(account: WhatsAppAccount) -> bool:
    """Credentials of a number already on the Cloud API were saved, but Meta could not be asked."""
    return (
        account.status == WhatsAppStatus.DISCONNECTED
        and bool(account.phone_number_id)
        and "check.unreachable" in account.detail_keys
    )


def _connection_step(account: WhatsAppAccount) -> str:
    """Where the clinic is in 1 credentials -> 2 number -> 3 code -> connected (the page shows that step)."""
    if account.status == WhatsAppStatus.ACTIVE:
        return "connected"
    if account.needs_existing_pin:
        return "pin"
    if account.may_verify:
        return "code"
    if account.status == WhatsAppStatus.VERIFYING:
        return "waiting"
    if _needs_recheck(account):
        # Not the register step: the clinic chose "already on the Cloud API"; Meta has to confirm it.
        return "credentials"
    if account.access_token and account.business_account_id:
        return "number"
    return "credentials"


def _profile_form(clinic: Clinic, **kwargs: Any) -> ClinicProfileForm:
    return ClinicProfileForm(
        country=clinic.country,
        current_timezone=clinic.timezone,
        current_currency=clinic.currency,
        **kwargs,
    )


@clinic_admin_action
def profile_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = _profile_form(clinic, data=request.POST)
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


@login_required
def api_tokens_revoke(request: HttpRequest) -> HttpResponse:
    """A user ends one of their own API tokens, or all of them (any member: they are the user's own)."""
    if request.method != "POST":
        return back_to_settings()  # no dead end, as for every action of the page
    form = RevokeTokensForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("That is not one of your tokens."))
        return back_to_settings(TOKENS_ANCHOR)
    count = services.api_tokens_revoke(
        user=request.user,  # type: ignore[arg-type]  # login_required: a signed-in User
        token_id=form.cleaned_data["token"],
    )
    if count:
        messages.success(
            request,
            ngettext("%(count)d API token revoked.", "%(count)d API tokens revoked.", count)
            % {"count": count},
        )
    else:
        messages.info(request, _("No token was revoked: it had already ended."))
    return back_to_settings(TOKENS_ANCHOR)


# --- WhatsApp ------------------------------------------------------------------------------


def _report_outcome(request: HttpRequest, account: WhatsAppAccount, success: str) -> None:
    """Success, or where to read why Meta did not confirm: the status box says it (once)."""
    if account.status == WhatsAppStatus.FAILED:
        messages.error(request, _("Meta did not accept the connection; the reason is under the status."))
    elif _needs_recheck(account):
        messages.warning(request, _("Saved, but Meta could not be reached to confirm the number."))
    elif account.detail:
        messages.info(request, success)
    else:
        messages.success(request, success)


@clinic_admin_action
def whatsapp_credentials_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = CredentialsForm(request.POST, has_token=whatsapp_account_of(clinic).has_access_token)
    if form.is_valid():
        try:
            account = whatsapp_services.whatsapp_configure(
                account=whatsapp_account_of(clinic), **form.credentials()
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        else:
            _report_outcome(request, account, _("WhatsApp credentials saved."))
            return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, credentials_form=form)


@clinic_admin_action
def whatsapp_account_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    """Step 1 for a new number: the WhatsApp Business Account and the token, asked once."""
    form = AccountForm(request.POST)
    if form.is_valid():
        try:
            # No number yet, so nothing to ask Meta: the register step uses these.
            whatsapp_services.whatsapp_store_credentials(
                account=whatsapp_account_of(clinic), **form.cleaned_data
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        else:
            messages.success(request, _("Saved. Now the number to connect."))
            return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, account_form=form)


@clinic_admin_action
def whatsapp_check(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    try:
        account = whatsapp_services.whatsapp_check_connection(account=whatsapp_account_of(clinic))
    except WhatsAppError as exc:
        messages.error(request, exc.detail)
    else:
        _report_outcome(request, account, _("Connection checked."))
    return back_to_settings(WHATSAPP_ANCHOR)


@clinic_admin_action
def whatsapp_health_check(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    """The page's one "Check now": the number's status at Meta, then the health checks (the same
    service and once-a-minute limit as the API's `POST /api/clinics/whatsapp/health/`)."""
    try:
        account = whatsapp_account_of(clinic)
        if account.may_check_connection:
            account = whatsapp_services.whatsapp_check_connection(account=account)
        health = whatsapp_health.whatsapp_health_run_now(account=account)
    except WhatsAppError as exc:
        messages.error(request, exc.detail)
    else:
        if health.checked_at:
            messages.info(request, _("Checked: %(verdict)s.") % {"verdict": health.get_verdict_display()})
        else:
            messages.info(request, _("No number is connected yet: there is nothing to check."))
    return back_to_settings(HEALTH_ANCHOR)


@clinic_admin_action
def whatsapp_register(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = RegisterForm(request.POST)
    if form.is_valid():
        try:
            whatsapp_services.whatsapp_register_number(
                account=whatsapp_account_of(clinic),
                verified_name=clinic.name,
                language=translation.get_language() or "es",
                **form.cleaned_data,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        else:
            messages.success(request, _("Meta is sending the code. Enter it below."))
            return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, register_form=form)


@clinic_admin_action
def whatsapp_resend(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = ResendForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose SMS or a voice call."))
        return back_to_settings(WHATSAPP_ANCHOR)
    try:
        whatsapp_services.whatsapp_resend_code(
            account=whatsapp_account_of(clinic),
            otp_method=form.cleaned_data["otp_method"],
            verified_name=clinic.name,
            language=translation.get_language() or "es",
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except WhatsAppError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, _("Meta is sending a new code."))
    return back_to_settings(WHATSAPP_ANCHOR)


@clinic_admin_action
def whatsapp_verify(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = VerifyForm(request.POST)
    if form.is_valid():
        try:
            account = whatsapp_services.whatsapp_verify_code(
                account=whatsapp_account_of(clinic), code=form.cleaned_data["code"]
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        else:
            if account.status == WhatsAppStatus.ACTIVE:
                messages.success(request, _("The number is verified and active."))
            else:
                messages.info(request, account.detail or _("The code was right. Waiting for Meta."))
            return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, verify_form=form)


@clinic_admin_action
def whatsapp_pin(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = PinForm(request.POST)
    if form.is_valid():
        try:
            account = whatsapp_services.whatsapp_set_pin(
                account=whatsapp_account_of(clinic), pin=form.cleaned_data["pin"]
            )
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        if account.status == WhatsAppStatus.ACTIVE:
            messages.success(request, account.detail or _("The number is registered and active."))
        else:
            messages.info(request, account.detail or _("Waiting for Meta to confirm the number."))
        return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, pin_form=form)


@clinic_admin_action
def whatsapp_deregister(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = DeregisterForm(request.POST, number=whatsapp_account_of(clinic).number)
    if form.is_valid():
        try:
            services.clinic_whatsapp_deregister(clinic=clinic)
        except WhatsAppError as exc:
            messages.error(request, exc.detail)
            return back_to_settings(WHATSAPP_ANCHOR)
        messages.success(request, _("The number was disconnected and the bot turned off."))
        return back_to_settings(WHATSAPP_ANCHOR)
    return render_settings(request, clinic, deregister_form=form)


# How each of the page's forms is made from posted data (for input kept across a language switch).
FORM_FACTORIES: dict[str, Callable[[Clinic, QueryDict], forms.Form]] = {
    "profile_form": lambda clinic, data: _profile_form(clinic, data=data),
    "bot_form": lambda clinic, data: BotForm(data),
    "credentials_form": lambda clinic, data: CredentialsForm(
        data, has_token=clinic.whatsapp.has_access_token
    ),
    "account_form": lambda clinic, data: AccountForm(data),
    "register_form": lambda clinic, data: RegisterForm(data),
    "verify_form": lambda clinic, data: VerifyForm(data),
    "deregister_form": lambda clinic, data: DeregisterForm(data, number=clinic.whatsapp.number),
}


class SignInView(LoginView):
    """Django's sign-in view with an e-mail field; the attempt limit is django-axes' (clinics/signin.py)."""

    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True


@never_cache
@login_required
@require_GET
def activity_page(request: HttpRequest) -> HttpResponse:
    """The clinic's activity (its audit trail), newest first, for its admins; staff get 403."""
    try:
        clinic = clinic_for_admin(request.user)
    except ClinicAccessDenied as denied:
        return render(request, "clinics/no_clinic.html", {"problem": denied.message}, status=403)
    before = request.GET.get("before", "")
    rows = services.clinic_activity(clinic=clinic, before=int(before) if before.isdigit() else None)
    older = rows[-1].pk if len(rows) == services.ACTIVITY_PAGE_SIZE else None
    return render(request, "clinics/activity.html", {"clinic": clinic, "rows": rows, "older": older})
