from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from . import services
from .models import ApiToken, User
from .selectors import api_token_for_key


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>` or `Authorization: Bearer <key>`, until API_TOKEN_TTL_DAYS after issue.

    The token comes with its user, the user's clinic and the clinic's WhatsApp
    connection (`clinics.selectors.api_token_for_key`), which is all that
    permissions and the endpoints read about the caller.
    """

    keywords = (b"token", b"bearer")

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
            token = api_token_for_key(key)
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
