"""The bot poster: which URLs and addresses it refuses, and how it talks to a real server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from messaging.exceptions import (
    BotAddressRefusedError,
    BotConnectionError,
    BotResolutionError,
    BotTimeoutError,
)
from messaging.poster import MAX_ANSWER_BYTES, address_refused, parse_retry_after, post_to_bot

BODY = b'{"type":"ping"}'

# -- which addresses are refused --------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "10.1.2.3",  # private
        "172.16.0.1",
        "192.168.1.10",
        "169.254.169.254",  # link-local: the cloud metadata service
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "0.0.0.0",  # unspecified  # noqa: S104
        "100.64.0.1",  # shared address space (carrier NAT)
        "192.0.2.10",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",  # unique local
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_it_refuses_addresses_off_the_public_internet(address):
    assert address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_it_allows_public_addresses(address):
    assert not address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bot.example.com/hook", "scheme"),
        ("ftp://bot.example.com/hook", "scheme"),
        ("https://user:pw@bot.example.com/hook", "credentials"),
        ("https:///hook", "invalid"),
        ("https://bot.example.com:99999/", "invalid"),
        ("https://bot.example.com/" + "a" * 2048, "too_long"),
    ],
)
def test_it_refuses_urls_before_any_lookup(url, reason, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no lookup expected"))
    with pytest.raises(BotAddressRefusedError) as excinfo:
        post_to_bot(url, body=BODY, headers={})
    assert excinfo.value.reason == reason


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["10.0.0.5"], ["::1"], ["::ffff:192.168.0.1"], ["93.184.215.14", "192.168.0.1"]],
)
def test_it_refuses_a_host_resolving_to_any_private_address(answers, resolves_to):
    resolves_to(*answers)
    with pytest.raises(BotAddressRefusedError) as excinfo:
        post_to_bot("https://bot.example.com/hook", body=BODY, headers={})
    assert excinfo.value.reason == "address"


def test_a_host_that_does_not_resolve_is_its_own_error(monkeypatch):
    def fail(*_a, **_k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(BotResolutionError):
        post_to_bot("https://nowhere.example.com/hook", body=BODY, headers={})


def test_private_hosts_and_http_are_allowed_only_with_the_setting(settings, bot_server):
    settings.BOT_URL_ALLOW_PRIVATE = False
    with pytest.raises(BotAddressRefusedError):
        post_to_bot(bot_server.url, body=BODY, headers={})
    assert bot_server.received == []

    settings.BOT_URL_ALLOW_PRIVATE = True
    assert post_to_bot(bot_server.url, body=BODY, headers={}).status == 200


# -- against a real server ---------------------------------------------------------------


def test_it_posts_the_body_and_headers_and_returns_the_answer(bot_server):
    bot_server.answer = lambda _r: (202, {}, b'{"ok": true}')

    answer = post_to_bot(bot_server.url + "?clinic=1", body=BODY, headers={"webhook-id": "evt_1"})

    assert (answer.status, answer.body, answer.ok, answer.address) == (
        202,
        b'{"ok": true}',
        True,
        "127.0.0.1",
    )
    [request] = bot_server.received
    assert request.path == "/bot/hook?clinic=1"
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["user-agent"] == "Clinics-Webhooks/1"


def test_it_connects_to_the_address_resolved_once_and_sends_the_host_name(bot_server, monkeypatch):
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_dns(host, port, *args, **kwargs):
        if host == "bot.clinic.test":
            lookups.append(host)
            # First answer: our test bot. Any later lookup would be sent elsewhere.
            address = "127.0.0.1" if len(lookups) == 1 else "10.255.255.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    port = bot_server.url.split(":")[2].split("/")[0]

    answer = post_to_bot(f"http://bot.clinic.test:{port}/bot/hook", body=BODY, headers={})

    assert answer.status == 200 and answer.address == "127.0.0.1"
    assert lookups == ["bot.clinic.test"]
    assert bot_server.received[0].headers["host"] == f"bot.clinic.test:{port}"


def test_it_tries_the_next_resolved_address_when_one_refuses(bot_server, monkeypatch):
    port = int(bot_server.url.split(":")[2].split("/")[0])
    real = socket.getaddrinfo

    def dns(host, p, *args, **kwargs):
        if host == "bot.clinic.test":
            # Nothing listens on 127.0.0.2 (the test bot is bound to 127.0.0.1 only).
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, p)) for a in ("127.0.0.2", "127.0.0.1")]
        return real(host, p, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)

    answer = post_to_bot(f"http://bot.clinic.test:{port}/bot/hook", body=BODY, headers={})

    assert (answer.status, answer.address) == (200, "127.0.0.1")


def test_a_resolver_that_hangs_counts_against_the_time_allowed(monkeypatch):
    release = threading.Event()

    def hanging(*_a, **_k):
        release.wait(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        with pytest.raises(BotTimeoutError, match="resolve"):
            post_to_bot("https://slow-dns.clinic.test/hook", body=BODY, headers={}, timeout=0.3)
        assert time.monotonic() - started < 1
    finally:
        release.set()


def test_it_follows_no_redirect(bot_server):
    bot_server.answer = lambda r: (
        (302, {"Location": "http://127.0.0.1:1/elsewhere"}, b"") if r.path == "/bot/hook" else (200, {}, b"")
    )

    answer = post_to_bot(bot_server.url, body=BODY, headers={})

    assert answer.status == 302 and not answer.ok
    assert [r.path for r in bot_server.received] == ["/bot/hook"]


def test_it_reads_at_most_64_kib_of_an_answer(bot_server):
    bot_server.answer = lambda _r: (200, {}, b"x" * (5 * MAX_ANSWER_BYTES))

    answer = post_to_bot(bot_server.url, body=BODY, headers={})

    assert answer.status == 200
    assert len(answer.body) == MAX_ANSWER_BYTES == 65536


def test_it_gives_up_on_a_bot_that_does_not_answer_in_time(bot_server):
    bot_server.delay = 3

    started = time.monotonic()
    with pytest.raises(BotTimeoutError):
        post_to_bot(bot_server.url, body=BODY, headers={}, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_the_timeout_bounds_the_whole_answer_not_each_read(bot_server):
    # Each byte arrives well within any per-read timeout; the whole body would take 20 s.
    bot_server.trickle = 0.1
    bot_server.answer = lambda _r: (200, {}, b"y" * 200)

    started = time.monotonic()
    with pytest.raises(BotTimeoutError):
        post_to_bot(bot_server.url, body=BODY, headers={}, timeout=0.6)
    assert time.monotonic() - started < 1.5


def test_a_closed_port_is_a_connection_error(settings):
    settings.BOT_URL_ALLOW_PRIVATE = True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BotConnectionError):
        post_to_bot(f"http://127.0.0.1:{port}/", body=BODY, headers={})


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120), ("0", 0), ("86400", 3600), ("soon", None), ("", None), (None, None), ("-5", None)],
)
def test_retry_after_in_seconds_is_read_and_capped_at_an_hour(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date():
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    assert parse_retry_after("Mon, 07 Dec 2026 12:02:00 GMT", now=now) == 120
    assert parse_retry_after("Mon, 07 Dec 2026 11:00:00 GMT", now=now) == 0


def test_the_answers_retry_after_is_returned(bot_server):
    bot_server.answer = lambda _r: (429, {"Retry-After": "90"}, b"slow down")
    answer = post_to_bot(bot_server.url, body=BODY, headers={})
    assert (answer.status, answer.retry_after_seconds) == (429, 90)


# -- TLS: the certificate is checked for the URL's host name, at the pinned address --------


def _certificate(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls_bot(tmp_path, settings):
    """An HTTPS bot on 127.0.0.1 whose certificate names bot.clinic.test; returns (port, trusting context)."""
    settings.BOT_URL_ALLOW_PRIVATE = True
    cert, key = _certificate("bot.clinic.test")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    yield httpd.server_address[1], client_context
    httpd.shutdown()
    httpd.server_close()


def _dns(monkeypatch, host: str, address: str) -> None:
    real = socket.getaddrinfo

    def lookup(name, port, *args, **kwargs):
        if name == host:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(name, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def test_tls_is_verified_for_the_host_name_while_connecting_to_the_resolved_address(tls_bot, monkeypatch):
    port, context = tls_bot
    _dns(monkeypatch, "bot.clinic.test", "127.0.0.1")

    answer = post_to_bot(f"https://bot.clinic.test:{port}/hook", body=BODY, headers={}, ssl_context=context)

    assert answer.status == 204


def test_a_certificate_for_another_name_is_refused(tls_bot, monkeypatch):
    port, context = tls_bot
    _dns(monkeypatch, "other.clinic.test", "127.0.0.1")

    with pytest.raises(BotConnectionError, match="TLS"):
        post_to_bot(f"https://other.clinic.test:{port}/hook", body=BODY, headers={}, ssl_context=context)


def test_an_untrusted_certificate_is_refused(tls_bot, monkeypatch):
    port, _context = tls_bot
    _dns(monkeypatch, "bot.clinic.test", "127.0.0.1")

    with pytest.raises(BotConnectionError, match="TLS"):
        post_to_bot(f"https://bot.clinic.test:{port}/hook", body=BODY, headers={})
