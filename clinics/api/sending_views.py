"""Endpoints 14c (bot keys), 16 (sending) and 17 (templates): thin views over clinics.bot_keys and messaging.

A bot key may call 16 and 17's GET (`admits_bot_keys`); 14c and the template sync
are for the clinic's admins. The clinic always comes from the caller.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics.bot_keys import BotCaller, bot_key_issue, bot_key_revoke, bot_keys_of
from clinics.models import BotKey, Clinic
from clinics.permissions import IsClinicAdmin, IsClinicMember
from common.api.shapes import utc_iso
from common.api.views import NoStoreMixin
from messaging.models import SENT_BY_BOT, MessageTemplate
from messaging.sending import IdempotencyConflictError, SendRefusedError, SendRequest, message_send
from messaging.templates import TemplateSyncTooSoonError, TemplateSyncUnavailableError, message_templates_sync
from whatsapp.exceptions import MetaError

# 1-255 visible ASCII characters (no spaces): the contract's Idempotency-Key.
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
# E.164 with its "+", or a wa_id (the digits of the patient's number), or - beyond the contract,
# which names only those two - the patient's BSUID when Meta withholds their phone: an ISO
# country code, a dot, up to 128 letters and digits (`US.13491208655302741918`).
TO_RE = re.compile(r"^(?:\+?[0-9]{6,15}|[A-Z]{2}\.[A-Za-z0-9]{1,128})$")


class _ClinicView(NoStoreMixin, APIView):
    @property
    def clinic(self) -> Clinic:
        return self.request.clinic  # type: ignore[attr-defined]


class _AdminView(_ClinicView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]


# --- 14c: bot keys ------------------------------------------------------------------------------


class BotKeyInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100, trim_whitespace=True)


def _bot_key_body(key: BotKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "prefix": key.prefix,
        "created_at": utc_iso(key.created_at),
        "last_used_at": utc_iso(key.last_used_at) if key.last_used_at else None,
    }


class BotKeysView(_AdminView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT}, summary="List the clinic's bot keys")
    def get(self, request: Request) -> Response:
        return Response({"results": [_bot_key_body(key) for key in bot_keys_of(self.clinic)]})

    @extend_schema(
        request=BotKeyInputSerializer,
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
        summary="Create a bot key (shown this once)",
    )
    def post(self, request: Request) -> Response:
        serializer = BotKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, secret = bot_key_issue(clinic=self.clinic, name=serializer.validated_data["name"])
        # 200, as the contract's table gives it (the key in this answer only).
        return Response({"key": secret, **_bot_key_body(key)})


class BotKeyDetailView(_AdminView):
    @extend_schema(request=None, responses={204: None, 404: OpenApiTypes.OBJECT}, summary="Revoke a bot key")
    def delete(self, request: Request, prefix: str) -> Response:
        if not bot_key_revoke(clinic=self.clinic, prefix=prefix):
            return Response({"detail": _("The clinic has no bot key with this prefix.")}, status=404)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- 17: templates -------------------------------------------------------------------------------


def _template_body(template: MessageTemplate) -> dict[str, Any]:
    return {
        "name": template.name,
        "language": template.language,
        "status": template.status,
        "category": template.category,
        "quality": template.quality or None,
        "params": template.params,
        "rejected_reason": template.rejected_reason or None,
        "synced_at": utc_iso(template.synced_at),
    }


class TemplatesView(_ClinicView):
    admits_bot_keys = True
    permission_classes = [permissions.IsAuthenticated, IsClinicMember]

    @extend_schema(
        request=None, responses={200: OpenApiTypes.OBJECT}, summary="The WABA's templates as last synced"
    )
    def get(self, request: Request) -> Response:
        templates = MessageTemplate.objects.filter(clinic=self.clinic)
        return Response({"results": [_template_body(template) for template in templates]})


class TemplatesSyncView(_AdminView):
    @extend_schema(
        request=None,
        responses={
            200: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            429: OpenApiTypes.OBJECT,
            502: OpenApiTypes.OBJECT,
        },
        summary="Sync the templates from Meta now (once a minute)",
    )
    def post(self, request: Request) -> Response:
        try:
            templates = message_templates_sync(clinic_id=self.clinic.pk, on_demand=True)
        except TemplateSyncTooSoonError as exc:
            return Response(
                {"detail": _("The templates were synced less than a minute ago. Try again shortly.")},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except TemplateSyncUnavailableError:
            return Response(
                {"detail": _("Connect the clinic's WhatsApp Business Account before syncing its templates.")},
                status=status.HTTP_409_CONFLICT,
            )
        except MetaError:
            return Response(
                {"detail": _("Meta could not list the templates just now. Try again in a moment.")},
                status=status.HTTP_502_BAD_GATEWAY,
            )
        return Response({"results": [_template_body(template) for template in templates]})


# --- 16: sending ---------------------------------------------------------------------------------


class TemplateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=512)
    language = serializers.CharField(max_length=16)
    params = serializers.ListField(
        child=serializers.CharField(max_length=1024, trim_whitespace=False), required=False, max_length=100
    )


class MessageInputSerializer(serializers.Serializer[Any]):
    to = serializers.RegexField(
        TO_RE,
        help_text="The patient's number in E.164 (with or without its +), its wa_id, or its BSUID "
        "(business-scoped user id, such as US.13491208655302741918) when Meta gave no phone.",
        error_messages={
            "invalid": gettext_lazy(
                "Give the patient's number with its country code (or its wa_id), or the patient's BSUID "
                "such as US.13491208655302741918."
            )
        },
    )
    text = serializers.CharField(min_length=1, max_length=4096, required=False, trim_whitespace=False)
    template = TemplateInputSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("text" in attrs) == ("template" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": [gettext_lazy("Send either a text or a template, not both.")]}
            )
        return attrs


def _send_request(data: dict[str, Any]) -> SendRequest:
    template = data.get("template")
    return SendRequest(
        to=data["to"].lstrip("+"),
        text=data.get("text"),
        template_name=template["name"] if template else None,
        template_language=template["language"] if template else None,
        template_params=tuple(template.get("params") or ()) if template else (),
    )


class MessagesView(_ClinicView):
    admits_bot_keys = True
    permission_classes = [permissions.IsAuthenticated, IsClinicMember]

    @extend_schema(
        request=MessageInputSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)],
        responses={
            202: OpenApiTypes.OBJECT,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid body or no Idempotency-Key"),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Number not active, or key reused"),
            422: OpenApiResponse(OpenApiTypes.OBJECT, description='{"code", "detail"}: refused before Meta'),
        },
        summary="Send a text or a template to a patient",
    )
    def post(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        if not IDEMPOTENCY_KEY_RE.fullmatch(key):
            return Response(
                {"detail": _("The Idempotency-Key header is required: 1 to 255 visible characters.")},
                status=status.HTTP_400_BAD_REQUEST,
            )
        serializer = MessageInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request.user
        sent_by = SENT_BY_BOT if isinstance(user, BotCaller) else str(getattr(user, "email", ""))
        try:
            message = message_send(
                clinic_id=self.clinic.pk,
                request=_send_request(serializer.validated_data),
                idempotency_key=key,
                sent_by=sent_by,
            )
        except SendRefusedError as exc:
            return Response({"code": exc.code, "detail": exc.detail}, status=exc.status)
        except IdempotencyConflictError:
            return Response(
                {
                    "code": "idempotency_key_reused",
                    "detail": _("This Idempotency-Key was used in the last 24 hours with another body."),
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response({"id": str(message.pk), "status": "queued"}, status=status.HTTP_202_ACCEPTED)
