"""The client's address: the last NUM_PROXIES X-Forwarded-For entries are believed, no others."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from common.http import client_address, client_address_bucket

CASES = [
    # (NUM_PROXIES, REMOTE_ADDR, X-Forwarded-For or None, the client's address)
    (0, "203.0.113.5", None, "203.0.113.5"),
    (0, "203.0.113.5", "198.51.100.1", "203.0.113.5"),  # no proxy: the header is the client's word
    (1, "10.0.0.2", "198.51.100.1", "198.51.100.1"),
    (1, "10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged entry in front is ignored
    (1, "10.0.0.2", "6.6.6.6,198.51.100.1", "198.51.100.1"),
    (2, "10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.1", "198.51.100.1"),
    (2, "10.0.0.2", "198.51.100.1", "198.51.100.1"),  # fewer entries than proxies: the first
    (1, "10.0.0.2", None, "10.0.0.2"),  # no header: nobody forwarded it
    (1, "10.0.0.2", "2001:db8::7", "2001:db8::7"),
]


def _request(remote: str, forwarded: str | None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize(("proxies", "remote", "forwarded", "expected"), CASES)
def test_it_believes_only_the_proxies_entries(settings, proxies, remote, forwarded, expected):
    settings.NUM_PROXIES = proxies

    assert client_address(_request(remote, forwarded)) == expected


@pytest.mark.parametrize(("proxies", "remote", "forwarded", "expected"), CASES)
def test_drf_throttles_see_the_same_client(settings, proxies, remote, forwarded, expected):
    # settings.py gives DRF the same NUM_PROXIES; its own rule must agree with ours.
    settings.NUM_PROXIES = proxies
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}

    ident = SimpleRateThrottle.get_ident(None, Request(_request(remote, forwarded)))  # type: ignore[arg-type]

    assert ident == expected == client_address(_request(remote, forwarded))


def test_it_falls_back_to_the_connection_when_the_proxys_entry_is_not_an_address(settings):
    settings.NUM_PROXIES = 1

    assert client_address(_request("10.0.0.2", "unknown")) == "10.0.0.2"


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_limits_count_ipv4_addresses_and_ipv6_networks(address, bucket):
    assert client_address_bucket(_request(address, None)) == bucket
