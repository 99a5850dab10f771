"""One exception handler for the API: domain errors become the contract's bodies."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        # Plain DRF shape: {"field": ["why"]}, never wrapped in "detail".
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": _("The request body is too large.")},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )

    # Domain errors of the WhatsApp services (status conflicts, Meta refusals...)
    # know their own HTTP answer; imported here to keep clinics free of whatsapp at import time.
    from whatsapp.api.errors import whatsapp_error_response

    response = whatsapp_error_response(exc)
    if response is not None:
        return response
    return exception_handler(exc, context)
