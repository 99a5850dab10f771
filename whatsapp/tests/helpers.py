"""Shared helpers for the WhatsApp API and webhook tests.

Meta is faked at the HTTP boundary with `responses`, so the real MetaClient,
its timeouts, retries and error mapping run in every test. Payloads are copied
from the shapes in ../shared/docs/meta-cloud-api.md (real captures and Meta's
own samples), with this clinic's ids put in.

The fixtures that use these helpers (`graph`, `admin_api`) are in conftest.py.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses
from django.conf import settings
from django.utils import timezone

from clinics.models import Clinic
from whatsapp.models import WhatsAppAccount

# --- identities ----------------------------------------------------------------------------------

TOKEN = "EAAOKw1xZBZBqkBAL7ZCsecretTOKENvalue0123456789abcdef"
NEW_TOKEN = "EAAGnewerSECRETtokenZZ9876543210fedcba"
PNID = "106540352242922"
WABA = "102290129340398"
OTHER_PNID = "1906385232743451"
OTHER_WABA = "184943124712545"
PHONE = "+50377654321"
DISPLAY = "+503 7765-4321"  # how Graph GETs print it
DIGITS = "50377654321"  # how webhooks print it
APP_SECRET = "0f3c1d9a8b7e6f5a4c3b2a1908f7e6d5"
OTHER_APP_SECRET = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

CONFIGURE_URL = "/api/clinics/whatsapp/"
REGISTER_URL = "/api/clinics/whatsapp/register/"
VERIFY_URL = "/api/clinics/whatsapp/verify/"
STATUS_URL = "/api/clinics/whatsapp/status/"
DEREGISTER_URL = "/api/clinics/whatsapp/"
SETTINGS_URL = "/api/clinics/settings/"

# --- Graph payloads (meta-cloud-api.md §2-§5) ----------------------------------------------------

SUCCESS = {"success": True}


def phone_number(
    status: str | None = "CONNECTED", *, pnid: str = PNID, display: str = DISPLAY, **extra: Any
) -> dict[str, Any]:
    """GET /{pnid}: the real captured answer (§2.3) with this clinic's number."""
    body: dict[str, Any] = {
        "official_business_account": {"oba_status": "NOT_STARTED"},
        "verified_name": "Clínica San Salvador",
        "name_status": "APPROVED",
        "display_phone_number": display,
        "code_verification_status": "VERIFIED",
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "status": status,
        "throughput": {"level": "STANDARD"},
        "is_official_business_account": False,
        "is_on_biz_app": False,
        "id": pnid,
    }
    if status is None:
        del body["status"]
    body.update(extra)
    return body


def phone_numbers_list(*numbers: tuple[str, str]) -> dict[str, Any]:
    """GET /{waba}/phone_numbers (§2.2): (id, display) pairs, default fields, cursors without next."""
    return {
        "data": [
            {
                "verified_name": "Clínica San Salvador",
                "code_verification_status": "NOT_VERIFIED",
                "display_phone_number": display,
                "quality_rating": "UNKNOWN",
                "platform_type": "NOT_APPLICABLE",
                "throughput": {"level": "NOT_APPLICABLE"},
                "id": number_id,
            }
            for number_id, display in numbers
        ],
        "paging": {
            "cursors": {
                "before": "QVFIUnZArQU9nbXI0YUc0aDBValFFSTc5VE5ldGZAEVjdnaEpmamU4WlJmclM3V2w0RDEyS2k5N0l1cGhXTEdKYUdhbFcZD",
                "after": "QVFIUnZArQU9nbXI0YUc0aDBValFFSTc5VE5ldGZAEVjdnaEpmamU4WlJmclM3V2w0RDEyS2k5N0l1cGhXTEdKYUdhbFcZD",
            }
        },
    }


def graph_error(
    code: int,
    message: str,
    *,
    details: str | None = None,
    kind: str = "OAuthException",
    subcode: int | None = None,
    fbtrace_id: str = "Az8or2yhqkZfEZ-_4Qn_Bam",
) -> dict[str, Any]:
    """Graph's error envelope (§5.1)."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id
    return {"error": error}


# (HTTP status per §5.2, body) of real or Meta-documented refusals.
ERRORS: dict[int, tuple[int, dict[str, Any]]] = {
    190: (
        400,
        graph_error(
            190,
            "Error validating access token: Session has expired on Thursday, 10-Dec-15 04:00:00 PST. "
            "The current time is Thursday, 10-Dec-15 20:23:54 PST.",
            subcode=463,
            fbtrace_id="AWpk5h2ceG6",
        ),
    ),
    200: (403, graph_error(200, "(#200) You do not have permission to perform this action on this object.")),
    10: (403, graph_error(10, "(#10) Application does not have permission for this action")),
    100: (
        400,
        graph_error(
            100,
            "Unsupported post request. Object with ID '106540352242922' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation. Please read the Graph API "
            "documentation at https://developers.facebook.com/docs/graph-api",
            kind="GraphMethodException",
            subcode=33,
            fbtrace_id="fbtrace_id",
        ),
    ),
    133005: (
        400,
        graph_error(
            133005,
            "(#133005) Two step verification PIN Mismatch",
            details="Two-step verification PIN incorrect.",
            fbtrace_id="A",
        ),
    ),
    133006: (
        400,
        graph_error(
            133006,
            "(#133006) Phone number re-verification needed",
            details="Phone number needs to be verified before registering.",
        ),
    ),
    133010: (
        400,
        graph_error(
            133010,
            "(#133010) Account not registered",
            details="Phone number is not registered on the platform.",
        ),
    ),
    133016: (
        400,
        graph_error(
            133016,
            "(#133016) Account register deregister rate limit exceeded",
            details="Registration or Deregistration failed because there were too many attempts for this "
            "phone number in a short period of time",
            fbtrace_id="A1b2C3d4E5f6G7h8",
        ),
    ),
    136024: (400, graph_error(136024, "(#136024) Request code error", details="Request code error")),
    136025: (400, graph_error(136025, "(#136025) Verify code error", details="Verify code error")),
    131031: (
        403,
        graph_error(131031, "(#131031) Business Account locked", details="Business account has been locked."),
    ),
    2: (
        503,
        graph_error(2, "(#2) Service temporarily unavailable", details="Service temporarily unavailable"),
    ),
    131000: (500, graph_error(131000, "(#131000) Something went wrong", details="Something went wrong")),
    133000: (
        500,
        graph_error(
            133000,
            "(#133000) Incomplete deregistration",
            details="A previous deregistration attempt failed. Deregister the number again before registering.",
        ),
    ),
    4: (
        400,
        graph_error(4, "(#4) Application request limit reached", details="Application request limit reached"),
    ),
    200000: (
        400,
        graph_error(200000, "Cannot add phone number to WhatsApp Business Account"),
    ),
}

HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response.</p></body></html>"
)

# --- webhook payloads (§6) ----------------------------------------------------------------------


def account_update(value: dict[str, Any], *, entry_id: str = WABA, time: int = 1743451903) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": entry_id, "time": time, "changes": [{"value": value, "field": "account_update"}]}],
    }


def disabled_update(ban_state: str, *, waba: str = WABA) -> dict[str, Any]:
    return account_update(
        {
            "event": "DISABLED_UPDATE",
            "ban_info": {"waba_ban_state": ban_state, "waba_ban_date": "April 17, 2025"},
        },
        entry_id=waba,
    )


def account_deleted(*, waba: str = WABA) -> dict[str, Any]:
    return account_update({"event": "ACCOUNT_DELETED"}, entry_id=waba)


def account_violation(*, waba: str = WABA) -> dict[str, Any]:
    return account_update(
        {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "ADULT"}}, entry_id=waba
    )


def account_restriction(*, waba: str = WABA) -> dict[str, Any]:
    return account_update(
        {
            "event": "ACCOUNT_RESTRICTION",
            "restriction_info": [
                {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1641330498},
                {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": 1641330498},
            ],
        },
        entry_id=waba,
        time=1641330498,
    )


def partner_app_uninstalled(*, waba: str = WABA) -> dict[str, Any]:
    """The partner's portfolio id is in entry[].id; the clinic's WABA only in waba_info."""
    return account_update(
        {
            "event": "PARTNER_APP_UNINSTALLED",
            "waba_info": {
                "waba_id": waba,
                "owner_business_id": "1284923862322270",
                "partner_app_id": "869361281603019",
            },
        },
        entry_id="2949482758682047",
        time=1748477359,
    )


def quality_update(*, digits: str = DIGITS, waba: str = WABA, time: int = 1748454394) -> dict[str, Any]:
    return {
        "entry": [
            {
                "id": waba,
                "time": time,
                "changes": [
                    {
                        "value": {
                            "display_phone_number": digits,
                            "event": "THROUGHPUT_UPGRADE",
                            "current_limit": "TIER_UNLIMITED",
                        },
                        "field": "phone_number_quality_update",
                    }
                ],
            }
        ],
        "object": "whatsapp_business_account",
    }


def name_update(*, digits: str = DIGITS, waba: str = WABA, decision: str = "APPROVED") -> dict[str, Any]:
    return {
        "entry": [
            {
                "id": waba,
                "time": 1739321024,
                "changes": [
                    {
                        "value": {
                            "display_phone_number": digits,
                            "decision": decision,
                            "requested_verified_name": "Clínica San Salvador",
                            "rejection_reason": None,
                        },
                        "field": "phone_number_name_update",
                    }
                ],
            }
        ],
        "object": "whatsapp_business_account",
    }


def text_message(
    *,
    pnid: str = PNID,
    waba: str = WABA,
    name: str = "Sheena Nelson",
    body: str = "Does it come in another color?",
) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": DIGITS, "phone_number_id": pnid},
                            "contacts": [{"profile": {"name": name}, "wa_id": "16505551234"}],
                            "messages": [
                                {
                                    "from": "16505551234",
                                    "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                                    "timestamp": "1749416383",
                                    "type": "text",
                                    "text": {"body": body},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def account_review_update(*, waba: str = WABA) -> dict[str, Any]:
    return {
        "entry": [
            {
                "id": waba,
                "time": 1739321024,
                "changes": [{"value": {"decision": "APPROVED"}, "field": "account_review_update"}],
            }
        ],
        "object": "whatsapp_business_account",
    }


def meta_bytes(payload: dict[str, Any]) -> bytes:
    """Serialised as Meta does: non-ASCII as \\uXXXX escapes."""
    return json.dumps(payload).encode("ascii")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_url(clinic: Clinic) -> str:
    return f"/whatsapp/webhook/{clinic.pk}/"


def post_webhook(
    client: Any, clinic: Clinic, body: bytes, *, secret: str | None = None, signature: str | None = None
):
    """POST a delivery as Meta does; `signature` overrides the one computed with `secret`."""
    headers = {}
    if signature is None and secret is not None:
        signature = sign(body, secret)
    if signature is not None:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature
    return client.generic("POST", webhook_url(clinic), body, content_type="application/json", **headers)


# --- arranging state ----------------------------------------------------------------------------


def arrange(clinic: Clinic, **fields: Any) -> WhatsAppAccount:
    """Put the clinic's WhatsApp account in a given state (test setup, not a transition)."""
    account = WhatsAppAccount.objects.get(clinic=clinic)
    if "detail" in fields:
        # A detail written by hand: stored as a literal part, shown as written.
        text = fields.pop("detail")
        fields["detail_parts"] = [{"key": "literal", "params": {"text": text}}] if text else []
    for key, value in fields.items():
        setattr(account, key, value)
    account.save()
    return account


def arrange_active(clinic: Clinic, **fields: Any) -> WhatsAppAccount:
    """A connected number, registered through its WABA: Meta showed it there (the WABA is proven),
    unless `proven_business_account_id` says otherwise."""
    now = timezone.now()
    fields.setdefault("proven_business_account_id", fields.get("business_account_id", WABA))
    defaults: dict[str, Any] = {
        "status": "active",
        "phone_number_id": PNID,
        "business_account_id": WABA,
        "access_token": TOKEN,
        "number": PHONE,
        "registration_pin": "482915",
        "pin_phone_number_id": PNID,
        "connected_at": now,
        "subscribed_at": now,
        "status_checked_at": now,
    }
    defaults.update(fields)
    return arrange(clinic, **defaults)


def arrange_pending(clinic: Clinic, **fields: Any) -> WhatsAppAccount:
    defaults: dict[str, Any] = {
        "status": "pending_otp",
        "phone_number_id": PNID,
        "business_account_id": WABA,
        "access_token": TOKEN,
        "number": PHONE,
        "registration_pin": "482915",
        "pin_phone_number_id": PNID,
        "detail": "Meta is sending a code by SMS.",
    }
    defaults.update(fields)
    return arrange(clinic, **defaults)


def account_of(clinic: Clinic) -> WhatsAppAccount:
    return WhatsAppAccount.objects.get(clinic=clinic)


def snapshot(clinic: Clinic) -> dict[str, Any]:
    """Every column of the clinic's account and its bot switch, for 'nothing changed' checks."""
    account = account_of(clinic)
    values = {
        field.attname: getattr(account, field.attname)
        for field in WhatsAppAccount._meta.concrete_fields
        if field.attname != "updated_at"
    }
    values["bot_enabled"] = Clinic.objects.get(pk=clinic.pk).bot_enabled
    return values


# --- the fake Graph API --------------------------------------------------------------------------


def graph_url(path: str) -> str:
    return f"{settings.META_GRAPH_URL}/{path}"


def form_of(call: Any) -> dict[str, str]:
    body = call.request.body or ""
    if isinstance(body, bytes):
        body = body.decode()
    return {key: values[0] for key, values in parse_qs(body).items()}


def json_of(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


FAULTS = ("timeout", "reset", "http500", "http503", "bad_json", "html")


class FakeGraph:
    """`responses` registrations for the Graph calls endpoints 5-9 make, and what was called."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.lock = threading.Lock()

    # registrations -------------------------------------------------------------

    def add(self, method: str, path: str, *, status: int = 200, json_body: Any = None, **kwargs: Any) -> None:
        if json_body is None and "body" not in kwargs:
            json_body = SUCCESS
        if json_body is not None:
            kwargs["json"] = copy.deepcopy(json_body)
        self.mock.add(method, graph_url(path), status=status, **kwargs)

    def callback(
        self, method: str, path: str, func: Callable[[Any], tuple[int, dict[str, str], str]]
    ) -> None:
        self.mock.add_callback(method, graph_url(path), callback=func, content_type="application/json")

    def number(self, status: str | None = "CONNECTED", *, pnid: str = PNID, display: str = DISPLAY) -> None:
        self.add("GET", pnid, json_body=phone_number(status, pnid=pnid, display=display))

    def numbers(self, *numbers: tuple[str, str], waba: str = WABA) -> None:
        self.add("GET", f"{waba}/phone_numbers", json_body=phone_numbers_list(*numbers))

    def add_number(self, new_id: str = PNID, *, waba: str = WABA) -> None:
        self.add("POST", f"{waba}/phone_numbers", json_body={"id": new_id})

    def request_code(self, pnid: str = PNID) -> None:
        self.add("POST", f"{pnid}/request_code")

    def verify_code(self, pnid: str = PNID) -> None:
        self.add("POST", f"{pnid}/verify_code")

    def register(self, pnid: str = PNID) -> None:
        self.add("POST", f"{pnid}/register")

    def deregister(self, pnid: str = PNID) -> None:
        self.add("POST", f"{pnid}/deregister")

    def subscribe(self, waba: str = WABA) -> None:
        self.add("POST", f"{waba}/subscribed_apps")

    def error(self, method: str, path: str, code: int) -> None:
        status, body = ERRORS[code]
        self.add(method, path, status=status, json_body=body)

    def fault(self, method: str, path: str, kind: str) -> None:
        """One of FAULTS for this call."""
        url = graph_url(path)
        if kind == "timeout":
            self.mock.add(
                method, url, body=requests.exceptions.ReadTimeout("Read timed out. (read timeout=1.0)")
            )
        elif kind == "reset":
            self.mock.add(
                method,
                url,
                body=requests.exceptions.ConnectionError(
                    "('Connection aborted.', ConnectionResetError(104))"
                ),
            )
        elif kind == "http500":
            self.mock.add(method, url, status=500, body="Internal Server Error", content_type="text/plain")
        elif kind == "http503":
            self.mock.add(method, url, status=503, body="Service Unavailable", content_type="text/plain")
        elif kind == "bad_json":
            self.mock.add(method, url, status=200, body='{"success": tru', content_type="application/json")
        elif kind == "html":
            self.mock.add(method, url, status=502, body=HTML_ERROR_PAGE, content_type="text/html")
        else:  # pragma: no cover
            raise ValueError(kind)

    # inspection ----------------------------------------------------------------

    @property
    def calls(self) -> list[Any]:
        return list(self.mock.calls)

    def calls_to(self, method: str, path: str) -> list[Any]:
        url = graph_url(path)
        return [
            call
            for call in self.mock.calls
            if call.request.method == method and urlsplit(call.request.url)._replace(query="").geturl() == url
        ]


def many_quality_updates(
    count: int, *, digits: str = DIGITS, waba: str = WABA, start: int = 1748454394
) -> dict:
    """One delivery of `count` distinct quality updates (§6.9), one entry each: Meta's batch mode."""
    entries = [quality_update(digits=digits, waba=waba, time=start + i)["entry"][0] for i in range(count)]
    return {"object": "whatsapp_business_account", "entry": entries}


# --- health checks (§2.9, §2.11, §2.3) -----------------------------------------------------------

DATA = Path(__file__).parent / "data"


def debug_token(**changes) -> dict:
    body = json.loads((DATA / "debug_token_system_user.json").read_text())
    body["data"].update(changes)
    return body


def subscribed_apps(app_id: str = "670843887433847") -> dict:
    body = json.loads((DATA / "subscribed_apps.json").read_text())
    body["data"][0]["whatsapp_business_api_data"]["id"] = app_id
    del body["data"][0]["override_callback_uri"]
    return body


def healthy_meta(graph, *, token=None, number=None, numbers=None, apps=None) -> None:
    """Meta's answers for a connection in good health; each argument replaces one answer."""
    graph.add("GET", "debug_token", json_body=token or debug_token())
    graph.add(
        "GET",
        f"{WABA}/phone_numbers",
        json_body=numbers or phone_numbers_list((PNID, DISPLAY)),
    )
    graph.add("GET", f"{WABA}/subscribed_apps", json_body=apps or subscribed_apps())
    graph.add("GET", PNID, json_body=number or phone_number("CONNECTED", messaging_limit_tier="TIER_1K"))
