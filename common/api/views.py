"""Small pieces every API view of the project shares."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response


class NoStoreMixin:
    """Responses carry clinic settings or keys: no browser or proxy may keep them."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Cache-Control"] = "no-store"
        return response
