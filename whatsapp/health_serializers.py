"""The health object of endpoint 13: one field list renders the body and documents it."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from common.api.shapes import OutputField, OutputShape, utc_iso

from .health import CHECK_KEYS, check_sentences
from .ingress import volume_refusals_24h
from .models import HealthVerdict, WhatsAppHealth


def _text_or_null(value: str) -> str | None:
    # Values Meta did not give are null, never "".
    return value or None


def _checks(health: WhatsAppHealth) -> list[dict[str, Any]]:
    stored = {check.get("key"): check for check in health.checks or []}
    rendered = []
    for key in CHECK_KEYS:
        check = stored.get(key, {"key": key, "ok": None})
        detail, fix = check_sentences(check)
        rendered.append({"key": key, "ok": check.get("ok"), "detail": detail, "fix": fix})
    return rendered


class HealthCheckSerializer(serializers.Serializer[Any]):
    key = serializers.ChoiceField(choices=CHECK_KEYS, read_only=True)
    ok = serializers.BooleanField(allow_null=True, read_only=True)
    detail = serializers.CharField(allow_null=True, read_only=True, help_text="In the reader's language.")
    fix = serializers.CharField(allow_null=True, read_only=True, help_text="In the reader's language.")


class HealthTokenSerializer(serializers.Serializer[Any]):
    expires_at = serializers.DateTimeField(allow_null=True, read_only=True, help_text="null: never expires")
    type = serializers.CharField(allow_null=True, read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)


class HealthNumberSerializer(serializers.Serializer[Any]):
    status = serializers.CharField(allow_null=True, read_only=True)
    name_status = serializers.CharField(allow_null=True, read_only=True)
    quality_rating = serializers.CharField(allow_null=True, read_only=True)
    messaging_limit = serializers.CharField(allow_null=True, read_only=True)


class HealthWebhookSerializer(serializers.Serializer[Any]):
    last_event_at = serializers.DateTimeField(allow_null=True, read_only=True)
    signature_failures_24h = serializers.IntegerField(read_only=True)
    volume_refusals_24h = serializers.IntegerField(
        read_only=True, help_text="Authentic deliveries refused (429) for the clinic's volume in 24 hours."
    )
    last_volume_refusal_at = serializers.DateTimeField(allow_null=True, read_only=True)


def _webhook(health: WhatsAppHealth) -> dict[str, Any]:
    # Refusals are read now, not at the last check: a flood shows at once.
    refused, last_refused_at = volume_refusals_24h(clinic_id=health.account.clinic_id, now=timezone.now())
    return {
        "last_event_at": utc_iso(health.last_event_at),
        "signature_failures_24h": health.signature_failures_24h,
        "volume_refusals_24h": refused,
        "last_volume_refusal_at": utc_iso(last_refused_at),
    }


HEALTH_SHAPE = OutputShape(
    "WhatsAppHealth",
    [
        OutputField(
            "verdict",
            lambda health: health.verdict if health.checked_at else HealthVerdict.UNKNOWN.value,
            serializers.ChoiceField(choices=HealthVerdict.choices, read_only=True),
        ),
        OutputField(
            "checked_at",
            lambda health: utc_iso(health.checked_at),
            serializers.DateTimeField(allow_null=True, read_only=True),
        ),
        OutputField("checks", _checks, HealthCheckSerializer(many=True, read_only=True)),
        OutputField(
            "token",
            lambda health: {
                "expires_at": utc_iso(health.token_expires_at),
                "type": _text_or_null(health.token_type),
                "scopes": list(health.token_scopes or []),
            },
            HealthTokenSerializer(read_only=True),
        ),
        OutputField(
            "number",
            lambda health: {
                "status": _text_or_null(health.number_status),
                "name_status": _text_or_null(health.name_status),
                "quality_rating": _text_or_null(health.quality_rating),
                "messaging_limit": _text_or_null(health.messaging_limit),
            },
            HealthNumberSerializer(read_only=True),
        ),
        OutputField(
            "webhook",
            _webhook,
            HealthWebhookSerializer(read_only=True),
        ),
    ],
)
