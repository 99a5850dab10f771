"""A small client for the parts of Meta's Graph API that onboard a WhatsApp number.

One ``MetaClient`` per access token (one clinic). Every public method is one
Graph call (or, for ``list_phone_numbers``, one call per page) and returns a
small typed value; failures become one of three exceptions:

* ``MetaRefusedError`` - Graph answered 4xx: the request was understood and
  refused. ``code`` is Graph's ``error.code`` (0 when the body had no usable
  envelope). Build logic on ``code``, never on the HTTP status.
* ``MetaUnavailableError`` - Graph answered 5xx, the connection failed, or the
  body was not what a 2xx should carry (invalid JSON, an HTML page, too large,
  ``"success": false``). When a 5xx carried an envelope, its ``code`` etc. are
  kept on the exception too.
* ``MetaTimeoutError`` - the connect or read timeout expired. The request may
  still have been carried out by Meta: callers must re-read state before
  retrying a POST.

Only the GETs are retried (twice, after 0.2 s and 0.5 s) and only on the last
two kinds: register/deregister count against a 10-per-72-hours limit at Meta,
so a POST is never repeated behind the caller's back.

Inside a request, every call also fits the request's deadline
(``common.deadline``): its timeouts shrink to the time left, a call with no time
left is not made, and a call still running at the deadline is abandoned (its
answer ignored) with ``MetaTimeoutError`` - so a slow, silent or trickling Meta
can never keep a request past it.

The access token travels only in the ``Authorization`` header. It is never
logged, never part of an exception's text, and hidden from ``repr()``; the
module imports no models, and Django settings only when a default is needed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from common import deadline

from .exceptions import MetaError, MetaRefusedError, MetaTimeoutError, MetaUnavailableError
from .meta_answers import PhoneNumberInfo, SubscribedApp, TemplateInfo, TokenInfo, opt_int, opt_str
from .validators import META_ID_RE

__all__ = [
    "MetaClient",
    "MetaError",
    "MetaRefusedError",
    "MetaTimeoutError",
    "MetaUnavailableError",
    "PhoneNumberInfo",
    "SubscribedApp",
    "TemplateInfo",
    "TokenInfo",
]

logger = logging.getLogger(__name__)

PHONE_NUMBER_FIELDS = (
    "id",
    "display_phone_number",
    "verified_name",
    "status",
    "code_verification_status",
    "name_status",
    "quality_rating",
    "platform_type",
)
_FIELDS_PARAM = ",".join(PHONE_NUMBER_FIELDS)
TEMPLATE_FIELDS = "id,name,language,status,category,quality_score,rejected_reason,components"
# A WABA has at most 250 template names, in several languages each: "all pages" with room to spare.
_MAX_TEMPLATE_PAGES = 100
# The health check also reads the messaging limit. Meta deprecated the field on the
# number (limits moved to the business portfolio); a version without it refuses
# the whole request with 100, so the client asks again without it.
HEALTH_FIELDS = (*PHONE_NUMBER_FIELDS, "messaging_limit_tier")
_HEALTH_FIELDS_PARAM = ",".join(HEALTH_FIELDS)
_NONEXISTING_FIELD = "nonexisting field"

# Pauses before the 2nd and 3rd attempt of a GET: long enough to ride out a
# blip, short enough that a request-handling worker is not held for long.
_RETRY_BACKOFF_SECONDS = (0.2, 0.5)
_sleep = time.sleep  # a module attribute so tests can skip the pauses
_MAX_PAGES = 10
_CHUNK_BYTES = 64 * 1024
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")
_CODE_METHODS = frozenset({"SMS", "VOICE"})
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,4})?$")
_CODE_RE = re.compile(r"^[0-9]{4,8}$")
_CODE_SEPARATORS_RE = re.compile(r"[\s-]+")
_PIN_RE = re.compile(r"^[0-9]{6}$")
# Kept back from the request's deadline for our own work after Meta: saving what
# happened and writing the answer.
ANSWER_RESERVE_SECONDS = 1.0
_CC_RE = re.compile(r"^[0-9]{1,4}$")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ().-]{2,30}$")


def _check_id(value: str, what: str) -> str:
    # Defence in depth: services validate earlier, but nothing that could change
    # the path or add a query may ever reach a URL that carries our token.
    if not isinstance(value, str) or not META_ID_RE.fullmatch(value):
        raise ValueError(f"Invalid Meta {what}: use 1 to 64 letters, digits, '_' or '-'.")
    return value


class MetaClient:
    """Graph API client for one access token.

    >>> client = MetaClient(token)               # base URL and timeouts from settings
    >>> client.get_phone_number("106540352242922").status
    'CONNECTED'

    ``base_url`` includes the version (``https://graph.facebook.com/v26.0``).
    ``session`` may be shared between clients: the token is sent per request and
    never stored on the session. ``read_retries`` is how many times a GET is
    repeated after a timeout or an unavailable answer.
    """

    # A phone number or a page of them is a few KB; 1 MB leaves room and keeps a
    # broken or hostile upstream from filling a worker's memory.
    max_body_bytes = 1_000_000

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        session: requests.Session | None = None,
        read_retries: int = 2,
    ) -> None:
        # A token with white space or control characters would make requests
        # raise InvalidHeader with the header value (the token) in its text.
        if not isinstance(access_token, str) or not _TOKEN_RE.fullmatch(access_token):
            raise ValueError("The Meta access token must be non-empty visible ASCII without spaces.")
        if base_url is None or connect_timeout is None or read_timeout is None:
            from django.conf import settings

            base_url = settings.META_GRAPH_URL if base_url is None else base_url
            connect_timeout = settings.META_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
            read_timeout = settings.META_READ_TIMEOUT if read_timeout is None else read_timeout
        if read_retries < 0:
            raise ValueError("read_retries cannot be negative.")
        self._access_token = access_token
        self.base_url = base_url.rstrip("/")
        self.timeout: tuple[float, float] = (float(connect_timeout), float(read_timeout))
        self.read_retries = read_retries
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"<MetaClient base_url={self.base_url!r} token=***>"

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> MetaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- Operations -----------------------------------------------------------

    def get_phone_number(self, phone_number_id: str) -> PhoneNumberInfo:
        """``GET /{pnid}`` with the fields we store."""
        pnid = _check_id(phone_number_id, "phone number id")
        data = self._request("GET", pnid, params={"fields": _FIELDS_PARAM})
        return PhoneNumberInfo.from_graph(data)

    def get_phone_number_health(self, phone_number_id: str) -> PhoneNumberInfo:
        """``GET /{pnid}`` with the stored fields and the messaging limit, when the version still has it."""
        pnid = _check_id(phone_number_id, "phone number id")
        try:
            data = self._request("GET", pnid, params={"fields": _HEALTH_FIELDS_PARAM})
        except MetaRefusedError as exc:
            if exc.code != 100 or _NONEXISTING_FIELD not in (exc.message or "").lower():
                raise
            data = self._request("GET", pnid, params={"fields": _FIELDS_PARAM})
        return PhoneNumberInfo.from_graph(data)

    def debug_token(self) -> TokenInfo:
        """``GET /debug_token``: the client's own token inspected with itself (validity, type, expiry, scopes).

        The token is also the ``input_token`` query parameter (Graph has no other
        way); the client never logs query strings and the header carries it anyway.
        """
        try:
            data = self._request("GET", "debug_token", params={"input_token": self._access_token})
        except MetaError as exc:
            # requests' own exceptions name the URL, which here carries the token:
            # drop them from the chain so that no logged traceback shows it.
            exc.__cause__ = None
            exc.__suppress_context__ = True
            raise
        return TokenInfo.from_graph(data)

    def get_subscribed_apps(self, waba_id: str) -> list[SubscribedApp]:
        """``GET /{waba}/subscribed_apps``: the apps that receive this WABA's webhooks."""
        waba = _check_id(waba_id, "WhatsApp Business Account id")
        data = self._request("GET", f"{waba}/subscribed_apps")
        items = data.get("data")
        if not isinstance(items, list):
            raise MetaUnavailableError("Meta returned subscribed apps without a data array")
        return [SubscribedApp.from_graph(item) for item in items if isinstance(item, dict)]

    def list_phone_numbers(self, waba_id: str) -> list[PhoneNumberInfo]:
        """``GET /{waba}/phone_numbers``, following up to 10 pages."""
        waba = _check_id(waba_id, "WhatsApp Business Account id")
        items, complete = self._pages(f"{waba}/phone_numbers", {"fields": _FIELDS_PARAM}, _MAX_PAGES)
        if not complete:
            logger.warning("Meta GET %s/phone_numbers: stopped after %d pages", waba, _MAX_PAGES)
        return [PhoneNumberInfo.from_graph(item) for item in items]

    def add_phone_number(self, waba_id: str, *, cc: str, phone_number: str, verified_name: str) -> str:
        """``POST /{waba}/phone_numbers``; returns the new (unverified) phone number id."""
        waba = _check_id(waba_id, "WhatsApp Business Account id")
        if not _CC_RE.fullmatch(cc or ""):
            raise ValueError("cc must be the country calling code: 1 to 4 digits.")
        if not _PHONE_RE.fullmatch(phone_number or ""):
            raise ValueError("phone_number must be the number's digits.")
        if not (verified_name or "").strip():
            raise ValueError("verified_name cannot be empty.")
        body = {"cc": cc, "phone_number": phone_number, "verified_name": verified_name}
        data = self._request("POST", f"{waba}/phone_numbers", json_body=body)
        new_id = data.get("id")
        if isinstance(new_id, int) and not isinstance(new_id, bool):
            new_id = str(new_id)
        if not isinstance(new_id, str) or not META_ID_RE.fullmatch(new_id):
            raise MetaUnavailableError("Meta created a phone number but returned no valid id")
        return new_id

    def request_code(self, phone_number_id: str, *, method: str, language: str) -> None:
        """``POST /{pnid}/request_code``: Meta sends an OTP by SMS or voice call."""
        pnid = _check_id(phone_number_id, "phone number id")
        code_method = (method or "").upper()
        if code_method not in _CODE_METHODS:
            raise ValueError("method must be SMS or VOICE.")
        if not _LANGUAGE_RE.fullmatch(language or ""):
            raise ValueError("language must be a locale such as 'es' or 'en_US'.")
        # Form fields (as in Meta's -F examples) rather than the query string
        # keep the parameters out of URLs that proxies and error texts show.
        self._request(
            "POST", f"{pnid}/request_code", form_body={"code_method": code_method, "language": language}
        )

    def verify_code(self, phone_number_id: str, code: str) -> None:
        """``POST /{pnid}/verify_code`` with the OTP (separators such as "123-830" are dropped)."""
        pnid = _check_id(phone_number_id, "phone number id")
        digits = _CODE_SEPARATORS_RE.sub("", code or "")
        if not _CODE_RE.fullmatch(digits):
            raise ValueError("code must be 4 to 8 digits.")
        self._request("POST", f"{pnid}/verify_code", form_body={"code": digits})

    def register(self, phone_number_id: str, pin: str) -> None:
        """``POST /{pnid}/register`` with the two-step verification PIN (counts toward 10 per 72 h)."""
        pnid = _check_id(phone_number_id, "phone number id")
        if not _PIN_RE.fullmatch(pin or ""):
            raise ValueError("pin must be 6 digits.")
        self._request("POST", f"{pnid}/register", json_body={"messaging_product": "whatsapp", "pin": pin})

    def deregister(self, phone_number_id: str) -> None:
        """``POST /{pnid}/deregister`` (counts toward the same 10 per 72 h)."""
        pnid = _check_id(phone_number_id, "phone number id")
        self._request("POST", f"{pnid}/deregister")

    def set_pin(self, phone_number_id: str, pin: str) -> None:
        """``POST /{pnid}`` with a new two-step verification PIN for a registered number."""
        pnid = _check_id(phone_number_id, "phone number id")
        if not _PIN_RE.fullmatch(pin or ""):
            raise ValueError("pin must be 6 digits.")
        self._request("POST", pnid, json_body={"pin": pin})

    def subscribe_app(self, waba_id: str) -> None:
        """``POST /{waba}/subscribed_apps``: without it no webhooks arrive for the WABA."""
        waba = _check_id(waba_id, "WhatsApp Business Account id")
        self._request("POST", f"{waba}/subscribed_apps")

    def list_templates(self, waba_id: str) -> list[TemplateInfo]:
        """``GET /{waba}/message_templates``, every page (Meta pages them; a sync must see them all)."""
        waba = _check_id(waba_id, "WhatsApp Business Account id")
        params = {"fields": TEMPLATE_FIELDS, "limit": "100"}
        items, complete = self._pages(f"{waba}/message_templates", params, _MAX_TEMPLATE_PAGES)
        if not complete:
            # A partial list would make the missing templates look deleted: refuse it instead.
            raise MetaUnavailableError(f"Meta's template list did not end after {_MAX_TEMPLATE_PAGES} pages")
        templates = []
        for item in items:
            try:
                templates.append(TemplateInfo.from_graph(item))
            except MetaUnavailableError:
                # One malformed template must not stop the sync of all the others.
                logger.warning(
                    "Meta GET %s/message_templates: a template without a name or language skipped", waba
                )
        return templates

    def _pages(self, path: str, params: dict[str, str], max_pages: int) -> tuple[list[dict[str, Any]], bool]:
        """The items of a paged Graph list, up to `max_pages` pages; and whether the list ended."""
        items: list[dict[str, Any]] = []
        for _page in range(max_pages):
            data = self._request("GET", path, params=params)
            page = data.get("data")
            if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
                raise MetaUnavailableError(f"Meta returned a list for /{path} without a data array")
            items.extend(page)
            after = _next_cursor(data.get("paging"))
            if after is None:
                return items, True
            # Never follow paging.next itself: it may point elsewhere and often
            # carries access_token in its query, which would then end up in
            # exception texts. Rebuild the URL with our base and the cursor.
            params = {**params, "after": after}
        return items, False

    def send_message(self, phone_number_id: str, payload: dict[str, Any]) -> str:
        """``POST /{pnid}/messages`` with a message object; returns Meta's ``wamid``.

        Never repeated here (a POST): after a ``MetaTimeoutError`` or an unreachable
        Meta the message may have gone out, so the caller must not send it again blindly.
        """
        pnid = _check_id(phone_number_id, "phone number id")
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", **payload}
        data = self._request("POST", f"{pnid}/messages", json_body=body)
        messages = data.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise MetaUnavailableError("Meta accepted a message but returned no message id")
        return wamid

    # -- Transport ------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        form_body: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One Graph call: returns the JSON object of a 2xx or raises a ``MetaError``.

        GETs are retried on ``MetaUnavailableError``/``MetaTimeoutError``; POSTs never.
        """
        attempts = 1 + (self.read_retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                return self._request_once(method, path, params, json_body, form_body)
            except (MetaUnavailableError, MetaTimeoutError) as exc:
                pause = _RETRY_BACKOFF_SECONDS[min(attempt, len(_RETRY_BACKOFF_SECONDS) - 1)]
                budget = self._budget()
                if attempt + 1 >= attempts or (budget is not None and budget <= pause):
                    raise
                logger.info(
                    "Meta %s /%s: retrying in %.1f s after %s", method, path, pause, type(exc).__name__
                )
                _sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_once(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json_body: dict[str, Any] | None,
        form_body: dict[str, str] | None,
    ) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        headers = {"Authorization": f"Bearer {self._access_token}", "Accept": "application/json"}
        started = time.monotonic()
        status: int | None = None
        fbtrace_id: str | None = None
        budget = self._budget()
        connect_timeout, read_timeout = self.timeout
        # However Meta dribbles its answer (headers included), the call ends by then.
        give_up_at = started + connect_timeout + 2 * read_timeout
        if budget is not None:
            connect_timeout, read_timeout = min(connect_timeout, budget), min(read_timeout, budget)
            give_up_at = min(give_up_at, started + budget)
        try:
            if budget is not None and budget <= 0:
                raise MetaTimeoutError(f"No time was left to call Meta for {method} /{path}")

            def exchange() -> tuple[int, str | None, bytes]:
                try:
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        data=form_body,
                        headers=headers,
                        timeout=(connect_timeout, read_timeout),
                        stream=True,
                        # A redirect would send the token on to wherever it points.
                        allow_redirects=False,
                    )
                except requests.exceptions.Timeout as exc:
                    raise MetaTimeoutError(f"Meta did not answer {method} /{path} in time") from exc
                except requests.exceptions.RequestException as exc:
                    # The text of requests' exceptions names the URL; ours does not
                    # need to, and the token is only ever in a header.
                    raise MetaUnavailableError(
                        f"Could not reach Meta for {method} /{path} ({type(exc).__name__})"
                    ) from exc
                try:
                    body = self._read_body(response, give_up_at, method, path)
                finally:
                    response.close()
                return response.status_code, response.headers.get("x-fb-trace-id"), body

            status, fbtrace_id, body = _bounded(exchange, give_up_at, f"{method} /{path}")
            data, envelope = self._parse(body)
            if envelope is not None:
                fbtrace_id = envelope.get("fbtrace_id") or fbtrace_id
            result = self._interpret(method, path, status, data, envelope, fbtrace_id)
        except MetaError as exc:
            logger.warning(
                "Meta %s /%s -> %s in %d ms (fbtrace_id=%s): %s",
                method,
                path,
                status if status is not None else "-",
                _elapsed_ms(started),
                fbtrace_id or "-",
                self._scrub(str(exc)),
            )
            raise
        logger.info(
            "Meta %s /%s -> %s in %d ms (fbtrace_id=%s)",
            method,
            path,
            status,
            _elapsed_ms(started),
            fbtrace_id or "-",
        )
        return result

    def _budget(self) -> float | None:
        """Seconds this client may still spend on Meta in the current request, or None outside one."""
        left = deadline.remaining()
        return None if left is None else left - ANSWER_RESERVE_SECONDS

    def _read_body(self, response: requests.Response, give_up_at: float, method: str, path: str) -> bytes:
        declared = opt_int(response.headers.get("Content-Length"))
        if declared is not None and declared > self.max_body_bytes:
            raise MetaUnavailableError(
                f"Meta's answer to {method} /{path} is too large ({declared} bytes)",
                http_status=response.status_code,
            )
        # The read timeout bounds each socket read; this bounds the whole body
        # so a server dripping a byte at a time cannot hold a worker forever.
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise MetaUnavailableError(
                        f"Meta's answer to {method} /{path} is larger than {self.max_body_bytes} bytes",
                        http_status=response.status_code,
                    )
                if time.monotonic() > give_up_at:
                    raise MetaTimeoutError(f"Meta's answer to {method} /{path} took too long to arrive")
                chunks.append(chunk)
        except requests.exceptions.ConnectionError as exc:
            # requests reports a read timeout while streaming as ConnectionError.
            if exc.args and isinstance(exc.args[0], ReadTimeoutError):
                raise MetaTimeoutError(f"Meta did not finish answering {method} /{path} in time") from exc
            raise MetaUnavailableError(
                f"The connection broke while reading Meta's answer to {method} /{path}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise MetaUnavailableError(
                f"Could not read Meta's answer to {method} /{path} ({type(exc).__name__})"
            ) from exc
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The body as a JSON object (None if it is not one) and its ``error`` object, if any."""
        try:
            data = json.loads(body)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
            return None, None
        if not isinstance(data, dict):
            return None, None
        error = data.get("error")
        return data, error if isinstance(error, dict) else None

    def _interpret(
        self,
        method: str,
        path: str,
        status: int,
        data: dict[str, Any] | None,
        envelope: dict[str, Any] | None,
        fbtrace_id: str | None,
    ) -> dict[str, Any]:
        if 200 <= status < 300:
            if data is None:
                raise MetaUnavailableError(
                    f"Meta answered {method} /{path} with a body that is not a JSON object",
                    http_status=status,
                )
            if envelope is not None:
                # Graph never does this; treat it as the refusal it describes.
                raise self._error_from_envelope(envelope, status, fbtrace_id, refused=True)
            if data.get("success") is False:
                raise MetaUnavailableError(
                    f"Meta answered {method} /{path} with success: false", http_status=status
                )
            return data
        if 400 <= status < 500:
            if envelope is not None:
                raise self._error_from_envelope(envelope, status, fbtrace_id, refused=True)
            raise MetaRefusedError(
                0,
                f"HTTP {status} without a Graph error body",
                fbtrace_id=fbtrace_id,
                http_status=status,
            )
        if status >= 500 and envelope is not None:
            raise self._error_from_envelope(envelope, status, fbtrace_id, refused=False)
        raise MetaUnavailableError(f"Meta answered {method} /{path} with HTTP {status}", http_status=status)

    def _error_from_envelope(
        self, envelope: dict[str, Any], status: int, fbtrace_id: str | None, *, refused: bool
    ) -> MetaError:
        code = opt_int(envelope.get("code"))
        message = self._scrub(opt_str(envelope.get("message")) or "")
        error_data = envelope.get("error_data")
        # error_data is usually {"details": ...} but some generic errors send a string.
        details = opt_str(error_data.get("details")) if isinstance(error_data, dict) else opt_str(error_data)
        details = self._scrub(details) if details else None
        subcode = opt_int(envelope.get("error_subcode"))
        trace = opt_str(envelope.get("fbtrace_id")) or fbtrace_id
        if refused:
            return MetaRefusedError(
                code if code is not None else 0,
                message,
                details=details,
                fbtrace_id=trace,
                http_status=status,
                subcode=subcode,
            )
        return MetaUnavailableError(
            "Meta is unavailable",
            code=code if code is not None else 0,
            message=message,
            details=details,
            fbtrace_id=trace,
            http_status=status,
            subcode=subcode,
        )

    def _scrub(self, text: str) -> str:
        # Meta does not echo tokens, but a proxy or a future message might.
        return text.replace(self._access_token, "***") if self._access_token in text else text


def _bounded(exchange: Any, give_up_at: float, what: str) -> Any:
    """`exchange()` in a helper thread, given up on at `give_up_at` (monotonic seconds).

    requests' timeouts bound each socket read, not the whole exchange: a server
    that sends its headers a byte a second would never trip them. The abandoned
    thread ends by itself (each read still times out) and its answer is ignored.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = exchange()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="meta-call", daemon=True)
    worker.start()
    worker.join(max(0.0, give_up_at - time.monotonic()))
    if worker.is_alive():
        raise MetaTimeoutError(f"Meta did not finish answering {what} in time")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def never_reached_meta(exc: BaseException) -> bool:
    """Whether a failed call certainly never reached Meta: no connection was made, so a POST may be repeated.

    A connection refused, a name that did not resolve or a connect timeout: the
    request was never written. Anything later (a read timeout, a broken
    connection) may have been carried out by Meta.
    """
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError) and cause.args:
        reason = cause.args[0]
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
        return isinstance(reason, NewConnectionError)
    return False


def _next_cursor(paging: Any) -> str | None:
    """The ``after`` cursor when Graph says there is a next page, else None."""
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    next_url = paging["next"]
    after: str | None = None
    if isinstance(next_url, str):
        after = (parse_qs(urlsplit(next_url).query).get("after") or [""])[0] or None
    if not after:
        cursors = paging.get("cursors")
        after = opt_str(cursors.get("after")) if isinstance(cursors, dict) else None
    if not after:
        raise MetaUnavailableError("Meta announced a next page without an 'after' cursor")
    return after


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
