"""Who sent a request: the one rule for the client's address, for every door.

Behind proxies the connection comes from the nearest proxy, and the client's
address travels in `X-Forwarded-For`, a header anyone can also write. Only the
entries our own proxies appended can be believed: the last `NUM_PROXIES` of
them. With `NUM_PROXIES = 0` (nothing in front) the header is ignored and the
connection's own address is the client's. This is DRF's rule for its
`NUM_PROXIES` setting, which settings.py sets to the same number, so DRF's
throttles and the sign-in limiter (django-axes, through `client_address_bucket`)
see the same client.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

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
