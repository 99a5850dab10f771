"""Request plumbing for every door: who sent a request, and the answer when the database is down.

Behind proxies the connection comes from the nearest proxy, and the client's
address travels in `X-Forwarded-For`, a header anyone can also write. Only the
entries our own proxies appended can be believed: the last `NUM_PROXIES` of
them. With `NUM_PROXIES = 0` (nothing in front) the header is ignored and the
connection's own address is the client's. This is DRF's rule for its
`NUM_PROXIES` setting, which settings.py sets to the same number, so DRF's
throttles and the sign-in limiter (django-axes, through `client_address_bucket`)
see the same client.

With the database unreachable every door answers the same JSON 503 with
Retry-After: the API through its exception handler, other views through
`json_503_when_the_database_is_down`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)

# An IPv6 client usually holds a whole /64: counting single addresses there would
# give it 2**64 fresh buckets.
IPV6_BUCKET_PREFIX = 64


def client_address(request: HttpRequest) -> str:
    """The client's address as far as it can be believed (see the module's docstring)."""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = int(settings.NUM_PROXIES)
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    if proxies <= 0 or not forwarded:
        return remote
    entries = [entry.strip() for entry in forwarded.split(",")]
    candidate = entries[-min(proxies, len(entries))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        # Our proxy writes addresses; anything else did not come from it.
        return remote


def client_address_bucket(request: HttpRequest) -> str:
    """What limits count per client: the IPv4 address, or the IPv6 address's /64 network."""
    address = client_address(request)
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_BUCKET_PREFIX}", strict=False))
    return str(parsed)


# The one sentence for "the database is down", for the API (clinics.api.exceptions) and
# the views outside it; a client retries after DATABASE_RETRY_AFTER seconds.
DATABASE_UNAVAILABLE = _("The service is briefly unavailable. Try again in a moment.")
DATABASE_RETRY_AFTER = 30


def database_unavailable_response() -> JsonResponse:
    """503 with the contract's JSON body and Retry-After, as the API answers."""
    response = JsonResponse({"detail": str(DATABASE_UNAVAILABLE)}, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def json_503_when_the_database_is_down(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """A view that answers JSON 503 (not Django's HTML error page) when the database is unreachable.

    The driver's message names the host, never a password: it is logged for operators.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            logger.error("database unavailable: %s: %s", type(exc).__name__, exc)
            return database_unavailable_response()

    return wrapped
