"""Development only: what the simulated Meta (the fake Graph server scripts/run starts) knows.

With `META_SIMULATED` on, the settings page shows the numbers on the clinic's
simulated WhatsApp Business Account and the code the fake "sent", so a newcomer
can finish the whole flow without reading any docs. It asks the fake's control
API over HTTP (never imports it); anything unexpected just shows nothing.
"""

from __future__ import annotations

import time
import uuid
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


# The simulated patient who writes from the settings page.
SIMULATED_PATIENT = {"wa_id": "50376543210", "name": "Paciente de prueba"}


def simulated_patient_payload(account: Any, text: str, *, at: int) -> dict[str, Any]:
    """Meta's `messages` webhook for one text from the simulated patient to the clinic's number."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": account.business_account_id or "0",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": (account.number or "").lstrip("+"),
                                "phone_number_id": account.phone_number_id,
                            },
                            "contacts": [
                                {
                                    "profile": {"name": SIMULATED_PATIENT["name"]},
                                    "wa_id": SIMULATED_PATIENT["wa_id"],
                                }
                            ],
                            "messages": [
                                {
                                    "from": SIMULATED_PATIENT["wa_id"],
                                    "id": f"wamid.simulated.{uuid.uuid4().hex}",
                                    "timestamp": str(at),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def simulated_webhook_target(account: Any, *, webhook_url: str) -> bool:
    """Tell the simulated Meta where this number's webhook is, so each message it accepts gets its statuses.

    The fake then posts signed `sent`, `delivered` and `read` events there after
    short delays, as Meta would. False when Meta is not simulated, the number has no
    id yet, or the fake did not take it.
    """
    control = _control_url()
    secret = account.app_secret or settings.META_APP_SECRET
    if control is None or not account.phone_number_id or not secret:
        return False
    try:
        response = requests.post(
            f"{control}/webhook_target",
            json={"phone_number_id": account.phone_number_id, "url": webhook_url, "app_secret": secret},
            timeout=2.0,
        )
    except requests.RequestException:
        return False
    return response.ok


def simulated_patient_message(account: Any, text: str, *, webhook_url: str) -> bool:
    """Ask the simulated Meta to post a signed patient message to the clinic's webhook, as Meta would.

    The fake signs it with the app secret the webhook checks. False when Meta is not
    simulated, the number has no id yet, or the fake did not deliver it.
    """
    control = _control_url()
    secret = account.app_secret or settings.META_APP_SECRET
    if control is None or not account.phone_number_id or not secret:
        return False
    simulated_webhook_target(account, webhook_url=webhook_url)
    payload = simulated_patient_payload(account, text, at=int(time.time()))
    try:
        response = requests.post(
            f"{control}/webhooks/send",
            json={"url": webhook_url, "app_secret": secret, "payload": payload},
            timeout=15.0,
        )
    except requests.RequestException:
        return False
    answer = response.json() if response.ok else None
    # The fake reports what the webhook answered: only a 200 means the message was taken.
    return isinstance(answer, dict) and answer.get("status") == 200
