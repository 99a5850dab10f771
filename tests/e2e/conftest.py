"""Helpers for end-to-end tests: free ports, throwaway databases, server processes.

Every process started here is registered with a finalizer and killed (its whole
process group) when the fixture ends, whatever the test did. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
MANAGE = str(ROOT / "manage.py")
# Variables of the product this harness always sets itself; the test run's own values
# (test_settings puts some into os.environ) must never leak into a server.
PRODUCT_VARIABLES = (
    "DATABASE_URL",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "FIELD_ENCRYPTION_KEYS",
    "META_GRAPH_URL",
    "META_APP_SECRET",
    "CACHE_URL",
    "META_CONNECT_TIMEOUT",
    "META_READ_TIMEOUT",
    "WHATSAPP_STATUS_REFRESH_SECONDS",
    "SIGN_IN_FAILURE_LIMIT",
    "SIGN_IN_COOLOFF_MINUTES",
    "NUM_PROXIES",
    "API_TOKEN_TTL_DAYS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "CONN_MAX_AGE",
    "DJANGO_SETTINGS_MODULE",
    "CLINIC_USER_PASSWORD",
    "LOG_LEVEL",
    "META_SIMULATED",
    "META_GRAPH_ALLOW_ANY_HOST",
    "REQUEST_DEADLINE_SECONDS",
    "DEMO_PASSWORD",
    "DEMO_SUPERUSER_PASSWORD",
    "TASKS_BACKEND",
    "TASK_RETRY_ATTEMPTS",
    "TASK_RETRY_BASE_SECONDS",
    "WHATSAPP_DELIVERY_LEASE_SECONDS",
    "WEBHOOK_RETENTION_DAYS",
    "SIGN_IN_ALERT_FAILURES",
    "WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE",
    "WHATSAPP_WEBHOOK_BYTES_PER_HOUR",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_STALE_SECONDS",
    "WORKER_MAX_BACKOFF_SECONDS",
    "EMAIL_URL",
    "BOT_URL_ALLOW_PRIVATE",
    "BOT_RETRY_SCALE",
    "MESSAGE_RETENTION_DAYS",
    "DEFAULT_FROM_EMAIL",
    # Set by the browser tests' conftest for Playwright; never for a real server.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def free_port() -> int:
    """A port the kernel says is free now (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_field_key(kid: str = "e2e") -> str:
    return f"{kid}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b'=').decode()}"


def product_env(**overrides: str) -> dict[str, str]:
    """A production-like environment (DEBUG off) for a product process."""
    env = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="clinics_project.settings",
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",
        # The processes talk to the fake Graph server on 127.0.0.1.
        META_GRAPH_ALLOW_ANY_HOST="true",
        SECRET_KEY="e2e-" + secrets.token_urlsafe(48),
        ALLOWED_HOSTS="127.0.0.1",
        FIELD_ENCRYPTION_KEYS=new_field_key(),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def run_manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603
        [PYTHON, MANAGE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def seed_clinic(env: dict[str, str], name: str, *, admin: str, password: str) -> None:
    """A migrated database with one clinic and its admin, through the product's own commands."""
    run_manage(env, "migrate", "--no-input")
    run_manage({**env, "CLINIC_USER_PASSWORD": password}, "create_clinic", name, "--admin-email", admin)


@dataclass
class ServerProcess:
    """A child process in its own process group, its output captured to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(  # noqa: S603
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, url: str, timeout: float = 30.0, statuses: tuple[int, ...] = (200,)) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                response = requests.get(url, timeout=1)
                if response.status_code in statuses:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout}s ({last}):\n{self.log()[-4000:]}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def gunicorn_argv(port: int, *, workers: int = 1) -> list[str]:
    return [
        GUNICORN,
        "clinics_project.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "60",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
    ]


def raw_http(port: int, head: str, body: bytes = b"", *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes exactly as written (what requests cannot: chunked framing, trickles); read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode("latin-1") + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1]), received


def chunked(body: bytes) -> bytes:
    """`body` in HTTP/1.1 chunked framing: one chunk, then the last."""
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def environment_postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


@dataclass
class ThrowawayDatabase:
    url: str
    drop: object


def create_throwaway_database(
    prefix: str, tmp_dir: Path, *, postgres: bool | None = None
) -> ThrowawayDatabase:
    """A fresh empty database: PostgreSQL when DATABASE_URL is PostgreSQL (or postgres=True), else SQLite."""
    pg_url = environment_postgres_url()
    if postgres is None:
        postgres = pg_url is not None
    if not postgres:
        path = tmp_dir / f"{prefix}.sqlite3"
        return ThrowawayDatabase(url=f"sqlite:///{path}", drop=lambda: None)
    import psycopg

    pg_url = pg_url or "postgres://postgres@127.0.0.1:5432/clinics"
    parts = urlsplit(pg_url)
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return ThrowawayDatabase(url=parts._replace(path=f"/{name}").geturl(), drop=drop)


class Processes:
    """Starts processes and guarantees they are stopped (the fixture's finalizer)."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.started: list[ServerProcess] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> ServerProcess:
        server = ServerProcess(name, argv, env, self.tmp_dir / f"{name}.log")
        self.started.append(server)
        return server.start()

    def fake_graph(self, env: dict[str, str], name: str = "fake-graph") -> tuple[ServerProcess, str]:
        """`python -m devtools.fake_graph` on a free port; returns it and its origin."""
        port = free_port()
        server = self.start(name, [PYTHON, "-m", "devtools.fake_graph", "--port", str(port)], env)
        origin = f"http://127.0.0.1:{port}"
        server.wait_ready(f"{origin}/_fake/settings")
        return server, origin

    def gunicorn(
        self, env: dict[str, str], name: str = "gunicorn", workers: int = 1
    ) -> tuple[ServerProcess, str]:
        port = free_port()
        server = self.start(name, gunicorn_argv(port, workers=workers), env)
        origin = f"http://127.0.0.1:{port}"
        server.wait_ready(f"{origin}/healthz/")
        return server, origin

    def worker(self, env: dict[str, str], name: str = "worker", command: str = "run_worker") -> ServerProcess:
        """The task worker as production runs it (`manage.py run_worker`, or `db_worker` when
        asked), polling often so that tests wait little."""
        argv = [PYTHON, MANAGE, command, "--no-reload", "--no-startup-delay", "--interval", "0.2"]
        return self.start(name, argv, env)

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


@pytest.fixture
def processes() -> Iterator[Processes]:
    tmp = Path(tempfile.mkdtemp(prefix="clinics-e2e-"))
    procs = Processes(tmp)
    try:
        yield procs
    finally:
        procs.stop_all()
