"""The pages of the bot's side of the number: `/conversations/` and the settings page's "Bot" step.

Thin views over messaging's services, like the API's: the clinic is always the
signed-in member's; a conversation or delivery of another clinic is a 404.
Members read the conversations and clear `needs_human`; the bot's URL, its test,
its secret and redelivery are for the clinic's admins. A secret is shown in full
only in the answer to the POST that created it (never through a redirect or a
cookie), like the API's 14b.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from common.forms import add_service_errors
from messaging.bot_endpoint import bot_endpoint_ping, bot_endpoint_rotate_secret, bot_endpoint_save_url
from messaging.exceptions import BotDeliveryNotDeadError
from messaging.models import (
    BotDelivery,
    BotEndpoint,
    BotEndpointStatus,
    Conversation,
    Message,
    MessageTemplate,
    TemplateStatus,
)
from messaging.outbox import bot_delivery_redeliver
from messaging.selectors import bot_deliveries_of, bot_delivery_counts, conversations_of
from messaging.sending import IdempotencyConflictError, SendRefusedError, SendRequest, message_send
from messaging.services import conversation_clear_needs_human

from .models import Clinic
from .permissions import ClinicAccessDenied, clinic_for_member
from .simulated_meta import simulated_patient_message
from .views import clinic_admin_action, render_settings

BOT_STEP_ANCHOR = "bot-step"
# Conversations per page, and the latest messages shown of each.
CONVERSATIONS_PER_PAGE = 20
MESSAGES_SHOWN = 50
# Dead deliveries listed on the settings page (the API's 18 pages through all of them).
DEAD_SHOWN = 20
# Parameter inputs offered beside the template picker (a template needs at most this many here).
TEMPLATE_PARAM_INPUTS = 10


class BotUrlForm(forms.Form):
    url = forms.CharField(
        label=gettext_lazy("Bot URL"),
        max_length=2048,
        required=False,
        help_text=gettext_lazy(
            "Where the bot receives patients' messages (https://). Empty removes the bot."
        ),
    )


class PatientMessageForm(forms.Form):
    text = forms.CharField(label=gettext_lazy("Message from the patient"), max_length=4096)


def bot_step_context(
    clinic: Clinic, *, new_secret: str | None = None, url_form: BotUrlForm | None = None
) -> dict[str, Any]:
    """What the "Bot" step shows: the endpoint, its counts, the dead deliveries, a new secret once."""
    endpoint = BotEndpoint.objects.filter(clinic=clinic).first()
    return {
        "bot_endpoint": endpoint,
        "bot_status": BotEndpointStatus(endpoint.status if endpoint else BotEndpointStatus.NONE),
        "bot_counts": bot_delivery_counts(clinic_id=clinic.pk),
        "bot_dead": list(
            bot_deliveries_of(clinic_id=clinic.pk, state="dead").order_by("-created_at")[:DEAD_SHOWN]
        ),
        "bot_new_secret": new_secret,
        "bot_url_form": url_form or BotUrlForm(initial={"url": endpoint.url if endpoint else ""}),
        "patient_form": PatientMessageForm(),
    }


def _back_to_bot_step() -> HttpResponseRedirect:
    return redirect(reverse("clinics:settings") + f"#{BOT_STEP_ANCHOR}")


def _settings_with(request: HttpRequest, clinic: Clinic, **bot_step: Any) -> HttpResponse:
    """The settings page, its "Bot" step showing what this answer carries (a new secret, a form's errors)."""
    request.bot_step = bot_step_context(clinic, **bot_step)  # type: ignore[attr-defined]
    return render_settings(request, clinic)


@clinic_admin_action
def bot_url_update(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    form = BotUrlForm(request.POST)
    if form.is_valid():
        try:
            saved = bot_endpoint_save_url(clinic_id=clinic.pk, url=form.cleaned_data["url"])
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, _("The bot's URL was saved. Test it to make it live."))
            if saved.new_secret:
                return _settings_with(request, clinic, new_secret=saved.new_secret)
            return _back_to_bot_step()
    response = _settings_with(request, clinic, url_form=form)
    response.status_code = 400
    return response


@clinic_admin_action
def bot_test(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    try:
        result = bot_endpoint_ping(clinic_id=clinic.pk)
    except ValidationError:
        messages.error(request, _("Save the bot's URL first."))
        return _back_to_bot_step()
    if result.live:
        messages.success(request, _("The bot answered the signed test: it is live."))
    elif result.status_code is not None:
        messages.error(
            request,
            _("The bot answered HTTP %(status)s; it must answer 2xx.") % {"status": result.status_code},
        )
    else:
        messages.error(request, _("The bot could not be reached (%(error)s).") % {"error": result.error})
    return _back_to_bot_step()


@clinic_admin_action
def bot_secret_rotate(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    secret = bot_endpoint_rotate_secret(clinic_id=clinic.pk)
    messages.success(
        request, _("A new signing secret was made; the previous one keeps signing for 24 hours.")
    )
    return _settings_with(request, clinic, new_secret=secret)


@clinic_admin_action
def bot_redeliver(request: HttpRequest, clinic: Clinic, delivery_id: UUID) -> HttpResponse:
    try:
        bot_delivery_redeliver(clinic_id=clinic.pk, delivery_id=delivery_id)
    except BotDelivery.DoesNotExist:
        raise Http404 from None
    except BotDeliveryNotDeadError:
        messages.error(request, _("Only a dead delivery can be redelivered."))
    else:
        messages.success(request, _("The delivery is queued again."))
    return _back_to_bot_step()


@clinic_admin_action
def patient_message(request: HttpRequest, clinic: Clinic) -> HttpResponse:
    """With Meta simulated: the fake Meta posts a signed patient message to this clinic's webhook."""
    form = PatientMessageForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Write the patient's message first."))
    elif simulated_patient_message(
        clinic.whatsapp,
        form.cleaned_data["text"],
        webhook_url=request.build_absolute_uri(clinic.whatsapp.webhook_path),
    ):
        messages.success(request, _("The simulated Meta sent the patient's message to the webhook."))
    else:
        messages.error(request, _("The simulated Meta is not running, or the number is not connected."))
    return _back_to_bot_step()


# --- /conversations/ ---------------------------------------------------------------------------


def _member_clinic(request: HttpRequest) -> Clinic | HttpResponse:
    try:
        return clinic_for_member(request.user)
    except ClinicAccessDenied as denied:
        return render(request, "clinics/no_clinic.html", {"problem": denied.message}, status=403)


class AnswerForm(forms.Form):
    """A member's answer: a text inside the window, otherwise a template ("name" in the clinic's language) and its params."""

    idempotency_key = forms.CharField(max_length=255, widget=forms.HiddenInput)
    text = forms.CharField(label=gettext_lazy("Answer"), max_length=4096, required=False, strip=False)
    template = forms.CharField(label=gettext_lazy("Template"), max_length=512, required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if bool(cleaned.get("text", "").strip()) == bool(cleaned.get("template")):
            raise ValidationError(_("Write an answer, or pick a template."))
        return cleaned


def _answer_templates(clinic: Clinic) -> list[MessageTemplate]:
    """The templates a member may pick: approved by Meta, in the clinic's language."""
    return list(
        MessageTemplate.objects.filter(
            clinic=clinic, status=TemplateStatus.APPROVED, language=clinic.language
        ).order_by("name")
    )


def _render_conversations(
    request: HttpRequest,
    clinic: Clinic,
    *,
    answer_errors: dict[UUID, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    rows = conversations_of(clinic_id=clinic.pk).order_by("-needs_human", "-last_message_at", "pk")
    page = Paginator(rows, CONVERSATIONS_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    errors = answer_errors or {}
    conversations = []
    for conversation in page:
        latest = list(
            Message.objects.filter(conversation=conversation).order_by("-sequence")[:MESSAGES_SHOWN]
        )
        answer = {
            "window_open": conversation.window_is_open(now),
            # A new key for each form shown: a double submit of this form sends once.
            "key": uuid4().hex,
            "error": errors.get(conversation.pk),
        }
        conversations.append((conversation, list(reversed(latest)), answer))
    response = render(
        request,
        "clinics/conversations.html",
        {
            "clinic": clinic,
            "page": page,
            "conversations": conversations,
            "answer_templates": _answer_templates(clinic),
            "param_inputs": range(1, TEMPLATE_PARAM_INPUTS + 1),
        },
        status=status,
    )
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@login_required
@require_GET
def conversations_page(request: HttpRequest) -> HttpResponse:
    """The clinic's conversations: those needing a person first, then the newest; each with its latest messages."""
    clinic = _member_clinic(request)
    if isinstance(clinic, HttpResponse):
        return clinic
    return _render_conversations(request, clinic)


def _answer_request(
    conversation: Conversation, form: AnswerForm, params: list[str], language: str
) -> SendRequest:
    # By phone when Meta gave it, else by the BSUID it names the patient with.
    patient = conversation.wa_id or conversation.user_id
    if form.cleaned_data["text"].strip():
        return SendRequest(to=patient, text=form.cleaned_data["text"])
    while params and not params[-1].strip():
        params.pop()  # the inputs the template does not need
    return SendRequest(
        to=patient,
        template_name=form.cleaned_data["template"],
        template_language=language,
        template_params=tuple(params),
    )


def _answer(
    request: HttpRequest, clinic: Clinic, conversation: Conversation, form: AnswerForm
) -> tuple[str | None, int]:
    """Send the member's answer; the sentence and HTTP status of a refusal, or `(None, 202)`."""
    if not form.is_valid():
        return " ".join(str(error) for errors in form.errors.values() for error in errors), 400
    params = [value[:1024] for value in request.POST.getlist("param")[:TEMPLATE_PARAM_INPUTS]]
    try:
        message_send(
            clinic_id=clinic.pk,
            request=_answer_request(conversation, form, params, clinic.language),
            idempotency_key=form.cleaned_data["idempotency_key"],
            sent_by=request.user.email,  # type: ignore[union-attr]
        )
    except SendRefusedError as exc:
        return exc.detail, exc.status
    except IdempotencyConflictError:
        return _("This form was already sent with another answer. Write it again."), 409
    return None, 202


@never_cache
@login_required
@require_POST
def conversation_answer(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """A member answers the patient through the same service as endpoint 16, signed with their e-mail."""
    clinic = _member_clinic(request)
    if isinstance(clinic, HttpResponse):
        return clinic
    conversation = conversations_of(clinic_id=clinic.pk).filter(pk=conversation_id).first()
    if conversation is None:
        raise Http404
    form = AnswerForm(request.POST)
    problem, status = _answer(request, clinic, conversation, form)
    if problem is not None:
        return _render_conversations(request, clinic, answer_errors={conversation.pk: problem}, status=status)
    messages.success(request, _("The answer is queued for the patient."))
    return redirect(reverse("clinics:conversations") + f"#conversation-{conversation_id}")


@login_required
@require_POST
def conversation_clear(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """A member has seen to the patient: the conversation no longer needs a person."""
    clinic = _member_clinic(request)
    if isinstance(clinic, HttpResponse):
        return clinic
    try:
        conversation_clear_needs_human(clinic_id=clinic.pk, conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        raise Http404 from None
    messages.success(request, _("The conversation no longer needs a person."))
    return redirect(reverse("clinics:conversations") + f"#conversation-{conversation_id}")
