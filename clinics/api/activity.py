"""Endpoint 20: the clinic's audit trail for its admins, newest first (see common.audit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from clinics import services
from clinics.permissions import IsClinicAdmin
from common.api.views import NoStoreMixin
from common.models import AuditEvent


class AuditEventOutputSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = ("id", "at", "actor", "door", "action", "changes", "address", "request_id")


def page_of(serializer: type[serializers.Serializer[Any]], name: str) -> Any:
    """A list's documented body: `{"results": [...], "next": url or null}` (the contract's "Lists")."""
    return inline_serializer(
        name,
        {
            "results": serializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null at the end."),
        },
    )


def page_arguments(query: Any) -> tuple[int | None, int]:
    """`cursor` (the last row's id of the page before) and `limit` from a query string; 400 if not numbers."""
    try:
        cursor = int(query["cursor"]) if query.get("cursor") else None
        limit = int(query.get("limit") or services.ACTIVITY_PAGE_SIZE)
    except ValueError:
        raise ValidationError({"cursor": [_("Use the link given in `next`.")]}) from None
    return cursor, limit


def cursor_page(
    request: Request, rows: Sequence[Any] | QuerySet[Any], cursor: int | None, limit: int, serializer: Any
) -> Response:
    """`{"results", "next"}` of a list newest first by id: `rows` already ordered `-id`.

    `cursor` (when `rows` is not cut yet) keeps the rows older than it; `next` is
    this URL with the last row's id, while a page comes back full.
    """
    size = max(1, min(limit, services.ACTIVITY_PAGE_SIZE))
    if isinstance(rows, QuerySet):
        rows = list((rows.filter(id__lt=cursor) if cursor is not None else rows)[:size])
    full = len(rows) == size
    following = (
        replace_query_param(request.build_absolute_uri(), "cursor", rows[-1].pk) if rows and full else None
    )
    return Response({"results": serializer(rows, many=True).data, "next": following})


class ClinicActivityView(NoStoreMixin, APIView):
    """Admins only: who changed what, when and through which door. Each reading is recorded too."""

    permission_classes = [permissions.IsAuthenticated, IsClinicAdmin]

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.INT, description="From `next`"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="At most 50"),
        ],
        responses={200: page_of(AuditEventOutputSerializer, "AuditEventPage"), 400: OpenApiTypes.OBJECT},
        summary="The clinic's activity: its audit trail, newest first",
    )
    def get(self, request: Request) -> Response:
        cursor, limit = page_arguments(request.query_params)
        rows = services.clinic_activity(clinic=request.clinic, before=cursor, limit=limit)  # type: ignore[attr-defined]
        return cursor_page(request, rows, None, limit, AuditEventOutputSerializer)
