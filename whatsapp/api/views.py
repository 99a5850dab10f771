"""Endpoints 5-9: one ViewSet, explicit actions, every rule in whatsapp.services."""

from __future__ import annotations

from django.utils import translation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.api.views import NoStoreMixin
from clinics.permissions import IsClinicAdmin
from whatsapp import services

from .serializers import (
    WhatsAppConfigureInputSerializer,
    WhatsAppConfigureOutputSerializer,
    WhatsAppErrorSerializer,
    WhatsAppRegisterInputSerializer,
    WhatsAppStatusOnlySerializer,
    WhatsAppStatusOutputSerializer,
    WhatsAppVerifyInputSerializer,
    configure_body,
)

_META_ERRORS = {
    # Two shapes share 400: Meta's refusal and DRF's validation body.
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Meta refused: {"status", "detail", "meta_code"}; or invalid input: {"field": ["why"]}.',
    ),
    409: OpenApiResponse(WhatsAppErrorSerializer, description="Not allowed in the current status"),
    429: OpenApiResponse(
        WhatsAppErrorSerializer, description="A local limit protects the number; see Retry-After"
    ),
    502: OpenApiResponse(WhatsAppErrorSerializer, description="Meta unreachable or failing"),
    504: OpenApiResponse(WhatsAppErrorSerializer, description="Meta did not answer in time"),
}


class WhatsAppViewSet(NoStoreMixin, viewsets.ViewSet):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @property
    def clinic(self):  # type: ignore[no-untyped-def]
        return self.request.clinic

    @extend_schema(
        request=WhatsAppConfigureInputSerializer,
        responses={200: WhatsAppConfigureOutputSerializer, 400: _META_ERRORS[400]},
        summary="Save the Meta Cloud API credentials and check them with Meta",
    )
    def configure(self, request: Request) -> Response:
        serializer = WhatsAppConfigureInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = services.whatsapp_configure(
            clinic=self.clinic,
            phone_number_id=data["phoneNumberId"],
            business_account_id=data["businessAccountId"],
            access_token=data.get("accessToken", services.UNSET),
            verify_token=data.get("verifyToken", services.UNSET),
            app_secret=data.get("appSecret", services.UNSET),
        )
        return Response(configure_body(account))

    @extend_schema(
        request=WhatsAppRegisterInputSerializer,
        responses={200: WhatsAppStatusOnlySerializer, **_META_ERRORS},
        summary="Add the number to the WhatsApp Business Account and have Meta send a code",
    )
    def register(self, request: Request) -> Response:
        serializer = WhatsAppRegisterInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account = services.whatsapp_register_number(
            clinic=self.clinic,
            phone=data["phone"],
            otp_method=data["otpMethod"],
            waba_id=data["wabaId"],
            access_token=data.get("accessToken"),
            language=translation.get_language() or "es",
        )
        return Response({"status": account.status})

    @extend_schema(
        request=WhatsAppVerifyInputSerializer,
        responses={200: WhatsAppStatusOnlySerializer, **_META_ERRORS},
        summary="Submit the code Meta sent; registers the number",
    )
    def verify(self, request: Request) -> Response:
        serializer = WhatsAppVerifyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = services.whatsapp_verify_code(clinic=self.clinic, code=serializer.validated_data["code"])
        return Response({"status": account.status})

    @extend_schema(responses={200: WhatsAppStatusOutputSerializer}, summary="Poll the connection status")
    def status(self, request: Request) -> Response:
        report = services.whatsapp_refresh_status(clinic=self.clinic)
        return Response({"status": report.status, "number": report.number, "detail": report.detail})

    @extend_schema(
        request=None,
        responses={200: WhatsAppStatusOnlySerializer, **_META_ERRORS},
        summary="Deregister the number at Meta and turn the bot off",
    )
    def deregister(self, request: Request) -> Response:
        account = services.whatsapp_deregister(clinic=self.clinic)
        return Response({"status": account.status})
