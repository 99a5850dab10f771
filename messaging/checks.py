from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def check_bot_url_allow_private(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """`check --deploy` warns when a production server may connect to its own network for a clinic's bot."""
    if settings.BOT_URL_ALLOW_PRIVATE and not settings.DEBUG:
        return [
            checks.Warning(
                "BOT_URL_ALLOW_PRIVATE is true: a clinic's bot URL may reach this server's own network "
                "(loopback, private addresses, the cloud metadata service) and use plain http.",
                hint="Leave BOT_URL_ALLOW_PRIVATE unset (false) outside development and tests.",
                id="messaging.W001",
            )
        ]
    return []
