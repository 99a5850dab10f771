"""Endpoint 19: a clinic's admins list their team, change roles, deactivate and reactivate members."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics.members import LastAdminError, clinic_members, member_update
from clinics.models import User
from clinics.permissions import IsClinicAdmin
from common.api.views import NoStoreMixin
from common.notsent import NOT_SENT

from .activity import cursor_page, page_arguments


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


class MembersView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @extend_schema(responses=MemberOutputSerializer(many=True), summary="The clinic's members, newest first")
    def get(self, request: Request) -> Response:
        cursor, limit = page_arguments(request.query_params)
        rows = clinic_members(clinic=request.clinic)  # type: ignore[attr-defined]
        return cursor_page(request, rows, cursor, limit, MemberOutputSerializer)


class MemberView(NoStoreMixin, APIView):
    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    def _update(self, request: Request, member_id: int, **changes: Any) -> Response:
        try:
            member = member_update(clinic=request.clinic, member_id=member_id, **changes)  # type: ignore[attr-defined]
        except User.DoesNotExist:
            raise NotFound(_("No member of your clinic has this id.")) from None
        except LastAdminError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(MemberOutputSerializer(member).data)

    @extend_schema(
        request=MemberInputSerializer,
        responses=MemberOutputSerializer,
        summary="Change a role, or (de)activate",
    )
    def patch(self, request: Request, member_id: int) -> Response:
        serializer = MemberInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._update(
            request, member_id, role=data.get("role", NOT_SENT), is_active=data.get("is_active", NOT_SENT)
        )

    @extend_schema(
        request=None, responses=MemberOutputSerializer, summary="Deactivate a member (never deleted)"
    )
    def delete(self, request: Request, member_id: int) -> Response:
        return self._update(request, member_id, is_active=False)
