"""Thin API views: validate input, call a service, render output."""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import authenticate
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from clinics import services
from clinics.models import ApiToken, Clinic
from clinics.permissions import IsClinicAdmin, IsClinicMember

from .serializers import (
    ClinicProfileInputSerializer,
    ClinicProfileOutputSerializer,
    ClinicSettingsInputSerializer,
    ClinicSettingsOutputSerializer,
    TokenInputSerializer,
    TokenOutputSerializer,
)

# DRF's usual validation body: {"field": ["why", ...]} (or "non_field_errors").
VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT, description='Invalid input: {"field": ["why"]}; nothing was saved.'
)


class NoStoreMixin:
    """Responses carry clinic settings or keys: no browser or proxy may keep them."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Cache-Control"] = "no-store"
        return response


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


class ClinicSettingsView(ClinicScopedMixin, APIView):
    @extend_schema(responses=ClinicSettingsOutputSerializer, summary="Read the clinic's settings")
    def get(self, request: Request) -> Response:
        return Response(ClinicSettingsOutputSerializer(self.clinic).data)

    @extend_schema(
        request=ClinicSettingsInputSerializer,
        responses={200: ClinicSettingsOutputSerializer, 400: VALIDATION_ERROR},
        summary="Change any subset of the clinic's settings (PUT is partial too)",
    )
    def patch(self, request: Request) -> Response:
        serializer = ClinicSettingsInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        clinic = services.clinic_update_settings(clinic=self.clinic, data=serializer.validated_data)
        return Response(ClinicSettingsOutputSerializer(clinic).data)

    @extend_schema(
        request=ClinicSettingsInputSerializer,
        responses={200: ClinicSettingsOutputSerializer, 400: VALIDATION_ERROR},
        summary="Change any subset of the clinic's settings (same as PATCH)",
    )
    def put(self, request: Request) -> Response:
        return self.patch(request)


class ClinicProfileView(ClinicScopedMixin, APIView):
    @extend_schema(responses=ClinicProfileOutputSerializer, summary="Read the clinic's profile")
    def get(self, request: Request) -> Response:
        return Response(ClinicProfileOutputSerializer(self.clinic).data)

    @extend_schema(
        request=ClinicProfileInputSerializer,
        responses={200: ClinicProfileOutputSerializer, 400: VALIDATION_ERROR},
        summary="Change name, contact and location (PUT is partial too)",
    )
    def patch(self, request: Request) -> Response:
        serializer = ClinicProfileInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        clinic = services.clinic_update_profile(clinic=self.clinic, data=serializer.validated_data)
        return Response(ClinicProfileOutputSerializer(clinic).data)

    @extend_schema(
        request=ClinicProfileInputSerializer,
        responses={200: ClinicProfileOutputSerializer, 400: VALIDATION_ERROR},
        summary="Change name, contact and location (same as PATCH)",
    )
    def put(self, request: Request) -> Response:
        return self.patch(request)


class LoginEmailThrottle(SimpleRateThrottle):
    """Per account, whatever the address: guessing one user's password from many IPs is slowed too."""

    scope = "auth"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        email = request.data.get("email") if isinstance(request.data, dict) else None
        if not isinstance(email, str) or not email:
            return None
        # Hashed: a raw email could hold characters a cache key must not.
        ident = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
        return self.cache_format % {"scope": "auth-email", "ident": ident}


class ObtainTokenView(NoStoreMixin, APIView):
    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedRateThrottle, LoginEmailThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=TokenInputSerializer,
        responses={
            200: TokenOutputSerializer,
            400: VALIDATION_ERROR,
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="Too many attempts; see Retry-After"),
        },
        summary="Exchange email and password for an API token",
    )
    def post(self, request: Request) -> Response:
        serializer = TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=serializer.validated_data["email"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise ValidationError({"non_field_errors": [_("Wrong email or password.")]})
        key = services.api_token_issue(user=user)
        return Response({"token": key})


class LogoutView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, summary="Delete the token used for this request")
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, ApiToken):
            services.api_token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
