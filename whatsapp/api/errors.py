from __future__ import annotations

from rest_framework import status as http
from rest_framework.response import Response

from whatsapp.exceptions import (
    AttemptsExhaustedError,
    MetaRefusalError,
    MetaTimedOutError,
    MetaUnreachableError,
    StatusConflictError,
    WhatsAppError,
)


def whatsapp_error_response(exc: Exception) -> Response | None:
    """The contract's body for a WhatsApp domain error, or None for anything else."""
    if not isinstance(exc, WhatsAppError):
        return None
    body: dict[str, object] = {"status": exc.status, "detail": exc.detail}
    headers: dict[str, str] = {}
    if isinstance(exc, MetaRefusalError):
        body["meta_code"] = exc.meta_code
        code = http.HTTP_400_BAD_REQUEST
    elif isinstance(exc, StatusConflictError):
        code = http.HTTP_409_CONFLICT
    elif isinstance(exc, AttemptsExhaustedError):
        code = http.HTTP_429_TOO_MANY_REQUESTS
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, MetaTimedOutError):
        code = http.HTTP_504_GATEWAY_TIMEOUT
    elif isinstance(exc, MetaUnreachableError):
        code = http.HTTP_502_BAD_GATEWAY
    else:
        code = http.HTTP_400_BAD_REQUEST
    return Response(body, status=code, headers=headers)
