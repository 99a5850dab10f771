from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks


@checks.register()
def check_meta_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    url = urlsplit(settings.META_GRAPH_URL)
    if url.scheme not in ("http", "https") or not url.netloc:
        messages.append(
            checks.Error(
                "META_GRAPH_URL must be an http(s) URL with the Graph version, "
                "such as https://graph.facebook.com/v26.0.",
                id="whatsapp.E001",
            )
        )
    elif (
        url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1") and not settings.DEBUG
    ):
        messages.append(
            checks.Warning(
                "META_GRAPH_URL uses plain http: access tokens would cross the network unencrypted.",
                id="whatsapp.W001",
            )
        )
    return messages
