"""Django admin for superusers: clinics (with their WhatsApp connection), users, API tokens.

Writes go through the services, as healthchecks' and HackSoft's admins do: a
new clinic is made by clinic_create (slug, WhatsApp account, verify token), the
profile, bot and WhatsApp credentials by clinic_update_settings, the platform
fields by clinic_update_platform_fields, and the actions by the same services
as the API and the page.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from common.forms import NormalizedFormMixin
from common.models import AuditEvent
from whatsapp import services as whatsapp_services
from whatsapp.admin import WhatsAppAccountInline, status_badge, verdict_badge
from whatsapp.exceptions import WhatsAppError
from whatsapp.models import WhatsAppAccount, WhatsAppHealth, WhatsAppStatus

from . import bot_keys, choices, services, validators
from .forms import CanonicalEmailField, PickerField
from .members import LastAdminError, member_change_refusal, user_save_edited
from .models import ApiToken, BotKey, Clinic, User
from .selectors import whatsapp_account_of

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

CREATE_FIELDS = (*services.SETTINGS_CLINIC_FIELDS, *services.PLATFORM_FIELDS)


class ClinicAdminForm(NormalizedFormMixin, forms.ModelForm):
    """The same field rules as the API and the settings page (clinics.validators.CLINIC_NORMALIZERS)."""

    normalizers = validators.CLINIC_NORMALIZERS

    logo_url = forms.URLField(label=_("logo URL"), required=False, max_length=500, assume_scheme="https")
    # The settings page's pickers, named in the admin's language (clinics.choices).
    country = forms.ChoiceField(label=_("country"), required=False)
    timezone = PickerField(label=_("time zone"))
    currency = PickerField(label=_("currency"))

    class Meta:
        model = Clinic
        fields = CREATE_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        clinic = self.instance
        # The chosen country's zones and currency come first (the stored one's on a fresh page).
        country = self.data.get("country", clinic.country) if self.is_bound else clinic.country
        self.fields["country"].choices = choices.country_choices(clinic.country)  # type: ignore[attr-defined]
        self.fields["timezone"].choices = choices.timezone_choices(str(country), clinic.timezone)  # type: ignore[attr-defined]
        self.fields["currency"].choices = choices.currency_choices(str(country), clinic.currency)  # type: ignore[attr-defined]


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    form = ClinicAdminForm
    # Five columns, so the list fits a 1280-pixel screen beside admin's menu and filters:
    # the plan carries its end date, and the WhatsApp column its health under the status.
    list_display = ("name", "city", "plan", "whatsapp_status", "is_active")
    list_filter = ("subscription_plan", "is_active", "whatsapp__status", "whatsapp__health__verdict")
    search_fields = ("name", "slug", "city", "members__email")
    list_select_related = ("whatsapp", "whatsapp__health")
    readonly_fields = ("slug", "created_at", "updated_at")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "slug",
                    "phone",
                    "address",
                    "city",
                    "country",
                    "timezone",
                    "currency",
                    "logo_url",
                    "language",
                )
            },
        ),
        (_("Subscription"), {"fields": ("is_active", "subscription_plan", "subscription_expires_at")}),
        (_("Bot"), {"fields": ("bot_enabled",)}),
        (_("Dates"), {"fields": ("created_at", "updated_at")}),
    )
    actions = ("refresh_whatsapp_status", "deregister_whatsapp")
    inlines = (WhatsAppAccountInline,)

    class Media:
        css = {"all": ("clinics/admin.css",)}

    @admin.display(description=_("Subscription"), ordering="subscription_plan")
    def plan(self, obj: Clinic) -> SafeString:
        if obj.subscription_expires_at is None:
            return format_html("{}", obj.get_subscription_plan_display())
        ends = date_format(timezone.localtime(obj.subscription_expires_at), "SHORT_DATE_FORMAT")
        return format_html(
            '{}<br><span class="wa-muted">{}</span>',
            obj.get_subscription_plan_display(),
            _("until %(date)s") % {"date": ends},
        )

    @admin.display(description=_("WhatsApp"), ordering="whatsapp__status")
    def whatsapp_status(self, obj: Clinic) -> SafeString | str:
        try:
            account = obj.whatsapp
        except WhatsAppAccount.DoesNotExist:
            return "—"
        try:
            health = account.health
        except WhatsAppHealth.DoesNotExist:
            health = None
        # The health verdict under the status: one column for the connection.
        return format_html("{}<br>{}", status_badge(account.status), verdict_badge(health))

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        """A clinic's history is its audit trail (every door writes it; admin's own log saw only admin)."""
        url = reverse("admin:common_auditevent_changelist")
        return HttpResponseRedirect(f"{url}?clinic_id={object_id}")

    def get_inlines(self, request: HttpRequest, obj: Clinic | None) -> list[type]:
        # clinic_create makes the WhatsApp account: none on the add page.
        return list(self.inlines) if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Clinic, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if not change:
            created = services.clinic_create(**{key: data[key] for key in CREATE_FIELDS if key in data})
            # The admin logs and redirects with `obj`: make it the clinic the service made.
            obj.pk = created.pk
            obj.slug = created.slug
            obj._state.adding = False
            obj._state.db = created._state.db
            return
        changed = set(form.changed_data)
        # The form already wrote its values onto `obj`; the services compare against the stored row.
        stored = Clinic.objects.select_related("whatsapp").get(pk=obj.pk)
        settings_data = {key: data[key] for key in services.SETTINGS_CLINIC_FIELDS if key in changed}
        if settings_data:
            services.clinic_update_settings(clinic=stored, data=settings_data)
        platform_data = {key: data[key] for key in services.PLATFORM_FIELDS if key in changed}
        if platform_data:
            services.clinic_update_platform_fields(clinic=stored, data=platform_data)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        if formset.model is not WhatsAppAccount:
            super().save_formset(request, form, formset, change)
            return
        # Never formset.save(): the credentials go through the service that owns them.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        clinic = Clinic.objects.select_related("whatsapp").get(pk=form.instance.pk)
        for account_form in formset.forms:
            if not account_form.has_changed():
                continue
            data = account_form.cleaned_data
            credentials = {
                "phone_number_id": data.get("phone_number_id", ""),
                "business_account_id": data.get("business_account_id", ""),
                "access_token": data["new_access_token"],
                "app_secret": data["new_app_secret"],
            }
            try:
                clinic = services.clinic_update_settings(clinic=clinic, data={}, credentials=credentials)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                continue
            except WhatsAppError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                continue
            # Field labels only (never values) go into the history entry.
            formset.changed_objects.append((clinic.whatsapp, account_form.changed_data))

    @admin.action(description=_("Refresh the WhatsApp status from Meta"))
    def refresh_whatsapp_status(self, request: HttpRequest, queryset: QuerySet[Clinic]) -> None:
        for clinic in queryset:
            try:
                account = whatsapp_services.whatsapp_check_connection(account=whatsapp_account_of(clinic))
            except WhatsAppError as exc:
                self.message_user(request, f"{clinic}: {exc.detail}", messages.ERROR)
                continue
            label = account.get_status_display()
            text = f"{clinic}: {label}" + (f" — {account.detail}" if account.detail else "")
            level = messages.ERROR if account.status == WhatsAppStatus.FAILED else messages.SUCCESS
            self.message_user(request, text, level)

    @admin.action(description=_("Deregister the WhatsApp number (turns the bot off)"))
    def deregister_whatsapp(self, request: HttpRequest, queryset: QuerySet[Clinic]) -> None:
        done = 0
        for clinic in queryset:
            try:
                services.clinic_whatsapp_deregister(clinic=clinic)
            except WhatsAppError as exc:
                self.message_user(request, f"{clinic}: {exc.detail}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d clinic disconnected from WhatsApp.",
                    "%(count)d clinics disconnected from WhatsApp.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )


class ClinicUserCreationForm(AdminUserCreationForm):
    """Django's add form (password twice, or unusable) for a user model whose USERNAME_FIELD is email."""

    class Meta(AdminUserCreationForm.Meta):  # type: ignore[name-defined]  # not in django-stubs
        model = User
        fields = ("email", "full_name", "clinic", "role")
        field_classes = {"email": CanonicalEmailField}

    def clean_email(self) -> str:
        try:
            return services.user_check_new_email(self.cleaned_data.get("email", ""))
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["email"], code="unique") from None


class ClinicUserChangeForm(UserChangeForm):
    """The model canonicalises the e-mail (User.clean) before its uniqueness is checked."""

    class Meta(UserChangeForm.Meta):  # type: ignore[name-defined]  # not in django-stubs
        model = User
        fields = "__all__"
        field_classes = {"email": CanonicalEmailField}

    def clean(self) -> dict[str, Any]:
        """The team's rule as a form error: the clinic's last active admin stays one, and stays."""
        cleaned = super().clean() or self.cleaned_data
        clinic = cleaned.get("clinic")
        refused = member_change_refusal(
            member_id=self.instance.pk,
            clinic_id=clinic.pk if clinic is not None else None,
            role=cleaned.get("role", ""),
            is_active=bool(cleaned.get("is_active")),
        )
        if refused is not None:
            raise ValidationError(str(refused), code="last_admin")
        return cleaned


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = ClinicUserChangeForm
    add_form = ClinicUserCreationForm
    list_display = ("email", "clinic", "clinic_role", "is_active", "is_staff", "is_superuser")
    list_filter = ("role", "is_active", "is_staff", "is_superuser", "clinic")
    list_select_related = ("clinic",)
    search_fields = ("email", "full_name", "clinic__name")
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined")
    autocomplete_fields = ("clinic",)
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Clinic"), {"fields": ("full_name", "clinic", "role")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Dates"), {"fields": ("last_login", "date_joined")}),
    )

    @admin.display(description=_("role"), ordering="role")
    def clinic_role(self, obj: User) -> StrOrPromise:
        """The role in the clinic; without a clinic the stored default role means nothing, so say what they are."""
        if obj.clinic_id is None:
            return _("Site administrator") if obj.is_superuser else _("No clinic")
        return obj.get_role_display()

    # A deleted user's tokens go with it (CASCADE): end them first, with their cached copies.
    def delete_model(self, request: HttpRequest, obj: User) -> None:
        services.api_tokens_end(ApiToken.objects.filter(user=obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        services.api_tokens_end(ApiToken.objects.filter(user__in=queryset))
        super().delete_queryset(request, queryset)

    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "email",
                    "full_name",
                    "clinic",
                    "role",
                    "usable_password",
                    "password1",
                    "password2",
                ),
            },
        ),
    )

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm, change: bool) -> None:
        """Saved by the team's service: its rules (the last admin) and its audit rows."""
        try:
            user_save_edited(user=obj)
        except LastAdminError as exc:  # a change that raced the form's check
            self.message_user(request, str(exc), messages.ERROR)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Only the key's first characters are stored in clear; revoking is deleting."""

    list_display = ("prefix", "user", "created_at", "last_used_at", "expires_at")
    search_fields = ("prefix", "user__email")
    list_select_related = ("user",)
    readonly_fields = ("prefix", "user", "created_at", "last_used_at", "expires_at")
    exclude = ("digest",)
    ordering = ("-created_at",)

    @admin.display(description=_("expires"), ordering="created_at")
    def expires_at(self, obj: ApiToken) -> datetime:
        return obj.expires_at

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Revoking through the service ends the token's cached copies too.
    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        services.api_token_revoke(token=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        services.api_tokens_end(queryset)


@admin.register(BotKey)
class BotKeyAdmin(ApiTokenAdmin):
    """A clinic's bot keys, as its admins see them in 14c: revoking is deleting, the key is never shown."""

    list_display = ("prefix", "name", "clinic", "created_at", "last_used_at")
    search_fields = ("prefix", "clinic__name")
    list_select_related = ("clinic",)
    readonly_fields = ("prefix", "name", "clinic", "created_at", "last_used_at")

    # Revoking is the service's (a bot key has no cached copies, unlike a member's token).
    def delete_model(self, request: HttpRequest, obj: BotKey) -> None:  # type: ignore[override]
        bot_keys.bot_key_revoke(clinic=obj.clinic, prefix=obj.prefix)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BotKey]) -> None:  # type: ignore[override]
        for key in queryset.select_related("clinic"):
            bot_keys.bot_key_revoke(clinic=key.clinic, prefix=key.prefix)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Every clinic's history, read-only: rows are never added, changed or deleted here."""

    list_display = ("at", "clinic", "actor", "door", "action", "changes_shown", "address", "request_id")
    list_filter = ("door", "action")
    search_fields = ("actor", "action", "request_id")
    fields = (
        "at",
        "clinic",
        "actor",
        "door",
        "action",
        "changes_shown",
        "address",
        "request_id",
        "seq",
        "hash",
    )
    readonly_fields = fields
    ordering = ("-id",)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One clinic's history opened (from its "History" button): the reading is recorded too.
        clinic_id = _uuid_or_none(request.GET.get("clinic_id"))
        clinic = Clinic.objects.filter(pk=clinic_id).first() if clinic_id is not None else None
        if clinic is not None:
            services.clinic_activity_record_reading(clinic=clinic)
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("clinic"))
    def clinic(self, obj: AuditEvent) -> str:
        if obj.clinic_id is None:
            return "—"
        return str(Clinic.objects.filter(pk=obj.clinic_id).values_list("name", flat=True).first() or "—")

    @admin.display(description=_("changes"))
    def changes_shown(self, obj: AuditEvent) -> SafeString:
        return format_html_join(mark_safe("<br>"), "{}: {}", obj.change_lines())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
