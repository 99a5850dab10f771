from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from . import services
from .models import ApiToken, User
from .token_query import api_token_by_digest

# What the token's one query joins: its user and the user's clinic; or those and the clinic's WhatsApp state.
OWNER_ONLY = "user__clinic"
WITH_CONNECTION = "user__clinic__whatsapp"


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>` or `Authorization: Bearer <key>`, until API_TOKEN_TTL_DAYS after issue.

    One query loads what authentication and permissions need: the token, its user
    and the user's clinic. The clinic's WhatsApp state (and its encrypted secrets)
    is loaded only by the endpoints that read it: they pass `loads=WITH_CONNECTION`
    (clinics.api.views.ConnectionReaderMixin), which joins its row into that same
    query. Measured (bench/reports/2026-12-01-issue13.md), one joined query costs less
    than the token's query plus a second one. Its secrets come as ciphertext and are
    decrypted only when the endpoint reads one: a status poll decrypts nothing. On
    PostgreSQL that query is a statement built once per process (clinics.token_query),
    not compiled by the ORM on every request.
    """

    keywords = (b"token", b"bearer")

    def __init__(self, loads: str = OWNER_ONLY) -> None:
        self.loads = loads

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                _("Invalid Authorization header: use 'Token <key>' or 'Bearer <key>'.")
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        try:
            # The one query of every token-authenticated request: token, user and clinic (and what `loads` adds).
            token = api_token_by_digest(ApiToken.hash_key(key), path=self.loads)
        except ApiToken.DoesNotExist:
            raise exceptions.AuthenticationFailed(
                _("Invalid token. Sign in again to get a new one.")
            ) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("This user account is disabled."))
        now = timezone.now()
        if token.expires_at <= now:
            raise exceptions.AuthenticationFailed(
                _("This token has expired. Sign in again to get a new one.")
            )
        services.api_token_record_use(token=token, now=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="api"'
