"""The one way we connect to a clinic's bot: a POST that cannot be turned against us.

A bot's URL is typed by a clinic admin, so it must not reach our own network
(SSRF). Every connection, not only the saving of the URL:

* takes `https://` only, with no credentials in the URL;
* resolves the host once and refuses it if any address it resolves to is
  loopback, private, link-local, multicast, reserved, unspecified or otherwise
  not global (IPv4, IPv6, and IPv4 inside IPv6: mapped, 6to4, Teredo, NAT64);
* connects to that resolved address (a second lookup could answer otherwise:
  DNS rebinding) while sending the URL's host in `Host` and verifying the TLS
  certificate for that host name;
* follows no redirect (a 3xx is an answer like any other), reads at most 64 KiB
  of the answer, and gives up after 10 seconds in all, however slowly the bot
  dribbles its answer.

`BOT_URL_ALLOW_PRIVATE=true` (development, tests) allows `http://` and any address.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import certifi
from django.conf import settings
from django.utils import timezone

from .exceptions import (
    BotAddressRefusedError,
    BotConnectionError,
    BotError,
    BotResolutionError,
    BotTimeoutError,
)

TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048
MAX_RETRY_AFTER_SECONDS = 3600
USER_AGENT = "Clinics-Webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64's well-known prefix: a gateway on our network would reach the IPv4 address inside.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class BotTarget:
    """A bot URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, never empty


@dataclass(frozen=True)
class BotAnswer:
    """What the bot answered: its status, at most 64 KiB of its body, and how long to wait if it said so."""

    status: int
    body: bytes
    retry_after_seconds: int | None
    elapsed_ms: int
    address: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def allow_private() -> bool:
    return bool(settings.BOT_URL_ALLOW_PRIVATE)


def parse_bot_url(url: str) -> BotTarget:
    """The URL's parts, or `BotAddressRefusedError` (with a `reason`) when it may not be used."""
    if len(url) > MAX_URL_LENGTH:
        raise BotAddressRefusedError("too_long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BotAddressRefusedError("invalid") from None
    if not parts.scheme or not parts.hostname:
        raise BotAddressRefusedError("invalid")
    scheme = parts.scheme.lower()
    allowed = ("http", "https") if allow_private() else ("https",)
    if scheme not in allowed:
        raise BotAddressRefusedError("scheme")
    if parts.username is not None or parts.password is not None:
        raise BotAddressRefusedError("credentials")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return BotTarget(
        scheme=scheme,
        host=parts.hostname,
        port=port or (443 if scheme == "https" else 80),
        path=path,
    )


def address_refused(address: IPAddress) -> bool:
    """Whether a connection to this address could reach something other than the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # A socket connects to the IPv4 address itself: judge that one.
            return address_refused(address.ipv4_mapped)
        embedded = _embedded_ipv4(address)
        if embedded is not None and address_refused(embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to, or `BotResolutionError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BotResolutionError("The bot's host name does not resolve.") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # An IPv6 sockaddr may carry a zone ("fe80::1%eth0"): the address is before it.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise BotResolutionError("The bot's host name does not resolve.")
    return found


def resolve_allowed(target: BotTarget) -> list[IPAddress]:
    """The addresses to connect to: resolved once, and refused if any answer is not allowed."""
    addresses = resolve(target.host, target.port)
    if not allow_private() and any(address_refused(a) for a in addresses):
        raise BotAddressRefusedError("address")
    return addresses


def resolve_allowed_within(target: BotTarget, seconds: float) -> list[IPAddress]:
    """`resolve_allowed`, given up on after `seconds`: a resolver that hangs must not hold the worker.

    The lookup runs in a helper thread (getaddrinfo cannot be interrupted); an
    abandoned one ends by itself when the resolver gives up, and its answer is ignored.
    """
    try:
        ipaddress.ip_address(target.host)
    except ValueError:
        pass  # a host name: looked up below
    else:
        return resolve_allowed(target)  # an address literal: nothing to wait for
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["addresses"] = resolve_allowed(target)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="bot-resolve", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise BotTimeoutError("The bot's host name did not resolve in time.")
    if "error" in outcome:
        raise outcome["error"]
    return list(outcome["addresses"])


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> int | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), capped at an hour; None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = int((when - (now or timezone.now())).total_seconds())
    return max(0, min(seconds, MAX_RETRY_AFTER_SECONDS))


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to the resolved addresses (tried in order), speaking to the URL's host name.

    http.client puts the host name in `Host`; TLS sends it as SNI and checks the
    certificate against it. `abort()` (from the deadline timer) breaks any read
    or handshake in progress.
    """

    def __init__(
        self, target: BotTarget, addresses: list[IPAddress], timeout: float, context: ssl.SSLContext | None
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = [str(a) for a in addresses]
        self._tls_context = context
        self._raw: socket.socket | None = None
        self.address = ""
        self.aborted = False

    def connect(self) -> None:
        raw = None
        for address in self._addresses:
            if self.aborted:
                break
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError:
                if address == self._addresses[-1]:
                    raise
                continue
            self.address = address
            break
        if raw is None or self.aborted:
            raise BotTimeoutError("The bot did not answer in time.")
        self._raw = raw
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self._tls_context
        self.sock = raw if context is None else context.wrap_socket(raw, server_hostname=self.host)

    def abort(self) -> None:
        self.aborted = True
        if self._raw is not None:
            with contextlib.suppress(OSError):  # already closed
                self._raw.shutdown(socket.SHUT_RDWR)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The same trust store as requests (certifi), hostname checking on; loaded once per process."""
    return ssl.create_default_context(cafile=certifi.where())


def post_to_bot(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float = TIMEOUT_SECONDS,
    ssl_context: ssl.SSLContext | None = None,
) -> BotAnswer:
    """POST `body` to the bot under the rules in this module's docstring.

    Returns the answer whatever its status (a 3xx included); raises a `BotError`
    when there is none: a refused URL or address, no resolution, no connection,
    a broken TLS handshake, or no complete answer within `timeout` seconds.
    """
    target = parse_bot_url(url)
    started = time.monotonic()
    addresses = resolve_allowed_within(target, timeout)
    left = max(0.001, timeout - (time.monotonic() - started))
    connection = _PinnedConnection(
        target, addresses, left, ssl_context or (_tls_context() if target.scheme == "https" else None)
    )
    deadline = threading.Timer(left, connection.abort)
    deadline.daemon = True
    deadline.start()
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
                **headers,
            },
        )
        response = connection.getresponse()
        answer = response.read(MAX_ANSWER_BYTES)
        if connection.aborted:
            # The deadline cut the answer short: a read after shutdown() just ends early.
            raise BotTimeoutError("The bot did not answer in time.")
        retry_after = parse_retry_after(response.getheader("Retry-After"))
        status = response.status
    except BotError:
        raise
    except ssl.SSLError as exc:
        if connection.aborted:
            raise BotTimeoutError("The bot did not answer in time.") from exc
        raise BotConnectionError(f"TLS with the bot failed ({type(exc).__name__}).") from exc
    except (OSError, http.client.HTTPException) as exc:
        if connection.aborted or isinstance(exc, TimeoutError):
            raise BotTimeoutError("The bot did not answer in time.") from exc
        raise BotConnectionError(f"The connection to the bot failed ({type(exc).__name__}).") from exc
    finally:
        deadline.cancel()
        connection.close()
    return BotAnswer(
        status=status,
        body=answer,
        retry_after_seconds=retry_after,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        address=connection.address,
    )
