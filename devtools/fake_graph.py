"""A stateful fake of the Graph API endpoints that onboard a WhatsApp number.

It speaks HTTP like Meta does (see ``shared/docs/meta-cloud-api.md`` §3.5, §5
and §7.2), so the real ``whatsapp.meta.MetaClient`` - its timeouts, size cap
and error mapping included - runs unchanged against it in end-to-end and
browser tests, and developers can click through the settings page offline::

    python -m devtools.fake_graph --port 8765        # META_GRAPH_URL=http://127.0.0.1:8765/v26.0

or in-process::

    with FakeGraphServer() as fake:                  # port 0: a free port
        client = MetaClient("any-token", base_url=fake.base_url)

Graph side
----------
* Any ``/vNN.0/`` prefix. Token from ``Authorization: Bearer …`` (or ``OAuth …``)
  or an ``access_token`` parameter. Any non-empty token is valid unless the
  control API says otherwise. No token -> 104.
* POST parameters as query string, form (urlencoded or multipart) or JSON; they
  are merged, the body winning.
* Errors use Graph's envelope: ``message`` "(#code) title" for WhatsApp codes, a
  random ``fbtrace_id``, HTTP status per §5.2 (190 -> 401, 200 -> 403,
  131000 -> 500, 2 -> 503, everything else 400; change with the
  ``status_overrides`` setting).
* Endpoints: ``GET /{pnid}?fields=…`` (unknown field -> 100), ``POST /{pnid}``
  (``pin``), ``POST /{pnid}/request_code|verify_code|register|deregister|messages``,
  ``GET|POST /{waba}/phone_numbers`` (cursor paging), ``GET|POST|DELETE
  /{waba}/subscribed_apps``, ``GET /{waba}``, ``GET /{waba}/message_templates`` (the demo
  templates, two a page, until ``/_fake/templates`` sets others). WABAs are created on first use of
  one of their edges; unknown ids answer 100/33.
* Lifecycle (§3.5): a new number is PENDING/NOT_VERIFIED; ``request_code`` issues
  a 6-digit code; ``verify_code`` wrong -> 136025, right -> VERIFIED (for 14 days);
  ``register`` counts toward 10 register/deregister calls per number per 72 h
  (the 11th -> 133016), needs VERIFIED unless CONNECTED (133006), needs the
  stored PIN once one is set (133005), then CONNECTED/CLOUD_API; ``deregister``
  -> DISCONNECTED/NOT_APPLICABLE; ``messages`` needs CONNECTED (133010).
* ``GET /debug_token?input_token=…`` (§2.9): type, expiry, issue time, scopes and
  granular scopes of the token as configured with ``/_fake/tokens`` (by default a
  system user's token that never expires, with both WhatsApp permissions).
* Tokens can be expired/revoked/invalid (190; subcode 463 unless told), limited
  to some WABA ids (200 for the others), or expire at a time (190 from then on).
* Numbers carry ``quality_rating`` and the deprecated ``messaging_limit_tier``
  (TIER_250 when new, TIER_1K once connected; ``removed_fields`` makes a field
  unknown, as on a Graph version that dropped it).

Control API (JSON, no auth; under ``/_fake``)
---------------------------------------------
``GET  /_fake/state``                whole state (numbers with codes and PINs, settings, faults)
``POST /_fake/reset``                forget everything
``GET  /_fake/numbers/<pnid>/code``  ``{"code": "123456", "method": "SMS", ...}``: "receive the SMS"
``POST /_fake/numbers``              pre-create a number: ``{"waba_id", "phone_number", "cc",
                                     "verified_name", "status", "pin", "id", ...}`` -> the number
``POST /_fake/numbers/<pnid>``       set fields, e.g. ``{"status": "BANNED"}``
``POST /_fake/tokens``               ``{"token", "expired"|"revoked"|"invalid": true, "subcode",
                                     "waba_ids": [...] | null, "type": "SYSTEM_USER"|"USER"|...,
                                     "expires_at": unix | "expires_in_seconds": n (0: never),
                                     "issued_at": unix | "issued_seconds_ago": n, "scopes": [...],
                                     "app_id"}``: how Graph treats it and what debug_token says
``GET|POST /_fake/settings``         ``pending_reads_after_register`` (GETs that still say PENDING
                                     after a register), ``code`` (fixed OTP or null), ``register_limit``
                                     (10), ``page_size`` (25), ``status_overrides`` ({"190": 400}),
                                     ``clock_offset_seconds`` / ``advance_seconds`` (move the clock),
                                     ``removed_fields`` (number fields this version refuses),
                                     ``request_log_limit`` (5000 requests kept in the log)
``GET|POST|DELETE /_fake/faults``    inject a fault on the next ``times`` (1) requests whose method
                                     (``"*"``) and path (regex searched in e.g. ``/v26.0/123/register``)
                                     match. ``kind``: ``delay`` (``seconds``, then answer normally),
                                     ``trickle`` (carry the request out, then send the whole answer,
                                     status line and headers included, one byte per ``seconds``),
                                     ``reset`` (close without answering), ``status`` (``status``,
                                     ``code``: Graph error body), ``invalid_json``, ``html`` (502 page),
                                     ``huge`` (10 MB body). ``"process": true`` carries the request out
                                     first, then fails the answer ("Meta did it, we never heard").
``GET|DELETE /_fake/requests``       the Graph requests received: method, path, query params, body
                                     keys, ``auth`` = presence, source and a sha256 prefix of the
                                     token (never the token), status, fault, ``at`` (arrival, Unix
                                     seconds), ``reference`` (a send's ``biz_opaque_callback_data``).
                                     ``?method=&path=`` filter.
``GET|POST /_fake/templates``        ``{"waba_id", "templates": [...]}``: a WABA's template list
``GET|POST /_fake/status_webhooks``  ``{"url", "app_secret", "delays": [s, s, s], "fault": "fail" |
                                     "reversed"}``: each accepted message then gets signed ``sent``,
                                     ``delivered`` and ``read`` status events at ``url`` (with its
                                     ``biz_opaque_callback_data``; posted again after 1, 2, 4... 32 s
                                     while unanswered or answered 429/5xx, as Meta does); a fault
                                     changes the next one's
``GET|POST /_fake/webhook_target``   ``{"phone_number_id", "url", "app_secret"}``: where that number's
                                     app receives Meta's webhooks; each message the number sends then
                                     gets its status events there (with ``status_webhooks``' delays and
                                     faults), whatever ``status_webhooks``' own ``url``. ``"url": null``
                                     forgets it. GET lists the targets (never the secrets).
``POST /_fake/webhooks/send``        ``{"url", "app_secret", "payload"}``: POST the payload as Meta
                                     does (ASCII-escaped JSON, ``X-Hub-Signature-256`` over exactly
                                     those bytes); answers ``{"status", "body", "signature"}``.

Everything here is test tooling: it keeps OTP codes and PINs in clear text and
must never face the internet.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import re
import secrets
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

logger = logging.getLogger(__name__)

DEFAULT_API_VERSION = "v26.0"
REGISTER_WINDOW_SECONDS = 72 * 3600
VERIFIED_LIFETIME_SECONDS = 14 * 24 * 3600
MAX_REQUEST_BYTES = 1_000_000
HUGE_BODY_BYTES = 10 * 1024 * 1024
_REQUEST_LOG_LIMIT = 5000

FAKE_APP = {"id": "670843887433847", "link": "https://example.invalid/fake-app", "name": "Fake Clinics App"}

_VERSION_RE = re.compile(r"^/(v\d+\.0)(?:/(.*))?$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PIN_RE = re.compile(r"^[0-9]{6}$")
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:_[A-Za-z]{2})?$")

NUMBER_STATUSES = frozenset(
    {
        "PENDING",
        "DELETED",
        "MIGRATED",
        "BANNED",
        "RESTRICTED",
        "RATE_LIMITED",
        "FLAGGED",
        "CONNECTED",
        "DISCONNECTED",
        "UNKNOWN",
        "UNVERIFIED",
    }
)
# Fields a GET may ask for (§3.1). Asking for anything else fails the whole call, as on Graph.
NUMBER_FIELDS = frozenset(
    {
        "id",
        "display_phone_number",
        "verified_name",
        "status",
        "code_verification_status",
        "name_status",
        "new_name_status",
        "quality_rating",
        "platform_type",
        "throughput",
        "account_mode",
        "is_pin_enabled",
        "is_official_business_account",
        "is_on_biz_app",
        "last_onboarded_time",
        "webhook_configuration",
        "messaging_limit_tier",
    }
)
_DEFAULT_NUMBER_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
    "id",
)
# Fields the control API may set on a number.
_SETTABLE_FIELDS = frozenset(
    {
        "display_phone_number",
        "verified_name",
        "status",
        "code_verification_status",
        "name_status",
        "new_name_status",
        "quality_rating",
        "platform_type",
        "throughput",
        "account_mode",
        "is_pin_enabled",
        "pin",
        "is_official_business_account",
        "is_on_biz_app",
        "pending_reads",
        "messaging_limit_tier",
    }
)

# §5.2, following Meta's older table; codes not listed answer 400.
_HTTP_STATUS_BY_CODE = {
    0: 401,
    190: 401,
    10: 403,
    368: 403,
    131005: 403,
    131031: 403,
    132001: 404,
    3: 500,
    131000: 500,
    131016: 500,
    131045: 500,
    131057: 500,
    133000: 500,
    2: 503,
    133004: 503,
}
_TITLES = {
    1: "API Unknown",
    2: "Service temporarily unavailable",
    3: "API Method",
    4: "Application request limit reached",
    10: "Permission denied",
    100: "Invalid parameter",
    200: "Permissions error",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131031: "Business Account locked",
    131045: "Incorrect certificate",
    133000: "Incomplete deregistration",
    133004: "Server temporarily unavailable",
    133005: "Two step verification PIN Mismatch",
    133006: "Phone number re-verification needed",
    133010: "Account not registered",
    133016: "Account register deregister rate limit exceeded",
    136024: "Request code error",
    136025: "Verify code error",
    200000: "Cannot add phone number to WhatsApp Business Account",
}
_DETAILS = {
    131000: "Something went wrong. Please try again later.",
    131031: "Business account has been locked.",
    133004: "Server is temporarily unavailable. Please try again later.",
    133005: "Two-step verification PIN incorrect.",
    133006: "Phone number needs to be verified before registering.",
    133010: "Phone number is not registered on the WhatsApp Business Platform.",
    133016: "Registration or Deregistration failed because there were too many attempts for this "
    "phone number in a short period of time",
    136025: "Code couldn't be verified: the code is wrong or has expired.",
}
_FAULT_KINDS = frozenset({"delay", "reset", "status", "invalid_json", "html", "huge", "trickle"})
_FAULT_DEFAULT_CODE = {500: 131000, 502: 2, 503: 2, 504: 2, 400: 100, 401: 190, 403: 200, 404: 100, 429: 4}
_DEFAULT_SETTINGS: dict[str, Any] = {
    "pending_reads_after_register": 0,
    "code": None,
    "register_limit": 10,
    "page_size": 25,
    "status_overrides": {},
    "clock_offset_seconds": 0.0,
    # Number fields this "version" no longer has (asking for one fails the call, §1.4).
    "removed_fields": [],
    # How many Graph requests the log keeps (the oldest go first); a bench of sends raises it.
    "request_log_limit": _REQUEST_LOG_LIMIT,
}
# What debug_token says about a token nobody configured: a system user's, never expiring (§2.9).
_DEFAULT_SCOPES = ["whatsapp_business_management", "whatsapp_business_messaging", "business_management"]


class GraphError(Exception):
    """A Graph error answer: the §5 envelope plus the HTTP status to send it with."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        details: str | None = None,
        subcode: int | None = None,
        type_: str = "OAuthException",
        status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message or f"(#{code}) {_TITLES.get(code, 'Error')}"
        self.details = details if details is not None else _DETAILS.get(code)
        self.subcode = subcode
        self.type_ = type_
        self.status = status
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type_, "code": self.code}
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = new_fbtrace_id()
        return {"error": error}


class ControlError(Exception):
    """A bad control-API request (answered 400/404 with ``{"error": ...}``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


def new_fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)[:22]


def token_fingerprint(token: str) -> str:
    """What the fake records instead of a token: a sha256 prefix, enough to tell tokens apart."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _unsupported(method: str, object_id: str) -> GraphError:
    verb = "get" if method == "GET" else "post" if method == "POST" else "delete"
    return GraphError(
        100,
        f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation. Please read the Graph API "
        "documentation at https://developers.facebook.com/docs/graph-api",
        subcode=33,
        type_="GraphMethodException",
    )


def _unknown_path(rest: str) -> GraphError:
    return GraphError(2500, f"Unknown path components: /{rest}")


def _param_error(message: str) -> GraphError:
    return GraphError(100, f"(#100) {message}")


def _text_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else None


def _required(params: dict[str, Any], name: str) -> str:
    value = _text_param(params, name)
    if not value:
        raise _param_error(f"The parameter {name} is required")
    return value


def _display_number(cc: str, national: str) -> str:
    """Graph's human format ("+1 631-555-5555"), which is libphonenumber's international one."""
    try:
        import phonenumbers

        parsed = phonenumbers.parse(f"+{cc}{national}", None)
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except Exception:  # noqa: BLE001 - no library or an odd number: a plain format will do
        return f"+{cc} {national}"


def _national_digits(cc: str, raw: str) -> str:
    """``phone_number`` may come with or without the country code (§2.1); find the national part."""
    digits = re.sub(r"[\s().+-]", "", raw)
    if not digits.isascii() or not digits.isdigit() or not 4 <= len(cc + digits) <= 17:
        raise _param_error("Param phone_number must be a valid phone number")
    candidates = [digits]
    if digits.startswith(cc) and len(digits) > len(cc) + 3:
        candidates.append(digits[len(cc) :])
    try:
        import phonenumbers

        for candidate in candidates:
            parsed = phonenumbers.parse(f"+{cc}{candidate}", None)
            if phonenumbers.is_valid_number(parsed):
                # The library drops national prefixes ("+1 1419…" is +1 419…), as Meta would.
                return str(phonenumbers.national_significant_number(parsed))
    except Exception:  # noqa: BLE001,S110 - fall back to the plain rule below
        pass
    return candidates[-1] if raw.strip().startswith("+") else candidates[0]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


@dataclass
class Fault:
    id: int
    kind: str
    method: str
    path: re.Pattern[str]
    remaining: int
    seconds: float
    status: int | None
    code: int | None
    message: str | None
    process: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "path": self.path.pattern,
            "remaining": self.remaining,
            "seconds": self.seconds,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "process": self.process,
        }


class FakeGraph:
    """The fake's state and rules, independent of HTTP; every public method takes the one lock."""

    def __init__(self, api_version: str = DEFAULT_API_VERSION) -> None:
        self.api_version = api_version
        self._lock = threading.RLock()
        # Set on shutdown so that injected delays do not hold threads.
        self.stopping = threading.Event()
        self.reset()

    # -- Control ----------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._wabas: dict[str, dict[str, Any]] = {}
            self._numbers: dict[str, dict[str, Any]] = {}
            self._tokens: dict[str, dict[str, Any]] = {}
            self._settings: dict[str, Any] = copy.deepcopy(_DEFAULT_SETTINGS)
            self._faults: list[Fault] = []
            self._requests: list[dict[str, Any]] = []
            self._next_fault_id = 1
            self._next_request_id = 1
            self._reset_sending()

    def now(self) -> float:
        return time.time() + float(self._settings["clock_offset_seconds"])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(
                {
                    "api_version": self.api_version,
                    "now": self.now(),
                    "wabas": self._wabas,
                    "numbers": self._numbers,
                    "tokens": self._tokens,
                    "settings": self._settings,
                    "faults": [fault.as_dict() for fault in self._faults],
                    "request_count": len(self._requests),
                }
            )

    def last_code(self, pnid: str) -> dict[str, Any] | None:
        with self._lock:
            number = self._numbers.get(pnid)
            if number is None or number["code"] is None:
                return None
            return {
                "code": number["code"],
                "method": number["code_method"],
                "language": number["code_language"],
                "issued_at": number["code_issued_at"],
            }

    def create_number(self, data: dict[str, Any]) -> dict[str, Any]:
        """Control API: a number on a WABA, in any state (e.g. already CONNECTED with a PIN)."""
        with self._lock:
            waba_id = str(data.get("waba_id") or "")
            if not _ID_RE.fullmatch(waba_id):
                raise ControlError("waba_id is required")
            cc = str(data.get("cc") or "1")
            raw = str(data.get("phone_number") or data.get("display_phone_number") or "")
            if not raw:
                raise ControlError("phone_number is required")
            try:
                national = _national_digits(cc, raw)
            except GraphError as exc:
                raise ControlError(str(exc)) from exc
            number = self._new_number(
                waba_id,
                cc,
                national,
                str(data.get("verified_name") or "Fake Clinic"),
                number_id=str(data["id"]) if data.get("id") else None,
            )
            status = data.get("status", "PENDING")
            if status == "CONNECTED":
                # What a number onboarded weeks ago looks like (§2.3's real capture).
                number.update(
                    code_verification_status="EXPIRED",
                    platform_type="CLOUD_API",
                    quality_rating="GREEN",
                    messaging_limit_tier="TIER_1K",
                    name_status="APPROVED",
                    last_onboarded_time=_iso(self.now()),
                )
            extra = {
                key: value
                for key, value in data.items()
                if key not in {"waba_id", "cc", "phone_number", "id"}
            }
            if "pin" in extra and "is_pin_enabled" not in extra:
                extra["is_pin_enabled"] = True
            self._apply(number, extra)
            return copy.deepcopy(number)

    def update_number(self, pnid: str, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            number = self._numbers.get(pnid)
            if number is None:
                raise ControlError(f"no number {pnid}", status=404)
            self._apply(number, data)
            if "status" in data and "pending_reads" not in data:
                number["pending_reads"] = 0
            return copy.deepcopy(number)

    def set_token(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            token = data.get("token")
            if not isinstance(token, str) or not token:
                raise ControlError("token is required")
            waba_ids = data.get("waba_ids")
            if waba_ids is not None and (
                not isinstance(waba_ids, list) or not all(isinstance(w, str | int) for w in waba_ids)
            ):
                raise ControlError("waba_ids must be a list of ids or null")
            scopes = data.get("scopes", _DEFAULT_SCOPES)
            if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
                raise ControlError("scopes must be a list of permission names")
            expires_at = data.get("expires_at")
            if data.get("expires_in_seconds") is not None:
                expires_at = int(self.now() + float(data["expires_in_seconds"]))
            issued_at = data.get("issued_at")
            if data.get("issued_seconds_ago") is not None:
                issued_at = int(self.now() - float(data["issued_seconds_ago"]))
            rule = {
                "expired": bool(data.get("expired")),
                "revoked": bool(data.get("revoked")),
                "invalid": bool(data.get("invalid")),
                "subcode": int(data.get("subcode") or 463),
                "waba_ids": [str(w) for w in waba_ids] if waba_ids is not None else None,
                # debug_token's answer (§2.9): 0 = never expires.
                "type": str(data.get("type") or "SYSTEM_USER"),
                "expires_at": int(expires_at or 0),
                "issued_at": int(issued_at) if issued_at is not None else None,
                "scopes": list(scopes),
                "app_id": str(data.get("app_id") or FAKE_APP["id"]),
            }
            self._tokens[token_fingerprint(token)] = rule
            return {"token_sha256": token_fingerprint(token), **rule}

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._settings)

    def configure(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            for key, value in data.items():
                if key == "advance_seconds":
                    self._settings["clock_offset_seconds"] += float(value)
                elif key == "code":
                    if value is not None and not (
                        isinstance(value, str) and re.fullmatch(r"[0-9]{4,8}", value)
                    ):
                        raise ControlError("code must be 4 to 8 digits (a string) or null")
                    self._settings["code"] = value
                elif key in (
                    "pending_reads_after_register",
                    "register_limit",
                    "page_size",
                    "request_log_limit",
                ):
                    if not isinstance(value, int) or value < 0:
                        raise ControlError(f"{key} must be a non-negative integer")
                    self._settings[key] = value
                elif key == "status_overrides":
                    if not isinstance(value, dict):
                        raise ControlError("status_overrides must map codes to HTTP statuses")
                    self._settings[key] = {str(code): int(status) for code, status in value.items()}
                elif key == "clock_offset_seconds":
                    self._settings[key] = float(value)
                elif key == "removed_fields":
                    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                        raise ControlError("removed_fields must be a list of field names")
                    self._settings[key] = list(value)
                else:
                    raise ControlError(f"unknown setting {key!r}")
            return copy.deepcopy(self._settings)

    def add_fault(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            kind = data.get("kind")
            if kind not in _FAULT_KINDS:
                raise ControlError(f"kind must be one of {sorted(_FAULT_KINDS)}")
            try:
                path = re.compile(str(data.get("path") or ""))
            except re.error as exc:
                raise ControlError(f"bad path regex: {exc}") from exc
            status = data.get("status")
            if status is None:
                status = {"status": 500, "html": 502, "invalid_json": 200, "huge": 200}.get(kind)
            fault = Fault(
                id=self._next_fault_id,
                kind=kind,
                method=str(data.get("method") or "*").upper(),
                path=path,
                remaining=int(data.get("times", 1)),
                seconds=float(data.get("seconds", 5.0)),
                status=int(status) if status is not None else None,
                code=int(data["code"]) if data.get("code") is not None else None,
                message=data.get("message"),
                process=bool(data.get("process", False)),
            )
            self._next_fault_id += 1
            self._faults.append(fault)
            return fault.as_dict()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.as_dict() for fault in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_log(self, *, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = self._requests
            if method:
                entries = [entry for entry in entries if entry["method"] == method.upper()]
            if path:
                pattern = re.compile(path)
                entries = [entry for entry in entries if pattern.search(entry["path"])]
            return copy.deepcopy(entries)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- Plumbing used by the HTTP handler ------------------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.method in ("*", method) and fault.path.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return copy.copy(fault)
            return None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["id"] = self._next_request_id
            self._next_request_id += 1
            self._requests.append(entry)
            del self._requests[: max(0, len(self._requests) - int(self._settings["request_log_limit"]))]

    def annotate(self, entry: dict[str, Any], **fields: Any) -> None:
        with self._lock:
            entry.update(fields)

    def http_status(self, error: GraphError) -> int:
        if error.status is not None:
            return error.status
        with self._lock:
            override = self._settings["status_overrides"].get(str(error.code))
        if override is not None:
            return int(override)
        if error.code in _HTTP_STATUS_BY_CODE:
            return _HTTP_STATUS_BY_CODE[error.code]
        return 403 if 200 <= error.code <= 299 else 400

    # -- Graph ----------------------------------------------------------------

    def handle(
        self, method: str, rest: str, params: dict[str, Any], token: str | None, origin: str
    ) -> dict[str, Any]:
        """Carry out one Graph request (path after the version) and return its JSON; may raise GraphError."""
        with self._lock:
            self._check_token(token)
            segments = [segment for segment in rest.split("/") if segment]
            if segments == ["debug_token"] and method == "GET":
                return self._debug_token(params)
            if not segments or len(segments) > 2 or not _ID_RE.fullmatch(segments[0]):
                raise _unknown_path(rest)
            node_id = segments[0]
            edge = segments[1] if len(segments) == 2 else None
            number = self._numbers.get(node_id)
            if number is not None:
                self._check_waba_access(token, number["waba_id"])
                return self._number_route(method, number, edge, params)
            if node_id in self._wabas or edge in ("phone_numbers", "subscribed_apps", "message_templates"):
                self._check_waba_access(token, node_id)
                return self._waba_route(method, node_id, edge, params, origin)
            raise _unsupported(method, node_id)

    def _check_token(self, token: str | None) -> None:
        if not token:
            raise GraphError(104, "An access token is required to request this resource.")
        rule = self._tokens.get(token_fingerprint(token))
        if rule is None:
            return
        if rule["invalid"]:
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        if rule["expired"] or (rule.get("expires_at") and self.now() >= rule["expires_at"]):
            now = datetime.fromtimestamp(self.now(), tz=UTC)
            raise GraphError(
                190,
                f"Error validating access token: Session has expired on {now:%A, %d-%b-%y} 00:00:00 UTC. "
                f"The current time is {now:%A, %d-%b-%y %H:%M:%S} UTC.",
                subcode=rule["subcode"],
            )
        if rule["revoked"]:
            raise GraphError(
                190,
                "Error validating access token: The session has been invalidated because the user "
                "changed their password or Facebook has changed the session for security reasons.",
                subcode=rule["subcode"],
            )

    def _debug_token(self, params: dict[str, Any]) -> dict[str, Any]:
        """``GET /debug_token?input_token=…`` (§2.9), as Meta answers for a valid token of our app."""
        input_token = _text_param(params, "input_token")
        if not input_token:
            raise _param_error("The parameter input_token is required")
        rule = self._tokens.get(token_fingerprint(input_token)) or {}
        if rule.get("invalid") or rule.get("revoked") or rule.get("expired"):
            # The token under inspection is dead: Meta answers 200 with is_valid false.
            return {"data": {"app_id": rule.get("app_id", FAKE_APP["id"]), "is_valid": False, "scopes": []}}
        scopes = rule.get("scopes", _DEFAULT_SCOPES)
        waba_ids = rule.get("waba_ids")
        granular: list[dict[str, Any]] = []
        for scope in scopes:
            grant: dict[str, Any] = {"scope": scope}
            if waba_ids is not None and scope.startswith("whatsapp_"):
                grant["target_ids"] = list(waba_ids)
            granular.append(grant)
        expires_at = rule.get("expires_at", 0)
        issued_at = rule.get("issued_at")
        return {
            "data": {
                "app_id": rule.get("app_id", FAKE_APP["id"]),
                "type": rule.get("type", "SYSTEM_USER"),
                "application": FAKE_APP["name"],
                "data_access_expires_at": 0,
                "expires_at": expires_at,
                "is_valid": not (expires_at and self.now() >= expires_at),
                "issued_at": issued_at if issued_at is not None else int(self.now()) - 30 * 86400,
                "scopes": list(scopes),
                "granular_scopes": granular,
                "user_id": "122100000000000001",
            }
        }

    def _check_waba_access(self, token: str | None, waba_id: str) -> None:
        rule = self._tokens.get(token_fingerprint(token or ""))
        if rule is not None and rule["waba_ids"] is not None and waba_id not in rule["waba_ids"]:
            raise GraphError(200)

    def _number_route(
        self, method: str, number: dict[str, Any], edge: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        self._expire_verification(number)
        if edge is None:
            if method == "GET":
                return self._number_view(number, _text_param(params, "fields"))
            if method == "POST":
                return self._update_node(number, params)
        elif method == "POST":
            handlers = {
                "request_code": self._request_code,
                "verify_code": self._verify_code,
                "register": self._register,
                "deregister": self._deregister,
                "messages": self._send_message,
            }
            if edge in handlers:
                return handlers[edge](number, params)
            raise _unknown_path(edge)
        raise _unsupported(method, number["id"])

    def _waba_route(
        self, method: str, waba_id: str, edge: str | None, params: dict[str, Any], origin: str
    ) -> dict[str, Any]:
        waba = self._wabas.setdefault(waba_id, {"id": waba_id, "name": f"Fake WABA {waba_id}", "apps": []})
        if edge is None and method == "GET":
            return {"id": waba["id"], "name": waba["name"]}
        if edge == "phone_numbers" and method == "GET":
            return self._list_numbers(waba_id, params, origin)
        if edge == "message_templates" and method == "GET":
            return self._list_templates(waba_id, params, origin)
        if edge == "phone_numbers" and method == "POST":
            return self._add_number(waba_id, params)
        if edge == "subscribed_apps":
            if method == "GET":
                return {"data": copy.deepcopy(waba["apps"])}
            if method == "POST":
                app: dict[str, Any] = {"whatsapp_business_api_data": dict(FAKE_APP)}
                override = _text_param(params, "override_callback_uri")
                if override:
                    if not _text_param(params, "verify_token"):
                        raise _param_error("The parameter verify_token is required")
                    app["override_callback_uri"] = override
                waba["apps"] = [app]
                return {"success": True}
            if method == "DELETE":
                waba["apps"] = []
                return {"success": True}
        if edge is not None and edge not in ("phone_numbers", "subscribed_apps", "message_templates"):
            raise _unknown_path(edge)
        raise _unsupported(method, waba_id)

    # -- Numbers ------------------------------------------------------------------

    def _new_number(
        self, waba_id: str, cc: str, national: str, verified_name: str, *, number_id: str | None = None
    ) -> dict[str, Any]:
        if number_id is None:
            number_id = str(10**14 + secrets.randbelow(9 * 10**14))
            while number_id in self._numbers or number_id in self._wabas:
                number_id = str(10**14 + secrets.randbelow(9 * 10**14))
        elif not _ID_RE.fullmatch(number_id) or number_id in self._numbers:
            raise ControlError(f"id {number_id!r} is invalid or taken")
        self._wabas.setdefault(waba_id, {"id": waba_id, "name": f"Fake WABA {waba_id}", "apps": []})
        number: dict[str, Any] = {
            "id": number_id,
            "waba_id": waba_id,
            "cc": cc,
            "phone_number": national,
            "display_phone_number": _display_number(cc, national),
            "verified_name": verified_name,
            # §3.5: what a freshly added number looks like.
            "status": "PENDING",
            "code_verification_status": "NOT_VERIFIED",
            "verified_at": None,
            "name_status": "PENDING_REVIEW",
            "new_name_status": None,
            "quality_rating": "UNKNOWN",
            "messaging_limit_tier": "TIER_250",
            "platform_type": "NOT_APPLICABLE",
            "throughput": {"level": "STANDARD"},
            "account_mode": "LIVE",
            "is_pin_enabled": False,
            "pin": None,
            "is_official_business_account": False,
            "is_on_biz_app": False,
            "last_onboarded_time": None,
            "webhook_configuration": None,
            "data_localization_region": None,
            "pending_reads": 0,
            "code": None,
            "code_method": None,
            "code_language": None,
            "code_issued_at": None,
            "register_attempts": [],
            "messages": [],
            "created_at": self.now(),
        }
        self._numbers[number_id] = number
        return number

    def _apply(self, number: dict[str, Any], data: dict[str, Any]) -> None:
        unknown = set(data) - _SETTABLE_FIELDS - {"waba_id", "cc", "phone_number", "id"}
        if unknown:
            raise ControlError(f"cannot set {sorted(unknown)}; settable: {sorted(_SETTABLE_FIELDS)}")
        if "status" in data and data["status"] not in NUMBER_STATUSES:
            raise ControlError(f"status must be one of {sorted(NUMBER_STATUSES)}")
        for key, value in data.items():
            if key in _SETTABLE_FIELDS:
                number[key] = str(value) if key == "pin" and value is not None else value
        if data.get("code_verification_status") == "VERIFIED":
            number["verified_at"] = self.now()

    def _expire_verification(self, number: dict[str, Any]) -> None:
        verified_at = number.get("verified_at")
        if (
            number["code_verification_status"] == "VERIFIED"
            and verified_at is not None
            and self.now() - verified_at > VERIFIED_LIFETIME_SECONDS
        ):
            number["code_verification_status"] = "EXPIRED"

    def _number_view(self, number: dict[str, Any], fields_param: str | None) -> dict[str, Any]:
        if fields_param:
            # Nested selections such as throughput{level} name the field before the brace.
            fields = [re.sub(r"\{.*$", "", field).strip() for field in fields_param.split(",")]
            fields = [field for field in fields if field]
        else:
            fields = list(_DEFAULT_NUMBER_FIELDS)
        for field in fields:
            if field not in NUMBER_FIELDS or field in self._settings["removed_fields"]:
                raise _param_error(
                    f"Tried accessing nonexisting field ({field}) on node type (WhatsAppBusinessPhoneNumber)"
                )
        self._expire_verification(number)
        view: dict[str, Any] = {}
        for field in fields:
            value = number.get(field)
            if field == "status" and number["pending_reads"] > 0:
                # settings.pending_reads_after_register: Meta takes a moment to connect.
                number["pending_reads"] -= 1
                value = "PENDING"
            if value is not None:
                view[field] = copy.deepcopy(value)
        view.setdefault("id", number["id"])
        return view

    def _list_numbers(self, waba_id: str, params: dict[str, Any], origin: str) -> dict[str, Any]:
        numbers = [n for n in self._numbers.values() if n["waba_id"] == waba_id]
        numbers.sort(key=lambda n: n["created_at"], reverse=True)  # newest first, like Graph
        limit_text = _text_param(params, "limit")
        limit = int(self._settings["page_size"]) or 25
        if limit_text:
            if not limit_text.isdigit() or int(limit_text) < 1:
                raise _param_error("Param limit must be a positive integer")
            limit = int(limit_text)
        start = 0
        after = _text_param(params, "after")
        if after:
            try:
                after_id = _unb64(after)
            except ValueError as exc:
                raise _param_error("Invalid cursor") from exc
            ids = [n["id"] for n in numbers]
            if after_id not in ids:
                raise _param_error("Invalid cursor")
            start = ids.index(after_id) + 1
        page = numbers[start : start + limit]
        fields = _text_param(params, "fields")
        result: dict[str, Any] = {"data": [self._number_view(n, fields) for n in page]}
        if page:
            paging: dict[str, Any] = {
                "cursors": {"before": _b64(page[0]["id"]), "after": _b64(page[-1]["id"])}
            }
            if start + limit < len(numbers):
                query = {"limit": str(limit), "after": _b64(page[-1]["id"])}
                if fields:
                    query["fields"] = fields
                paging["next"] = f"{origin}/{self.api_version}/{waba_id}/phone_numbers?{urlencode(query)}"
            result["paging"] = paging
        return result

    def _add_number(self, waba_id: str, params: dict[str, Any]) -> dict[str, Any]:
        cc = _required(params, "cc").lstrip("+")
        raw = _required(params, "phone_number")
        verified_name = _required(params, "verified_name")
        if not cc.isascii() or not cc.isdigit() or not 1 <= len(cc) <= 3:
            raise _param_error("Param cc must be a valid country calling code")
        national = _national_digits(cc, raw)
        for other in self._numbers.values():
            if other["cc"] + other["phone_number"] == cc + national:
                if other["waba_id"] == waba_id:
                    # Adding the same number again (e.g. after a timeout) returns it.
                    return {"id": other["id"]}
                # Meta's exact answer for "already on another WABA" is unconfirmed (§2.1).
                raise GraphError(
                    100,
                    details="This phone number is already in use on another WhatsApp Business Account.",
                )
        number = self._new_number(waba_id, cc, national, verified_name)
        return {"id": number["id"]}

    def _update_node(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        pin = _text_param(params, "pin")
        webhook = params.get("webhook_configuration")
        if pin is None and webhook is None:
            raise _param_error("No fields to update")
        if pin is not None:
            if not _PIN_RE.fullmatch(pin):
                raise GraphError(
                    100, "(#100) Invalid parameter", subcode=2388092, details="Invalid PIN format"
                )
            number["pin"] = pin
            number["is_pin_enabled"] = True
        if webhook is not None:
            if isinstance(webhook, str):
                try:
                    webhook = json.loads(webhook)
                except ValueError as exc:
                    raise _param_error("Param webhook_configuration must be a JSON object") from exc
            if not isinstance(webhook, dict):
                raise _param_error("Param webhook_configuration must be a JSON object")
            uri = webhook.get("override_callback_uri")
            number["webhook_configuration"] = {"phone_number": uri} if uri else None
        return {"success": True}

    def _request_code(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        method = _required(params, "code_method").upper()
        if method not in ("SMS", "VOICE"):
            raise _param_error(f'Param code_method must be one of {{SMS, VOICE}} - got "{method}"')
        language = _required(params, "language")
        if not _LANGUAGE_RE.fullmatch(language):
            raise _param_error(f"Param language must be a valid locale - got {language!r}")
        fixed = self._settings["code"]
        number["code"] = fixed if fixed else f"{secrets.randbelow(10**6):06d}"
        number["code_method"] = method
        number["code_language"] = language
        number["code_issued_at"] = self.now()
        return {"success": True}

    def _verify_code(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        code = _required(params, "code")
        expected = number["code"]
        if expected is None or not hmac.compare_digest(code.encode(), expected.encode()):
            raise GraphError(136025)
        number["code"] = None  # single use
        number["code_verification_status"] = "VERIFIED"
        number["verified_at"] = self.now()
        return {"success": True}

    def _count_attempt(self, number: dict[str, Any]) -> None:
        # One moving window shared by register and deregister (Meta's single 133016 suggests so).
        now = self.now()
        attempts = [t for t in number["register_attempts"] if now - t < REGISTER_WINDOW_SECONDS]
        number["register_attempts"] = attempts
        if len(attempts) >= int(self._settings["register_limit"]):
            raise GraphError(133016)
        attempts.append(now)

    def _register(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        product = _required(params, "messaging_product")
        if product.lower() != "whatsapp":
            raise _param_error(f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}"')
        pin = _required(params, "pin")
        if not _PIN_RE.fullmatch(pin):
            raise GraphError(100, "(#100) Invalid parameter", subcode=2388092, details="Invalid PIN format")
        region = _text_param(params, "data_localization_region")
        self._count_attempt(number)
        if number["status"] != "CONNECTED" and number["code_verification_status"] != "VERIFIED":
            raise GraphError(133006)
        if number["is_pin_enabled"] and number["pin"] != pin:
            raise GraphError(133005)
        number.update(
            pin=pin,
            is_pin_enabled=True,
            status="CONNECTED",
            platform_type="CLOUD_API",
            last_onboarded_time=_iso(self.now()),
            pending_reads=int(self._settings["pending_reads_after_register"]),
        )
        if region:
            number["data_localization_region"] = region
        return {"success": True}

    def _deregister(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self._count_attempt(number)
        number.update(status="DISCONNECTED", platform_type="NOT_APPLICABLE", pending_reads=0)
        return {"success": True}

    def _send_message(self, number: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if number["status"] != "CONNECTED" or number["pending_reads"] > 0:
            raise GraphError(133010)
        # A phone in `to`, or (2026) a BSUID in `recipient`; Meta takes `to` when both are there.
        to = _text_param(params, "to") or _text_param(params, "recipient")
        if not to:
            raise GraphError(131008, details="The parameter to is required.")
        by_bsuid = not _text_param(params, "to")
        message_id = "wamid." + base64.b64encode(secrets.token_bytes(27)).decode()
        number["messages"].append({"id": message_id, "to": to, "type": _text_param(params, "type")})
        del number["messages"][:-100]
        recipient = {"user_id": to} if by_bsuid else {"wa_id": re.sub(r"\D", "", to)}
        self._after_send(number, message_id, recipient, _text_param(params, "biz_opaque_callback_data"))
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, **recipient}],
            "messages": [{"id": message_id}],
        }

    # -- Sending: templates and status webhooks (issue 21) -------------------------

    def _reset_sending(self) -> None:
        # Templates per WABA (the demo ones until set), and where status events go (nowhere until set).
        self._templates: dict[str, list[dict[str, Any]]] = {}
        self._status_hook: dict[str, Any] = {"url": None, "app_secret": None, "delays": [0.3, 0.8, 1.5]}
        self._status_faults: list[str] = []
        # Per phone number id: where its app's webhook is, {"url", "app_secret"}.
        self._webhook_targets: dict[str, dict[str, str]] = {}

    def templates_state(self) -> dict[str, Any]:
        with self._lock:
            return {"templates": copy.deepcopy(self._templates)}

    def set_templates(self, data: dict[str, Any]) -> dict[str, Any]:
        """``{"waba_id", "templates": [...]}``: what ``GET /{waba}/message_templates`` lists."""
        waba_id, templates = data.get("waba_id"), data.get("templates")
        if not isinstance(waba_id, str) or not isinstance(templates, list):
            raise ControlError("waba_id and templates are required")
        with self._lock:
            self._templates[waba_id] = copy.deepcopy(templates)
            return {"waba_id": waba_id, "count": len(templates)}

    def _list_templates(self, waba_id: str, params: dict[str, Any], origin: str) -> dict[str, Any]:
        templates = self._templates.get(waba_id)
        if templates is None:
            templates = copy.deepcopy(DEMO_TEMPLATES)
        limit_text = _text_param(params, "limit")
        limit = int(limit_text) if limit_text and limit_text.isdigit() and int(limit_text) > 0 else 25
        # Two templates a page at most, so that every client sees (and must follow) Meta's paging.
        limit = min(limit, int(self._settings["page_size"]), 2)
        after = _text_param(params, "after")
        try:
            start = int(_unb64(after)) + 1 if after else 0
        except ValueError as exc:
            raise _param_error("Invalid cursor") from exc
        page = templates[start : start + limit]
        result: dict[str, Any] = {"data": copy.deepcopy(page)}
        if page:
            last = start + len(page) - 1
            result["paging"] = {"cursors": {"before": _b64(str(start)), "after": _b64(str(last))}}
            if last + 1 < len(templates):
                query = urlencode({"limit": str(limit), "after": _b64(str(last))})
                result["paging"]["next"] = f"{origin}/{self.api_version}/{waba_id}/message_templates?{query}"
        return result

    def status_webhooks(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{k: v for k, v in self._status_hook.items() if k != "app_secret"},
                "faults": self._status_faults,
            }

    def set_status_webhooks(self, data: dict[str, Any]) -> dict[str, Any]:
        """``{"url", "app_secret", "delays": [s, s, s], "fault": "fail" | "reversed"}``.

        Each message accepted from then on gets signed ``sent``, ``delivered`` and
        ``read`` events at ``url`` after those delays. A ``fault`` applies to the next
        message: ``fail`` sends ``failed`` (131026) instead, ``reversed`` sends the
        three events in reverse order (late and out of order).
        """
        with self._lock:
            for key in ("url", "app_secret"):
                if key in data:
                    self._status_hook[key] = data[key]
            if "delays" in data:
                delays = [float(d) for d in data["delays"]]
                if len(delays) != 3:
                    raise ControlError("delays: three numbers of seconds")
                self._status_hook["delays"] = delays
            if data.get("fault") in ("fail", "reversed"):
                self._status_faults.append(str(data["fault"]))
            return self.status_webhooks()

    def webhook_targets(self) -> dict[str, Any]:
        with self._lock:
            return {"targets": {pnid: {"url": t["url"]} for pnid, t in self._webhook_targets.items()}}

    def set_webhook_target(self, data: dict[str, Any]) -> dict[str, Any]:
        """``{"phone_number_id", "url", "app_secret"}``: that number's messages get their statuses there."""
        pnid, url, secret = data.get("phone_number_id"), data.get("url"), data.get("app_secret")
        if not isinstance(pnid, str) or not pnid:
            raise ControlError("phone_number_id is required")
        with self._lock:
            if url is None:
                self._webhook_targets.pop(pnid, None)
            elif isinstance(url, str) and url.startswith(("http://", "https://")) and isinstance(secret, str):
                self._webhook_targets[pnid] = {"url": url, "app_secret": secret}
            else:
                raise ControlError("url (http or https) and app_secret are required, or url null")
        return self.webhook_targets()

    def _after_send(
        self, number: dict[str, Any], message_id: str, recipient: dict[str, str], reference: str | None
    ) -> None:
        """Schedule the accepted message's status events, when the number's webhook (or a URL) is known.

        ``recipient`` is ``{"wa_id"}`` for a send to a phone, ``{"user_id"}`` for one to a
        BSUID: Meta's events then name the patient by ``recipient_user_id`` only.
        """
        target = self._webhook_targets.get(number["id"])
        if target is not None:
            url, secret = target["url"], target["app_secret"]
        else:
            url, secret = self._status_hook["url"], self._status_hook["app_secret"]
        if not url or not secret:
            return
        fault = self._status_faults.pop(0) if self._status_faults else None
        steps = ["failed"] if fault == "fail" else ["sent", "delivered", "read"]
        delays = list(self._status_hook["delays"])
        if fault == "reversed":
            steps.reverse()
        for step, delay in zip(steps, delays, strict=False):
            status: dict[str, Any] = {
                "id": message_id,
                "status": step,
                "timestamp": str(int(self.now())),
            }
            if "wa_id" in recipient:
                status["recipient_id"] = recipient["wa_id"]
            else:
                status["recipient_user_id"] = recipient["user_id"]
            if reference:
                status["biz_opaque_callback_data"] = reference
            if step == "failed":
                status["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
            payload = {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": number["waba_id"],
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": re.sub(
                                            r"\D", "", number["display_phone_number"]
                                        ),
                                        "phone_number_id": number["id"],
                                    },
                                    "statuses": [status],
                                },
                            }
                        ],
                    }
                ],
            }
            STATUS_POSTS.post_after(delay, url, secret, payload)


# Meta delivers a webhook again when it got no answer or a 429/5xx; the fake does so a few times.
STATUS_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# Status events posted at once, at most: Meta holds its own concurrency to an endpoint, and a
# thread per event (thousands when the app answers slower than the sends go) would starve the
# fake's own API of the CPU it needs to answer the sends.
STATUS_POSTERS = 8


class StatusPosts:
    """The status events waiting to be posted, each when it is due, by a few poster threads.

    A slow or failing webhook makes the events wait (and be retried after
    `STATUS_RETRY_DELAYS`), as at Meta; it never makes the fake spawn more threads.
    """

    def __init__(self, posters: int = STATUS_POSTERS) -> None:
        self._posters = posters
        self._due: list[tuple[float, int, str, str, dict[str, Any], int]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._started = 0

    def post_after(
        self, delay: float, url: str, secret: str, payload: dict[str, Any], attempt: int = 0
    ) -> None:
        with self._changed:
            heapq.heappush(
                self._due, (time.monotonic() + delay, next(self._order), url, secret, payload, attempt)
            )
            while self._started < self._posters:
                self._started += 1
                threading.Thread(target=self._post_forever, name="fake-status-poster", daemon=True).start()
            self._changed.notify()

    def _next_due(self) -> tuple[float, int, str, str, dict[str, Any], int]:
        with self._changed:
            while True:
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._due)
                self._changed.wait(wait)

    def _post_forever(self) -> None:
        while True:
            _due, _order, url, secret, payload, attempt = self._next_due()
            try:
                status = send_webhook(url, secret, payload)["status"]
                failure = f"HTTP {status}" if status == 429 or status >= 500 else ""
            except ControlError as exc:
                failure = str(exc)
            if not failure:
                continue
            if attempt >= len(STATUS_RETRY_DELAYS):
                logger.warning("fake Graph: status webhook not delivered: %s", failure)
                continue
            self.post_after(STATUS_RETRY_DELAYS[attempt], url, secret, payload, attempt + 1)


STATUS_POSTS = StatusPosts()


def _demo_template(
    number: int, name: str, language: str, body: str, *, status: str = "APPROVED", category: str = "UTILITY"
) -> dict[str, Any]:
    """One template as Graph lists it (fields of meta-cloud-api.md's template list)."""
    return {
        "id": f"59442547926159{number}",
        "name": name,
        "language": language,
        "status": status,
        "category": category,
        "quality_score": {"score": "GREEN" if status == "APPROVED" else "UNKNOWN"},
        "rejected_reason": "INVALID_FORMAT" if status == "REJECTED" else "NONE",
        "components": [{"type": "BODY", "text": body}],
    }


# Listed for a WABA until /_fake/templates sets its own: approved ones the demo bot may send, one not.
DEMO_TEMPLATES: list[dict[str, Any]] = [
    _demo_template(6, "recordatorio_cita", "es", "Hola {{1}}, le recordamos su cita del {{2}}."),
    _demo_template(7, "appointment_reminder", "en", "Hello {{1}}, a reminder of your appointment on {{2}}."),
    _demo_template(8, "le_responderemos_pronto", "es", "Gracias por escribirnos; le responderemos pronto."),
    _demo_template(
        9,
        "promocion_limpieza",
        "es",
        "¡Limpieza dental a mitad de precio!",
        status="REJECTED",
        category="MARKETING",
    ),
]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def send_webhook(url: str, app_secret: str, payload: Any, *, timeout: float = 10.0) -> dict[str, Any]:
    """POST ``payload`` to ``url`` the way Meta does: ASCII-escaped JSON, signed over exactly those bytes."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ControlError("url must be http(s)")
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    signature = "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature,
            "User-Agent": "facebookexternalua",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return {
                "status": response.status,
                "body": response.read(10_000).decode("utf-8", "replace"),
                "signature": signature,
            }
    except urllib.error.HTTPError as exc:
        return {
            "status": exc.code,
            "body": exc.read(10_000).decode("utf-8", "replace"),
            "signature": signature,
        }
    except (urllib.error.URLError, OSError) as exc:
        raise ControlError(f"could not deliver: {exc}", status=502) from exc


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a client's pooled connection can
    # never go stale between tests (and "reset" affects exactly one request).
    protocol_version = "HTTP/1.0"
    server_version = "FakeGraph/1.0"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Never the request line: a query string may carry access_token.
        logger.debug("fake graph %s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake graph: %s", format % args)

    # -- Plumbing -----------------------------------------------------------------

    @property
    def graph(self) -> FakeGraph:
        return self.server.graph

    def _origin(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise GraphError(100, "(#100) Request body too large", status=413)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        trickle = getattr(self, "trickle_seconds", None)
        if trickle is not None:
            self._send_trickling(status, body, content_type, extra, trickle)
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its read timeout expired)

    def _send_trickling(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None, seconds: float
    ) -> None:
        """A Meta that is alive but slow: every byte arrives, one per `seconds`."""
        self.close_connection = True
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        try:
            for i in range(len(raw)):
                if self.graph.stopping.is_set():
                    return
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
                self.graph.stopping.wait(seconds)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up, as it should

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json; charset=UTF-8", extra)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        if url.path == "/_fake" or url.path.startswith("/_fake/"):
            self._control(method, url.path, parse_qs(url.query))
        else:
            self._graph(method, url.path, url.query)

    # -- Graph requests -------------------------------------------------------------

    def _graph(self, method: str, path: str, query: str) -> None:
        arrived = time.time()
        entry: dict[str, Any] = {
            "time": _iso(arrived),
            "at": arrived,
            "method": method,
            "path": path,
            "params": {},
            "body_keys": [],
            "auth": {"present": False, "via": None, "sha256": None},
            "status": None,
            "fault": None,
        }
        try:
            params = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
            token, via = self._token(params, "query")
            entry["params"] = dict(params)
            if "input_token" in params:
                # debug_token carries a token in its query: log a fingerprint, never the token.
                entry["params"]["input_token"] = "sha256:" + token_fingerprint(str(params["input_token"]))
            body = self._body_params(self._read_body())
            entry["body_keys"] = sorted(key for key in body if key != "access_token")
            if "biz_opaque_callback_data" in body:
                # The sender's own reference (our message id), so a test can count each message's sends.
                entry["reference"] = str(body["biz_opaque_callback_data"])
            if token is None:
                token, via = self._token(body, "body")
            else:
                body.pop("access_token", None)
            params.update(body)
            if token is not None:
                entry["auth"] = {"present": True, "via": via, "sha256": token_fingerprint(token)}
        except GraphError as exc:
            self.graph.record(entry)
            self._graph_error(exc, entry)
            return
        # Logged on arrival, so a request still being delayed already counts.
        self.graph.record(entry)

        fault = self.graph.take_fault(method, path)
        if fault is not None:
            self.graph.annotate(entry, fault=fault.kind)
            if fault.kind == "delay":
                self.graph.stopping.wait(fault.seconds)
            elif fault.kind == "trickle":
                self.trickle_seconds = fault.seconds or 1.0
            elif not fault.process:
                self._emit_fault(fault, entry)
                return

        match = _VERSION_RE.fullmatch(path)
        payload: dict[str, Any] = {}
        error: GraphError | None = None
        try:
            if match is None:
                raise _unknown_path(path.lstrip("/"))
            payload = self.graph.handle(method, match.group(2) or "", params, token, self._origin())
        except GraphError as exc:
            error = exc
        except Exception:  # a bug in the fake: answer like Graph rather than drop the socket
            logger.exception("fake graph failed on %s %s", method, urlsplit(path).path)
            error = GraphError(1, "An unknown error has occurred.", status=500)
        if fault is not None and fault.process and fault.kind not in ("delay", "trickle"):
            # Whatever happened inside, the client only sees the fault.
            self._emit_fault(fault, entry)
        elif error is not None:
            self._graph_error(error, entry)
        else:
            self.graph.annotate(entry, status=200)
            version = match.group(1) if match else self.graph.api_version
            self._send_json(
                200, payload, {"x-fb-trace-id": new_fbtrace_id(), "facebook-api-version": version}
            )

    def _token(self, params: dict[str, Any], source: str) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and value.strip():
            params.pop("access_token", None)
            return value.strip(), "header"
        token = params.pop("access_token", None)
        if isinstance(token, str) and token:
            return token, source
        return None, None

    def _body_params(self, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise GraphError(100, "(#100) The request body is not valid JSON") from exc
            if not isinstance(data, dict):
                raise GraphError(100, "(#100) The request body must be a JSON object")
            return data
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            fields: dict[str, Any] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    fields[str(name)] = (
                        part.get_content().strip() if part.get_content_maintype() == "text" else ""
                    )
            return fields
        # Graph's classic encoding, and what a body without a content type is taken as.
        text = body.decode("utf-8", "replace")
        return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}

    def _graph_error(self, error: GraphError, entry: dict[str, Any]) -> None:
        status = self.graph.http_status(error)
        self.graph.annotate(entry, status=status, error_code=error.code)
        body = error.body()
        self._send_json(status, body, {"x-fb-trace-id": body["error"]["fbtrace_id"]})

    def _emit_fault(self, fault: Fault, entry: dict[str, Any]) -> None:
        self.graph.annotate(entry, status=fault.status)
        if fault.kind == "reset":
            self.close_connection = True
            # SO_LINGER 0: close() sends RST instead of FIN - a "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif fault.kind == "status":
            status = fault.status or 500
            code = fault.code if fault.code is not None else _FAULT_DEFAULT_CODE.get(status, 1)
            body = GraphError(code, fault.message).body()
            self._send_json(status, body, {"x-fb-trace-id": body["error"]["fbtrace_id"]})
        elif fault.kind == "invalid_json":
            self._send(fault.status or 200, b'{"success": tru', "application/json; charset=UTF-8")
        elif fault.kind == "html":
            status = fault.status or 502
            page = f"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>{status} Bad Gateway</h1></body></html>"
            self._send(status, page.encode(), "text/html; charset=utf-8")
        elif fault.kind == "huge":
            self._send_huge(fault.status or 200)

    def _send_huge(self, status: int) -> None:
        # No Content-Length (HTTP/1.0 ends the body by closing): the client's
        # streaming cap, not a header check, has to stop it.
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.end_headers()
            self.wfile.write(b'{"data": "')
            chunk = b"x" * 65536
            for _ in range(HUGE_BODY_BYTES // len(chunk)):
                self.wfile.write(chunk)
            self.wfile.write(b'"}')
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- Control API ---------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        try:
            raw = self._read_body()
            try:
                data = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise ControlError("body must be JSON") from exc
            if not isinstance(data, dict):
                raise ControlError("body must be a JSON object")
            status, payload = self._control_route(method, path.rstrip("/"), query, data)
        except (ControlError, GraphError) as exc:
            status = exc.status if isinstance(exc, ControlError) else 400
            self._send_json(status or 400, {"error": str(exc)})
            return
        except (ValueError, TypeError, KeyError) as exc:  # e.g. {"times": "many"}
            self._send_json(400, {"error": f"bad value: {exc}"})
            return
        self._send_json(status, payload)

    def _control_route(
        self, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
    ) -> tuple[int, Any]:
        graph = self.graph
        number_code = re.fullmatch(r"/_fake/numbers/([^/]+)/code", path)
        number_path = re.fullmatch(r"/_fake/numbers/([^/]+)", path)
        if method == "GET" and path == "/_fake/state":
            return 200, graph.snapshot()
        if method == "POST" and path == "/_fake/reset":
            graph.reset()
            return 200, {"success": True}
        if method == "GET" and number_code:
            code = graph.last_code(number_code.group(1))
            if code is None:
                raise ControlError("no code issued for this number", status=404)
            return 200, code
        if method == "POST" and path == "/_fake/numbers":
            return 201, graph.create_number(data)
        if method == "POST" and number_path:
            return 200, graph.update_number(number_path.group(1), data)
        if method == "POST" and path == "/_fake/tokens":
            return 200, graph.set_token(data)
        if path == "/_fake/settings" and method in ("GET", "POST"):
            return 200, graph.configure(data) if method == "POST" else graph.settings()
        if path == "/_fake/faults":
            if method == "GET":
                return 200, graph.faults()
            if method == "POST":
                return 201, graph.add_fault(data)
            if method == "DELETE":
                graph.clear_faults()
                return 200, {"success": True}
        if path == "/_fake/requests":
            if method == "GET":
                method_filter = (query.get("method") or [""])[-1] or None
                path_filter = (query.get("path") or [""])[-1] or None
                return 200, graph.requests_log(method=method_filter, path=path_filter)
            if method == "DELETE":
                graph.clear_requests()
                return 200, {"success": True}
        if path == "/_fake/templates" and method in ("GET", "POST"):
            return 200, graph.set_templates(data) if method == "POST" else graph.templates_state()
        if path == "/_fake/status_webhooks" and method in ("GET", "POST"):
            return 200, graph.set_status_webhooks(data) if method == "POST" else graph.status_webhooks()
        if path == "/_fake/webhook_target" and method in ("GET", "POST"):
            return 200, graph.set_webhook_target(data) if method == "POST" else graph.webhook_targets()
        if method == "POST" and path == "/_fake/webhooks/send":
            url, secret = data.get("url"), data.get("app_secret")
            if not isinstance(url, str) or not isinstance(secret, str) or "payload" not in data:
                raise ControlError("url, app_secret and payload are required")
            return 200, send_webhook(url, secret, data["payload"])
        raise ControlError(f"no control endpoint {method} {path}", status=404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR (http.server's default, stated here because scripts/run relies on it): a fake
    # restarted a moment after the last one stopped gets the same port, its old connections in TIME_WAIT.
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], graph: FakeGraph) -> None:
        self.graph = graph
        super().__init__(address, _Handler)


class FakeGraphServer:
    """The fake on a real socket: ``start()`` serves from a background thread, ``stop()`` ends it.

    The socket is bound in the constructor, so ``base_url`` is known (port 0
    picks a free port) before ``start()``. ``graph`` is the ``FakeGraph`` whose
    methods mirror the control API, for tests that prefer Python to HTTP.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, api_version: str = DEFAULT_API_VERSION
    ) -> None:
        self.graph = FakeGraph(api_version)
        self._httpd = _Server((host, port), self.graph)
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/{self.graph.api_version}"

    @property
    def control_url(self) -> str:
        return f"{self.origin}/_fake"

    def start(self) -> FakeGraphServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="fake-graph",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``KeyboardInterrupt`` (the management command)."""
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self.graph.stopping.set()
            self._httpd.server_close()

    def stop(self) -> None:
        self.graph.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeGraphServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Numbers a development clinic finds on its (simulated) WhatsApp Business Account, one per path
# through the settings page: already on the Cloud API, and coming from another provider with a PIN.
# Any other valid number is new to Meta and goes through register -> code -> active.
DEMO_NUMBERS = (
    {"id": "109000000000001", "cc": "503", "phone_number": "22000001", "status": "CONNECTED"},
    {"id": "109000000000002", "cc": "503", "phone_number": "22000002", "status": "PENDING", "pin": "123456"},
)


def seed_demo(graph: FakeGraph, waba_id: str) -> list[dict[str, Any]]:
    """The demo WABA's numbers (see DEMO_NUMBERS); idempotent enough for one fresh server."""
    return [
        graph.create_number({"waba_id": waba_id, "verified_name": "Clínica Demo", **number})
        for number in DEMO_NUMBERS
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m devtools.fake_graph --port 8765``: serve in the foreground until Ctrl-C or SIGTERM."""
    import argparse
    import signal
    import sys
    from types import FrameType

    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_graph",
        description="A stateful fake of Meta's Graph API for offline development and end-to-end tests. "
        "Point META_GRAPH_URL at the printed base URL.",
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0 picks a free one). Default 8765.")
    # Loopback by default: the fake keeps OTP codes and PINs in clear text.
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind. Default 127.0.0.1.")
    parser.add_argument(
        "--api-version",
        default=DEFAULT_API_VERSION,
        help="Version in the printed base URL (any vNN.0 works).",
    )
    parser.add_argument(
        "--demo-waba",
        default="",
        help="Seed this WhatsApp Business Account with the demo numbers (scripts/run does).",
    )
    options = parser.parse_args(argv)
    server = FakeGraphServer(options.host, options.port, api_version=options.api_version)
    if options.demo_waba:
        seed_demo(server.graph, options.demo_waba)

    def stop(signum: int, frame: FrameType | None) -> None:
        # serve_forever() only leaves its loop on an exception in this thread.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write(f"{server.base_url}\ncontrol API: {server.control_url}/state\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.stdout.write("fake Graph server stopped\n")


if __name__ == "__main__":
    main()
