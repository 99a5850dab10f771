from __future__ import annotations

import secrets
import uuid

from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from common.fields import EncryptedFieldsQuerySet, EncryptedTextField
from common.masking import mask_secret

from .details import Detail
from .meta_errors import PIN_MISMATCH

# The clinic is named, never imported: whatsapp knows nothing of the product above it.
CLINIC_MODEL = "clinics.Clinic"


def new_verify_token() -> str:
    return secrets.token_urlsafe(24)


class WhatsAppStatus(models.TextChoices):
    DISCONNECTED = "disconnected", _("Disconnected")
    PENDING_OTP = "pending_otp", _("Waiting for the code")
    VERIFYING = "verifying", _("Verifying")
    ACTIVE = "active", _("Active")
    FAILED = "failed", _("Failed")


class WhatsAppAccount(models.Model):
    """One clinic's WhatsApp Business connection. Only whatsapp.services changes `status`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.OneToOneField(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="whatsapp"
    )
    # Indexed: webhooks are routed by these ids and by the number.
    phone_number_id = models.CharField(_("phone number id"), max_length=64, blank=True, db_index=True)
    business_account_id = models.CharField(
        _("WhatsApp Business Account id"), max_length=64, blank=True, db_index=True
    )
    access_token = EncryptedTextField(_("access token"), null=True, blank=True)
    verify_token = EncryptedTextField(_("webhook verify token"), null=True, blank=True)
    app_secret = EncryptedTextField(_("app secret"), null=True, blank=True)
    # Meta keeps the first PIN registered on a number and refuses any other (133005),
    # so it is generated once per number and reused; `pin_phone_number_id` says which.
    registration_pin = EncryptedTextField(_("two-step verification PIN"), null=True, blank=True)
    pin_phone_number_id = models.CharField(_("phone number id of the PIN"), max_length=64, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=WhatsAppStatus.choices, default=WhatsAppStatus.DISCONNECTED
    )
    number = models.CharField(_("number"), max_length=20, blank=True, db_index=True)
    # What happened, as message keys rendered in the reader's language (whatsapp.details).
    detail_parts = models.JSONField(_("detail"), default=list, blank=True)
    meta_code = models.IntegerField(_("Meta error code"), null=True, blank=True)
    status_checked_at = models.DateTimeField(_("status checked at"), null=True, blank=True)
    connected_at = models.DateTimeField(_("connected at"), null=True, blank=True)
    subscribed_at = models.DateTimeField(_("subscribed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = EncryptedFieldsQuerySet.as_manager()

    class Meta:
        verbose_name = _("WhatsApp connection")
        verbose_name_plural = _("WhatsApp connections")
        constraints = [
            # One owner per number: a phone number id, and a registered number, belong to
            # at most one clinic, whatever two requests do at the same time.
            # A disconnected clinic may keep an id in its credentials: it no longer holds the number.
            models.UniqueConstraint(
                fields=["phone_number_id"],
                condition=~models.Q(phone_number_id="") & ~models.Q(status="disconnected"),
                name="wa_account_unique_phone_number_id",
            ),
            models.UniqueConstraint(
                fields=["number"], condition=~models.Q(number=""), name="wa_account_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return str(self.get_status_display())

    def __repr__(self) -> str:
        return f"<WhatsAppAccount {self.pk} status={self.status}>"

    @property
    def detail(self) -> str:
        """What happened, in the active language ("" when nothing needs saying)."""
        return Detail.from_json(self.detail_parts).render()

    @property
    def detail_keys(self) -> tuple[str, ...]:
        return Detail.from_json(self.detail_parts).keys

    @property
    def masked_access_token(self) -> str | None:
        return mask_secret(self.access_token)

    @property
    def has_access_token(self) -> bool:
        return bool(self.access_token)

    @property
    def webhook_path(self) -> str:
        return reverse("whatsapp:webhook", kwargs={"clinic_id": self.clinic_id})

    # What the clinic may do now. The services enforce these; the page reads them
    # to show only the actions that would be accepted.

    @property
    def may_register(self) -> bool:
        """A number can be (re)registered unless one is active: deregister that first."""
        return self.status != WhatsAppStatus.ACTIVE

    @property
    def may_resend_code(self) -> bool:
        """A new code for the number being registered: it and its WABA are stored."""
        return self.may_register and bool(self.number and self.business_account_id)

    @property
    def may_verify(self) -> bool:
        """A code is expected only after Meta was asked to send one."""
        return self.status == WhatsAppStatus.PENDING_OTP

    @property
    def may_deregister(self) -> bool:
        """From any state: there is something to take off the Cloud API, or a number to forget."""
        return self.status != WhatsAppStatus.DISCONNECTED or bool(self.number)

    @property
    def may_check_connection(self) -> bool:
        return bool(self.phone_number_id and self.access_token)

    @property
    def needs_existing_pin(self) -> bool:
        """Meta refused to register the number because it already has another two-step PIN."""
        return self.status == WhatsAppStatus.FAILED and self.meta_code == PIN_MISMATCH

    @property
    def may_set_pin(self) -> bool:
        """The number's existing PIN registers it after a 133005; while active, the PIN can change."""
        return bool(self.phone_number_id) and (
            self.needs_existing_pin or self.status == WhatsAppStatus.ACTIVE
        )


class MetaAttempt(models.Model):
    """A register or deregister call sent to Meta for a number.

    Meta allows 10 per number in a moving 72-hour window and then blocks the
    number for 72 hours, so every attempt is counted here before it is made.
    """

    class Kind(models.TextChoices):
        REGISTER = "register", _("register")
        DEREGISTER = "deregister", _("deregister")

    phone_number_id = models.CharField(_("phone number id"), max_length=64)
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="meta_attempts"
    )
    created_at = models.DateTimeField(_("created at"), db_index=True)

    class Meta:
        # Counted per clinic and number: no clinic can spend another's attempts.
        indexes = [
            models.Index(
                fields=["clinic", "phone_number_id", "created_at"], name="wa_attempt_clinic_number_time"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.phone_number_id} at {self.created_at:%Y-%m-%d %H:%M}"


class WrongCodeAttempt(models.Model):
    """A verification code Meta refused; at most 5 per clinic per 15 minutes are sent."""

    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="wrong_codes")
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["clinic", "created_at"], name="wa_wrongcode_clinic_time")]

    def __str__(self) -> str:
        return f"wrong code for {self.clinic_id} at {self.created_at:%Y-%m-%d %H:%M}"


class WebhookDelivery(models.Model):
    """One authentic POST from Meta, kept as received so nothing is lost."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # Built from Meta's own ids (message ids, status ids, entry ids and times), so
    # a delivery Meta retries is stored once.
    dedupe_key = models.CharField(max_length=64)
    fields = models.CharField(max_length=255, blank=True)
    # Patients' messages and numbers: encrypted at rest like the clinic's secrets.
    raw_body = EncryptedTextField()
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=255, blank=True)

    objects = EncryptedFieldsQuerySet.as_manager()

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "dedupe_key"], name="wa_delivery_unique_per_clinic")
        ]

    def __str__(self) -> str:
        return f"{self.fields or 'delivery'} at {self.received_at:%Y-%m-%d %H:%M:%S}"
