"""What Meta's Graph API answers, as the small typed values `whatsapp.meta.MetaClient` returns.

Each value is built from Graph's JSON by its `from_graph`, which keeps only what
has the expected type: a surprise from Meta is dropped, never stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .exceptions import MetaUnavailableError
from .validators import META_ID_RE

_DIGITS_RE = re.compile(r"[0-9]")


@dataclass(frozen=True)
class PhoneNumberInfo:
    """One WhatsApp business phone number as Graph describes it; absent fields are None."""

    id: str
    display_phone_number: str | None
    verified_name: str | None
    status: str | None
    code_verification_status: str | None
    name_status: str | None
    quality_rating: str | None
    platform_type: str | None
    messaging_limit_tier: str | None = None

    @property
    def display_digits(self) -> str:
        """Only the digits: Graph GETs say "+1 631-555-5555", webhooks say "16315555555"."""
        return "".join(_DIGITS_RE.findall(self.display_phone_number or ""))

    @classmethod
    def from_graph(cls, data: dict[str, Any]) -> PhoneNumberInfo:
        number_id = data.get("id")
        if isinstance(number_id, int) and not isinstance(number_id, bool):
            number_id = str(number_id)
        if not isinstance(number_id, str) or not META_ID_RE.fullmatch(number_id):
            raise MetaUnavailableError("Meta returned a phone number without a valid id")
        return cls(
            id=number_id,
            display_phone_number=opt_str(data.get("display_phone_number")),
            verified_name=opt_str(data.get("verified_name")),
            status=opt_str(data.get("status")),
            code_verification_status=opt_str(data.get("code_verification_status")),
            name_status=opt_str(data.get("name_status")),
            quality_rating=opt_str(data.get("quality_rating")),
            platform_type=opt_str(data.get("platform_type")),
            messaging_limit_tier=opt_str(data.get("messaging_limit_tier")),
        )


@dataclass(frozen=True)
class TokenInfo:
    """What ``debug_token`` says about an access token; absent values are None.

    ``expires_at`` None with ``is_valid`` means the token never expires (Meta's 0).
    ``target_ids`` maps a scope to the asset ids it is limited to (None: all assets).
    """

    is_valid: bool
    type: str | None
    app_id: str | None
    expires_at: int | None
    issued_at: int | None
    scopes: tuple[str, ...]
    target_ids: dict[str, tuple[str, ...] | None]

    @classmethod
    def from_graph(cls, data: dict[str, Any]) -> TokenInfo:
        info = data.get("data")
        if not isinstance(info, dict):
            raise MetaUnavailableError("Meta answered debug_token without a data object")
        scopes = info.get("scopes")
        targets: dict[str, tuple[str, ...] | None] = {}
        for grant in info.get("granular_scopes") or []:
            if isinstance(grant, dict) and isinstance(grant.get("scope"), str):
                ids = grant.get("target_ids")
                targets[grant["scope"]] = tuple(str(i) for i in ids) if isinstance(ids, list) else None
        expires_at = opt_int(info.get("expires_at"))
        app_id = info.get("app_id")
        return cls(
            is_valid=info.get("is_valid") is True,
            type=opt_str(info.get("type")),
            app_id=str(app_id) if isinstance(app_id, str | int) and not isinstance(app_id, bool) else None,
            expires_at=expires_at or None,  # 0: never
            issued_at=opt_int(info.get("issued_at")),
            scopes=tuple(scope for scope in scopes if isinstance(scope, str))
            if isinstance(scopes, list)
            else (),
            target_ids=targets,
        )


@dataclass(frozen=True)
class SubscribedApp:
    """One app subscribed to a WABA's webhooks (``GET /{waba}/subscribed_apps``)."""

    id: str | None
    name: str | None
    override_callback_uri: str | None

    @classmethod
    def from_graph(cls, data: dict[str, Any]) -> SubscribedApp:
        app = data.get("whatsapp_business_api_data")
        app = app if isinstance(app, dict) else {}
        app_id = app.get("id")
        return cls(
            id=str(app_id) if isinstance(app_id, str | int) and not isinstance(app_id, bool) else None,
            name=opt_str(app.get("name")),
            override_callback_uri=opt_str(data.get("override_callback_uri")),
        )


# A body placeholder: {{1}} (positional) or {{name}} (named).
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class TemplateInfo:
    """One message template in one language (``GET /{waba}/message_templates``)."""

    id: str
    name: str
    language: str
    status: str
    category: str
    quality: str
    params: int
    rejected_reason: str

    @classmethod
    def from_graph(cls, data: dict[str, Any]) -> TemplateInfo:
        name, language = data.get("name"), data.get("language")
        if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
            raise MetaUnavailableError("Meta returned a template without a name or language")
        quality = data.get("quality_score")
        score = quality.get("score") if isinstance(quality, dict) else None
        body = ""
        for component in data.get("components") or []:
            if isinstance(component, dict) and str(component.get("type", "")).upper() == "BODY":
                body = opt_str(component.get("text")) or ""
        template_id = data.get("id")
        reason = opt_str(data.get("rejected_reason")) or ""
        return cls(
            id=str(template_id) if isinstance(template_id, str | int) else "",
            name=name,
            language=language,
            status=(opt_str(data.get("status")) or "").upper(),
            category=(opt_str(data.get("category")) or "").upper(),
            quality=(opt_str(score) or "").upper(),
            params=len(set(_PLACEHOLDER_RE.findall(body))),
            rejected_reason="" if reason == "NONE" else reason,
        )


def opt_str(value: Any) -> str | None:
    # Graph sends strings; anything else is a surprise we would rather not store.
    return value if isinstance(value, str) else None


def opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
