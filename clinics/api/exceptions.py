"""One exception handler for the API: domain errors become the contract's bodies."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from common.http import DATABASE_RETRY_AFTER, DATABASE_UNAVAILABLE
from whatsapp.exceptions import (
    AttemptsExhaustedError,
    MetaRefusedError,
    MetaTimeoutError,
    MetaUnavailableError,
    StatusConflictError,
    WhatsAppError,
)
from whatsapp.serializers import error_body

logger = logging.getLogger(__name__)


def _api_keys(errors: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    # Services speak the model's field names; the API answers with its own keys.
    return {names.get(key, key): value for key, value in errors.items()}


def _whatsapp_error_status(exc: WhatsAppError) -> int:
    if isinstance(exc, MetaRefusedError):
        return status.HTTP_400_BAD_REQUEST
    if isinstance(exc, StatusConflictError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, AttemptsExhaustedError):
        return status.HTTP_429_TOO_MANY_REQUESTS
    if isinstance(exc, MetaTimeoutError):
        return status.HTTP_504_GATEWAY_TIMEOUT
    if isinstance(exc, MetaUnavailableError):
        return status.HTTP_502_BAD_GATEWAY
    return status.HTTP_400_BAD_REQUEST


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        # Plain DRF shape: {"field": ["why"]}, never wrapped in "detail".
        errors = as_serializer_error(exc)
        names = getattr(context.get("view"), "service_error_names", None) or {}
        exc = exceptions.ValidationError(_api_keys(errors, names))
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": _("The request body is too large.")},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is down or the connection broke: the contract's JSON, not Django's
        # HTML error page, and a hint to retry (healthz says 503 for the same reason).
        # The driver's message names the host, never a password: operators need it.
        logger.error("database unavailable: %s: %s", type(exc).__name__, exc)
        return Response(
            {"detail": str(DATABASE_UNAVAILABLE)},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    elif isinstance(exc, WhatsAppError):
        headers = {}
        if isinstance(exc, AttemptsExhaustedError):
            headers["Retry-After"] = str(exc.retry_after)
        return Response(error_body(exc), status=_whatsapp_error_status(exc), headers=headers)
    return exception_handler(exc, context)
