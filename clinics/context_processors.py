from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def meta_mode(request: HttpRequest) -> dict[str, Any]:
    """Every page says so while Meta is simulated (development)."""
    return {"meta_simulated": settings.META_SIMULATED}
