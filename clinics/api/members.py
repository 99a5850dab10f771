"""Endpoint 19: a clinic's admins list their team, invite, change roles, deactivate and reactivate members."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics.invitations import (
    InvitationError,
    clinic_invitations,
    invitation_create,
    invitation_resend,
    invitation_revoke,
)
from clinics.members import LastAdminError, clinic_members, member_update
from clinics.models import Invitation, User
from clinics.permissions import IsClinicAdmin, IsClinicMember
from common.api.views import NoStoreMixin
from common.notsent import NOT_SENT

from .activity import cursor_page, page_arguments, page_of


class MemberOutputSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ("id", "email", "full_name", "role", "is_active", "date_joined", "last_login")


class MemberInputSerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=User.Role.choices, required=False)
    is_active = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise ValidationError({"non_field_errors": [_("Send a role or is_active.")]})
        return attrs


class InvitationInputSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=User.Role.choices)


class InvitationOutputSerializer(serializers.ModelSerializer[Invitation]):
    class Meta:
        model = Invitation
        fields = ("id", "email", "role", "created_at", "sent_at", "expires_at")


def site_url(request: Request) -> str:
    """Where the invitation's link points: this site, as the caller reached it (Host checked by Django)."""
    return request.build_absolute_uri("/")


def _invitation_refused(exc: InvitationError) -> ValidationError:
    return ValidationError({exc.field or "non_field_errors": [exc.message]})


def _row_id(value: str, not_found: str) -> int:
    """A row id from the path: anything but a plain positive number is no row of this clinic (JSON 404)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise NotFound(not_found)
    return int(value)


NO_INVITATION = gettext_lazy("Your clinic has no open invitation with this id.")
NO_MEMBER = gettext_lazy("No member of your clinic has this id.")
ID_NOT_FOUND = {404: OpenApiTypes.OBJECT}


class MembersView(NoStoreMixin, APIView):
    """19: every member reads who is on the team (the contract); only admins invite."""

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [permissions.IsAuthenticated(), IsClinicMember()]
        return [permissions.IsAuthenticated(), IsClinicAdmin()]

    @extend_schema(
        responses={200: page_of(MemberOutputSerializer, "MemberPage"), 400: OpenApiTypes.OBJECT},
        summary="The clinic's members, newest first",
    )
    def get(self, request: Request) -> Response:
        cursor, limit = page_arguments(request.query_params)
        rows = clinic_members(clinic=request.clinic)  # type: ignore[attr-defined]
        return cursor_page(request, rows, cursor, limit, MemberOutputSerializer)

    @extend_schema(
        request=InvitationInputSerializer,
        responses={201: InvitationOutputSerializer, 400: OpenApiTypes.OBJECT},
        summary="Invite a person by e-mail (a one-use link valid 72 hours)",
    )
    def post(self, request: Request) -> Response:
        serializer = InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            invitation = invitation_create(
                clinic=request.clinic,  # type: ignore[attr-defined]
                email=serializer.validated_data["email"],
                role=serializer.validated_data["role"],
                inviter=request.user,  # type: ignore[arg-type]
                site_url=site_url(request),
            )
        except InvitationError as exc:
            raise _invitation_refused(exc) from None
        return Response(InvitationOutputSerializer(invitation).data, status=status.HTTP_201_CREATED)


class InvitationsView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @extend_schema(
        responses={200: page_of(InvitationOutputSerializer, "InvitationPage"), 400: OpenApiTypes.OBJECT},
        summary="Invitations not yet accepted, newest first",
    )
    def get(self, request: Request) -> Response:
        cursor, limit = page_arguments(request.query_params)
        rows = clinic_invitations(clinic=request.clinic)  # type: ignore[attr-defined]
        return cursor_page(request, rows, cursor, limit, InvitationOutputSerializer)


class InvitationView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @extend_schema(
        request=None, responses={204: None, **ID_NOT_FOUND}, summary="Revoke an invitation (its link ends)"
    )
    def delete(self, request: Request, invitation_id: str) -> Response:
        try:
            invitation_revoke(
                clinic=request.clinic,  # type: ignore[attr-defined]
                invitation_id=_row_id(invitation_id, str(NO_INVITATION)),
            )
        except Invitation.DoesNotExist:
            raise NotFound(NO_INVITATION) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationResendView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @extend_schema(
        request=None,
        responses={200: InvitationOutputSerializer, 400: OpenApiTypes.OBJECT, **ID_NOT_FOUND},
        summary="Send an invitation again: a new link for 72 hours, the old one ends",
    )
    def post(self, request: Request, invitation_id: str) -> Response:
        try:
            invitation = invitation_resend(
                clinic=request.clinic,  # type: ignore[attr-defined]
                invitation_id=_row_id(invitation_id, str(NO_INVITATION)),
                inviter=request.user,  # type: ignore[arg-type]
                site_url=site_url(request),
            )
        except Invitation.DoesNotExist:
            raise NotFound(NO_INVITATION) from None
        except InvitationError as exc:
            raise _invitation_refused(exc) from None
        return Response(InvitationOutputSerializer(invitation).data)


class MemberView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    def _update(self, request: Request, member_id: str, **changes: Any) -> Response:
        try:
            member = member_update(
                clinic=request.clinic,  # type: ignore[attr-defined]
                member_id=_row_id(member_id, str(NO_MEMBER)),
                **changes,
            )
        except User.DoesNotExist:
            raise NotFound(NO_MEMBER) from None
        except LastAdminError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(MemberOutputSerializer(member).data)

    @extend_schema(
        request=MemberInputSerializer,
        responses={
            200: MemberOutputSerializer,
            400: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
        },
        summary="Change a role, or (de)activate",
    )
    def patch(self, request: Request, member_id: str) -> Response:
        serializer = MemberInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._update(
            request, member_id, role=data.get("role", NOT_SENT), is_active=data.get("is_active", NOT_SENT)
        )

    @extend_schema(
        request=None,
        responses={200: MemberOutputSerializer, 404: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
        summary="Deactivate a member (never deleted)",
    )
    def delete(self, request: Request, member_id: str) -> Response:
        return self._update(request, member_id, is_active=False)
