"""`python -m bench`: our endpoints against a fixed floor app, on gunicorn and PostgreSQL, driven by wrk.

For each clinic count (default 10 and 100,000, each in its own process and its own
throwaway database): seed, count SQL statements per request at the database's door
(bench.pgwire), start the fake Graph server, our app and the floor app (bench.floor)
under the same gunicorn settings, then run wrk in short interleaved slices (floor,
healthz, endpoint, floor, healthz, endpoint, ...) so each ratio compares numbers
measured back to back. Profile with pyinstrument whatever misses its goal, and write
bench/reports/<date>-<counts>.md (+ .json). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import lua

ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path(__file__).resolve().parent / "reports"
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
WRK = shutil.which("wrk") or "/usr/bin/wrk"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/clinics"

APP_SECRET = "bench-app-secret-" + secrets.token_hex(8)
ACCESS_TOKEN = "EAABENCH" + secrets.token_hex(30)
PASSWORD = "bench-" + secrets.token_urlsafe(12)
# Goals: req/s as a ratio to the floor app's, measured in the same run (issue 13).
TARGETS = {"settings_get": 0.5, "status_get": 0.6, "webhook_post": 0.35, "settings_patch": 0.25}
ENDPOINTS = ("settings_get", "settings_patch", "status_get", "webhook_post")
LABELS = {
    "floor": "GET /floor/ (the floor app: startproject's middleware, SELECT 1, small JSON)",
    "healthz": "GET /healthz/ (ours)",
    "settings_get": "GET /api/clinics/settings/ (token)",
    "settings_patch": "PATCH /api/clinics/settings/ (token, alternating values)",
    "status_get": "GET /api/clinics/whatsapp/status/ (active, checked recently: cached path)",
    "webhook_post": "POST /whatsapp/webhook/<id>/ (signed, unique message ids)",
}
# Within this much of each other, the 100,000-clinic and 10-clinic ratios count as equal.
SCALE_TOLERANCE = 0.10


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_key() -> str:
    return "bench:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


# --- database --------------------------------------------------------------------------------


def pg_base_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_PG


class ThrowawayDatabase:
    def __init__(self) -> None:
        parts = urlsplit(pg_base_url())
        self.name = f"clinics_bench_{secrets.token_hex(4)}"
        self.admin_url = parts._replace(path="/postgres").geturl()
        self.url = parts._replace(path=f"/{self.name}").geturl()

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg
        from django.db import connections

        connections.close_all()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def stop_and_drop(procs: list[Proc], db: ThrowawayDatabase, failures: list[str]) -> None:
    """The end of a run, whatever happened: its servers stopped, its database dropped."""
    for proc in procs:
        proc.stop()
    try:
        db.drop()
    except Exception:  # noqa: BLE001
        failures.append("could not drop " + db.name + ":\n" + traceback.format_exc())


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path, cwd: Path = ROOT) -> Proc:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log_path)


def wait_http(url: str, proc: Proc, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.tail()}")


# --- seeding ---------------------------------------------------------------------------------


@dataclass
class Target:
    clinic_id: str
    token: str
    phone_number_id: str
    waba_id: str


def seed(clinics: int) -> Target:
    """N clinics with their users and WhatsApp accounts (encrypted fields through the field API)."""
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    from clinics.models import ApiToken, Clinic, User
    from whatsapp.models import WhatsAppAccount, WhatsAppStatus, new_verify_token

    started = time.monotonic()
    password_hash = make_password(PASSWORD)  # one hash for every seeded user: hashing 100k would take hours
    batch = 2000
    now = timezone.now()
    for first in range(0, clinics, batch):
        count = min(batch, clinics - first)
        with transaction.atomic():
            rows = [
                Clinic(
                    name=f"Clínica Bench {first + i}",
                    slug=f"clinica-bench-{first + i}-{secrets.token_hex(3)}",
                    city="San Salvador",
                    country="El Salvador",
                    timezone="America/El_Salvador",
                    currency="USD",
                    phone=f"+5032{(first + i) % 10_000_000:07d}",
                )
                for i in range(count)
            ]
            Clinic.objects.bulk_create(rows)
            accounts = []
            for i, clinic in enumerate(rows):
                index = first + i
                account = WhatsAppAccount(clinic=clinic, verify_token=new_verify_token())
                if index % 2 == 0:  # half of them connected, like a live deployment
                    account.phone_number_id = f"{900000000000 + index}"
                    account.business_account_id = f"{800000000000 + index}"
                    account.access_token = "EAAseed" + secrets.token_hex(40)
                    account.status = WhatsAppStatus.ACTIVE
                    account.number = f"+5037{index % 10_000_000:07d}"
                    account.status_checked_at = now
                    account.subscribed_at = now
                accounts.append(account)
            # bulk_create runs each field's pre_save: EncryptedTextField encrypts with the row's UUID.
            WhatsAppAccount.objects.bulk_create(accounts)
            User.objects.bulk_create(
                [
                    User(
                        email=f"admin{first + i}@bench.example",
                        password=password_hash,
                        clinic=c,
                        role=User.Role.ADMIN,
                    )
                    for i, c in enumerate(rows)
                ]
            )
        if (first // batch) % 10 == 0:
            log(f"seeded {first + count}/{clinics} clinics ({time.monotonic() - started:.1f}s)")

    # The benchmarked clinic: in the middle of the table, active, with its own app secret.
    target = Clinic.objects.order_by("slug")[clinics // 2]
    account = WhatsAppAccount.objects.get(clinic=target)
    account.phone_number_id = "106540352242922"
    account.business_account_id = "102290129340398"
    account.access_token = ACCESS_TOKEN
    account.app_secret = APP_SECRET
    account.status = WhatsAppStatus.ACTIVE
    account.number = "+50377654321"
    account.status_checked_at = timezone.now()
    account.subscribed_at = timezone.now()
    account.save()
    user = User.objects.get(clinic=target)
    _token, key = ApiToken.issue(user)
    log(f"seeded {clinics} clinics in {time.monotonic() - started:.1f}s")
    return Target(str(target.pk), key, account.phone_number_id, account.business_account_id)


def refresh_target(target: Target) -> None:
    """Mark the status as just checked, so polling takes the cached path (no Meta call)."""
    from django.utils import timezone

    from whatsapp.models import WhatsAppAccount

    WhatsAppAccount.objects.filter(clinic_id=target.clinic_id).update(
        status="active", status_checked_at=timezone.now(), subscribed_at=timezone.now()
    )


def webhook_body(target: Target, n: int, run: str) -> tuple[str, str]:
    return patient_text(
        target, wa_id="50370000000", wamid=f"wamid.BENCH{run}{n:08d}", text="Hola, quiero una cita"
    )


def patient_text(
    target: Target,
    *,
    wa_id: str,
    wamid: str,
    text: str,
    name: str = "Paciente",
    user_id: str | None = None,
    timestamp: str = "1764000000",
) -> tuple[str, str]:
    """One patient's text message as Meta posts it to the webhook, and its `X-Hub-Signature-256`."""
    contact: dict[str, Any] = {"profile": {"name": name}, "wa_id": wa_id}
    if user_id is not None:
        contact["user_id"] = user_id  # the business-scoped id Meta adds since April 2026
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": target.waba_id,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "50377654321",
                                "phone_number_id": target.phone_number_id,
                            },
                            "contacts": [contact],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": wamid,
                                    "timestamp": timestamp,
                                    "text": {"body": text},
                                    "type": "text",
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    body = json.dumps(payload, separators=(",", ":"))
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return body, signature


# --- in-process measurements -----------------------------------------------------------------


def _request(client: Any, key: str, target: Target, n: int) -> Any:
    auth = {"HTTP_AUTHORIZATION": f"Token {target.token}"}
    if key == "healthz":
        return client.get("/healthz/")
    if key == "settings_get":
        return client.get("/api/clinics/settings/", **auth)
    if key == "settings_patch":
        body = json.dumps({"city": f"Inproc {n}", "bot_enabled": n % 2 == 0})
        return client.generic(
            "PATCH", "/api/clinics/settings/", body, content_type="application/json", **auth
        )
    if key == "status_get":
        return client.get("/api/clinics/whatsapp/status/", **auth)
    if key == "webhook_post":
        body, signature = webhook_body(target, n, "inproc" + secrets.token_hex(3))
        return client.generic(
            "POST",
            f"/whatsapp/webhook/{target.clinic_id}/",
            body,
            content_type="application/json",
            HTTP_X_HUB_SIGNATURE_256=signature,
        )
    raise KeyError(key)


def count_queries(target: Target) -> dict[str, dict[str, Any]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    counts: dict[str, dict[str, Any]] = {}
    for key in ("healthz", *ENDPOINTS):
        refresh_target(target)
        _request(client, key, target, 0)  # warm: first request opens the connection, loads caches
        with CaptureQueriesContext(connection) as ctx:
            response = _request(client, key, target, 1)
        counts[key] = {
            "status": response.status_code,
            "queries": len(ctx.captured_queries),
            "sql": [q["sql"][:160] for q in ctx.captured_queries],
        }
    return counts


def profile(key: str, target: Target, requests_count: int = 200) -> str:
    from django.test import Client
    from pyinstrument import Profiler

    client = Client()
    refresh_target(target)
    for n in range(20):
        _request(client, key, target, n)
    profiler = Profiler(interval=0.001)
    profiler.start()
    for n in range(requests_count):
        _request(client, key, target, 100 + n)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    tree = "\n".join(line for line in text.splitlines()[:70] if line.strip())
    # Where the library time goes (pyinstrument folds django/psycopg frames): cumulative
    # time of the main stages, from cProfile over the same requests.
    import cProfile
    import io
    import pstats

    cprof = cProfile.Profile()
    cprof.enable()
    for n in range(requests_count):
        _request(client, key, target, 10_000 + n)
    cprof.disable()
    out = io.StringIO()
    stats = pstats.Stats(cprof, stream=out)
    stats.sort_stats("cumulative").print_stats(
        r"(authentication|compiler\.py.*(as_sql|execute_sql|pre_sql_setup|get_order_by)|serializers\.py.*(data|get_fields|to_representation)|"
        r"services\.py|webhook\.py|fields\.py.*(decrypt|__get__)|base\.py.*(full_clean|save)|utils\.py.*execute|transaction\.py.*__exit__|views\.py.*(get|patch|status))",
        25,
    )
    lines = [
        ln
        for ln in out.getvalue().splitlines()
        if ln.strip() and not ln.lstrip().startswith(("Ordered by", "List reduced"))
    ]
    return (
        tree
        + "\n\n--- cProfile, cumulative, selected stages (ncalls tottime percall cumtime percall) ---\n"
        + "\n".join(
            ln.replace(str(ROOT) + "/", "").replace(
                str(Path(PYTHON).parent.parent) + "/lib/python3.11/site-packages/", ""
            )
            for ln in lines[-27:]
        )
    )


# --- wrk -------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    key: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    ok: bool
    note: str = ""


def combine(key: str, parts: list[WrkResult]) -> WrkResult:
    """Several slices of one endpoint: total req/s; the median slice's p50 and p99."""
    seconds = sum(p.requests / p.rps for p in parts if p.rps)
    return WrkResult(
        key=key,
        rps=sum(p.requests for p in parts) / seconds if seconds else 0.0,
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p90_ms=statistics.median(p.p90_ms for p in parts),
        p99_ms=statistics.median(p.p99_ms for p in parts),
        requests=sum(p.requests for p in parts),
        non_2xx=sum(p.non_2xx for p in parts),
        socket_errors=sum(p.socket_errors for p in parts),
        ok=all(p.ok for p in parts),
        note="; ".join(p.note for p in parts if p.note),
    )


def run_wrk(
    key: str, origin: str, script: Path, duration: float, connections: int, threads: int, offset: int = 0
) -> WrkResult:
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        origin,
        "--",
        str(offset),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        return WrkResult(
            key, 0, 0, 0, 0, 0, 0, 0, False, f"wrk failed ({proc.returncode}): {proc.stderr[-500:]}"
        )
    data = json.loads(line[len("BENCH_JSON ") :])
    seconds = data["duration_us"] / 1e6
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    return WrkResult(
        key=key,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        non_2xx=data["status"],
        socket_errors=socket_errors,
        ok=data["status"] == 0 and socket_errors == 0 and data["requests"] > 0,
    )


# --- SQL at the database's door ---------------------------------------------------------------


def _http_request(session: Any, origin: str, key: str, target: Target, n: int, tag: str) -> Any:
    auth = {"Authorization": f"Token {target.token}"}
    if key == "floor":
        return session.get(f"{origin}/floor/", timeout=10)
    if key == "healthz":
        return session.get(f"{origin}/healthz/", timeout=10)
    if key == "settings_get":
        return session.get(f"{origin}/api/clinics/settings/", headers=auth, timeout=10)
    if key == "settings_patch":
        change = {"city": f"Wire {tag} {n}", "bot_enabled": n % 2 == 0}
        return session.patch(f"{origin}/api/clinics/settings/", json=change, headers=auth, timeout=10)
    if key == "status_get":
        return session.get(f"{origin}/api/clinics/whatsapp/status/", headers=auth, timeout=10)
    if key == "webhook_post":
        signed, signature = webhook_body(target, n, "wire" + tag)
        return session.post(
            f"{origin}/whatsapp/webhook/{target.clinic_id}/",
            data=signed,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
            timeout=10,
        )
    raise KeyError(key)


@dataclass
class App:
    """A gunicorn-served app of the run: ours, the floor, or a baseline checkout of ours."""

    name: str
    module: str
    cwd: Path
    env: dict[str, str]
    database_variable: str
    keys: tuple[str, ...]

    @property
    def ready_path(self) -> str:
        return "/floor/" if self.keys == ("floor",) else "/healthz/"


def count_at_database(
    target: Target, apps: list[App], workdir: Path, requests_each: int = 50
) -> dict[str, dict[str, dict[str, float]]]:
    """Per app and key: statements and parses per request, seen by a relay in front of PostgreSQL.

    Each app runs as one gunicorn worker whose database URL points at the relay; a
    warm-up (so prepared statements reach their threshold) comes first.
    """
    import requests

    from bench.pgwire import WireCounter

    parts = urlsplit(apps[0].env[apps[0].database_variable])
    relay = WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    relayed = parts._replace(
        # The same credentials (a BENCH_DATABASE_URL may carry a password), the relay's address.
        netloc=f"{parts.netloc.rpartition('@')[0] or 'postgres'}@127.0.0.1:{relay.port}",
        query="sslmode=disable",
    ).geturl()
    counts: dict[str, dict[str, dict[str, float]]] = {}
    tag = secrets.token_hex(3)
    try:
        for app in apps:
            port = free_port()
            proc = start(
                f"{app.name}-counted",
                gunicorn_argv(app.module, port, 1),
                {**app.env, app.database_variable: relayed},
                workdir,
                cwd=app.cwd,
            )
            try:
                origin = f"http://127.0.0.1:{port}"
                wait_http(origin + app.ready_path, proc)
                counts[app.name] = {}
                with requests.Session() as session:
                    for key in app.keys:
                        refresh_target(target)
                        for n in range(10):
                            _http_request(session, origin, key, target, n, app.name + tag).raise_for_status()
                        before = relay.snapshot()
                        for n in range(10, 10 + requests_each):
                            _http_request(session, origin, key, target, n, app.name + tag).raise_for_status()
                        after = relay.snapshot()
                        counts[app.name][key] = {
                            name: (after[name] - before[name]) / requests_each for name in after
                        }
            finally:
                proc.stop()
    finally:
        relay.close()
    return counts


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    clinics: int
    duration: float
    connections: int
    threads: int
    started_at: str
    product_env: dict[str, str] = field(default_factory=dict)
    # --baseline (repeatable): other checkouts of ours, each run beside ours against the same floor
    # slices. Keyed by the checkout's name ("baseline-1", ...); `baselines` says which commit each is.
    baselines: dict[str, str] = field(default_factory=dict)
    baseline_wire: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    baseline_results: dict[str, dict[str, WrkResult]] = field(default_factory=dict)
    baseline_slice_ratios: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    baseline_ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    seed_seconds: float = 0.0
    queries: dict[str, Any] = field(default_factory=dict)
    wire: dict[str, dict[str, float]] = field(default_factory=dict)
    results: dict[str, WrkResult] = field(default_factory=dict)
    rounds: int = 0
    slice_seconds: int = 0
    # Per endpoint: each slice's ratio to the floor and to healthz (their slices just before and after).
    slice_ratios: dict[str, list[float]] = field(default_factory=dict)
    slice_ratios_healthz: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    ratios_healthz: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    webhook_unique: int = 0
    webhook_stored: int = 0
    failures: list[str] = field(default_factory=list)


def outside_env() -> dict[str, str]:
    """This process's environment without what would point an app at another database, cache or secret."""
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL", "META_APP_SECRET")}


def app_env(database_url: str, graph_url: str) -> dict[str, str]:
    """Our app's environment on the bench (production settings, DEBUG off), on that database and fake Meta."""
    return {
        **outside_env(),
        "DJANGO_SETTINGS_MODULE": "clinics_project.settings",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "FIELD_ENCRYPTION_KEYS": new_key(),
        "DATABASE_URL": database_url,
        "CONN_MAX_AGE": "600",
        "META_GRAPH_URL": graph_url,
        "META_GRAPH_ALLOW_ANY_HOST": "true",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # The bench drives one clinic's webhook far past its per-clinic ingress limits (600 a
        # minute, 50 MB an hour): it measures the path's throughput, not the abuse guard's 429.
        "WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE": "100000000",
        "WHATSAPP_WEBHOOK_BYTES_PER_HOUR": str(1 << 50),
    }


def configure_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    for key in ("CACHE_URL", "META_APP_SECRET"):
        if key not in env:
            os.environ.pop(key, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def gunicorn_argv(module: str, port: int, workers: int = 2) -> list[str]:
    """The same gunicorn settings for our app and the floor app (both read ./gunicorn.conf.py)."""
    return [
        GUNICORN,
        module,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "60",
        "--error-logfile",
        "-",
    ]


def _describe_checkout(path: Path) -> str:
    """The baseline's commit and subject, as the report names it."""
    described = subprocess.run(
        ["git", "-C", str(path), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    return described.stdout.strip() or str(path)


def _check_baseline_schema(path: Path, env: dict[str, str]) -> None:
    """The baseline shares our database: it must need no migration that ours did not apply."""
    checked = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--check"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        raise RuntimeError(f"the baseline at {path} needs another database schema:\n{checked.stdout[-1500:]}")


def _ratios(part: WrkResult, before: WrkResult, after: WrkResult) -> float:
    base = (before.rps + after.rps) / 2
    return part.rps / base if base else 0.0


def clean_up(procs: list[Proc], db: ThrowawayDatabase, workdir: Path, failures: list[str]) -> None:
    """Whatever happened: the processes stopped, the database dropped, the work directory removed."""
    stop_and_drop(procs, db, failures)
    shutil.rmtree(workdir, ignore_errors=True)


def execute(args: argparse.Namespace, clinics: int) -> Run:
    product_env = dict(item.split("=", 1) for item in args.env)
    run = Run(
        clinics,
        args.duration,
        args.connections,
        args.threads,
        datetime.now(UTC).isoformat(timespec="seconds"),
        product_env=product_env,
    )
    workdir = Path(tempfile.mkdtemp(prefix="clinics-bench-"))
    db = ThrowawayDatabase()
    procs: list[Proc] = []
    fake_port = free_port()
    base_env = outside_env()
    # Ours and the baseline run with these; `--env` is for ours alone.
    shared_env = app_env(db.url, f"http://127.0.0.1:{fake_port}/v26.0")
    env = {**shared_env, **product_env}
    floor_env = {**base_env, "DJANGO_SETTINGS_MODULE": "bench.floor.settings", "FLOOR_DATABASE_URL": db.url}
    log(f"{clinics:,} clinics: database {db.name}, workdir {workdir}")
    db.create()
    try:
        configure_django(env)
        from django.core.cache import cache

        # A cache named by `--env CACHE_URL` may hold an earlier run's rows (the seed's token is the same).
        cache.clear()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        t0 = time.monotonic()
        target = seed(clinics)
        run.seed_seconds = time.monotonic() - t0
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        run.queries = count_queries(target)
        for key, info in run.queries.items():
            if info["status"] != 200:
                run.failures.append(f"in-process {key} answered {info['status']}")
        apps = [
            App("ours", "clinics_project.wsgi", ROOT, env, "DATABASE_URL", ("healthz", *ENDPOINTS)),
            App("floor", "bench.floor.wsgi", ROOT, floor_env, "FLOOR_DATABASE_URL", ("floor",)),
        ]
        baseline_dirs = {
            f"baseline-{number}": Path(each).resolve() for number, each in enumerate(args.baseline, start=1)
        }
        for name, baseline_dir in baseline_dirs.items():
            run.baselines[name] = _describe_checkout(baseline_dir)
            _check_baseline_schema(baseline_dir, shared_env)
            apps.append(
                App(name, "clinics_project.wsgi", baseline_dir, shared_env, "DATABASE_URL", ENDPOINTS)
            )
        wire = count_at_database(target, apps, workdir)
        run.wire = {**wire["ours"], **wire["floor"]}
        run.baseline_wire = {name: wire.get(name, {}) for name in baseline_dirs}
        for name, keys in wire.items():
            for key, seen in keys.items():
                log(
                    f"{name} {key}: {seen['statements']:.2f} statements, {seen['parses']:.2f} parses per request"
                )

        fake = start(
            "fake-graph", [PYTHON, "-m", "devtools.fake_graph", "--port", str(fake_port)], env, workdir
        )
        procs.append(fake)
        wait_http(f"http://127.0.0.1:{fake_port}/_fake/settings", fake)
        port, floor_port = free_port(), free_port()
        gunicorn = start("gunicorn", gunicorn_argv("clinics_project.wsgi", port), env, workdir)
        floor = start("floor", gunicorn_argv("bench.floor.wsgi", floor_port), floor_env, workdir)
        procs += [gunicorn, floor]
        origin, floor_origin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{floor_port}"
        wait_http(f"{origin}/healthz/", gunicorn)
        wait_http(f"{floor_origin}/floor/", floor)
        servers = [gunicorn, floor]
        baseline_origins: dict[str, str] = {}
        for name, baseline_dir in baseline_dirs.items():
            baseline_port = free_port()
            baseline = start(
                name,
                gunicorn_argv("clinics_project.wsgi", baseline_port),
                shared_env,
                workdir,
                cwd=baseline_dir,
            )
            procs.append(baseline)
            servers.append(baseline)
            baseline_origins[name] = f"http://127.0.0.1:{baseline_port}"
            wait_http(f"{baseline_origins[name]}/healthz/", baseline)

        headers = {"Authorization": f"Token {target.token}"}
        scripts = {
            "floor": lua.write(workdir, "floor", lua.get_script("/floor/", {})),
            "healthz": lua.write(workdir, "healthz", lua.get_script("/healthz/", {})),
            "settings_get": lua.write(
                workdir, "settings_get", lua.get_script("/api/clinics/settings/", headers)
            ),
            "settings_patch": lua.write(
                workdir, "settings_patch", lua.patch_settings_script("/api/clinics/settings/", headers)
            ),
            "status_get": lua.write(
                workdir, "status_get", lua.get_script("/api/clinics/whatsapp/status/", headers)
            ),
        }
        origins = {"floor": floor_origin}

        def wrk(key: str, seconds: float, offset: int = 0, at: str = "") -> WrkResult:
            return run_wrk(
                key,
                at or origins.get(key, origin),
                scripts[key],
                seconds,
                args.connections,
                args.threads,
                offset=offset,
            )

        warm = 1 if args.smoke else 2
        for key in ("floor", "healthz", "settings_get", "status_get"):
            wrk(key, warm)
        first = wrk("healthz", args.duration)
        # Enough distinct signed bodies for the webhook run (1.5x what healthz did), capped.
        run.webhook_unique = int(min(60_000, max(2_000, first.rps * args.duration * 1.5)))
        tag = secrets.token_hex(3)
        bodies = [webhook_body(target, n, tag) for n in range(run.webhook_unique)]
        scripts["webhook_post"] = lua.write(
            workdir,
            "webhook_post",
            lua.webhook_script(f"/whatsapp/webhook/{target.clinic_id}/", bodies, args.threads),
        )

        # Interleave in short slices (floor, healthz, endpoint, floor, healthz, endpoint, ...,
        # floor, healthz): each endpoint slice is divided by the floor (and healthz) slices right
        # before and after it, so the drift of the shared machine cancels; the endpoint's ratio
        # is the median of its slices.
        rounds = max(1, int(args.duration // 2))
        slice_s = max(1, int(args.duration // rounds))
        run.rounds, run.slice_seconds = rounds, slice_s
        reference: dict[str, list[WrkResult]] = {"floor": [], "healthz": [first]}
        for key in ENDPOINTS:
            log(
                f"wrk {key}: {rounds} x {slice_s}s interleaved with the floor and healthz"
                + (f" (and {len(baseline_origins)} baseline(s))" if baseline_origins else "")
            )
            parts: list[WrkResult] = []
            baseline_parts: dict[str, list[WrkResult]] = {name: [] for name in baseline_origins}
            to_floor: list[float] = []
            to_healthz: list[float] = []
            baseline_to_floor: dict[str, list[float]] = {name: [] for name in baseline_origins}
            floor_before, healthz_before = wrk("floor", slice_s), wrk("healthz", slice_s)
            reference["floor"].append(floor_before)
            reference["healthz"].append(healthz_before)
            for round_number in range(rounds):
                # Ours and the baselines take turns going first, so none always follows the floor.
                order = ["ours", *baseline_origins]
                shift = round_number % len(order)
                order = order[shift:] + order[:shift]
                got: dict[str, WrkResult] = {}
                for which in order:
                    if key == "status_get":
                        refresh_target(target)
                    # Each slice starts past every body the previous slices could have sent.
                    done = parts + [p for each in baseline_parts.values() for p in each] + list(got.values())
                    sent = sum(p.requests for p in done) + len(done) * (args.connections + 1)
                    got[which] = wrk(key, slice_s, offset=sent, at=baseline_origins.get(which, ""))
                floor_after, healthz_after = wrk("floor", slice_s), wrk("healthz", slice_s)
                reference["floor"].append(floor_after)
                reference["healthz"].append(healthz_after)
                parts.append(got["ours"])
                to_floor.append(_ratios(got["ours"], floor_before, floor_after))
                to_healthz.append(_ratios(got["ours"], healthz_before, healthz_after))
                for name in baseline_origins:
                    baseline_parts[name].append(got[name])
                    baseline_to_floor[name].append(_ratios(got[name], floor_before, floor_after))
                floor_before, healthz_before = floor_after, healthz_after
            run.results[key] = combine(key, parts)
            run.slice_ratios[key], run.slice_ratios_healthz[key] = to_floor, to_healthz
            run.ratios[key] = statistics.median(to_floor)
            run.ratios_healthz[key] = statistics.median(to_healthz)
            result = run.results[key]
            log(
                f"  {result.rps:.0f} req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms; "
                f"floor ratio {run.ratios[key]:.2f} ({', '.join(f'{r:.2f}' for r in to_floor)}); "
                f"healthz ratio {run.ratios_healthz[key]:.2f}"
            )
            checked = [result]
            for name, done_parts in baseline_parts.items():
                run.baseline_results.setdefault(name, {})[key] = combine(key, done_parts)
                run.baseline_slice_ratios.setdefault(name, {})[key] = baseline_to_floor[name]
                run.baseline_ratios.setdefault(name, {})[key] = statistics.median(baseline_to_floor[name])
                checked.append(run.baseline_results[name][key])
                log(
                    f"  {name}: floor ratio {run.baseline_ratios[name][key]:.2f} "
                    f"({', '.join(f'{r:.2f}' for r in baseline_to_floor[name])})"
                )
            for checked_result in checked:
                if not checked_result.ok:
                    run.failures.append(
                        f"{key}: {checked_result.note or f'{checked_result.non_2xx} non-2xx, {checked_result.socket_errors} socket errors'}"
                    )
            if not all(server.alive() for server in servers):
                run.failures.append("a server died:\n" + "".join(server.tail() for server in servers))
                break
        for key, runs in reference.items():
            for h in runs:
                if not h.ok:
                    run.failures.append(
                        f"{key}: {h.note or f'{h.non_2xx} non-2xx, {h.socket_errors} socket errors'}"
                    )
            run.results[key] = combine(key, runs)
        floor_rps = run.results["floor"].rps
        if floor_rps:
            run.ratios_healthz["floor"] = floor_rps / run.results["healthz"].rps
            run.ratios["healthz"] = run.results["healthz"].rps / floor_rps
        from whatsapp.models import WebhookDelivery

        # raw_body is encrypted (no SQL lookup on it): tell the wrk deliveries apart here.
        run.webhook_stored = sum(
            f"BENCH{tag}" in delivery.raw_body
            for delivery in WebhookDelivery.objects.filter(clinic_id=target.clinic_id)
            .only("id", "raw_body")
            .iterator()
        )

        for proc in procs:
            proc.stop()
        procs.clear()

        to_profile = (
            [k for k, goal in TARGETS.items() if run.ratios.get(k, 0) < goal]
            if not args.profile_all
            else list(TARGETS)
        )
        if not args.smoke or args.profile_all:
            for key in to_profile:
                log(f"profiling {key} in-process")
                run.profiles[key] = profile(key, target)
    except Exception:  # noqa: BLE001  (any failure is reported and fails the run)
        run.failures.append(traceback.format_exc())
    finally:
        clean_up(procs, db, workdir, run.failures)
    return run


# --- report ----------------------------------------------------------------------------------


def _fmt_slices(values: list[float] | None) -> str:
    return f" ({', '.join(f'{x:.2f}' for x in values)})" if values else ""


def _run_section(run: dict[str, Any]) -> list[str]:
    lines = [
        f"## {run['clinics']:,} clinics ({run['started_at']})",
        "",
        f"Each endpoint ran {run['rounds']} slices of {run['slice_seconds']}s, each followed by a floor slice and a "
        f"healthz slice (the first endpoint slice is preceded by one of each). Seeding took {run['seed_seconds']:.1f}s."
        + (
            f" Our app ran with {', '.join(f'`{k}={v}`' for k, v in run['product_env'].items())}."
            if run.get("product_env")
            else ""
        ),
        "",
        "| endpoint | req/s | p50 ms | p99 ms | ratio to floor (slices) | goal | ratio to healthz | SQL statements / parses per request | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in LABELS.items():
        result = run["results"].get(key)
        if result is None:
            lines.append(f"| {label} | - | - | - | - | - | - | - | not run |")
            continue
        ratio = run["ratios"].get(key)
        goal = TARGETS.get(key)
        verdict = "" if goal is None else ("meets" if ratio is not None and ratio >= goal else "**misses**")
        wire = run["wire"].get(key)
        wire_text = f"{wire['statements']:.2f} / {wire['parses']:.2f}" if wire else "-"
        to_healthz = run["ratios_healthz"].get(key)
        lines.append(
            f"| {label} | {result['rps']:.0f} | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} | "
            f"{'1.00' if key == 'floor' else '' if ratio is None else f'{ratio:.2f}'}{_fmt_slices(run['slice_ratios'].get(key))} | "
            f"{'' if goal is None else f'≥ {goal}'} | {'' if to_healthz is None else f'{to_healthz:.2f}'} | {wire_text} | {verdict} |"
        )
    for name, described in run.get("baselines", {}).items():
        lines += [
            "",
            f"### Before and after in this run: {name} is `{described}`",
            "",
            "Its slices ran beside ours in every round (taking turns going first), divided by the same floor slices.",
            "",
            "| endpoint | baseline req/s | baseline p50 / p99 ms | baseline ratio to floor (slices) | ours | change | baseline SQL statements / parses |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key in ENDPOINTS:
            then, now = run["baseline_ratios"].get(name, {}).get(key), run["ratios"].get(key)
            result = run["baseline_results"].get(name, {}).get(key)
            if then is None or now is None or result is None:
                continue
            seen = run["baseline_wire"].get(name, {}).get(key)
            lines.append(
                f"| {LABELS[key]} | {result['rps']:.0f} | {result['p50_ms']:.2f} / {result['p99_ms']:.2f} | "
                f"{then:.2f}{_fmt_slices(run['baseline_slice_ratios'][name].get(key))} | {now:.2f} | "
                f"{(now - then) / then * 100:+.0f} % | "
                + (f"{seen['statements']:.2f} / {seen['parses']:.2f}" if seen else "-")
                + " |"
            )
    errors = [(k, r) for k, r in run["results"].items() if r["non_2xx"] or r["socket_errors"]]
    lines += [
        "",
        "Non-2xx / socket errors: "
        + (", ".join(f"{k}: {r['non_2xx']}/{r['socket_errors']}" for k, r in errors) or "none")
        + ".",
    ]
    posted = run["results"].get("webhook_post")
    if run["webhook_unique"] and posted:
        baseline_posted = [
            each["webhook_post"]
            for each in run.get("baseline_results", {}).values()
            if "webhook_post" in each
        ]
        counted = posted["requests"] + sum(each["requests"] for each in baseline_posted)
        lines.append(
            f"Webhook: {run['webhook_unique']:,} distinct pre-signed bodies (one message id each) cycled by wrk; "
            f"{counted:,} POSTs counted by wrk{' (ours and the baselines)' if baseline_posted else ''}, "
            f"{run['webhook_stored']:,} deliveries stored "
            + (
                "(more than counted: the requests in flight when a wrk slice stops are served but not counted), "
                "so no POST took the dedupe path."
                if run["webhook_stored"] >= counted
                else "; the rest took the dedupe path (a replay of a known message id)."
            )
        )
    lines += [
        "",
        "### SQL per request (in-process, CaptureQueriesContext: what Django sends from our code)",
        "",
    ]
    for key, info in run["queries"].items():
        lines.append(f"- **{key}** ({info['queries']}):")
        lines += [f"  - `{sql}`" for sql in info["sql"]]
    if run["profiles"]:
        lines += [
            "",
            "### Profiles (pyinstrument, 200 requests in-process through the full middleware stack)",
            "",
        ]
        for key, text in run["profiles"].items():
            lines += [f"#### {key}", "", "```", text, "```", ""]
    if run["failures"]:
        lines += ["", "### Failures", ""] + [f"```\n{f}\n```" for f in run["failures"]]
    return lines


def _without_baselines(given: list[str]) -> list[str]:
    """The command line without its `--baseline DIR` / `--baseline=DIR` items."""
    kept: list[str] = []
    skip = False
    for item in given:
        if skip:
            skip = False
        elif item == "--baseline":
            skip = True
        elif not item.startswith("--baseline="):
            kept.append(item)
    return kept


def write_report(runs: list[dict[str, Any]], smoke: bool) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    counts = "+".join(str(run["clinics"]) for run in runs)
    stem = f"{runs[0]['started_at'][:10]}-{'smoke' if smoke else counts}"
    (REPORTS / f"{stem}.json").write_text(json.dumps(runs, indent=2, default=str))
    first = runs[0]
    lines = [
        "# Benchmark: "
        + " and ".join(f"{run['clinics']:,}" for run in runs)
        + f" clinics ({first['started_at']})",
        "",
        "Two apps on the same machine, the same PostgreSQL and the same gunicorn settings (2 sync workers): "
        "ours (DEBUG off, CONN_MAX_AGE=600) and the floor app (`bench/floor/`: startproject's middleware, "
        "persistent connections, one view running `SELECT 1`). "
        f"wrk -t{first['threads']} -c{first['connections']} on the same 2-core machine. A slice's ratio divides its req/s "
        "by the mean of the floor (or healthz) slices just before and after it; an endpoint's ratio is the median of "
        "its slices. req/s is over all slices; p50/p99 are the median slice's. SQL statements are counted at the "
        "database's door (`bench/pgwire.py`: simple queries plus extended-protocol executes, BEGIN/COMMIT and "
        "health checks included; parses are statements the server had to parse and plan) over 50 requests after "
        "10 of warm-up.",
        "",
    ]
    if len(runs) > 1:
        lines += [
            "## Ratios to the floor, side by side",
            "",
            "| endpoint | goal | "
            + " | ".join(f"{run['clinics']:,} clinics" for run in runs)
            + " | change |",
            "|---|---:|" + "---:|" * len(runs) + "---:|",
        ]
        for key in ENDPOINTS:
            values = [run["ratios"].get(key) for run in runs]
            change = ""
            if values[0] and values[-1]:
                delta = (values[-1] - values[0]) / values[0]
                change = f"{delta * 100:+.1f} %" + (" **>10 %**" if abs(delta) > SCALE_TOLERANCE else "")
            cells = []
            for run, value in zip(runs, values, strict=True):
                thens = [
                    f"{name} {ratios[key]:.2f}"
                    for name, ratios in run.get("baseline_ratios", {}).items()
                    if key in ratios
                ]
                cells.append(
                    ("-" if value is None else f"{value:.2f}") + (f" ({', '.join(thens)})" if thens else "")
                )
            lines.append(f"| {LABELS[key]} | ≥ {TARGETS[key]} | " + " | ".join(cells) + f" | {change} |")
        lines += [""]
    for run in runs:
        lines += [*_run_section(run), ""]
    path = REPORTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clinics",
        default="10,100000",
        help="clinic counts, comma-separated, each run in its own process (default 10,100000)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="10 clinics, 3-second slices, no profiles: about a minute and a half",
    )
    parser.add_argument(
        "--profile-all", action="store_true", help="profile every endpoint, not only the ones that miss"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for our app only (to measure a variant; repeatable)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="DIR",
        help="another checkout of this project (git worktree add DIR <commit>) run beside ours, "
        "interleaved against the same floor slices: before and after in one run (repeatable)",
    )
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # one count's run, for the parent process
    args = parser.parse_args(argv)
    counts = [int(c) for c in str(args.clinics).split(",") if c.strip()]
    if args.smoke:
        counts = [min(counts[0], 20)]
        args.duration = 3.0
    if not Path(WRK).exists():
        log("wrk is not installed (apt-get install -y wrk)")
        return 2
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so the finally clauses stop the servers and drop the database

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    started = time.monotonic()
    if args.json_out:
        single = execute(args, counts[0])
        Path(args.json_out).write_text(json.dumps(asdict(single), default=str))
        return 1 if single.failures else 0
    # Each count in its own process: Django is set up once per process, on one database.
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="clinics-bench-runs-") as tmp:
        for count in counts:
            out = Path(tmp) / f"{count}.json"
            given = list(argv if argv is not None else sys.argv[1:])
            child_args = [*_without_baselines(given), "--clinics", str(count), "--json-out", str(out)]
            for each in args.baseline:  # the child runs from the project root: hand it absolute paths
                child_args += ["--baseline", str(Path(each).resolve())]
            child = subprocess.Popen([PYTHON, "-m", "bench", *child_args], cwd=ROOT)
            try:
                child.wait()
            except KeyboardInterrupt:
                # Let the child stop its servers and drop its database (subprocess.run would SIGKILL it).
                child.terminate()
                child.wait(timeout=120)
                raise
            if out.exists():
                runs.append(json.loads(out.read_text()))
            else:
                runs.append(
                    asdict(
                        Run(
                            count,
                            args.duration,
                            args.connections,
                            args.threads,
                            datetime.now(UTC).isoformat(timespec="seconds"),
                            failures=["the run wrote no result (see its log above)"],
                        )
                    )
                )
    path = write_report(runs, args.smoke)
    log(f"report: {path} ({time.monotonic() - started:.0f}s)")
    failed = False
    for run in runs:
        for failure in run["failures"]:
            failed = True
            log(f"FAILED ({run['clinics']:,} clinics): " + (failure.splitlines()[0] if failure else ""))
    for run in runs:
        for key, goal in TARGETS.items():
            ratio = run["ratios"].get(key, 0.0)
            log(
                f"{run['clinics']:,} clinics, {key}: {ratio:.2f} of the floor (goal {goal}) "
                f"{'ok' if ratio >= goal else 'MISSES'}"
            )
    if args.smoke:  # and the sends' (bench/sends.py): 16 and the task workers, checked for a duplicate send
        failed = (
            subprocess.run([PYTHON, "-m", "bench.sends", "--smoke"], cwd=ROOT, check=False).returncode != 0
            or failed
        )
    return 1 if failed else 0
