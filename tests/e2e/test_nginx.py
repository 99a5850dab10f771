"""Debian's nginx with the repository's deploy/nginx.conf in front of a real gunicorn (NUM_PROXIES=1).

Slow clients no longer hold gunicorn's workers; the sign-in limiter counts the address
nginx saw, so an attacker neither escapes it with forged X-Forwarded-For nor locks out
the real admin, directly or behind the load balancer (the conf's one `set_real_ip_from`
line, set here to BALANCER); nginx limits requests and connections per client address
and sheds idle connections; X-Forwarded-Proto comes only from the balancer; body limits
and the no-secret rule of the access and error logs hold at the proxy too.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from .conftest import (
    ROOT,
    Processes,
    chunked,
    create_throwaway_database,
    free_port,
    product_env,
    raw_http,
    seed_clinic,
)

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None, reason="needs Debian's nginx (apt-get install nginx; .ci/run installs it)"
    ),
]

REDIS_DB = 12  # this module's own: the limiter's counters must be shared by gunicorn's two workers
PASSWORD = "nginx-" + os.urandom(8).hex()
ADMIN = "admin@nginx.example"
ATTACKER = "127.0.0.2"  # both reach nginx over loopback, each from an address of its own
ADMIN_ADDRESS = "127.0.0.3"
BALANCER = "127.0.0.5"  # the load balancer of the README's layout, as nginx is told
# Each test that fills one of nginx's own per-address limits, from an address of its own.
FLOODER_RATE, FLOODER_IN_PROGRESS, FLOODER_IDLE = "127.0.0.20", "127.0.0.21", "127.0.0.22"
SLOW_HEAD = (
    b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


def nginx_conf(tmp: Path, *, listen: int, upstream: int) -> str:
    """deploy/nginx.conf with this test's ports, paths and balancer; each text replaced must be there."""
    temp_paths = "".join(
        f"\n    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new, count in [
        ("worker_processes auto;", "worker_processes 1;\ndaemon off;", 1),
        # The main error log and the webhook location's own line.
        ("/var/log/nginx/error.log", f"{tmp}/error.log", 2),
        ("pid /run/nginx.pid;", f"pid {tmp}/nginx.pid;", 1),
        (
            "access_log /var/log/nginx/clinics.access.log clinics;",
            f"access_log {tmp}/access.log clinics;{temp_paths}",
            1,
        ),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};", 1),
        ("listen 80;", f"listen 127.0.0.1:{listen};", 1),
        # The README's one switch for a load balancer in front.
        ("# set_real_ip_from 10.0.0.0/8;", f"set_real_ip_from {BALANCER};", 1),
    ]:
        assert text.count(old) == count, f"deploy/nginx.conf no longer has {old!r} {count} times"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One database, gunicorn and nginx for the module (starting them is most of each test's time)."""
    tmp = tmp_path_factory.mktemp("nginx")
    processes = Processes(tmp)
    db = create_throwaway_database("clinics_nginx", tmp)
    # nginx's workers run as nobody when the master is root: they must reach their temp paths.
    nginx_dir = Path(tempfile.mkdtemp(prefix="clinics-nginx-"))
    nginx_dir.chmod(0o755)
    try:
        env = product_env(
            DATABASE_URL=db.url, CACHE_URL=f"redis://127.0.0.1:6379/{REDIS_DB}", NUM_PROXIES="1"
        )
        seed_clinic(env, "Clínica Nginx", admin=ADMIN, password=PASSWORD)
        gunicorn, direct = processes.gunicorn(env, workers=2)
        gunicorn_port, nginx_port = int(direct.rsplit(":", 1)[1]), free_port()
        conf = nginx_dir / "nginx.conf"
        conf.write_text(nginx_conf(nginx_dir, listen=nginx_port, upstream=gunicorn_port))
        argv = [str(NGINX), "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
        nginx = processes.start("nginx", argv, env)
        proxied = f"http://127.0.0.1:{nginx_port}"
        nginx.wait_ready(f"{proxied}/healthz/")
        yield {
            "direct": direct,
            "proxied": proxied,
            "nginx_port": nginx_port,
            "dir": nginx_dir,
            "gunicorn": gunicorn,
        }
    finally:
        processes.stop_all()
        shutil.rmtree(nginx_dir, ignore_errors=True)
        db.drop()


@pytest.fixture
def front(served):
    """The module's servers, with the sign-in limiter's counters empty. Tests that fill one of
    nginx's per-address limits do it from an address of their own."""
    cache = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    cache.flushdb()
    yield served
    cache.flushdb()


def _slow_clients(port: int) -> list[socket.socket]:
    """Two clients that announce 100 bytes, send 10, and keep the connection open."""
    clients = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(SLOW_HEAD + b'{"email": ')
        clients.append(sock)
    time.sleep(0.5)  # gunicorn's two workers have each taken one by now
    return clients


def _answer_time(url: str, timeout: float = 2.0) -> float | None:
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout)
    except requests.Timeout:
        return None
    assert response.status_code == 200
    return time.monotonic() - started


def test_two_slow_clients_no_longer_hold_the_workers(front):
    # The control: straight at gunicorn, two slow clients hold both sync workers.
    held = _slow_clients(int(front["direct"].rsplit(":", 1)[1]))
    blocked = _answer_time(f"{front['direct']}/healthz/")
    for sock in held:
        sock.close()
    assert blocked is None, "gunicorn answered while both workers waited on slow clients"
    assert _answer_time(f"{front['direct']}/healthz/", timeout=10) is not None  # free again

    # Behind nginx: it buffers both bodies itself; gunicorn's workers stay free.
    trickling = _slow_clients(front["nginx_port"])
    try:
        proxied = _answer_time(f"{front['proxied']}/healthz/")
        direct = _answer_time(f"{front['direct']}/healthz/")
    finally:
        for sock in trickling:
            sock.close()

    assert proxied is not None and proxied < 1.0, proxied
    assert direct is not None and direct < 1.0, direct


def _sign_in(front: dict, source: str, email: str, password: str, **headers: str) -> int:
    conn = http.client.HTTPConnection(
        "127.0.0.1", front["nginx_port"], timeout=10, source_address=(source, 0)
    )
    try:
        conn.request(
            "POST",
            "/api/auth/token/",
            body=json.dumps({"email": email, "password": password}),
            headers={"Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_the_limiter_counts_the_address_nginx_saw(front):
    # The attacker spends the limit on made-up accounts, each time with a new forged header.
    attempts = [
        _sign_in(front, ATTACKER, f"made-up-{n}@example.com", "guess", X_Forwarded_For=f"10.66.0.{n}")
        for n in range(11)
    ]
    # The real admin, at another address behind the same nginx, signs in at once.
    admin = _sign_in(front, ADMIN_ADDRESS, ADMIN, PASSWORD)
    attacker_with_the_right_password = _sign_in(
        front, ATTACKER, ADMIN, PASSWORD, X_Forwarded_For=ADMIN_ADDRESS
    )

    assert attempts == [400] * 9 + [429, 429]
    assert admin == 200
    assert attacker_with_the_right_password == 429


def test_bodies_are_limited_and_buffered_at_the_proxy(front):
    proxied = front["proxied"]
    webhook = f"{proxied}/whatsapp/webhook/00000000-0000-0000-0000-000000000000/"
    json_type = {"Content-Type": "application/json"}

    api_too_big = requests.post(
        f"{proxied}/api/auth/token/", data=b"x" * (300 * 1024), headers=json_type, timeout=10
    )
    webhook_fits = requests.post(webhook, data=b"x" * (300 * 1024), headers=json_type, timeout=10)
    webhook_too_big = requests.post(webhook, data=b"x" * (3 * 1024 * 1024 + 1), headers=json_type, timeout=10)
    # nginx reads a chunked body whole and hands it on with its Content-Length: it reaches the app.
    status, _raw = raw_http(
        front["nginx_port"],
        "POST /api/auth/token/ HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n\n",
        chunked(json.dumps({"email": ADMIN, "password": PASSWORD}).encode()),
    )

    assert api_too_big.status_code == 413
    assert webhook_fits.status_code == 404  # past nginx: the app's answer for an unknown clinic
    assert webhook_too_big.status_code == 413
    assert status == 200


def test_the_proxys_access_log_holds_no_verify_token(front):
    secret = "verify-" + os.urandom(8).hex()
    requests.get(
        f"{front['proxied']}/whatsapp/webhook/00000000-0000-0000-0000-000000000000/",
        params={"hub.mode": "subscribe", "hub.verify_token": secret, "hub.challenge": "42"},
        headers={"Authorization": f"Token {secret}-key"},
        timeout=10,
    )

    line = '"GET /whatsapp/webhook/00000000-0000-0000-0000-000000000000/ HTTP/1.1" 404'
    log = _access_log_once_it_holds(front["dir"] / "access.log", line)

    assert line in log
    assert secret not in log
    assert "hub." not in log


def _access_log_once_it_holds(path: Path, line: str, within: float = 10.0) -> str:
    """nginx writes a request's log line in its log phase, after the answer has gone out.

    So the client can read the file before the line is there (CI saw exactly that); wait
    for it, a bounded while, and hand back whatever the log holds by then.
    """
    deadline = time.monotonic() + within
    log = path.read_text()
    while line not in log and time.monotonic() < deadline:
        time.sleep(0.05)
        log = path.read_text()
    return log


# --- behind the load balancer: the client nginx believes --------------------------------------


def _request(front: dict, source: str, method: str, path: str, body: bytes = b"", **headers: str):
    """One request to nginx from `source` (a loopback address of its own); status, headers, body."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", front["nginx_port"], timeout=10, source_address=(source, 0)
    )
    try:
        conn.request(
            method, path, body=body or None, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _sign_in_via_balancer(front: dict, client: str, email: str, password: str, forged: str = "") -> int:
    """A sign-in as the balancer forwards it: the client's own header, then the balancer's entry."""
    body = json.dumps({"email": email, "password": password}).encode()
    status, _headers, _body = _request(
        front,
        BALANCER,
        "POST",
        "/api/auth/token/",
        body,
        Content_Type="application/json",
        X_Forwarded_For=f"{forged}{client}",
    )
    return status


def test_behind_the_balancer_an_attacker_locks_only_their_own_address(front):
    # The finding: with nginx's real_ip lines commented, everyone behind the balancer was one
    # address, and an attacker's ten failures gave every innocent user 429.
    attacker, innocent = "203.0.113.66", "198.51.100.4"
    attempts = [
        _sign_in_via_balancer(front, attacker, f"made-up-{n}@example.com", "guess", forged=f"10.1.1.{n}, ")
        for n in range(11)
    ]

    innocent_user = _sign_in_via_balancer(front, innocent, ADMIN, PASSWORD)
    attacker_again = _sign_in_via_balancer(front, attacker, ADMIN, PASSWORD, forged=f"{innocent}, ")
    # A connection that is not the balancer's is not believed: its header names no client.
    direct_with_a_forged_header = _sign_in(front, ATTACKER, ADMIN, PASSWORD, X_Forwarded_For=innocent)

    assert attempts == [400] * 9 + [429, 429]
    assert innocent_user == 200
    assert attacker_again == 429
    assert direct_with_a_forged_header == 200  # 127.0.0.2 itself has no failure


def test_x_forwarded_proto_comes_only_from_the_balancer(front):
    # Django believes X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER): an https request gets HSTS.
    direct = _request(front, ATTACKER, "GET", "/healthz/", X_Forwarded_Proto="https")
    via_balancer = _request(
        front, BALANCER, "GET", "/healthz/", X_Forwarded_Proto="https", X_Forwarded_For="198.51.100.7"
    )

    assert direct[0] == via_balancer[0] == 200
    assert "Strict-Transport-Security" not in direct[1]  # the client's claim was dropped
    assert "Strict-Transport-Security" in via_balancer[1]


# --- limits per client address, idle connections ----------------------------------------------


def test_requests_beyond_the_rate_are_answered_429_by_nginx_for_that_address_only(front):
    # 250 requests, 40 at a time: they arrive far faster than 20 a second however slowly
    # gunicorn answers on a busy machine (nginx counts a request when it arrives).
    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(lambda _n: _request(front, FLOODER_RATE, "GET", "/healthz/")[0], range(250)))
    other = _request(front, ADMIN_ADDRESS, "GET", "/healthz/")[0]

    assert statuses.count(200) >= 100  # the burst
    assert 429 in statuses
    assert set(statuses) == {200, 429}
    assert other == 200


def _held_request(port: int, source: str) -> socket.socket:
    """A request whose head has arrived and whose body trickles: nginx counts it in progress."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(SLOW_HEAD + b'{"email": ')
    return sock


def test_requests_in_progress_are_limited_per_address(front):
    port = front["nginx_port"]
    held = [_held_request(port, FLOODER_IN_PROGRESS) for _ in range(50)]
    try:
        time.sleep(1.0)  # nginx has read every head by now
        extra = _held_request(port, FLOODER_IN_PROGRESS)
        extra.settimeout(3)
        try:
            answer = extra.recv(200)
        finally:
            extra.close()
        other = _request(front, ADMIN_ADDRESS, "GET", "/healthz/")[0]
    finally:
        for sock in held:
            sock.close()

    assert answer.startswith(b"HTTP/1.1 429"), answer
    assert other == 200


def _closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """Whether nginx closes the connection before the deadline (a read returns nothing or fails)."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while chunk := sock.recv(65536):
            if b"HTTP/1.1" not in chunk:  # the answer to a request already sent is not a close
                continue
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_shed(front):
    # The finding: 2,100 idle connections from three addresses filled nginx. Connections that
    # never send a request, and kept-alive ones with nothing more to ask, are closed by nginx
    # within its timeouts; the shipped worker has room for far more than a flood of that size.
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "worker_connections 16384;" in conf
    port = front["nginx_port"]
    silent = [
        socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(FLOODER_IDLE, 0))
        for _ in range(200)
    ]
    kept_alive = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(FLOODER_IDLE, 0))
        sock.sendall(b"GET /healthz/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        kept_alive.append(sock)
    try:
        other = _answer_time(f"{front['proxied']}/healthz/")
        # client_header_timeout and keepalive_timeout are 10 s; two more for a loaded machine.
        deadline = time.monotonic() + 12
        shed = [_closed_by_peer(sock, deadline) for sock in silent + kept_alive]
    finally:
        for sock in silent + kept_alive:
            sock.close()

    assert other is not None and other < 1.0, other
    assert all(shed), f"{shed.count(False)} connections still open after 12 s"


# --- the error log ------------------------------------------------------------------------------


def test_the_proxys_error_log_holds_no_verify_token(front):
    # The finding: with gunicorn down, the 502's error line quoted the handshake's query.
    secret = "verify-" + os.urandom(8).hex()
    gunicorn = front["gunicorn"]
    gunicorn.stop()
    try:
        answer = requests.get(
            f"{front['proxied']}/whatsapp/webhook/00000000-0000-0000-0000-000000000000/",
            params={"hub.mode": "subscribe", "hub.verify_token": secret, "hub.challenge": "42"},
            timeout=10,
        )
        elsewhere = requests.get(f"{front['proxied']}/healthz/", timeout=10)
    finally:
        gunicorn.start()  # for the tests after this one
        gunicorn.wait_ready(f"{front['direct']}/healthz/")

    assert answer.status_code == elsewhere.status_code == 502
    line = '"GET /whatsapp/webhook/00000000-0000-0000-0000-000000000000/ HTTP/1.1" 502'
    assert line in _access_log_once_it_holds(front["dir"] / "access.log", line)
    errors = (front["dir"] / "error.log").read_text()
    assert "/healthz/" in errors  # the error log is on: other locations' 502s are there
    assert secret not in errors
    assert "verify_token" not in errors
