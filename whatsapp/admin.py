"""WhatsApp in the Django admin: the connection inline of a clinic, webhook deliveries read-only.

No secret is ever a form field's initial value: the encrypted columns are
excluded from every ModelForm (their value is plaintext in memory), the token
is shown masked, and a write-only field replaces it through the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from common.forms import NormalizedFormMixin
from common.masking import mask_secret

from . import validators
from .forms import optional_secret
from .models import (
    HealthVerdict,
    WebhookDelivery,
    WhatsAppAccount,
    WhatsAppAlert,
    WhatsAppHealth,
    WhatsAppStatus,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

ENCRYPTED_FIELDS = ("access_token", "verify_token", "app_secret", "registration_pin")


def status_badge(status: str) -> SafeString:
    """The connection status as a coloured pill (styles in static/clinics/admin.css)."""
    try:
        label = str(WhatsAppStatus(status).label)
    except ValueError:
        label = status
    return format_html('<span class="wa-badge wa-badge--{}">{}</span>', status, label)


def verdict_badge(health: WhatsAppHealth | None) -> SafeString:
    """The health verdict as a pill (`unknown` before the first check)."""
    verdict = health.verdict if health is not None and health.checked_at else HealthVerdict.UNKNOWN
    return format_html('<span class="wa-badge wa-badge--{}">{}</span>', verdict, HealthVerdict(verdict).label)


def _write_only(label: StrOrPromise, help_text: StrOrPromise) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        help_text=help_text,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )


class WhatsAppAccountAdminForm(NormalizedFormMixin, forms.ModelForm[WhatsAppAccount]):
    """Ids as ordinary fields; secrets only as empty write-only fields (blank keeps what is stored)."""

    new_access_token = _write_only(_("New access token"), _("Leave blank to keep the stored token."))
    new_app_secret = _write_only(_("New app secret"), _("Leave blank to keep the stored app secret."))

    class Meta:
        model = WhatsAppAccount
        fields = ("phone_number_id", "business_account_id")

    normalizers = {
        "phone_number_id": validators.normalize_optional_meta_id,
        "business_account_id": validators.normalize_optional_meta_id,
        "new_access_token": optional_secret,
        "new_app_secret": optional_secret,
    }


class WhatsAppAccountInline(admin.StackedInline[WhatsAppAccount, Any]):
    """Saved by ClinicAdmin.save_formset through whatsapp.services, never by ModelForm.save()."""

    model = WhatsAppAccount
    form = WhatsAppAccountAdminForm
    can_delete = False
    extra = 0
    max_num = 1
    min_num = 1
    verbose_name = _("WhatsApp connection")
    verbose_name_plural = _("WhatsApp connection")
    fields = (
        "status_display",
        "number",
        "detail_display",
        "meta_code",
        "phone_number_id",
        "business_account_id",
        "proven_business_account_id",
        "masked_token",
        "new_access_token",
        "app_secret_state",
        "new_app_secret",
        "masked_verify_token",
        "status_checked_at",
        "connected_at",
        "subscribed_at",
    )
    readonly_fields = (
        "status_display",
        "number",
        "detail_display",
        "meta_code",
        "proven_business_account_id",
        "masked_token",
        "app_secret_state",
        "masked_verify_token",
        "status_checked_at",
        "connected_at",
        "subscribed_at",
    )

    @admin.display(description=_("status"))
    def status_display(self, obj: WhatsAppAccount) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description=_("detail"))
    def detail_display(self, obj: WhatsAppAccount) -> str:
        # Rendered in the admin's language, whatever request or event caused it.
        return obj.detail or "—"

    @admin.display(description=_("access token"))
    def masked_token(self, obj: WhatsAppAccount) -> str:
        return obj.masked_access_token or str(_("None stored"))

    @admin.display(description=_("app secret"))
    def app_secret_state(self, obj: WhatsAppAccount) -> str:
        return str(_("Stored")) if obj.app_secret else str(_("None stored"))

    @admin.display(description=_("webhook verify token"))
    def masked_verify_token(self, obj: WhatsAppAccount) -> str:
        return mask_secret(obj.verify_token) or str(_("None stored"))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Records kept as evidence: nobody adds, edits or deletes them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """What Meta sent, as received, and how far its processing got: evidence, so read-only."""

    list_display = (
        "received_at",
        "clinic",
        "fields",
        "state",
        "progress",
        "attempts",
        "outcome",
        "processed_at",
    )
    list_filter = ("state", "fields", "received_at")
    search_fields = ("clinic__name", "clinic__slug", "dedupe_key", "outcome")
    list_select_related = ("clinic",)
    readonly_fields = (
        "id",
        "clinic",
        "dedupe_key",
        "fields",
        "raw_body",
        "received_at",
        "state",
        "attempts",
        "events_total",
        "events_done",
        "next_attempt_at",
        "lease_expires_at",
        "last_error",
        "processed_at",
        "outcome",
        "signed_with_clinic_secret",
    )
    date_hierarchy = "received_at"

    @admin.display(description=_("events done"))
    def progress(self, obj: WebhookDelivery) -> str:
        if obj.events_total is None:
            return "—"
        return f"{obj.events_done} / {obj.events_total}"


@admin.register(WhatsAppAlert)
class WhatsAppAlertAdmin(ReadOnlyAdmin):
    """The warnings recorded for clinics' admins and whether the e-mail went out: read-only."""

    list_display = ("created_at", "clinic", "kind", "key", "state", "notified_at", "attempts", "last_error")
    list_filter = ("kind", "state", "created_at")
    search_fields = ("clinic__name", "clinic__slug", "key")
    list_select_related = ("clinic",)
    readonly_fields = (*list_display, "params", "next_attempt_at", "lease_expires_at")
