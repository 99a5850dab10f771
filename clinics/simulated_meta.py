"""Development only: what the simulated Meta (the fake Graph server scripts/run starts) knows.

With `META_SIMULATED` on, the settings page shows the numbers on the clinic's
simulated WhatsApp Business Account and the code the fake "sent", so a newcomer
can finish the whole flow without reading any docs. It asks the fake's control
API over HTTP (never imports it); anything unexpected just shows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings


@dataclass(frozen=True)
class SimulatedNumber:
    id: str
    display: str
    status: str
    has_pin: bool
    pin: str | None


def _control_url() -> str | None:
    if not settings.META_SIMULATED:
        return None
    url = urlsplit(settings.META_GRAPH_URL)
    return f"{url.scheme}://{url.netloc}/_fake"


def _get(path: str) -> Any:
    control = _control_url()
    if control is None:
        return None
    try:
        response = requests.get(f"{control}{path}", timeout=1.0)
    except requests.RequestException:
        return None
    return response.json() if response.ok else None


def simulated_numbers(waba_id: str) -> list[SimulatedNumber]:
    """The numbers the simulated Meta has on this WABA (with the PIN a previous provider set)."""
    state = _get("/state")
    if not isinstance(state, dict) or not waba_id:
        return []
    numbers = state.get("numbers") or {}
    found = []
    for number in numbers.values() if isinstance(numbers, dict) else []:
        if isinstance(number, dict) and number.get("waba_id") == waba_id:
            found.append(
                SimulatedNumber(
                    id=str(number.get("id", "")),
                    display=str(number.get("display_phone_number", "")),
                    status=str(number.get("status", "")),
                    has_pin=bool(number.get("is_pin_enabled")),
                    pin=number.get("pin") if number.get("is_pin_enabled") else None,
                )
            )
    return sorted(found, key=lambda number: number.id)


def simulated_code(phone_number_id: str) -> str | None:
    """The last code the simulated Meta "sent" to this number, if any."""
    if not phone_number_id:
        return None
    sent = _get(f"/numbers/{phone_number_id}/code")
    code = sent.get("code") if isinstance(sent, dict) else None
    return str(code) if code else None
