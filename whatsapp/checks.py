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
    # With DEBUG off, plain http to another machine is refused before any check runs
    # (clinics_project/settings.py): access tokens never cross a network unencrypted.
    return messages
