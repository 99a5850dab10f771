"""The bot's side of the number in the API: endpoints 14, 14a, 14b (the bot endpoint), 15 (conversations
and their messages) and 18 (deliveries to the bot, redelivery). Thin views over `messaging`.

Everything is scoped by the caller's clinic: an id of another clinic's conversation or
delivery is a 404, never a 403 that would say it exists.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics.models import Clinic
from clinics.permissions import IsClinicAdmin, IsClinicMember
from common.api.shapes import OutputField, OutputShape, utc_iso
from common.api.views import NoStoreMixin
from messaging.bot_endpoint import bot_endpoint_ping, bot_endpoint_rotate_secret, bot_endpoint_save_url
from messaging.exceptions import BotDeliveryNotDeadError
from messaging.models import (
    BotDelivery,
    BotDeliveryState,
    BotEndpoint,
    BotEndpointStatus,
    Conversation,
    Message,
)
from messaging.outbox import bot_delivery_redeliver
from messaging.selectors import (
    bot_deliveries_of,
    bot_delivery_counts,
    conversation_of,
    conversations_of,
    last_messages,
)

VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT, description='Invalid input: {"field": ["why"]}; nothing was saved.'
)
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description="No such item in your clinic.")


# --- bodies ------------------------------------------------------------------------------------


def message_error(message: Message) -> dict[str, Any] | None:
    """Meta's refusal of an outbound message, with a sentence in the reader's language."""
    if message.error_code is None:
        return None
    return {"code": message.error_code, "detail": message.failure_detail}


MESSAGE_SHAPE = OutputShape(
    "Message",
    [
        OutputField("id", lambda m: str(m.pk), serializers.UUIDField()),
        OutputField("wamid", lambda m: m.wamid or None, serializers.CharField(allow_null=True)),
        OutputField("direction", lambda m: m.direction, serializers.ChoiceField(choices=["in", "out"])),
        OutputField("type", lambda m: m.type, serializers.CharField()),
        OutputField("text", lambda m: m.text, serializers.CharField(allow_null=True)),
        OutputField("media", lambda m: m.media_info, serializers.DictField(allow_null=True)),
        OutputField(
            "sent_by",
            lambda m: m.sent_by,
            serializers.CharField(help_text="patient, bot or a member's e-mail"),
        ),
        OutputField("status", lambda m: m.status or None, serializers.CharField(allow_null=True)),
        OutputField(
            "error", message_error, serializers.DictField(allow_null=True, help_text="{code, detail}")
        ),
        OutputField("created_at", lambda m: utc_iso(m.created_at), serializers.DateTimeField()),
        OutputField("sequence", lambda m: m.sequence, serializers.IntegerField()),
    ],
)


# A conversation is rendered with its last message: the pair (conversation, last message or None).
CONVERSATION_SHAPE = OutputShape(
    "Conversation",
    [
        OutputField("id", lambda p: str(p[0].pk), serializers.UUIDField()),
        OutputField("wa_id", lambda p: p[0].wa_id or None, serializers.CharField(allow_null=True)),
        OutputField("user_id", lambda p: p[0].user_id or None, serializers.CharField(allow_null=True)),
        OutputField("profile_name", lambda p: p[0].profile_name, serializers.CharField(allow_null=True)),
        OutputField(
            "window_open_until",
            lambda p: utc_iso(p[0].window_open_until),
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField("needs_human", lambda p: p[0].needs_human, serializers.BooleanField()),
        OutputField(
            "last_message_at",
            lambda p: utc_iso(p[0].last_message_at),
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField(
            "last_message",
            lambda p: None if p[1] is None else MESSAGE_SHAPE.render(p[1]),
            MESSAGE_SHAPE.serializer(allow_null=True),
        ),
    ],
)


# Rendered from (endpoint or None, its pending and dead counts, a secret just made or None).
BOT_ENDPOINT_SHAPE = OutputShape(
    "BotEndpoint",
    [
        OutputField("url", lambda p: p[0].url if p[0] else "", serializers.CharField()),
        OutputField(
            "status",
            lambda p: p[0].status if p[0] else BotEndpointStatus.NONE,
            serializers.ChoiceField(choices=BotEndpointStatus.values),
        ),
        OutputField(
            "secret",
            lambda p: p[2] or (p[0].masked_secret if p[0] else None),
            serializers.CharField(
                allow_null=True,
                help_text="Masked (whsec_abcd...****), in full only in the answer that created it.",
            ),
        ),
        OutputField(
            "last_success_at",
            lambda p: utc_iso(p[0].last_success_at) if p[0] else None,
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField(
            "failing_since",
            lambda p: utc_iso(p[0].failing_since) if p[0] else None,
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField("pending", lambda p: p[1]["pending"], serializers.IntegerField()),
        OutputField("dead", lambda p: p[1]["dead"], serializers.IntegerField()),
    ],
)


def bot_endpoint_body(clinic: Clinic, *, new_secret: str | None = None) -> dict[str, Any]:
    """The endpoint object (14); `new_secret` in full when this answer created or rotated it."""
    endpoint = BotEndpoint.objects.filter(clinic=clinic).first()
    return BOT_ENDPOINT_SHAPE.render((endpoint, bot_delivery_counts(clinic_id=clinic.pk), new_secret))


DELIVERY_SHAPE = OutputShape(
    "BotDelivery",
    [
        OutputField("id", lambda d: str(d.pk), serializers.UUIDField()),
        OutputField("webhook_id", lambda d: d.webhook_id, serializers.CharField()),
        OutputField("type", lambda d: d.event_type, serializers.CharField()),
        OutputField(
            "state", lambda d: d.public_state, serializers.ChoiceField(choices=BotDeliveryState.values)
        ),
        OutputField(
            "conversation_id",
            lambda d: d.conversation_id and str(d.conversation_id),
            serializers.UUIDField(allow_null=True),
        ),
        OutputField(
            "message_id", lambda d: d.message_id and str(d.message_id), serializers.UUIDField(allow_null=True)
        ),
        OutputField("attempts", lambda d: d.attempts, serializers.IntegerField()),
        OutputField(
            "first_attempt_at",
            lambda d: utc_iso(d.first_attempt_at),
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField(
            "next_attempt_at",
            lambda d: utc_iso(d.next_attempt_at),
            serializers.DateTimeField(allow_null=True),
        ),
        OutputField(
            "last_status_code", lambda d: d.last_status_code, serializers.IntegerField(allow_null=True)
        ),
        OutputField("last_error", lambda d: d.last_error, serializers.CharField()),
        OutputField("created_at", lambda d: utc_iso(d.created_at), serializers.DateTimeField()),
    ],
)


# --- input ---------------------------------------------------------------------------------------


class BotUrlInputSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(
        max_length=2048, allow_blank=True, help_text="https:// URL of the clinic's bot; empty removes it."
    )


class DeliveryListInputSerializer(serializers.Serializer[Any]):
    state = serializers.ChoiceField(choices=BotDeliveryState.values, required=False)


# --- lists ---------------------------------------------------------------------------------------


class NewestFirst(CursorPagination):
    """The contract's lists: `{"results", "next"}`, newest first, at most 50 (`?limit=`), stable as rows arrive."""

    page_size = 50
    max_page_size = 50
    page_size_query_param = "limit"

    def __init__(self, ordering: str) -> None:
        self.ordering = ordering

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {"cursor": [_("This cursor is not valid; start again from the first page.")]}
            ) from None

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"results": data, "next": self.get_next_link()})


def page_of(
    view: APIView, request: Request, rows: QuerySet[Any], ordering: str
) -> tuple[list[Any], NewestFirst]:
    paginator = NewestFirst(ordering)
    return list(paginator.paginate_queryset(rows, request, view=view) or []), paginator


def uuid_or_404(value: str) -> uuid.UUID:
    """An id from the path; anything that is not a UUID names nothing of the caller's clinic."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Http404 from None


def page_schema(shape: OutputShape) -> Any:
    """A list's documented body: `{"results": [...], "next": url or null}`."""
    return inline_serializer(
        f"{shape.name}Page",
        {
            "results": shape.serializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null at the end."),
        },
    )


LIMIT = OpenApiParameter("limit", int, description="At most this many (1-50, default 50).")
CURSOR = OpenApiParameter("cursor", str, description="From a previous answer's `next`.")


# --- views ---------------------------------------------------------------------------------------


class MessagingMixin(NoStoreMixin):
    """The caller's clinic (`self.clinic`); reads need a member, writes (or `admin_only`) an admin."""

    admin_only = False

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.admin_only or self.request.method not in ("GET", "HEAD", "OPTIONS"):  # type: ignore[attr-defined]
            return [permissions.IsAuthenticated(), IsClinicAdmin()]
        return [permissions.IsAuthenticated(), IsClinicMember()]

    @property
    def clinic(self) -> Clinic:
        return self.request.clinic  # type: ignore[attr-defined]


class BotEndpointView(MessagingMixin, APIView):
    @extend_schema(responses=BOT_ENDPOINT_SHAPE.serializer, summary="Read the clinic's bot endpoint (14)")
    def get(self, request: Request) -> Response:
        return Response(bot_endpoint_body(self.clinic))

    @extend_schema(
        request=BotUrlInputSerializer,
        responses={200: BOT_ENDPOINT_SHAPE.serializer, 400: VALIDATION_ERROR},
        summary="Save the bot's URL (14): unverified until a test gets a 2xx; the first save shows the secret once",
    )
    def put(self, request: Request) -> Response:
        serializer = BotUrlInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        saved = bot_endpoint_save_url(clinic_id=self.clinic.pk, url=serializer.validated_data["url"])
        return Response(bot_endpoint_body(self.clinic, new_secret=saved.new_secret))


class BotTestView(MessagingMixin, APIView):
    admin_only = True

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"status": "live"}'),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description='{"detail", "status_code", "error"}: what the bot answered'
            ),
        },
        summary="Send the bot a signed ping (14a): a 2xx within 10 seconds makes it live",
    )
    def post(self, request: Request) -> Response:
        result = bot_endpoint_ping(clinic_id=self.clinic.pk)
        if result.live:
            return Response({"status": BotEndpointStatus.LIVE})
        if result.status_code is not None:
            detail = _("The bot answered HTTP %(status)s; it must answer 2xx.") % {
                "status": result.status_code
            }
        else:
            detail = _("The bot could not be reached (%(error)s).") % {"error": result.error}
        return Response(
            {"detail": detail, "status_code": result.status_code, "error": result.error},
            status=status.HTTP_400_BAD_REQUEST,
        )


class BotSecretView(MessagingMixin, APIView):
    admin_only = True

    @extend_schema(
        request=None,
        responses=BOT_ENDPOINT_SHAPE.serializer,
        summary="Rotate the signing secret (14b): the new one in full, this once; the old one signs 24 h more",
    )
    def post(self, request: Request) -> Response:
        secret = bot_endpoint_rotate_secret(clinic_id=self.clinic.pk)
        return Response(bot_endpoint_body(self.clinic, new_secret=secret))


class ConversationListView(MessagingMixin, APIView):
    admits_bot_keys = True  # a bot reads its clinic's conversations (15)

    @extend_schema(
        parameters=[LIMIT, CURSOR],
        responses={200: page_schema(CONVERSATION_SHAPE), 400: VALIDATION_ERROR},
        summary="The clinic's conversations, newest first (15)",
    )
    def get(self, request: Request) -> Response:
        rows, paginator = page_of(
            self, request, conversations_of(clinic_id=self.clinic.pk), "-last_message_at"
        )
        last = last_messages(rows)
        return paginator.get_paginated_response(
            [CONVERSATION_SHAPE.render((c, last.get(c.pk))) for c in rows]
        )


class ConversationMessagesView(MessagingMixin, APIView):
    admits_bot_keys = True

    @extend_schema(
        parameters=[LIMIT, CURSOR],
        responses={200: page_schema(MESSAGE_SHAPE), 400: VALIDATION_ERROR, 404: NOT_FOUND},
        summary="A conversation's messages, newest first (15)",
    )
    def get(self, request: Request, conversation_id: str) -> Response:
        try:
            conversation = conversation_of(
                clinic_id=self.clinic.pk, conversation_id=uuid_or_404(conversation_id)
            )
        except Conversation.DoesNotExist:
            raise Http404 from None
        messages = Message.objects.filter(conversation=conversation)
        rows, paginator = page_of(self, request, messages, "-sequence")
        return paginator.get_paginated_response([MESSAGE_SHAPE.render(m) for m in rows])


class BotDeliveryListView(MessagingMixin, APIView):
    admin_only = True

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=BotDeliveryState.values, description="Only these."),
            LIMIT,
            CURSOR,
        ],
        responses={200: page_schema(DELIVERY_SHAPE), 400: VALIDATION_ERROR},
        summary="Deliveries to the bot, newest first (18): pending or dead",
    )
    def get(self, request: Request) -> Response:
        query = DeliveryListInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = bot_deliveries_of(clinic_id=self.clinic.pk, state=query.validated_data.get("state"))
        page, paginator = page_of(self, request, rows, "-created_at")
        return paginator.get_paginated_response([DELIVERY_SHAPE.render(d) for d in page])


class BotRedeliverView(MessagingMixin, APIView):
    admin_only = True

    @extend_schema(
        request=None,
        responses={
            200: DELIVERY_SHAPE.serializer,
            404: NOT_FOUND,
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Only a dead delivery can be redelivered."),
        },
        summary="Queue a dead delivery again (18), with its webhook-id and a fresh 24 hours",
    )
    def post(self, request: Request, delivery_id: str) -> Response:
        try:
            delivery = bot_delivery_redeliver(clinic_id=self.clinic.pk, delivery_id=uuid_or_404(delivery_id))
        except BotDelivery.DoesNotExist:
            raise Http404 from None
        except BotDeliveryNotDeadError:
            return Response(
                {"detail": _("Only a dead delivery can be redelivered.")}, status=status.HTTP_409_CONFLICT
            )
        return Response(DELIVERY_SHAPE.render(delivery))
