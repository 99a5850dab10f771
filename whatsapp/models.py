from __future__ import annotations

import secrets
import uuid
from typing import Any, ClassVar, cast

from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from common import audit
from common.fields import EncryptedFieldsQuerySet, EncryptedTextField
from common.masking import mask_secret
from common.outbox import UNFINISHED, OutboxRow

from .details import Detail
from .meta_errors import PIN_MISMATCH


def _encrypted_field(instance: models.Model, name: str) -> EncryptedTextField[Any, Any]:
    return cast("EncryptedTextField[Any, Any]", instance._meta.get_field(name))


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
    """One clinic's WhatsApp Business connection. Only whatsapp.services.state changes `status`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.OneToOneField(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="whatsapp"
    )
    # Indexed: webhooks are routed by these ids and by the number.
    phone_number_id = models.CharField(_("phone number id"), max_length=64, blank=True, db_index=True)
    business_account_id = models.CharField(
        _("WhatsApp Business Account id"), max_length=64, blank=True, db_index=True
    )
    # The WABA Meta itself showed this number to be in (the number found in, or added to, the WABA
    # when a code was requested; the health check's `number_in_waba`). Typing a WABA id proves
    # nothing: events that name only a WABA reach the accounts whose proven WABA it is
    # (whatsapp.deliveries). Cleared whenever the phone number id or the WABA id changes.
    proven_business_account_id = models.CharField(
        _("WhatsApp Business Account id confirmed by Meta"), max_length=64, blank=True, db_index=True
    )
    access_token = EncryptedTextField(_("access token"), null=True, blank=True)
    verify_token = EncryptedTextField(_("webhook verify token"), null=True, blank=True)
    app_secret = EncryptedTextField(_("app secret"), null=True, blank=True)
    # The PIN of the number being registered now, `pin_phone_number_id` says which;
    # every number's PIN is kept in NumberPin, so a number registered before keeps its own.
    registration_pin = EncryptedTextField(_("two-step verification PIN"), null=True, blank=True)
    pin_phone_number_id = models.CharField(_("phone number id of the PIN"), max_length=64, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=WhatsAppStatus.choices, default=WhatsAppStatus.DISCONNECTED
    )
    number = models.CharField(_("number"), max_length=20, blank=True, db_index=True)
    # Set while the number is claimed only by a code request (`pending_otp`): the claim
    # holds the number until then (the code's lifetime); None once the code is verified.
    claim_expires_at = models.DateTimeField(_("claim without a verified code ends at"), null=True, blank=True)
    # What happened, as message keys rendered in the reader's language (whatsapp.details).
    detail_parts = models.JSONField(_("detail"), default=list, blank=True)
    meta_code = models.IntegerField(_("Meta error code"), null=True, blank=True)
    status_checked_at = models.DateTimeField(_("status checked at"), null=True, blank=True)
    connected_at = models.DateTimeField(_("connected at"), null=True, blank=True)
    subscribed_at = models.DateTimeField(_("subscribed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    # The action lease (whatsapp.services.state): while it runs, no other action on
    # this connection starts; it expires by itself, so a killed process strands nothing.
    action_lease_until = models.DateTimeField(_("action in progress until"), null=True, blank=True)
    action_lease_owner = models.CharField(_("action in progress"), max_length=32, blank=True)

    objects = EncryptedFieldsQuerySet.as_manager()
    # How the audit trail shows each secret (common.audit; the system check requires one per field):
    # the verify token is typed by a person and the PIN is six digits, so only "changed".
    audit_secrets: ClassVar[dict[str, str]] = {
        "access_token": audit.FINGERPRINT,
        "app_secret": audit.FINGERPRINT,
        "verify_token": audit.CHANGED,
        "registration_pin": audit.CHANGED,
    }

    class Meta:
        verbose_name = _("WhatsApp connection")
        verbose_name_plural = _("WhatsApp connections")
        constraints = [
            # One owner per number: a phone number id, and a registered number, belong to
            # at most one clinic with a proven claim, whatever two requests do at the same time.
            # A disconnected clinic may keep an id in its credentials: it no longer holds the number.
            # A claim made only by a code request (`claim_expires_at` set) holds it for 30 minutes,
            # a rule of the services (whatsapp.services.state.ensure_not_owned_elsewhere).
            models.UniqueConstraint(
                fields=["phone_number_id"],
                condition=~models.Q(phone_number_id="")
                & ~models.Q(status="disconnected")
                & models.Q(claim_expires_at__isnull=True),
                name="wa_account_unique_phone_number_id",
            ),
            models.UniqueConstraint(
                fields=["number"],
                condition=~models.Q(number="")
                & ~models.Q(status="disconnected")
                & models.Q(claim_expires_at__isnull=True),
                name="wa_account_unique_number",
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
        # Without decrypting it: a status poll reads no secret.
        return _encrypted_field(self, "access_token").is_set(self)

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
        """From any state: there is something to take off the Cloud API, or a number to forget.

        Without either, deregister has nothing to do and answers at once.
        """
        return self.status != WhatsAppStatus.DISCONNECTED or bool(self.number)

    @property
    def may_check_connection(self) -> bool:
        return bool(self.phone_number_id) and self.has_access_token

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


class NumberPin(models.Model):
    """The two-step PIN of a number a clinic registered, kept with that number.

    Meta keeps the first PIN registered on a number and refuses any other
    (133005), so a number the clinic had before is registered again with its own
    PIN. A PIN change whose answer was lost leaves `unconfirmed_pin` beside `pin`
    until Meta accepts one of them. Never shown: no admin, page or API reads it.
    """

    # The trail says only that a PIN changed, never a character of it.
    audit_secrets: ClassVar[dict[str, str]] = {"pin": audit.CHANGED, "unconfirmed_pin": audit.CHANGED}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="+"
    )
    phone_number_id = models.CharField(_("phone number id"), max_length=64)
    pin = EncryptedTextField(_("two-step verification PIN"))
    unconfirmed_pin = EncryptedTextField(_("new PIN Meta has not confirmed"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = EncryptedFieldsQuerySet.as_manager()

    class Meta:
        verbose_name = _("two-step verification PIN")
        verbose_name_plural = _("two-step verification PINs")
        constraints = [
            models.UniqueConstraint(fields=["clinic", "phone_number_id"], name="wa_pin_one_per_clinic_number")
        ]

    def __str__(self) -> str:
        return f"PIN of {self.phone_number_id}"

    @property
    def candidates(self) -> list[str]:
        """The PINs to try, newest first: an unconfirmed change may have reached Meta."""
        return [pin for pin in (self.unconfirmed_pin, self.pin) if pin]


class CodeRequest(models.Model):
    """A verification code requested (an SMS or a call to a person), counted before Meta is asked."""

    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="+")
    number = models.CharField(max_length=20)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["clinic", "created_at"], name="wa_coderequest_clinic_time"),
            models.Index(fields=["clinic", "number", "created_at"], name="wa_coderequest_number_time"),
        ]

    def __str__(self) -> str:
        return f"code request for {self.number} at {self.created_at:%Y-%m-%d %H:%M}"


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


class WebhookDelivery(OutboxRow):
    """One authentic POST from Meta, kept as received so nothing is lost.

    An outbox row (`common.outbox`): its state, attempts, error and lease belong to the loop
    that applies it in the background (whatsapp.deliveries).
    """

    id = models.UUIDField("ID", primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    # Built from Meta's own ids (message ids, status ids, entry ids and times), so
    # a delivery Meta retries is stored once.
    dedupe_key = models.CharField(_("deduplication key"), max_length=64)
    # The webhook fields Meta sent (messages, account_update...), comma-separated.
    fields = models.CharField(_("webhook fields"), max_length=255, blank=True)
    # Patients' messages and numbers: encrypted at rest like the clinic's secrets.
    raw_body = EncryptedTextField(_("body as received"))
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=255, blank=True)
    # A clinic's own app secret speaks only for that clinic; the deployment's speaks for every clinic.
    signed_with_clinic_secret = models.BooleanField(_("signed with the clinic's app secret"), default=True)
    # Processing happens in a background task (whatsapp.deliveries); these say how far it got.
    events_total = models.PositiveIntegerField(_("events"), null=True, blank=True)
    # Events handled so far, committed with their effects: a retry resumes here.
    events_done = models.PositiveIntegerField(_("events done"), default=0)

    objects = EncryptedFieldsQuerySet.as_manager()
    # Patients' messages never enter the audit trail.
    audit_secrets: ClassVar[dict[str, str]] = {"raw_body": audit.NEVER}

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "dedupe_key"], name="wa_delivery_unique_per_clinic")
        ]
        indexes = [
            # The health check's "last authentic event" of a clinic.
            models.Index(fields=["clinic", "received_at"], name="wa_delivery_clinic_time"),
            # The requeue sweep looks only at unfinished deliveries.
            models.Index(fields=["state", "lease_expires_at"], name="wa_delivery_state_lease"),
            # The claim's next clinic in turn and its oldest waiting delivery, read from the
            # unfinished rows in order: a backlog of queued deliveries is not read at each claim.
            models.Index(
                fields=["clinic", "received_at", "id"],
                condition=models.Q(state__in=UNFINISHED),
                name="wa_delivery_unfinished",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.fields or 'delivery'} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class AppliedWebhookEvent(models.Model):
    """An event of a delivery that was applied, written in the same transaction as its effect.

    Keyed by the event's own identity (Meta's entry id, time, field and value), so the
    same event is applied once whether a task is retried or Meta sends it again in
    another delivery. Scoped to the clinic whose webhook received it: a clinic with
    its own app secret can sign any content, and must not be able to pre-empt an
    event another clinic will receive.
    """

    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="applied_webhook_events")
    key = models.CharField(max_length=64)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.SET_NULL, null=True, related_name="+")
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clinic", "key"], name="wa_event_applied_once")]

    def __str__(self) -> str:
        return f"event {self.key[:12]} of {self.clinic_id}"


class WebhookSignatureFailure(models.Model):
    """POSTs with a wrong signature, counted per clinic and hour: one UPDATE each, cheap under a flood."""

    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clinic", "hour"], name="wa_sigfail_clinic_hour")]

    def __str__(self) -> str:
        return f"{self.count} signature failures at {self.hour:%Y-%m-%d %H:00}"


class WebhookVolumeRefusal(models.Model):
    """Authentic deliveries refused for volume (whatsapp.ingress), per clinic and hour, for the
    health panel: written at most once a minute per clinic, however many were refused."""

    clinic = models.ForeignKey(CLINIC_MODEL, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "hour"], name="wa_volume_refusal_clinic_hour")
        ]

    def __str__(self) -> str:
        return f"{self.count} deliveries refused for volume at {self.hour:%Y-%m-%d %H:00}"


class HealthVerdict(models.TextChoices):
    READY = "ready", _("Ready")
    ATTENTION = "attention", _("Needs attention")
    BROKEN = "broken", _("Broken")
    UNKNOWN = "unknown", _("Not checked yet")


class WhatsAppHealth(models.Model):
    """The last health check of a connection (endpoint 13): what Meta and our own data said."""

    account = models.OneToOneField(
        WhatsAppAccount, on_delete=models.CASCADE, primary_key=True, related_name="health"
    )
    verdict = models.CharField(
        _("verdict"),
        max_length=10,
        choices=HealthVerdict.choices,
        default=HealthVerdict.UNKNOWN,
        db_index=True,
    )
    checked_at = models.DateTimeField(_("checked at"), null=True, blank=True)
    # [{"key", "ok", "params"}] in the contract's order; sentences are rendered in the reader's language.
    checks = models.JSONField(default=list, blank=True)
    token_type = models.CharField(max_length=40, blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    token_scopes = models.JSONField(default=list, blank=True)
    number_status = models.CharField(max_length=40, blank=True)
    name_status = models.CharField(max_length=40, blank=True)
    quality_rating = models.CharField(max_length=40, blank=True)
    messaging_limit = models.CharField(max_length=40, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    signature_failures_24h = models.PositiveIntegerField(default=0)
    # When the verdict last turned broken: one warning per such episode.
    broken_since = models.DateTimeField(null=True, blank=True)
    # When the last run (any) started: a run later than `checked_at` is still going.
    run_started_at = models.DateTimeField(null=True, blank=True)
    # The on-demand gate (endpoint 13's POST, the page's "check now"): one such run a minute.
    # Checks the product queues (a change of the connection, the daily schedule) never set it.
    on_demand_at = models.DateTimeField(null=True, blank=True)
    # The phone number id the stored result is about: a result about another number is never shown.
    checked_phone_number_id = models.CharField(max_length=64, blank=True)
    # The day the scheduler last queued a check: a conditional UPDATE of it lets
    # several schedulers run at once and still queue one check per clinic per day.
    scheduled_on = models.DateField(null=True, blank=True)
    # Set while a queued check waits for a worker (cleared when it starts): a conditional
    # UPDATE of it merges the checks that saves and the scheduler queue, one waiting per clinic.
    check_queued_at = models.DateTimeField(_("check queued at"), null=True, blank=True)

    class Meta:
        verbose_name = _("WhatsApp health")
        verbose_name_plural = _("WhatsApp health")

    def __str__(self) -> str:
        return str(self.get_verdict_display())

    @property
    def token_days_left(self) -> int | None:
        """Whole days until the token expires (rounded up), None when it never does or is unknown."""
        if self.token_expires_at is None:
            return None
        seconds = (self.token_expires_at - timezone.now()).total_seconds()
        return max(0, -int(-seconds // 86400))


class AlertKind(models.TextChoices):
    TOKEN_EXPIRY = "token_expiry", _("Access token expires soon")
    BROKEN = "broken", _("Connection broken")
    DISCONNECTED = "disconnected", _("Number disconnected by Meta")
    # Raised by messaging (the layer above) when the clinic's bot stops answering.
    BOT_FAILING = "bot_failing", _("The clinic's bot is not answering")


class WhatsAppAlert(OutboxRow):
    """A condition the clinic's admins must hear about, recorded once (the unique key says which).

    whatsapp decides that something is worth a warning; who is told, and in which
    language, is the product's business: clinics.notifications sends the e-mail, an
    outbox row (`common.outbox`) whose state, attempts, error and lease are the loop's.
    """

    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="whatsapp_alerts"
    )
    kind = models.CharField(_("kind"), max_length=20, choices=AlertKind.choices)
    # Which occurrence: "14:<expiry>" for a token's 14-day warning, the episode's start for broken...
    key = models.CharField(_("occurrence"), max_length=100)
    params = models.JSONField(_("details"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    notified_at = models.DateTimeField(_("notified at"), null=True, blank=True)

    class Meta:
        verbose_name = _("WhatsApp warning")
        verbose_name_plural = _("WhatsApp warnings")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "kind", "key"], name="wa_alert_once_per_condition")
        ]
        indexes = [
            # The requeue sweep looks only at unfinished e-mails.
            models.Index(fields=["state", "lease_expires_at"], name="wa_alert_state_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.key})"
