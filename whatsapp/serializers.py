"""The WhatsApp endpoints' bodies: input serializers (the API's camelCase keys, each with the
model field it feeds as `source`) and the output shapes, one field list each."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from common.api.fields import NormalizedCharField
from common.api.shapes import OutputField, OutputShape

from . import validators
from .exceptions import MetaRefusedError, WhatsAppError
from .models import WhatsAppAccount, WhatsAppStatus
from .services import ConnectionReport


def _meta_id(source: str) -> NormalizedCharField:
    return NormalizedCharField(
        validators.normalize_meta_id, source=source, max_length=validators.META_ID_MAX_LENGTH
    )


def _secret(source: str, help_text: str, **kwargs: Any) -> NormalizedCharField:
    return NormalizedCharField(
        validators.normalize_secret_or_masked,
        source=source,
        required=False,
        max_length=validators.SECRET_MAX_LENGTH,
        help_text=help_text,
        **kwargs,
    )


class WhatsAppConfigureInputSerializer(serializers.Serializer[Any]):
    phoneNumberId = _meta_id("phone_number_id")
    businessAccountId = _meta_id("business_account_id")
    accessToken = _secret(
        "access_token", "Required unless a token is stored; omitted or masked keeps the stored token."
    )
    verifyToken = NormalizedCharField(
        validators.normalize_verify_token,
        source="verify_token",
        required=False,
        max_length=validators.VERIFY_TOKEN_MAX_LENGTH,
    )
    appSecret = _secret(
        "app_secret",
        "Webhook signature secret of this clinic's Meta app; omitted keeps it, null clears it.",
        allow_null=True,
    )


class WhatsAppRegisterInputSerializer(serializers.Serializer[Any]):
    phone = NormalizedCharField(validators.normalize_whatsapp_phone, source="number", max_length=40)
    otpMethod = NormalizedCharField(validators.normalize_otp_method, source="otp_method", max_length=10)
    wabaId = _meta_id("business_account_id")
    accessToken = _secret(
        "access_token", "A masked value (`...****`) or an omitted one means the stored token."
    )


class WhatsAppVerifyInputSerializer(serializers.Serializer[Any]):
    code = NormalizedCharField(validators.normalize_code, max_length=32)


class WhatsAppPinInputSerializer(serializers.Serializer[Any]):
    pin = NormalizedCharField(validators.normalize_pin, max_length=16, style={"input_type": "password"})


def _status_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=WhatsAppStatus.choices, read_only=True)


def _failed_code(account: WhatsAppAccount) -> int | None:
    # Meta's code explains a failure; on any other status it would be stale.
    return account.meta_code if account.status == WhatsAppStatus.FAILED else None


def configure_message(account: WhatsAppAccount) -> str:
    """What endpoint 5 did, in the reader's language: saved, and what Meta said (never "successfully" on a failure)."""
    if "check.unreachable" in account.detail_keys:
        # The status is the last known one: Meta was not asked.
        return _(
            "WhatsApp configuration saved, but Meta could not be reached to check the number: see detail."
        )
    if account.status == WhatsAppStatus.ACTIVE:
        return _("WhatsApp configuration saved: Meta confirms the number is active.")
    if account.status == WhatsAppStatus.VERIFYING:
        return _("WhatsApp configuration saved: Meta is still setting up the number.")
    if account.status == WhatsAppStatus.PENDING_OTP:
        return _("WhatsApp configuration saved: the number is waiting for its code.")
    if account.status == WhatsAppStatus.FAILED:
        return _("WhatsApp configuration saved, but Meta did not accept the number: see detail.")
    return _("WhatsApp configuration saved, but the number is not on the WhatsApp Cloud API: see detail.")


CONFIGURE_SHAPE = OutputShape(
    "WhatsAppConfigureOutput",
    [
        OutputField(
            "message",
            configure_message,
            serializers.CharField(read_only=True),
        ),
        OutputField("status", lambda account: account.status, _status_field()),
        OutputField("detail", lambda account: account.detail or None, serializers.CharField(allow_null=True)),
        OutputField("meta_code", _failed_code, serializers.IntegerField(required=False)),
    ],
)

STATUS_ONLY_SHAPE = OutputShape(
    "WhatsAppStatusOnly", [OutputField("status", lambda account: account.status, _status_field())]
)

PIN_SHAPE = OutputShape(
    "WhatsAppPinOutput",
    [
        OutputField("status", lambda account: account.status, _status_field()),
        OutputField("detail", lambda account: account.detail or None, serializers.CharField(allow_null=True)),
    ],
)

STATUS_SHAPE = OutputShape(
    "WhatsAppStatusOutput",
    [
        OutputField("status", lambda report: report.status, _status_field()),
        OutputField("number", lambda report: report.number, serializers.CharField(allow_null=True)),
        OutputField("detail", lambda report: report.detail, serializers.CharField(allow_null=True)),
    ],
)


ERROR_SHAPE = OutputShape(
    "WhatsAppError",
    [
        OutputField("status", lambda error: error.status, _status_field()),
        OutputField("detail", lambda error: error.detail, serializers.CharField()),
        OutputField(
            "meta_code",
            lambda error: error.code if isinstance(error, MetaRefusedError) else None,
            serializers.IntegerField(required=False),
        ),
    ],
)


def _without_empty_meta_code(body: dict[str, Any]) -> dict[str, Any]:
    # The seed's bodies carry meta_code only when Meta refused.
    if body.get("meta_code") is None:
        body.pop("meta_code", None)
    return body


def error_body(error: WhatsAppError) -> dict[str, Any]:
    return _without_empty_meta_code(ERROR_SHAPE.render(error))


def configure_body(account: WhatsAppAccount) -> dict[str, Any]:
    return _without_empty_meta_code(CONFIGURE_SHAPE.render(account))


def status_body(report: ConnectionReport) -> dict[str, Any]:
    return STATUS_SHAPE.render(report)
