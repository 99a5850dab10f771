"""Conversations with patients, their messages, the clinic's bot endpoint and the outbox to it.

Contract: "Messages: the bot's side of the number" in api-contract.md. Texts,
captions, media metadata, the details of a message and the patient's profile
name are patient data: encrypted at rest (common.fields), never logged.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from common import audit
from common.fields import EncryptedFieldsQuerySet, EncryptedTextField
from common.masking import mask_secret
from common.outbox import UNFINISHED, OutboxRow, OutboxState

from .send_errors import send_error_detail

# The clinic is named, never imported: messaging sits below the product.
CLINIC_MODEL = "clinics.Clinic"

# During a rotation the previous signing secret keeps signing this long beside the new one.
SECRET_OVERLAP = timedelta(hours=24)


class MessageType(models.TextChoices):
    TEXT = "text", _("Text")
    IMAGE = "image", _("Image")
    AUDIO = "audio", _("Audio")
    VIDEO = "video", _("Video")
    DOCUMENT = "document", _("Document")
    STICKER = "sticker", _("Sticker")
    LOCATION = "location", _("Location")
    CONTACTS = "contacts", _("Contacts")
    INTERACTIVE = "interactive", _("Interactive reply")
    BUTTON = "button", _("Button reply")
    REACTION = "reaction", _("Reaction")
    TEMPLATE = "template", _("Template")
    UNSUPPORTED = "unsupported", _("Unsupported")


class Direction(models.TextChoices):
    IN = "in", _("From the patient")
    OUT = "out", _("To the patient")


class MessageStatus(models.TextChoices):
    """Where an outbound message stands; inbound messages have none ("")."""

    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    READ = "read", _("Read")
    FAILED = "failed", _("Failed")
    UNKNOWN = "unknown", _("Unknown")


# Who sent a message, besides a member (whose e-mail is stored instead).
SENT_BY_PATIENT = "patient"
SENT_BY_BOT = "bot"


class Conversation(models.Model):
    """One clinic number and one patient.

    The patient is known by `wa_id` (Meta's phone-based id) and, since 2026, by a
    business-scoped `user_id`; Meta withholds the phone of users with a username,
    so either may be missing, never both (messaging.services finds the row by either).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="conversations"
    )
    phone_number_id = models.CharField(_("phone number id"), max_length=64)
    wa_id = models.CharField(_("patient's WhatsApp id"), max_length=32, blank=True)
    user_id = models.CharField(_("patient's business-scoped user id"), max_length=160, blank=True)
    profile_name = EncryptedTextField(_("profile name"), null=True, blank=True)
    # Meta's customer-service window: the patient's last message + 24 hours.
    window_open_until = models.DateTimeField(_("window open until"), null=True, blank=True)
    needs_human = models.BooleanField(_("needs a person"), default=False)
    last_message_at = models.DateTimeField(_("last message at"), null=True, blank=True)
    # The sequence of the last message appended; the next one takes this + 1 under the row lock.
    last_sequence = models.PositiveIntegerField(_("last sequence"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    objects = EncryptedFieldsQuerySet.as_manager()
    # Patients' data never enters the audit trail.
    audit_secrets: ClassVar[dict[str, str]] = {"profile_name": audit.NEVER}

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        constraints = [
            models.UniqueConstraint(
                fields=["clinic", "phone_number_id", "wa_id"],
                condition=~models.Q(wa_id=""),
                name="msg_conversation_unique_wa_id",
            ),
            models.UniqueConstraint(
                fields=["clinic", "phone_number_id", "user_id"],
                condition=~models.Q(user_id=""),
                name="msg_conversation_unique_user_id",
            ),
            models.CheckConstraint(
                condition=~models.Q(wa_id="", user_id=""), name="msg_conversation_has_patient"
            ),
        ]
        indexes = [
            # The clinic's conversations, newest first (endpoint 15 and the page).
            models.Index(fields=["clinic", "-last_message_at"], name="msg_conversation_clinic_recent"),
        ]

    def __str__(self) -> str:
        return f"conversation {self.pk}"

    def __repr__(self) -> str:
        # The patient's number and name stay out of reprs, logs and tracebacks.
        return f"<Conversation {self.pk} clinic={self.clinic_id}>"

    def window_is_open(self, now: datetime) -> bool:
        return self.window_open_until is not None and now < self.window_open_until


class Message(models.Model):
    """One message in or out of a conversation, numbered from 1 without gaps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, verbose_name=_("conversation"), on_delete=models.CASCADE, related_name="messages"
    )
    # Denormalised from the conversation: Meta's ids are unique per clinic.
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="+"
    )
    wamid = models.CharField(_("WhatsApp message id"), max_length=255, blank=True)
    direction = models.CharField(_("direction"), max_length=3, choices=Direction.choices)
    type = models.CharField(_("type"), max_length=12, choices=MessageType.choices)
    # The text, or a media message's caption.
    text = EncryptedTextField(_("text"), null=True, blank=True)
    # JSON {"id", "mime_type", "sha256", "filename"}: Meta's media reference, never the bytes.
    media = EncryptedTextField(_("media"), null=True, blank=True)
    # JSON of what else the type carries: a location, contact cards, the chosen reply,
    # the reaction's target, the message replied to, Meta's error for an unsupported one.
    details = EncryptedTextField(_("details"), null=True, blank=True)
    sent_by = models.CharField(_("sent by"), max_length=254)
    status = models.CharField(_("status"), max_length=10, choices=MessageStatus.choices, blank=True)
    error_code = models.IntegerField(_("Meta error code"), null=True, blank=True)
    # Meta's time for the message (inbound) or of its last status (outbound).
    meta_timestamp = models.DateTimeField(_("Meta's time"), null=True, blank=True)
    sequence = models.PositiveIntegerField(_("sequence"))
    created_at = models.DateTimeField(_("created at"), db_index=True)

    objects = EncryptedFieldsQuerySet.as_manager()
    # Patients' messages never enter the audit trail.
    audit_secrets: ClassVar[dict[str, str]] = {
        "text": audit.NEVER,
        "media": audit.NEVER,
        "details": audit.NEVER,
    }

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["conversation", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "sequence"], name="msg_message_unique_sequence"),
            models.UniqueConstraint(
                fields=["clinic", "wamid"], condition=~models.Q(wamid=""), name="msg_message_unique_wamid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} #{self.sequence}"

    def __repr__(self) -> str:
        return f"<Message {self.pk} {self.direction} {self.type} #{self.sequence}>"

    @property
    def media_info(self) -> dict[str, Any] | None:
        return _json_or_none(self.media)

    @property
    def details_info(self) -> dict[str, Any] | None:
        return _json_or_none(self.details)

    @property
    def failure_detail(self) -> str:
        """Why a `failed` message was not delivered, in the active language ("" for any other status)."""
        return send_error_detail(self.error_code) if self.status == MessageStatus.FAILED else ""


def _json_or_none(stored: str | None) -> dict[str, Any] | None:
    if not stored:
        return None
    value = json.loads(stored)
    return value if isinstance(value, dict) else None


class BotEndpointStatus(models.TextChoices):
    NONE = "none", _("No bot")
    UNVERIFIED = "unverified", _("Not verified")
    LIVE = "live", _("Live")
    FAILING = "failing", _("Failing")


class BotEndpoint(models.Model):
    """Where the clinic's bot listens, and the secret deliveries to it are signed with."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.OneToOneField(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="bot_endpoint"
    )
    url = models.URLField(_("URL"), max_length=2048, blank=True)
    status = models.CharField(
        _("status"), max_length=10, choices=BotEndpointStatus.choices, default=BotEndpointStatus.NONE
    )
    # whsec_ + base64 of 32 random bytes (Standard Webhooks).
    secret = EncryptedTextField(_("signing secret"), null=True, blank=True)
    previous_secret = EncryptedTextField(_("previous signing secret"), null=True, blank=True)
    rotated_at = models.DateTimeField(_("secret rotated at"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last success"), null=True, blank=True)
    # The start of the current run of failures (None while deliveries succeed).
    failing_since = models.DateTimeField(_("failing since"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = EncryptedFieldsQuerySet.as_manager()
    # How the audit trail shows the signing secrets (common.audit).
    audit_secrets: ClassVar[dict[str, str]] = {
        "secret": audit.FINGERPRINT,
        "previous_secret": audit.FINGERPRINT,
    }

    class Meta:
        verbose_name = _("bot endpoint")
        verbose_name_plural = _("bot endpoints")

    def __str__(self) -> str:
        return str(self.get_status_display())

    def __repr__(self) -> str:
        return f"<BotEndpoint {self.pk} status={self.status}>"

    @property
    def masked_secret(self) -> str | None:
        return mask_secret(self.secret)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one for 24 hours."""
        found = [self.secret] if self.secret else []
        if self.previous_secret and self.rotated_at is not None and now < self.rotated_at + SECRET_OVERLAP:
            found.append(self.previous_secret)
        return found


class BotEventType(models.TextChoices):
    MESSAGE_RECEIVED = "message.received", _("Message received")
    MESSAGE_STATUS = "message.status", _("Message status")
    PING = "ping", _("Ping")


class BotDeliveryState(models.TextChoices):
    """Where a delivery stands for the clinic (API 18, the page): the outbox's states in its words."""

    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    DEAD = "dead", _("Dead")


# The outbox's states behind each of the clinic's words.
DELIVERY_STATES: dict[str, tuple[str, ...]] = {
    BotDeliveryState.PENDING: (OutboxState.QUEUED, OutboxState.PROCESSING, OutboxState.RETRYING),
    BotDeliveryState.DELIVERED: (OutboxState.DONE,),
    BotDeliveryState.DEAD: (OutboxState.FAILED,),
}


class BotDelivery(OutboxRow):
    """One event for the clinic's bot: an outbox row written with the change it reports.

    The body is rebuilt from the message at each attempt (no copy of patient data
    here); a status event keeps the status it reports, so a later change does not
    rewrite an earlier event. `last_error` never holds patient data. The loop's
    fields (state, attempts, next attempt, lease) are common.outbox's: queued,
    processing, retrying, done (delivered) or failed (dead).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="bot_deliveries"
    )
    # Standard Webhooks' webhook-id: derived from Meta's ids, the same on every retry
    # and for Meta's own duplicates, so the bot deduplicates on it.
    webhook_id = models.CharField(_("webhook id"), max_length=64)
    event_type = models.CharField(_("event"), max_length=20, choices=BotEventType.choices)
    conversation = models.ForeignKey(
        Conversation,
        verbose_name=_("conversation"),
        on_delete=models.CASCADE,
        related_name="bot_deliveries",
        null=True,
        blank=True,
    )
    message = models.ForeignKey(
        Message,
        verbose_name=_("message"),
        on_delete=models.CASCADE,
        related_name="bot_deliveries",
        null=True,
        blank=True,
    )
    # For message.status: the status (and Meta's error code) this event reports.
    event_status = models.CharField(
        _("reported status"), max_length=10, choices=MessageStatus.choices, blank=True
    )
    event_error_code = models.IntegerField(_("reported error code"), null=True, blank=True)
    first_attempt_at = models.DateTimeField(_("first attempt"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    last_status_code = models.PositiveIntegerField(_("last HTTP status"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("delivery to the bot")
        verbose_name_plural = _("deliveries to the bot")
        constraints = [
            # Meta's duplicates (same ids, same webhook-id) never enqueue twice.
            models.UniqueConstraint(
                fields=["clinic", "webhook_id"], name="msg_botdelivery_unique_webhook_id"
            ),
        ]
        indexes = [
            # The worker's claim: due rows by state and time; the sweep: by state and lease.
            models.Index(fields=["state", "next_attempt_at"], name="msg_botdelivery_due"),
            models.Index(fields=["state", "lease_expires_at"], name="msg_botdelivery_lease"),
            # One conversation's deliveries in order, one at a time.
            models.Index(fields=["conversation", "state"], name="msg_botdelivery_conv_state"),
            # The claim's next clinic in turn and its oldest waiting delivery, read from the
            # unfinished rows in order: a backlog of queued deliveries is not read at each claim.
            models.Index(
                fields=["clinic", "created_at", "id"],
                condition=models.Q(state__in=UNFINISHED),
                name="msg_botdelivery_unfinished",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id}"

    @property
    def public_state(self) -> str:
        """pending, delivered or dead: what the clinic is told."""
        for public, states in DELIVERY_STATES.items():
            if self.state in states:
                return public
        return BotDeliveryState.PENDING


class TemplateStatus(models.TextChoices):
    APPROVED = "APPROVED", _("Approved")
    PENDING = "PENDING", _("Pending review")
    REJECTED = "REJECTED", _("Rejected")
    PAUSED = "PAUSED", _("Paused")
    DISABLED = "DISABLED", _("Disabled")


class MessageTemplate(models.Model):
    """One of the WABA's message templates in one language, as last synced from Meta (endpoint 17)."""

    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="message_templates"
    )
    meta_id = models.CharField(_("Meta's id"), max_length=64, blank=True)
    name = models.CharField(_("name"), max_length=512)
    language = models.CharField(_("language"), max_length=16)
    # Meta's own word when it is none of ours (IN_APPEAL, LIMIT_EXCEEDED...): kept as it came.
    status = models.CharField(_("status"), max_length=32)
    category = models.CharField(_("category"), max_length=32, blank=True)
    quality = models.CharField(_("quality"), max_length=16, blank=True)
    # How many {{n}} placeholders the body has: a send must bring as many params.
    params = models.PositiveIntegerField(_("placeholders"), default=0)
    rejected_reason = models.CharField(_("rejection reason"), max_length=255, blank=True)
    synced_at = models.DateTimeField(_("synced at"))

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic", "name", "language"], name="msg_template_unique_name_language"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"


class OutboundSend(OutboxRow):
    """One message to send to Meta: the send outbox's row, and the `Idempotency-Key` it was asked with.

    `request_sent_at` is written (and committed) before the request to Meta leaves:
    once it is set the message is never sent again, whatever happens to the answer -
    unless Meta's status event says that try failed with a code meaning "wait" (130429,
    131056): then the row goes back to the queue, `request_sent_at` cleared. The key is kept 24 hours (then freed, made "": `key_expires_at`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(
        CLINIC_MODEL, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="+"
    )
    message = models.OneToOneField(
        Message, verbose_name=_("message"), on_delete=models.CASCADE, related_name="send"
    )
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, blank=True)
    # SHA-256 of the request's canonical body: the same key with another body is a conflict.
    body_digest = models.CharField(_("body digest"), max_length=64)
    key_expires_at = models.DateTimeField(_("key kept until"))
    request_sent_at = models.DateTimeField(_("request sent at"), null=True, blank=True)
    # Meta's ids of earlier tries that Meta failed with a code saying to wait (one a line): their
    # late or repeated status events must not settle the message sent again.
    superseded_wamids = models.TextField(_("superseded Meta message ids"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("send to Meta")
        verbose_name_plural = _("sends to Meta")
        constraints = [
            models.UniqueConstraint(
                fields=["clinic", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="msg_send_unique_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "lease_expires_at"], name="msg_send_sweep"),
        ]

    def __str__(self) -> str:
        return f"send {self.pk}"
