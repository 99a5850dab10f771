"""Debian's nginx with the repository's deploy/nginx.conf in front of a real gunicorn (NUM_PROXIES=1).

Slow clients no longer hold gunicorn's workers; the sign-in limiter counts the address
nginx saw, so an attacker neither escapes it with forged X-Forwarded-For nor locks out
the real admin; body limits and the access log rule hold at the proxy too.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from .conftest import ROOT, chunked, create_throwaway_database, free_port, product_env, raw_http, seed_clinic

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
SLOW_HEAD = (
    b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


def nginx_conf(tmp: Path, *, listen: int, upstream: int) -> str:
    """deploy/nginx.conf with this test's ports and paths; each line replaced must be there once."""
    temp_paths = "".join(
        f"\n    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in {
        "worker_processes auto;": "worker_processes 1;\ndaemon off;",
        "error_log /var/log/nginx/error.log warn;": f"error_log {tmp}/error.log warn;",
        "pid /run/nginx.pid;": f"pid {tmp}/nginx.pid;",
        "access_log /var/log/nginx/clinics.access.log clinics;": f"access_log {tmp}/access.log clinics;{temp_paths}",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
        "listen 80;": f"listen 127.0.0.1:{listen};",
    }.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def front(processes, tmp_path):
    db = create_throwaway_database("clinics_nginx", tmp_path)
    cache = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    cache.flushdb()
    # nginx's workers run as nobody when the master is root: they must reach their temp paths.
    nginx_dir = Path(tempfile.mkdtemp(prefix="clinics-nginx-"))
    nginx_dir.chmod(0o755)
    try:
        env = product_env(
            DATABASE_URL=db.url, CACHE_URL=f"redis://127.0.0.1:6379/{REDIS_DB}", NUM_PROXIES="1"
        )
        seed_clinic(env, "Clínica Nginx", admin=ADMIN, password=PASSWORD)
        _gunicorn, direct = processes.gunicorn(env, workers=2)
        gunicorn_port, nginx_port = int(direct.rsplit(":", 1)[1]), free_port()
        conf = nginx_dir / "nginx.conf"
        conf.write_text(nginx_conf(nginx_dir, listen=nginx_port, upstream=gunicorn_port))
        argv = [str(NGINX), "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
        nginx = processes.start("nginx", argv, env)
        proxied = f"http://127.0.0.1:{nginx_port}"
        nginx.wait_ready(f"{proxied}/healthz/")
        yield {"direct": direct, "proxied": proxied, "nginx_port": nginx_port, "dir": nginx_dir}
    finally:
        processes.stop_all()
        shutil.rmtree(nginx_dir, ignore_errors=True)
        cache.flushdb()
        db.drop()


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
