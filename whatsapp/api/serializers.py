from __future__ import annotations

from typing import Any

from rest_framework import serializers

from clinics import validators
from clinics.api.fields import NormalizedCharField
from whatsapp.models import MASK_SUFFIX, WhatsAppStatus


def _secret_or_masked(value: str) -> str:
    # `...****` is the masked value from a GET: the service keeps what is stored.
    return value if MASK_SUFFIX in value else validators.normalize_secret(value)


class WhatsAppConfigureInputSerializer(serializers.Serializer):
    phoneNumberId = NormalizedCharField(
        validators.normalize_meta_id, max_length=validators.META_ID_MAX_LENGTH
    )
    businessAccountId = NormalizedCharField(
        validators.normalize_meta_id, max_length=validators.META_ID_MAX_LENGTH
    )
    accessToken = NormalizedCharField(
        _secret_or_masked,
        required=False,
        max_length=validators.SECRET_MAX_LENGTH,
        help_text="Required unless a token is stored; omitted or masked keeps the stored token.",
    )
    verifyToken = NormalizedCharField(
        validators.normalize_verify_token, required=False, max_length=validators.VERIFY_TOKEN_MAX_LENGTH
    )
    appSecret = NormalizedCharField(
        _secret_or_masked,
        required=False,
        allow_null=True,
        max_length=validators.SECRET_MAX_LENGTH,
        help_text="Webhook signature secret of this clinic's Meta app; omitted keeps it, null clears it.",
    )


class WhatsAppRegisterInputSerializer(serializers.Serializer):
    phone = NormalizedCharField(validators.normalize_whatsapp_phone, max_length=40)
    otpMethod = NormalizedCharField(validators.normalize_otp_method, max_length=10)
    wabaId = NormalizedCharField(validators.normalize_meta_id, max_length=validators.META_ID_MAX_LENGTH)
    accessToken = NormalizedCharField(
        _secret_or_masked,
        required=False,
        max_length=validators.SECRET_MAX_LENGTH,
        help_text="A masked value (`...****`) or an omitted one means the stored token.",
    )


class WhatsAppVerifyInputSerializer(serializers.Serializer):
    code = NormalizedCharField(validators.normalize_code, max_length=32)


class WhatsAppConfigureOutputSerializer(serializers.Serializer):
    message = serializers.CharField()
    status = serializers.ChoiceField(choices=WhatsAppStatus.choices)
    detail = serializers.CharField(allow_null=True, required=False)
    meta_code = serializers.IntegerField(allow_null=True, required=False)


class WhatsAppStatusOnlySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WhatsAppStatus.choices)


class WhatsAppStatusOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WhatsAppStatus.choices)
    number = serializers.CharField(allow_null=True)
    detail = serializers.CharField(allow_null=True)


class WhatsAppErrorSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WhatsAppStatus.choices)
    detail = serializers.CharField()
    meta_code = serializers.IntegerField(required=False)


def configure_body(account: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": "WhatsApp configuration updated successfully",
        "status": account.status,
        "detail": account.detail or None,
    }
    if account.status == WhatsAppStatus.FAILED and account.meta_code is not None:
        body["meta_code"] = account.meta_code
    return body
