"""OpenAPI description of our token authentication (drf-spectacular extension)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "clinics.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` or `Bearer <key>`; get a key from POST /api/auth/token/.",
        }


class BotKeyScheme(OpenApiAuthenticationExtension):
    target_class = "clinics.bot_keys.BotKeyAuthentication"
    name = "botKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Bearer bot_...`: a key from POST /api/clinics/bot/keys/ (the clinic's bot). "
            "Accepted by the conversations, sending and the template list; 403 elsewhere.",
        }
