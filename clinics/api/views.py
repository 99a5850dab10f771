"""Thin API views: validate input, call a service, render output.

Endpoints 1-4 (settings, profile), token sign-in and out, and endpoints 5-9 (the
WhatsApp connection, the product's API over `whatsapp.services`).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.utils import translation
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics import services
from clinics.models import ApiToken, Clinic
from clinics.permissions import IsClinicAdmin, IsClinicMember, IsNotBotKey
from clinics.selectors import whatsapp_account_of
from common.api.fields import error_names
from common.api.views import NoStoreMixin
from whatsapp import health as whatsapp_health
from whatsapp import services as whatsapp_services
from whatsapp.health_serializers import HEALTH_SHAPE
from whatsapp.models import WhatsAppAccount
from whatsapp.serializers import (
    CONFIGURE_SHAPE,
    ERROR_SHAPE,
    PIN_SHAPE,
    STATUS_ONLY_SHAPE,
    STATUS_SHAPE,
    WhatsAppConfigureInputSerializer,
    WhatsAppPinInputSerializer,
    WhatsAppRegisterInputSerializer,
    WhatsAppVerifyInputSerializer,
    configure_body,
    status_body,
)

from .serializers import (
    PROFILE_SHAPE,
    SETTINGS_SHAPE,
    TOKEN_SHAPE,
    ClinicProfileInputSerializer,
    ClinicSettingsInputSerializer,
    TokenInputSerializer,
)

# DRF's usual validation body: {"field": ["why", ...]} (or "non_field_errors").
VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT, description='Invalid input: {"field": ["why"]}; nothing was saved.'
)


class ClinicScopedMixin(NoStoreMixin):
    """`self.clinic` is always the caller's clinic (set by IsClinicMember), never from the URL or body.

    Reads need a member; writes need the clinic's admin.
    """

    read_methods = ("GET", "HEAD", "OPTIONS")

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.request.method in self.read_methods:  # type: ignore[attr-defined]
            return [permissions.IsAuthenticated(), IsClinicMember()]
        return [permissions.IsAuthenticated(), IsClinicAdmin()]

    @property
    def clinic(self) -> Clinic:
        return self.request.clinic  # type: ignore[attr-defined]

    @property
    def whatsapp(self) -> WhatsAppAccount:
        """The caller's clinic's WhatsApp connection: loaded with the token, or one query for a session."""
        return whatsapp_account_of(self.clinic)


class ClinicSettingsView(ClinicScopedMixin, APIView):
    service_error_names = error_names(ClinicSettingsInputSerializer)

    @extend_schema(responses=SETTINGS_SHAPE.serializer, summary="Read the clinic's settings")
    def get(self, request: Request) -> Response:
        return Response(SETTINGS_SHAPE.render(self.clinic))

    @extend_schema(
        request=ClinicSettingsInputSerializer,
        responses={200: SETTINGS_SHAPE.serializer, 400: VALIDATION_ERROR},
        summary="Change any subset of the clinic's settings (PUT is partial too)",
    )
    def patch(self, request: Request) -> Response:
        serializer = ClinicSettingsInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        credentials = data.pop("whatsapp", None)
        clinic = services.clinic_update_settings(clinic=self.clinic, data=data, credentials=credentials)
        return Response(SETTINGS_SHAPE.render(clinic))

    @extend_schema(
        request=ClinicSettingsInputSerializer,
        responses={200: SETTINGS_SHAPE.serializer, 400: VALIDATION_ERROR},
        summary="Change any subset of the clinic's settings (same as PATCH)",
    )
    def put(self, request: Request) -> Response:
        return self.patch(request)


class ClinicProfileView(ClinicScopedMixin, APIView):
    @extend_schema(responses=PROFILE_SHAPE.serializer, summary="Read the clinic's profile")
    def get(self, request: Request) -> Response:
        return Response(PROFILE_SHAPE.render(self.clinic))

    @extend_schema(
        request=ClinicProfileInputSerializer,
        responses={200: PROFILE_SHAPE.serializer, 400: VALIDATION_ERROR},
        summary="Change name, contact and location (PUT is partial too)",
    )
    def patch(self, request: Request) -> Response:
        serializer = ClinicProfileInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        clinic = services.clinic_update_profile(clinic=self.clinic, data=serializer.validated_data)
        return Response(PROFILE_SHAPE.render(clinic))

    @extend_schema(
        request=ClinicProfileInputSerializer,
        responses={200: PROFILE_SHAPE.serializer, 400: VALIDATION_ERROR},
        summary="Change name, contact and location (same as PATCH)",
    )
    def put(self, request: Request) -> Response:
        return self.patch(request)


class ObtainTokenView(NoStoreMixin, APIView):
    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=TokenInputSerializer,
        responses={
            200: TOKEN_SHAPE.serializer,
            400: VALIDATION_ERROR,
            429: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Too many failed sign-ins; see Retry-After"
            ),
        },
        summary="Exchange email and password for an API token",
    )
    def post(self, request: Request) -> Response:
        serializer = TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The sign-in limiter (django-axes) sits in authenticate(), as on every door:
        # a locked-out attempt hashes no password and AxesMiddleware answers it 429.
        user = authenticate(
            request._request,
            username=serializer.validated_data["email"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise ValidationError({"non_field_errors": [_("Wrong email or password.")]})
        key = services.api_token_issue(user=user)
        return Response(TOKEN_SHAPE.render(key))


class LogoutView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsNotBotKey]

    @extend_schema(request=None, responses={204: None}, summary="Delete the token used for this request")
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, ApiToken):
            services.api_token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


_WHATSAPP_ERRORS = {
    # Two shapes share 400: Meta's refusal and DRF's validation body.
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Meta refused: {"status", "detail", "meta_code"}; or invalid input: {"field": ["why"]}.',
    ),
    409: OpenApiResponse(ERROR_SHAPE.serializer, description="Not allowed in the current status"),
    429: OpenApiResponse(
        ERROR_SHAPE.serializer, description="A local limit protects the number; see Retry-After"
    ),
    502: OpenApiResponse(ERROR_SHAPE.serializer, description="Meta unreachable or failing"),
    504: OpenApiResponse(ERROR_SHAPE.serializer, description="Meta did not answer in time"),
}


class WhatsAppViewSet(NoStoreMixin, viewsets.ViewSet):
    """Endpoints 5-9 and 13: one ViewSet, explicit actions, every rule in the services."""

    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]
    input_serializers: dict[str, type] = {
        "configure": WhatsAppConfigureInputSerializer,
        "register": WhatsAppRegisterInputSerializer,
        "verify": WhatsAppVerifyInputSerializer,
        "pin": WhatsAppPinInputSerializer,
    }

    @property
    def clinic(self) -> Clinic:
        return self.request.clinic  # type: ignore[attr-defined]

    @property
    def whatsapp(self) -> WhatsAppAccount:
        """The caller's clinic's WhatsApp connection: loaded with the token, or one query for a session."""
        return whatsapp_account_of(self.clinic)

    @property
    def service_error_names(self) -> dict[str, str]:
        serializer_class = self.input_serializers.get(self.action or "")
        return error_names(serializer_class) if serializer_class else {}

    def _validated(self, request: Request) -> dict[str, Any]:
        serializer = self.input_serializers[self.action](data=request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    @extend_schema(
        request=WhatsAppConfigureInputSerializer,
        responses={200: CONFIGURE_SHAPE.serializer, 400: _WHATSAPP_ERRORS[400]},
        summary="Save the Meta Cloud API credentials and check them with Meta",
    )
    def configure(self, request: Request) -> Response:
        account = whatsapp_services.whatsapp_configure(account=self.whatsapp, **self._validated(request))
        return Response(configure_body(account))

    @extend_schema(
        request=WhatsAppRegisterInputSerializer,
        responses={200: STATUS_ONLY_SHAPE.serializer, **_WHATSAPP_ERRORS},
        summary="Add the number to the WhatsApp Business Account and have Meta send a code",
    )
    def register(self, request: Request) -> Response:
        account = whatsapp_services.whatsapp_register_number(
            account=self.whatsapp,
            verified_name=self.clinic.name,
            language=translation.get_language() or "es",
            **self._validated(request),
        )
        return Response(STATUS_ONLY_SHAPE.render(account))

    @extend_schema(
        request=WhatsAppVerifyInputSerializer,
        responses={200: STATUS_ONLY_SHAPE.serializer, **_WHATSAPP_ERRORS},
        summary="Submit the code Meta sent; registers the number",
    )
    def verify(self, request: Request) -> Response:
        account = whatsapp_services.whatsapp_verify_code(account=self.whatsapp, **self._validated(request))
        return Response(STATUS_ONLY_SHAPE.render(account))

    @extend_schema(
        request=WhatsAppPinInputSerializer,
        responses={200: PIN_SHAPE.serializer, **_WHATSAPP_ERRORS},
        summary="Send the number's existing two-step PIN (after Meta's 133005), or change an active number's PIN",
    )
    def pin(self, request: Request) -> Response:
        account = whatsapp_services.whatsapp_set_pin(account=self.whatsapp, **self._validated(request))
        return Response(PIN_SHAPE.render(account))

    @extend_schema(responses={200: STATUS_SHAPE.serializer}, summary="Poll the connection status")
    def status(self, request: Request) -> Response:
        return Response(status_body(whatsapp_services.whatsapp_refresh_status(account=self.whatsapp)))

    @extend_schema(
        request=None,
        responses={200: STATUS_ONLY_SHAPE.serializer, **_WHATSAPP_ERRORS},
        summary="Deregister the number at Meta and turn the bot off",
    )
    def deregister(self, request: Request) -> Response:
        account = services.clinic_whatsapp_deregister(clinic=self.clinic)
        return Response(STATUS_ONLY_SHAPE.render(account))

    @extend_schema(
        responses={200: HEALTH_SHAPE.serializer},
        summary="Read the last health check of the WhatsApp connection",
    )
    def health(self, request: Request) -> Response:
        return Response(HEALTH_SHAPE.render(whatsapp_health.whatsapp_health_of(account=self.whatsapp)))

    @extend_schema(
        request=None,
        responses={200: HEALTH_SHAPE.serializer, 429: _WHATSAPP_ERRORS[429]},
        summary="Run the health checks now (at most once a minute per clinic)",
    )
    def check_health(self, request: Request) -> Response:
        health = whatsapp_health.whatsapp_health_run_now(account=self.whatsapp)
        return Response(HEALTH_SHAPE.render(health))
