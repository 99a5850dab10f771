"""gunicorn as production runs it (the repository's gunicorn.conf.py): its access log holds no secret,
chunked bodies are refused with 411, with the database gone the API and the webhook still answer
JSON, and each instance has a control socket of its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import (
    GUNICORN,
    chunked,
    create_throwaway_database,
    free_port,
    gunicorn_argv,
    product_env,
    raw_http,
    seed_clinic,
)

pytestmark = pytest.mark.e2e

PASSWORD = "front-" + secrets.token_urlsafe(16)
ADMIN = "admin@front.example"
APP_SECRET = "front-app-secret-" + secrets.token_hex(8)


@pytest.fixture
def served(processes, tmp_path):
    db = create_throwaway_database("clinics_front", tmp_path)
    try:
        env = product_env(DATABASE_URL=db.url, META_APP_SECRET=APP_SECRET)
        seed_clinic(env, "Clínica Front", admin=ADMIN, password=PASSWORD)
        server, origin = processes.gunicorn(env, workers=2)
        key = requests.post(
            f"{origin}/api/auth/token/", json={"email": ADMIN, "password": PASSWORD}, timeout=10
        )
        token = key.json()["token"]
        clinic = requests.get(
            f"{origin}/api/clinics/settings/", headers={"Authorization": f"Token {token}"}, timeout=10
        ).json()
        yield {"server": server, "origin": origin, "token": token, "clinic": clinic}
    finally:
        processes.stop_all()
        db.drop()


def test_the_access_log_holds_no_verify_token_and_no_authorization(served):
    origin, token, clinic = served["origin"], served["token"], served["clinic"]
    verify_token = clinic["whatsapp_verify_token"]
    webhook = f"{origin}/whatsapp/webhook/{clinic['id']}/"
    guessed = "guessed-" + secrets.token_hex(8)
    basic_user = "basic-" + secrets.token_hex(6)
    basic = base64.b64encode(f"{basic_user}:pw".encode()).decode()

    handshake = requests.get(
        webhook,
        params={"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": "1158201444"},
        timeout=10,
    )
    wrong = requests.get(
        webhook,
        params={"hub.mode": "subscribe", "hub.verify_token": guessed, "hub.challenge": "1"},
        timeout=10,
    )
    bearer = requests.get(
        f"{origin}/api/clinics/me/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    basic_answer = requests.get(
        f"{origin}/api/clinics/me/", headers={"Authorization": f"Basic {basic}"}, timeout=10
    )
    served["server"].stop()  # every line written and flushed

    assert (handshake.status_code, handshake.text) == (200, "1158201444")
    assert wrong.status_code == 403
    assert bearer.status_code == 200
    assert basic_answer.status_code == 401
    log = served["server"].log()
    access_lines = [line for line in log.splitlines() if '"GET /' in line]
    assert f'"GET /whatsapp/webhook/{clinic["id"]}/ HTTP/1.1" 200' in log  # the access log is on
    assert len(access_lines) >= 5
    for secret in (verify_token, guessed, "hub.verify_token", "hub.challenge", token, basic_user, basic):
        assert secret not in log, secret


def _head(method: str, path: str, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\n".join(lines) + "\n\n"


def test_chunked_bodies_are_refused_with_411_and_change_nothing(served):
    origin, token, clinic = served["origin"], served["token"], served["clinic"]
    port = urlsplit(origin).port
    assert port is not None
    body = b'{"city": "Santa Ana"}'
    delivery = b'{"object":"whatsapp_business_account","entry":[]}'
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), delivery, hashlib.sha256).hexdigest()
    empty_signature = "sha256=" + hmac.new(APP_SECRET.encode(), b"", hashlib.sha256).hexdigest()
    webhook = f"/whatsapp/webhook/{clinic['id']}/"
    json_type = "application/json"

    patch, patch_raw = raw_http(
        port,
        _head(
            "PATCH",
            "/api/clinics/me/",
            Authorization=f"Token {token}",
            Content_Type=json_type,
            Transfer_Encoding="chunked",
        ),
        chunked(body),
    )

    def deliver(signature: str, *, with_length: bool) -> int:
        framing = {"Content_Length": str(len(delivery))} if with_length else {"Transfer_Encoding": "chunked"}
        head = _head("POST", webhook, Content_Type=json_type, X_Hub_Signature_256=signature, **framing)
        return raw_http(port, head, delivery if with_length else chunked(delivery))[0]

    signed = deliver(signature, with_length=False)
    signed_over_nothing = deliver(empty_signature, with_length=False)
    with_length = deliver(signature, with_length=True)

    assert (patch, signed, signed_over_nothing) == (411, 411, 411)
    assert b"Content-Length" in patch_raw
    assert with_length == 200
    after = requests.get(f"{origin}/api/clinics/me/", headers={"Authorization": f"Token {token}"}, timeout=10)
    assert after.json()["city"] is None


def _without_database(processes, name: str, **extra: str) -> str:
    """gunicorn whose database refuses every connection (nothing listens on its port); its origin."""
    env = product_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/clinics", CONN_MAX_AGE="0", **extra
    )
    port = free_port()
    server = processes.start(name, gunicorn_argv(port), env)
    origin = f"http://127.0.0.1:{port}"
    server.wait_ready(f"{origin}/healthz/", statuses=(503,))
    return origin


UNAVAILABLE = {"detail": "El servicio no está disponible por un momento. Vuelva a intentarlo enseguida."}


def test_with_the_database_unreachable_the_api_answers_json_503(processes):
    origin = _without_database(processes, "gunicorn-no-db")

    read = requests.get(
        f"{origin}/api/clinics/settings/", headers={"Authorization": "Token " + "k" * 43}, timeout=10
    )
    sign_in = requests.post(
        f"{origin}/api/auth/token/", json={"email": ADMIN, "password": "x-y-z"}, timeout=10
    )

    for answer in (read, sign_in):
        assert answer.status_code == 503, answer.text[:500]
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json() == UNAVAILABLE


def test_with_the_database_unreachable_the_webhook_answers_json_503(processes):
    # It used to be Django's HTML error page: Meta retries either way, but an operator reading
    # the proxy's log, and the contract, expect the same JSON as the API.
    origin = _without_database(processes, "gunicorn-no-db-webhook", META_APP_SECRET=APP_SECRET)
    webhook = f"{origin}/whatsapp/webhook/{uuid.uuid4()}/"
    delivery = b'{"object":"whatsapp_business_account","entry":[]}'
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), delivery, hashlib.sha256).hexdigest()

    handshake = requests.get(
        webhook, params={"hub.mode": "subscribe", "hub.verify_token": "t", "hub.challenge": "1"}, timeout=10
    )
    posted = requests.post(
        webhook,
        data=delivery,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        timeout=10,
    )

    for answer in (handshake, posted):
        assert answer.status_code == 503, answer.text[:500]
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["Retry-After"] == "30"
        assert answer.json() == UNAVAILABLE


def _stats(socket_path: str) -> dict:
    result = subprocess.run(  # noqa: S603
        [str(GUNICORN).replace("gunicorn", "gunicornc"), "-s", socket_path, "-c", "show stats", "-j"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return json.loads(result.stdout)


def test_each_instance_has_its_own_control_socket(processes, tmp_path):
    # The README runs two instances side by side as one user. gunicorn's default socket is
    # one per user: the second replaced the first's, and the first to stop deleted it.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    # The database's port stays bound (never listening) for the whole test: connections are
    # refused at once, and no gunicorn below can be handed the same port by free_port().
    closed_db = socket.socket()
    closed_db.bind(("127.0.0.1", 0))
    env = product_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_db.getsockname()[1]}/clinics",
        XDG_RUNTIME_DIR=str(runtime),
    )
    started = {}
    try:
        for name in ("a", "b"):
            port = free_port()
            server = processes.start(f"gunicorn-{name}", gunicorn_argv(port), env)
            server.wait_ready(f"http://127.0.0.1:{port}/healthz/", statuses=(503,))
            started[name] = (server, str(runtime / f"gunicorn-127.0.0.1-{port}.ctl"))
    finally:
        closed_db.close()

    (server_a, socket_a), (server_b, socket_b) = started["a"], started["b"]
    assert _stats(socket_a)["pid"] == server_a.proc.pid
    assert _stats(socket_b)["pid"] == server_b.proc.pid
    server_b.stop()

    assert _stats(socket_a)["pid"] == server_a.proc.pid
    assert sorted(path.name for path in runtime.iterdir()) == [socket_a.rsplit("/", 1)[1]]
