"""`python -m bench`: gunicorn (2 workers) on a throwaway PostgreSQL database, driven by wrk.

Steps: create and migrate a database, seed N clinics, count SQL queries per request
in-process, start the fake Graph server and gunicorn as processes, run wrk against
/healthz/ and four endpoints (healthz is run again before and after each endpoint,
so each ratio compares numbers measured back to back), profile with pyinstrument
whatever misses its target, and write bench/reports/<date>-<clinics>.md (+ .json).
Everything runs on 127.0.0.1; every wrk run is bounded by --duration.
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
TARGETS = {"settings_get": 0.8, "status_get": 0.8, "webhook_post": 0.6, "settings_patch": 0.5}
LABELS = {
    "healthz": "GET /healthz/",
    "settings_get": "GET /api/clinics/settings/ (token)",
    "settings_patch": "PATCH /api/clinics/settings/ (token, alternating values)",
    "status_get": "GET /api/clinics/whatsapp/status/ (active, checked recently: cached path)",
    "webhook_post": "POST /whatsapp/webhook/<id>/ (signed, unique message ids)",
}


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


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Proc:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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
                            "contacts": [{"profile": {"name": "Paciente"}, "wa_id": "50370000000"}],
                            "messages": [
                                {
                                    "from": "50370000000",
                                    "id": f"wamid.BENCH{run}{n:08d}",
                                    "timestamp": "1764000000",
                                    "text": {"body": "Hola, quiero una cita"},
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
    for key in LABELS:
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


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    clinics: int
    duration: float
    connections: int
    threads: int
    started_at: str
    seed_seconds: float = 0.0
    queries: dict[str, Any] = field(default_factory=dict)
    results: dict[str, WrkResult] = field(default_factory=dict)
    healthz_around: dict[str, list[float]] = field(default_factory=dict)
    slice_ratios: dict[str, list[float]] = field(default_factory=dict)
    rounds: int = 0
    slice_seconds: int = 0
    ratios: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    webhook_unique: int = 0
    webhook_stored: int = 0
    failures: list[str] = field(default_factory=list)


def configure_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    for key in ("CACHE_URL", "META_APP_SECRET"):
        if key not in env:
            os.environ.pop(key, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def execute(args: argparse.Namespace) -> Run:
    run = Run(
        args.clinics,
        args.duration,
        args.connections,
        args.threads,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    workdir = Path(tempfile.mkdtemp(prefix="clinics-bench-"))
    db = ThrowawayDatabase()
    procs: list[Proc] = []
    fake_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL", "META_APP_SECRET")},
        "DJANGO_SETTINGS_MODULE": "clinics_project.settings",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "FIELD_ENCRYPTION_KEYS": new_key(),
        "DATABASE_URL": db.url,
        "CONN_MAX_AGE": "600",
        "META_GRAPH_URL": f"http://127.0.0.1:{fake_port}/v26.0",
        "META_GRAPH_ALLOW_ANY_HOST": "true",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    log(f"database {db.name}, workdir {workdir}")
    db.create()
    try:
        configure_django(env)
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        t0 = time.monotonic()
        target = seed(args.clinics)
        run.seed_seconds = time.monotonic() - t0
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        run.queries = count_queries(target)
        for key, info in run.queries.items():
            log(f"{key}: HTTP {info['status']}, {info['queries']} queries")
            if info["status"] != 200:
                run.failures.append(f"in-process {key} answered {info['status']}")

        fake = start(
            "fake-graph", [PYTHON, "-m", "devtools.fake_graph", "--port", str(fake_port)], env, workdir
        )
        procs.append(fake)
        wait_http(f"http://127.0.0.1:{fake_port}/_fake/settings", fake)
        port = free_port()
        gunicorn = start(
            "gunicorn",
            [
                GUNICORN,
                "clinics_project.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--timeout",
                "60",
                "--error-logfile",
                "-",
            ],
            env,
            workdir,
        )
        procs.append(gunicorn)
        origin = f"http://127.0.0.1:{port}"
        wait_http(f"{origin}/healthz/", gunicorn)

        headers = {"Authorization": f"Token {target.token}"}
        scripts = {
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
        warm = 1 if args.smoke else 2
        for key in ("healthz", "settings_get", "status_get"):
            run_wrk(key, origin, scripts[key], warm, args.connections, args.threads)
        first = run_wrk("healthz", origin, scripts["healthz"], args.duration, args.connections, args.threads)
        # Enough distinct signed bodies for the webhook run (1.5x what healthz did), capped.
        run.webhook_unique = int(min(60_000, max(2_000, first.rps * args.duration * 1.5)))
        tag = secrets.token_hex(3)
        bodies = [webhook_body(target, n, tag) for n in range(run.webhook_unique)]
        scripts["webhook_post"] = lua.write(
            workdir,
            "webhook_post",
            lua.webhook_script(f"/whatsapp/webhook/{target.clinic_id}/", bodies, args.threads),
        )

        # Interleave in short slices (healthz, endpoint, healthz, endpoint, ..., healthz): each
        # slice's ratio uses the healthz slices right before and after it, so the drift of the
        # shared machine cancels; the endpoint's ratio is the median of its slices.
        rounds = max(1, int(args.duration // 2))
        slice_s = max(1, int(args.duration // rounds))
        run.rounds, run.slice_seconds = rounds, slice_s
        healthz_runs = [first]
        for key in ("settings_get", "settings_patch", "status_get", "webhook_post"):
            log(f"wrk {key}: {rounds} x {slice_s}s interleaved with healthz")
            parts: list[WrkResult] = []
            slice_ratios: list[float] = []
            before = run_wrk("healthz", origin, scripts["healthz"], slice_s, args.connections, args.threads)
            healthz_runs.append(before)
            for _round in range(rounds):
                if key == "status_get":
                    refresh_target(target)
                # Each slice starts past every body the previous slices could have sent.
                sent = sum(p.requests for p in parts) + len(parts) * (args.connections + 1)
                part = run_wrk(
                    key, origin, scripts[key], slice_s, args.connections, args.threads, offset=sent
                )
                after = run_wrk(
                    "healthz", origin, scripts["healthz"], slice_s, args.connections, args.threads
                )
                healthz_runs.append(after)
                parts.append(part)
                base = (before.rps + after.rps) / 2
                slice_ratios.append(part.rps / base if base else 0.0)
                before = after
            run.results[key] = combine(key, parts)
            run.slice_ratios[key] = slice_ratios
            run.healthz_around[key] = [
                min(h.rps for h in healthz_runs[-rounds - 1 :]),
                max(h.rps for h in healthz_runs[-rounds - 1 :]),
            ]
            run.ratios[key] = statistics.median(slice_ratios)
            result = run.results[key]
            log(
                f"  {result.rps:.0f} req/s p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms; ratio {run.ratios[key]:.2f} ({', '.join(f'{r:.2f}' for r in slice_ratios)})"
            )
            if not result.ok:
                run.failures.append(
                    f"{key}: {result.note or f'{result.non_2xx} non-2xx, {result.socket_errors} socket errors'}"
                )
            if not gunicorn.alive():
                run.failures.append("gunicorn died:\n" + gunicorn.tail())
                break
        for h in healthz_runs:
            if not h.ok:
                run.failures.append(
                    f"healthz: {h.note or f'{h.non_2xx} non-2xx, {h.socket_errors} socket errors'}"
                )
        run.results["healthz"] = combine("healthz", healthz_runs)
        from whatsapp.models import WebhookDelivery

        # raw_body is encrypted (no SQL lookup on it): tell the in-process deliveries apart here.
        run.webhook_stored = sum(
            "inproc" not in delivery.raw_body
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
        for proc in procs:
            proc.stop()
        try:
            db.drop()
        except Exception:  # noqa: BLE001
            run.failures.append("could not drop " + db.name + ":\n" + traceback.format_exc())
        shutil.rmtree(workdir, ignore_errors=True)
    return run


# --- report ----------------------------------------------------------------------------------


def _previous(clinics: int) -> dict[str, Any] | None:
    others = sorted(
        (
            p
            for p in REPORTS.glob("*.json")
            if not p.stem.endswith(f"-{clinics}") and not p.stem.endswith("-smoke")
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if not others:
        return None
    return json.loads(others[-1].read_text())


def write_report(run: Run, smoke: bool) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    stem = f"{run.started_at[:10]}-{'smoke' if smoke else run.clinics}"
    data = asdict(run)
    (REPORTS / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str))
    lines = [
        f"# Benchmark: {run.clinics:,} clinics ({run.started_at})",
        "",
        f"gunicorn 2 sync workers, DEBUG off, PostgreSQL (throwaway database, CONN_MAX_AGE=600), "
        f"wrk -t{run.threads} -c{run.connections} on the same 2-core machine; each endpoint ran {run.rounds} slices of "
        f"{run.slice_seconds}s interleaved with healthz slices (healthz, endpoint, healthz, ...). "
        f"Seeding {run.clinics:,} clinics (+ users, WhatsApp accounts with encrypted fields) took {run.seed_seconds:.1f}s. "
        "A slice's ratio divides its req/s by the mean of the healthz slices just before and after it; the "
        "endpoint's ratio is the median of its slices (each slice's ratio is listed). req/s is over all "
        "slices; p50/p99 are the median slice's.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | healthz req/s (min-max around it) | ratio (slices) | target | SQL queries/request | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in LABELS.items():
        result = run.results.get(key)
        if result is None:
            lines.append(f"| {label} | - | - | - | - | - | - | - | not run |")
            continue
        around = run.healthz_around.get(key)
        around_text = f"{around[0]:.0f}-{around[1]:.0f}" if around else "-"
        slices = run.slice_ratios.get(key)
        ratio = run.ratios.get(key)
        goal = TARGETS.get(key)
        verdict = "" if goal is None else ("meets" if ratio is not None and ratio >= goal else "**misses**")
        queries = run.queries.get(key, {}).get("queries", "-")
        lines.append(
            f"| {label} | {result.rps:.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {around_text} | "
            f"{'' if ratio is None else f'{ratio:.2f}'}{' (' + ', '.join(f'{x:.2f}' for x in slices) + ')' if slices else ''} | {'' if goal is None else f'≥ {goal}'} | {queries} | {verdict} |"
        )
    errors = [(k, r) for k, r in run.results.items() if r.non_2xx or r.socket_errors]
    lines += [
        "",
        f"Non-2xx / socket errors: {', '.join(f'{k}: {r.non_2xx}/{r.socket_errors}' for k, r in errors) or 'none'}.",
    ]
    if run.webhook_unique:
        posted = run.results.get("webhook_post")
        lines.append(
            f"Webhook: {run.webhook_unique:,} distinct pre-signed bodies (one message id each) cycled by wrk; "
            f"{posted.requests if posted else 0:,} POSTs counted by wrk, {run.webhook_stored:,} deliveries stored "
            + (
                "(more than counted: the requests in flight when a wrk slice stops are served but not counted), "
                "so no POST took the dedupe path."
                if posted is not None and run.webhook_stored >= posted.requests
                else "; the rest took the dedupe path (a replay of a known message id)."
            )
        )
    previous = _previous(run.clinics)
    if previous and not smoke:
        lines += ["", f"## Against the {previous['clinics']:,}-clinic run ({previous['started_at']})", ""]
        lines += ["| endpoint | ratio then | ratio now | change |", "|---|---:|---:|---:|"]
        for key in TARGETS:
            then, now = previous["ratios"].get(key), run.ratios.get(key)
            if then and now:
                change = (now - then) / then * 100
                flag = "" if abs(change) <= 10 else " **>10 %**"
                lines.append(f"| {key} | {then:.2f} | {now:.2f} | {change:+.1f} %{flag} |")
        lines.append("")
        lines.append("Ratios are compared, not absolute req/s: the machine is shared and noisy.")
    lines += ["", "## SQL per request (in-process, CaptureQueriesContext)", ""]
    for key, info in run.queries.items():
        lines.append(f"- **{key}** ({info['queries']}):")
        lines += [f"  - `{sql}`" for sql in info["sql"]]
    if run.profiles:
        lines += [
            "",
            "## Profiles (pyinstrument, 200 requests in-process through the full middleware stack)",
            "",
        ]
        for key, text in run.profiles.items():
            lines += [f"### {key}", "", "```", text, "```", ""]
    if run.failures:
        lines += ["", "## Failures", ""] + [f"```\n{f}\n```" for f in run.failures]
    path = REPORTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--clinics", type=int, default=10, help="clinics to seed (default 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--smoke", action="store_true", help="20 clinics, 3-second runs, no profiles: under ~60 s"
    )
    parser.add_argument(
        "--profile-all", action="store_true", help="profile every endpoint, not only the ones that miss"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.clinics = min(args.clinics, 20)
        args.duration = 3.0
    if not Path(WRK).exists():
        log("wrk is not installed (apt-get install -y wrk)")
        return 2

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so the finally clauses stop the servers and drop the database

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    started = time.monotonic()
    run = execute(args)
    path = write_report(run, args.smoke)
    log(f"report: {path} ({time.monotonic() - started:.0f}s)")
    if run.failures:
        for failure in run.failures:
            log("FAILED: " + failure.splitlines()[0] if failure else "FAILED")
        return 1
    for key, goal in TARGETS.items():
        ratio = run.ratios.get(key, 0.0)
        log(f"{key}: ratio {ratio:.2f} (target {goal}) {'ok' if ratio >= goal else 'MISSES'}")
    return 0
