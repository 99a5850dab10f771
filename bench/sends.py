"""`python -m bench.sends`: how fast endpoint 16 accepts sends and the worker delivers them to Meta, in one run.

On a throwaway PostgreSQL database: one clinic with an active number, a bot key and
many patients whose 24-hour window is open (their messages recorded through
`clinics.relay.clinic_messages_apply`, as the webhook worker does). Then, all on
127.0.0.1: the fake Graph server (`devtools.fake_graph`, the number connected,
its status events posted to the clinic's webhook), our app under gunicorn (2
workers) and 2 task workers (`manage.py run_worker`), sharing a Redis cache so the
pacing holds across them. wrk posts text messages to 16 with the bot key, each with
its own `Idempotency-Key`, spread over the patients; meanwhile some keys are posted
again (alone and two at once) and one task worker is killed with SIGKILL and
restarted. The fake's request log (arrival time and `biz_opaque_callback_data` of
each send) gives the delivery rate and proves each message went out at most once.
Writes bench/reports/<date>-sends.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import lua
from bench.runner import (
    PYTHON,
    REPORTS,
    ROOT,
    WRK,
    Proc,
    ThrowawayDatabase,
    app_env,
    configure_django,
    free_port,
    gunicorn_argv,
    log,
    start,
    stop_and_drop,
    wait_http,
)

# Meta's default throughput per number, and the share of it the worker must reach (issue 21).
NUMBER_RATE = 80
SUSTAINED_SHARE = 0.9
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
APP_SECRET = "bench-sends-secret-" + secrets.token_hex(8)
# Patients' wa_ids: 503 (El Salvador) 6 then seven digits, one per patient index.
PATIENT_PREFIX = "5036"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/15"
PACE = f"pace: at most {NUMBER_RATE} sends in any 1-second window"
SUSTAINED = f"sustained: at least {SUSTAINED_SHARE * NUMBER_RATE:.0f} sends a second"
ONCE = "each message received by Meta at most once; each `sent` or later, or its answer lost by the kill"
REPLAYS = "a key posted again: the same answer, nothing more sent; with another body, 409"
CORRECTNESS = (ONCE, REPLAYS)
# The statuses a message may end in once Meta accepted it, and those of a send whose answer was lost.
SETTLED = ("sent", "delivered", "read")
ANSWER_LOST = ("sending", "unknown")


def patient_wa_id(index: int) -> str:
    return f"{PATIENT_PREFIX}{index:07d}"


# --- analysis (pure; bench/tests/test_sends.py) ------------------------------------------------


def max_in_window(times: Sequence[float], window: float = 1.0) -> tuple[int, float | None]:
    """The most events in any half-open window [t, t + window), and where that window starts.

    A window that holds the most events can always be made to start at an event,
    so trying each event as the start is exact.
    """
    ordered = sorted(times)
    best, best_start = 0, None
    for i, start_at in enumerate(ordered):
        count = bisect_left(ordered, start_at + window, lo=i) - i
        if count > best:
            best, best_start = count, start_at
    return best, best_start


def per_second(times: Iterable[float], origin: float) -> list[int]:
    """Events counted per whole second from `origin` (second 0 is [origin, origin + 1))."""
    counts: list[int] = []
    for t in times:
        second = int(t - origin)
        if second < 0:
            continue
        while len(counts) <= second:
            counts.append(0)
        counts[second] += 1
    return counts


def sustained_rate(times: Sequence[float]) -> float:
    """Events per second from the first to the last: (n - 1) intervals over the span."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] == ordered[0]:
        return 0.0
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def lowest_rolling_rate(times: Sequence[float], window: float = 5.0) -> float | None:
    """The lowest rate over any `window` seconds between the first and the last event (None if shorter)."""
    ordered = sorted(times)
    if not ordered or ordered[-1] - ordered[0] < window:
        return None
    lowest = None
    start_at = ordered[0]
    while start_at + window <= ordered[-1]:
        count = bisect_left(ordered, start_at + window) - bisect_left(ordered, start_at)
        rate = count / window
        lowest = rate if lowest is None else min(lowest, rate)
        start_at += 0.25
    return lowest


@dataclass
class Outcome:
    """Each outbound message against what the fake received."""

    messages: int = 0
    sends_received: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)  # message id -> times received (> 1)
    unknown_references: list[str] = field(default_factory=list)  # received, but no message of ours
    statuses: dict[str, int] = field(default_factory=dict)
    settled: int = 0  # sent or later, received once
    answer_lost: int = 0  # sending/unknown, request marked sent, received at most once
    waiting_status: int = 0  # of answer_lost: received once, Meta's status event not applied yet
    not_sent: list[str] = field(default_factory=list)  # queued, failed, or settled with no send seen

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.unknown_references and not self.not_sent


def check_outcome(references: Iterable[str | None], messages: Iterable[tuple[str, str, bool]]) -> Outcome:
    """`references`: the fake's sends; `messages`: (id, status, request marked sent) of each outbound one."""
    received = Counter(ref for ref in references if ref)
    outcome = Outcome(sends_received=sum(received.values()))
    known: set[str] = set()
    statuses: Counter[str] = Counter()
    for message_id, status, request_sent in messages:
        known.add(message_id)
        outcome.messages += 1
        statuses[status] += 1
        times = received.get(message_id, 0)
        if times > 1:
            outcome.duplicates[message_id] = times
        elif status in SETTLED and times == 1:
            outcome.settled += 1
        elif status in ANSWER_LOST and request_sent:
            outcome.answer_lost += 1
            outcome.waiting_status += times
        else:
            outcome.not_sent.append(f"{message_id} {status} (received {times}x)")
    outcome.statuses = dict(statuses)
    outcome.unknown_references = sorted(ref for ref in received if ref not in known)
    return outcome


# --- load ---------------------------------------------------------------------------------------


def wrk_script(path: str, key: str, patients: int, threads: int, tag: str) -> str:
    """POST a text to the next patient in turn, each request with its own Idempotency-Key; counts 202s."""
    return (
        lua.THREAD_IDS
        + f"""
accepted = 0  -- a global: done() reads it from each thread
local headers = {{
  ["Authorization"] = "Bearer {key}",
  ["Content-Type"] = "application/json",
}}
request = function()
  local n = counter * {threads} + tid
  counter = counter + 1
  headers["Idempotency-Key"] = "{tag}-" .. n
  local to = string.format("{PATIENT_PREFIX}%07d", n % {patients})
  local body = '{{"to": "' .. to .. '", "text": "Bench {tag} ' .. n .. '"}}'
  return wrk.format("POST", "{path}", headers, body)
end
response = function(status, headers, body)
  if status == 202 then accepted = accepted + 1 end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("accepted") or 0) end
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"accepted":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, total, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
    )


@dataclass
class Replays:
    """Keys posted again: alone, and two at once; one with another body (409)."""

    keys: int = 0
    posts: int = 0
    same_answer: int = 0
    different: list[str] = field(default_factory=list)
    conflict_status: int | None = None
    message_ids: list[str] = field(default_factory=list)


def replay_keys(origin: str, key: str, patients: int, count: int, seconds: float, tag: str) -> Replays:
    """Post `count` keys over `seconds`, each then posted again (every other one twice at once)."""
    import requests

    out = Replays()
    url = f"{origin}/api/clinics/messages/"
    headers = {"Authorization": f"Bearer {key}"}
    pause = seconds / max(count, 1)
    with requests.Session() as session:
        for i in range(count):
            idem = f"{tag}-replay-{i}"
            body = {"to": patient_wa_id((patients - 1 - i) % patients), "text": f"Bench replay {tag} {i}"}
            first = session.post(url, json=body, headers={**headers, "Idempotency-Key": idem}, timeout=30)
            out.keys += 1
            out.posts += 1
            if first.status_code != 202:
                out.different.append(f"{idem}: first answer {first.status_code}")
                continue
            out.message_ids.append(first.json()["id"])
            answers: list[Any] = []

            def again(sink: list[Any] = answers, idem: str = idem, body: dict[str, str] = body) -> None:
                with requests.Session() as own:
                    sink.append(
                        own.post(url, json=body, headers={**headers, "Idempotency-Key": idem}, timeout=30)
                    )

            racers = [threading.Thread(target=again) for _ in range(2 if i % 2 else 1)]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join()
            for answer in answers:
                out.posts += 1
                if (answer.status_code, answer.json()) == (202, first.json()):
                    out.same_answer += 1
                else:
                    out.different.append(f"{idem}: {answer.status_code} {answer.text[:120]}")
            if i == 0:
                other = {**body, "text": body["text"] + " (another body)"}
                out.conflict_status = session.post(
                    url, json=other, headers={**headers, "Idempotency-Key": idem}, timeout=30
                ).status_code
            time.sleep(pause)
    return out


# --- measurements of the machine ----------------------------------------------------------------


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _processes() -> Iterable[tuple[str, int, float]]:
    """(name, process group, user + system CPU seconds) of each live process, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        name, rest = raw.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()  # from stat's third field: state, ppid, pgrp, ..., utime (14th), stime
        yield name, int(fields[2]), (int(fields[11]) + int(fields[12])) / tick


def cpu_seconds(pgid: int) -> float:
    """CPU seconds of the live processes of a process group."""
    return sum(cpu for _name, group, cpu in _processes() if group == pgid)


def postgres_cpu_seconds() -> float:
    """CPU seconds of every `postgres` process (the whole server: other databases too)."""
    return sum(cpu for name, _group, cpu in _processes() if name.startswith("postgres"))


def worker_profile(path: Path, limit: int = 45) -> str:
    """Task worker 1's cProfile: the functions of the send and status paths by cumulative time."""
    import io
    import pstats

    if not path.exists():
        return "(no profile written)"
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(
        r"(messaging/|whatsapp/|common/|clinics/relay|django_tasks_db/|django/db/backends/utils.py.*execute|"
        r"django/core/cache/backends/redis.py|requests/sessions.py.*(send|request)|psycopg/cursor.py.*execute|"
        r"db_worker.py|time.sleep|select.poll|built-in method time.sleep)",
        limit,
    )
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    prefix = str(Path(PYTHON).parent.parent) + "/lib/python3.11/site-packages/"
    return "\n".join(ln.replace(str(ROOT) + "/", "").replace(prefix, "") for ln in lines[-(limit + 2) :])


# --- the run --------------------------------------------------------------------------------------


@dataclass
class SendsRun:
    started_at: str
    smoke: bool
    patients: int
    duration: float
    connections: int
    threads: int
    status_delays: list[float]
    cache_url: str
    uptime_before: str = ""
    uptime_after: str = ""
    seed_seconds: float = 0.0
    # Endpoint 16 (wrk)
    posted: int = 0
    accepted: int = 0
    post_seconds: float = 0.0
    accept_rate: float = 0.0
    post_p50_ms: float = 0.0
    post_p99_ms: float = 0.0
    post_errors: dict[str, int] = field(default_factory=dict)
    backlog_at_post_end: int = 0
    # Deliveries to the fake Meta
    delivered: int = 0
    delivery_seconds: float = 0.0
    sustained_rate: float = 0.0
    lowest_5s_rate: float | None = None
    max_1s_window: int = 0
    max_1s_window_at: float | None = None
    per_second: list[int] = field(default_factory=list)
    backlog: list[tuple[float, int]] = field(default_factory=list)  # (seconds from start, sends not yet gone)
    meta_errors: int = 0
    # Retries and the killed worker
    workers_resumed_at: float | None = None
    queued_before_workers: int = 0  # accepted by 16 (wrk's and the replays') while the workers were held
    backlog_ran_dry_at: float | None = None  # the workers caught up with 16 before the POSTs ended
    killed_at: float | None = None
    restarted_after: float | None = None
    requeue_swept_at: float | None = None
    # Meta's status events: how long after the last send they were all applied, or how many were not.
    statuses_applied_after: float | None = None
    statuses_not_applied: int = 0
    replays: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)  # tasks the workers ran, by task
    goals: dict[str, bool] = field(default_factory=dict)
    profile: str = ""
    failures: list[str] = field(default_factory=list)


def seed(patients: int) -> tuple[str, str]:
    """The clinic, its active number, a bot key, and `patients` patients who wrote just now. Returns (clinic id, key)."""
    from django.utils import timezone

    from clinics.bot_keys import bot_key_issue
    from clinics.models import Clinic
    from clinics.relay import clinic_messages_apply
    from whatsapp.models import WhatsAppAccount, WhatsAppStatus, new_verify_token

    clinic = Clinic.objects.create(
        name="Clínica Envíos",
        slug="clinica-envios-" + secrets.token_hex(3),
        city="San Salvador",
        country="El Salvador",
        timezone="America/El_Salvador",
        currency="USD",
        phone="+50322000001",
    )
    now = timezone.now()
    WhatsAppAccount.objects.create(
        clinic=clinic,
        verify_token=new_verify_token(),
        phone_number_id=PHONE_NUMBER_ID,
        business_account_id=WABA_ID,
        access_token="EAABENCH" + secrets.token_hex(30),
        app_secret=APP_SECRET,
        status=WhatsAppStatus.ACTIVE,
        number="+50377654321",
        status_checked_at=now,
        subscribed_at=now,
    )
    _bot_key, key = bot_key_issue(clinic=clinic, name="bench")
    batch = 100
    stamp = str(int(time.time()))
    for first in range(0, patients, batch):
        indexes = range(first, min(first + batch, patients))
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "50377654321", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": f"Paciente {i}"}, "wa_id": patient_wa_id(i)} for i in indexes],
            "messages": [
                {
                    "from": patient_wa_id(i),
                    "id": f"wamid.BENCHSEED{i:08d}",
                    "timestamp": stamp,
                    "type": "text",
                    "text": {"body": "Hola, quiero una cita"},
                }
                for i in indexes
            ],
        }
        clinic_messages_apply(clinic_id=clinic.pk, value=value)
    return str(clinic.pk), key


def backlog_count() -> int:
    """Sends not yet gone to Meta (their request not marked sent) and not given up."""
    from common.outbox import UNFINISHED
    from messaging.models import OutboundSend

    return OutboundSend.objects.filter(state__in=UNFINISHED, request_sent_at__isnull=True).count()


def tasks_run() -> dict[str, int]:
    """How many tasks the workers ran (or are running), by task: the work behind the sends."""
    from django.db.models import Count
    from django_tasks_db.models import DBTaskResult

    rows = DBTaskResult.objects.exclude(status="READY").values("task_path").annotate(n=Count("id"))
    return {row["task_path"].rsplit(".", 1)[-1]: row["n"] for row in rows}


def outbound_messages(clinic_id: str) -> list[tuple[str, str, bool]]:
    from messaging.models import Message

    return [
        (str(pk), status, sent_at is not None)
        for pk, status, sent_at in Message.objects.filter(clinic_id=clinic_id, direction="out").values_list(
            "pk", "status", "send__request_sent_at"
        )
    ]


def fake_sends(fake_origin: str) -> list[dict[str, Any]]:
    import requests

    answer = requests.get(
        f"{fake_origin}/_fake/requests", params={"method": "POST", "path": "/messages$"}, timeout=60
    )
    answer.raise_for_status()
    return list(answer.json())


def execute(args: argparse.Namespace) -> SendsRun:
    import requests

    delays = [float(x) for x in str(args.status_delays).split(",")]
    cache_url = os.environ.get("BENCH_SENDS_CACHE_URL", DEFAULT_CACHE_URL)
    run = SendsRun(
        datetime.now(UTC).isoformat(timespec="seconds"),
        args.smoke,
        args.patients,
        args.duration,
        args.connections,
        args.threads,
        delays,
        cache_url,
    )
    workdir = Path(tempfile.mkdtemp(prefix="clinics-sends-"))
    db = ThrowawayDatabase()
    procs: list[Proc] = []
    fake_port, port = free_port(), free_port()
    fake_origin, origin = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{port}"
    env = {
        **app_env(db.url, f"{fake_origin}/v26.0"),
        # Shared by the app and both workers, so the pace per number holds across them.
        "CACHE_URL": cache_url,
    }
    log(f"sends: database {db.name}, workdir {workdir}")
    db.create()
    try:
        configure_django(env)
        from django.core.cache import cache
        from django.core.management import call_command
        from django.db import connection

        cache.clear()  # the pacing counters of an earlier run
        call_command("migrate", verbosity=0, interactive=False)
        t0 = time.monotonic()
        clinic_id, key = seed(args.patients)
        run.seed_seconds = time.monotonic() - t0
        log(f"seeded {args.patients} patients with an open window in {run.seed_seconds:.1f}s")

        fake = start(
            "fake-graph", [PYTHON, "-m", "devtools.fake_graph", "--port", str(fake_port)], env, workdir
        )
        procs.append(fake)
        wait_http(f"{fake_origin}/_fake/settings", fake)
        for path, body in (
            ("settings", {"request_log_limit": 10_000_000}),
            (
                "numbers",
                {
                    "id": PHONE_NUMBER_ID,
                    "waba_id": WABA_ID,
                    "cc": "503",
                    "phone_number": "77654321",
                    "status": "CONNECTED",
                },
            ),
            (
                "webhook_target",
                {
                    "phone_number_id": PHONE_NUMBER_ID,
                    "url": f"{origin}/whatsapp/webhook/{clinic_id}/",
                    "app_secret": APP_SECRET,
                },
            ),
            ("status_webhooks", {"delays": delays}),
        ):
            requests.post(f"{fake_origin}/_fake/{path}", json=body, timeout=10).raise_for_status()

        gunicorn = start("gunicorn", gunicorn_argv("clinics_project.wsgi", port), env, workdir)
        procs.append(gunicorn)
        profile_path = workdir / "worker-1.prof"
        # With --profile, worker 1 (never the killed one) runs under cProfile, written when it stops.
        profiler = [PYTHON, "-m", "cProfile", "-o", str(profile_path)] if args.profile else [PYTHON]
        workers = [
            start(
                f"worker-{n}",
                [*(profiler if n == 1 else [PYTHON]), "manage.py", "run_worker", "--worker-id", f"bench-{n}"],
                env,
                workdir,
            )
            for n in (1, 2)
        ]
        procs += workers
        wait_http(f"{origin}/healthz/", gunicorn)
        wait_http(f"{origin}/healthz/?worker=1", workers[0], timeout=60)

        tag = secrets.token_hex(3)
        script = workdir / "sends.lua"
        script.write_text(wrk_script("/api/clinics/messages/", key, args.patients, args.threads, tag))
        run.uptime_before = uptime()
        cpu_before = {"gunicorn": cpu_seconds(gunicorn.popen.pid), "postgres": postgres_cpu_seconds()}
        worker_cpu = 0.0

        # The task workers wait (SIGSTOP, after their start-up) while 16 builds a backlog, so the
        # delivery rate is the workers' own, not the rate the POSTs arrive at.
        for worker in workers:
            os.killpg(worker.popen.pid, signal.SIGSTOP)
        started = time.time()
        log(
            f"wrk: POST /api/clinics/messages/ for {args.duration:.0f}s, -t{args.threads} -c{args.connections}"
        )
        wrk = subprocess.Popen(
            [
                WRK,
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{max(1, round(args.duration))}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                origin,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        replay_result: list[Replays] = []
        replayer = threading.Thread(
            target=lambda: replay_result.append(
                replay_keys(origin, key, args.patients, args.replays, args.duration * 0.8, tag)
            ),
            daemon=True,
        )
        replayer.start()
        resume_at = started + args.duration * args.head_start

        def resume_workers() -> None:
            # The throwaway database's tables grew from nothing in seconds: autovacuum has not yet
            # analyzed them, and the planner would take a backlog of thousands of tasks for a few
            # rows. A database in service has its statistics; give this one the same.
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
            for worker in workers:
                os.killpg(worker.popen.pid, signal.SIGCONT)
            run.workers_resumed_at = time.time() - started
            run.queued_before_workers = backlog_count()
            log(
                f"task workers resumed at {run.workers_resumed_at:.1f}s, {run.queued_before_workers} sends waiting"
            )

        def kill_when_due() -> float:
            """Kill task worker 2 `--kill-after` seconds into the delivery and restart it; its CPU seconds."""
            if args.kill_after <= 0 or run.killed_at is not None or run.workers_resumed_at is None:
                return 0.0
            if time.time() < started + run.workers_resumed_at + args.kill_after:
                return 0.0
            victim = workers[1]
            spent = cpu_seconds(victim.popen.pid)
            os.killpg(victim.popen.pid, signal.SIGKILL)
            victim.popen.wait(timeout=10)
            run.killed_at = time.time() - started
            log(f"killed worker-2 (SIGKILL) at {run.killed_at:.1f}s; restarting it")
            workers[1] = start(
                "worker-2b", [PYTHON, "manage.py", "run_worker", "--worker-id", "bench-2b"], env, workdir
            )
            procs.append(workers[1])
            run.restarted_after = time.time() - started - run.killed_at
            return spent

        while wrk.poll() is None:
            if run.workers_resumed_at is None and time.time() >= resume_at:
                resume_workers()
            worker_cpu += kill_when_due()
            run.backlog.append((round(time.time() - started, 2), backlog_count()))
            time.sleep(0.5)
        out, err = wrk.communicate()
        post_end = time.time()
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if wrk.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({wrk.returncode}): {err[-500:]}")
        data = json.loads(line[len("BENCH_JSON ") :])
        run.posted, run.accepted = data["requests"], data["accepted"]
        run.post_seconds = data["duration_us"] / 1e6
        run.accept_rate = run.accepted / run.post_seconds if run.post_seconds else 0.0
        run.post_p50_ms, run.post_p99_ms = data["p50_us"] / 1000, data["p99_us"] / 1000
        run.post_errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
        run.backlog_at_post_end = backlog_count()
        run.backlog_ran_dry_at = next(
            (
                at
                for at, waiting in run.backlog
                # Only once the workers run: before, an empty queue is the POSTs not begun yet.
                if waiting == 0
                and run.workers_resumed_at is not None
                and run.workers_resumed_at < at < post_end - started
            ),
            None,
        )
        log(
            f"16 accepted {run.accepted} of {run.posted} POSTs in {run.post_seconds:.1f}s: {run.accept_rate:.0f}/s "
            f"(p50 {run.post_p50_ms:.0f} ms, p99 {run.post_p99_ms:.0f} ms); {run.backlog_at_post_end} sends waiting"
        )
        if run.workers_resumed_at is None:
            resume_workers()

        # Drain: until every send has gone; a send the killed worker held waits for its lease
        # (messaging.sending.SEND_LEASE) and `requeue_stalled`, as in production.
        from messaging.sending import SEND_LEASE

        deadline = time.time() + args.drain_timeout
        while time.time() < deadline:
            worker_cpu += kill_when_due()
            waiting = backlog_count()
            run.backlog.append((round(time.time() - started, 2), waiting))
            if waiting == 0:
                break
            if (
                run.killed_at is not None
                and run.requeue_swept_at is None
                and time.time() > started + run.killed_at + SEND_LEASE.total_seconds() + 1
            ):
                swept = subprocess.run(
                    [PYTHON, "manage.py", "requeue_stalled"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                run.requeue_swept_at = time.time() - started
                log(f"requeue_stalled at {run.requeue_swept_at:.0f}s: {swept.stdout.strip()!r}")
            time.sleep(1)
        else:
            run.failures.append(f"{backlog_count()} sends still waiting after {args.drain_timeout:.0f}s")
        drained = time.time()
        replayer.join(timeout=120)
        # Meta's status events (the fake posts them after its delays; the workers apply them).
        from messaging.models import Message

        # Long delays (to keep the events out of a measurement) are not waited for.
        settle_by = time.time() + min(max(delays), 30) + args.settle_timeout
        waiting_status = Message.objects.filter(
            clinic_id=clinic_id, direction="out", status__in=("queued", "sending"), wamid__gt=""
        )
        while time.time() < settle_by:
            if not waiting_status.exists():
                run.statuses_applied_after = time.time() - drained
                break
            time.sleep(1)
        run.statuses_not_applied = waiting_status.count()
        time.sleep(1)
        run.uptime_after = uptime()
        worker_cpu += sum(cpu_seconds(w.popen.pid) for w in workers)
        run.cpu_seconds = {
            "gunicorn (2 workers)": cpu_seconds(gunicorn.popen.pid) - cpu_before["gunicorn"],
            "task workers (both, the killed one included)": worker_cpu,
            "fake Meta": cpu_seconds(fake.popen.pid),
            "postgres (whole server)": postgres_cpu_seconds() - cpu_before["postgres"],
            "wall": time.time() - started,
        }

        entries = fake_sends(fake_origin)
        replays = replay_result[0] if replay_result else Replays()
        ok = [e for e in entries if e.get("status") == 200]
        ok_times = [e["at"] for e in ok]
        run.meta_errors = len(entries) - len(ok)
        # The sustained rate is the backlog's, wrk's messages: the replay thread's (slowed by the
        # same server) may trickle in after them; the sends the killed worker had claimed go once
        # their lease has run out, minutes later (taken by a worker, or queued by a sweep).
        late = [started + run.requeue_swept_at] if run.requeue_swept_at is not None else []
        if run.killed_at is not None and run.workers_resumed_at is not None:
            # It claimed them after the workers started: their lease runs out from then on.
            late.append(started + run.workers_resumed_at + SEND_LEASE.total_seconds())
        cut = min(late, default=None)
        replayed = set(replays.message_ids)
        main = [e["at"] for e in ok if e.get("reference") not in replayed and (cut is None or e["at"] < cut)]
        run.delivered = len(ok_times)
        run.sustained_rate = sustained_rate(main)
        run.delivery_seconds = (max(main) - min(main)) if main else 0.0
        run.lowest_5s_rate = lowest_rolling_rate(main)
        run.max_1s_window, at = max_in_window(ok_times)
        run.max_1s_window_at = None if at is None else round(at - started, 3)
        run.per_second = per_second(ok_times, started)
        outcome = check_outcome((e.get("reference") for e in entries), outbound_messages(clinic_id))
        run.outcome = {**asdict(outcome), "ok": outcome.ok}
        run.tasks = tasks_run()
        run.replays = asdict(replays)
        log(
            f"delivered {run.delivered} sends; sustained {run.sustained_rate:.1f}/s over {run.delivery_seconds:.1f}s "
            f"(lowest 5 s: {run.lowest_5s_rate}), max in any 1 s: {run.max_1s_window}; drained {drained - post_end:.0f}s after the POSTs"
        )
        replays_ok = (
            replays.keys == args.replays
            and not replays.different
            and replays.conflict_status == 409
            and all(outcome.duplicates.get(m) is None for m in replays.message_ids)
        )
        run.goals = {
            PACE: run.max_1s_window <= NUMBER_RATE,
            SUSTAINED: run.sustained_rate >= SUSTAINED_SHARE * NUMBER_RATE,
            ONCE: outcome.ok,
            REPLAYS: replays_ok,
        }
        if run.meta_errors:
            run.failures.append(f"the fake answered {run.meta_errors} sends with an error")
        if run.post_errors:
            run.failures.append(f"wrk errors on 16: {run.post_errors}")
        for proc in (gunicorn, fake, *workers):
            if not proc.alive():
                run.failures.append(f"{proc.name} died:\n{proc.tail()}")
        if args.profile:
            workers[0].stop()  # SIGTERM: db_worker exits, cProfile writes its file
            run.profile = worker_profile(profile_path)
    except Exception:  # noqa: BLE001 (any failure is reported and fails the run)
        run.failures.append(traceback.format_exc())
    finally:
        if args.keep_database:
            for proc in procs:
                proc.stop()
            log(f"database kept: {db.url}")
        else:
            stop_and_drop(procs, db, run.failures)
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


# --- report -----------------------------------------------------------------------------------


def _goal_lines(run: dict[str, Any]) -> list[str]:
    return [f"- {'met' if met else '**missed**'}: {goal}" for goal, met in run["goals"].items()]


def write_report(run: dict[str, Any], stem: str) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{stem}.json").write_text(json.dumps(run, indent=2, default=str))
    if not run["outcome"]:  # the run failed before its end: only what failed
        lines = [f"# Sends ({run['started_at']}): the run failed", ""] + [
            f"```\n{f}\n```" for f in run["failures"]
        ]
        path = REPORTS / f"{stem}.md"
        path.write_text("\n".join(lines) + "\n")
        return path
    outcome, replays = run["outcome"], run["replays"]
    delays = ", ".join(f"{d:g}" for d in run["status_delays"])
    lines = [
        f"# Sends: endpoint 16 and the worker's deliveries to Meta ({run['started_at']})",
        "",
        f"One clinic with an active number and a bot key; {run['patients']:,} patients who wrote just now "
        f"(window open). On 127.0.0.1: our app under gunicorn (2 workers), 2 task workers (`manage.py "
        f"run_worker`), the fake Meta (`devtools/fake_graph.py`, posting `sent`, `delivered` and `read` "
        f"to the clinic's webhook after {delays} s), PostgreSQL, and the cache `{run['cache_url']}` "
        f"shared by all (the pace per number lives there). wrk -t{run['threads']} -c{run['connections']} "
        f"posted texts for {run['duration']:g} s, each with its own `Idempotency-Key`, to the patients in turn "
        f"(the task workers held with SIGSTOP until {run['workers_resumed_at']:.1f} s, so a backlog waits for them); "
        "during it a thread posted some keys again"
        + (
            ", and one task worker was killed with SIGKILL and restarted. "
            if run["killed_at"] is not None
            else ". "
        )
        + f"Seeding took {run['seed_seconds']:.1f} s.",
        "",
        f"Machine before: `{run['uptime_before']}`",
        f"Machine after: `{run['uptime_after']}`",
        "",
        "## Goals",
        "",
        *_goal_lines(run),
        "",
        "## Numbers",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| 16: POSTs answered by wrk's end | {run['posted']:,} |",
        f"| 16: `202` | {run['accepted']:,} |",
        f"| 16: accepted per second | {run['accept_rate']:.1f} |",
        f"| 16: p50 / p99 ms | {run['post_p50_ms']:.0f} / {run['post_p99_ms']:.0f} |",
        f"| task workers started (SIGCONT) at, s from the first POST | {run['workers_resumed_at']:.1f} |",
        f"| 16: accepted while the workers were held (wrk's and the replays') | {run['queued_before_workers']:,} "
        f"({run['queued_before_workers'] / run['workers_resumed_at']:.1f}/s) |",
        f"| sends waiting when the POSTs ended | {run['backlog_at_post_end']:,} |",
        "| the workers caught up with 16 (nothing waiting) during the POSTs, at s | "
        + (
            "- (the workers started after the POSTs)"
            if run["workers_resumed_at"] >= run["post_seconds"]
            else "never"
            if run["backlog_ran_dry_at"] is None
            else f"{run['backlog_ran_dry_at']:.1f}"
        )
        + " |",
        f"| sends received by the fake Meta | {run['delivered']:,} |",
        f"| delivery: sustained per second (wrk's messages, first to last send before the killed worker's lease ran out) | {run['sustained_rate']:.1f} |",
        f"| delivery: over how many seconds | {run['delivery_seconds']:.1f} |",
        "| delivery: lowest 5-second rate | "
        + ("-" if run["lowest_5s_rate"] is None else f"{run['lowest_5s_rate']:.1f}")
        + " |",
        f"| delivery: most in any 1-second window (limit {NUMBER_RATE}) | {run['max_1s_window']} |",
        f"| sends the fake answered with an error | {run['meta_errors']} |",
        "",
        "Sends received per second, from the first POST: "
        + ", ".join(str(n) for n in run["per_second"])
        + ".",
        "",
        "## No duplicate send",
        "",
        f"- Killed: task worker 2 with SIGKILL at {run['killed_at']:.1f} s "
        f"({run['killed_at'] - run['workers_resumed_at']:.1f} s into the delivery), restarted "
        f"{run['restarted_after']:.1f} s later. The sends it had claimed wait out their lease "
        "(`messaging.sending.SEND_LEASE`) and go then: checked below, not counted in the rate."
        if run["killed_at"] is not None
        else "- No worker was killed in this run.",
        (
            f"- `manage.py requeue_stalled` ran at {run['requeue_swept_at']:.0f} s, once the send lease of the killed "
            "worker's claimed rows had run out."
            if run["requeue_swept_at"] is not None
            else "- No sweep was needed: nothing was left behind a lease."
        ),
        (
            f"- Meta's status events (three per send) were all applied {run['statuses_applied_after']:.0f} s "
            "after the sends had drained: the same workers apply them, behind the sends' tasks."
            if run.get("statuses_applied_after") is not None
            else f"- Meta's status events not applied by the end of the wait: {run.get('statuses_not_applied', 0):,} messages."
        ),
        f"- Outbound messages: {outcome['messages']:,}; statuses: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(outcome["statuses"].items()))
        + ".",
        f"- Received by the fake exactly once and `sent` or later: {outcome['settled']:,}.",
        f"- Request marked sent, still `sending`/`unknown` (an answer lost by the kill, or a status event "
        f"not applied yet): {outcome['answer_lost']:,}, of which received once: {outcome['waiting_status']:,}.",
        f"- Received more than once: {len(outcome['duplicates'])}"
        + (f" ({dict(list(outcome['duplicates'].items())[:10])})" if outcome["duplicates"] else "")
        + f"; received but not ours: {len(outcome['unknown_references'])}; never sent or failed: "
        f"{len(outcome['not_sent'])}"
        + (f" (e.g. {outcome['not_sent'][:5]})" if outcome["not_sent"] else "")
        + ".",
        f"- Replayed keys: {replays['keys']} keys, {replays['posts']} POSTs (each key again, every other one "
        f"twice at once): {replays['same_answer']} answered the same `202` and id"
        + (f", different: {replays['different'][:5]}" if replays["different"] else "")
        + f"; the same key with another body: `{replays['conflict_status']}`.",
        "",
        "## CPU seconds during the run",
        "",
        "| process | CPU s |",
        "|---|---:|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in run["cpu_seconds"].items()],
        "",
        "Tasks the task workers ran: "
        + (", ".join(f"`{name}` {count:,}" for name, count in sorted(run["tasks"].items())) or "none")
        + ".",
        "",
    ]
    if run.get("profile"):
        lines += ["## Profile", "", "```", run["profile"], "```", ""]
    if run["failures"]:
        lines += ["## Failures", ""] + [f"```\n{f}\n```" for f in run["failures"]]
    path = REPORTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sends", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--patients", type=int, default=2000, help="patients with an open window (default 2000)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of POSTs to 16 (default 30)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--replays", type=int, default=100, help="keys posted again (default 100)")
    parser.add_argument(
        "--kill-after",
        type=float,
        default=5.0,
        help="kill task worker 2 (SIGKILL) this many seconds after the task workers start, then restart it; "
        "0: no kill (default 5)",
    )
    parser.add_argument(
        "--head-start",
        type=float,
        default=1.0,
        help="the task workers start at this fraction of the POSTs, so a backlog waits for them (default 1: "
        "when the POSTs end, so the delivery has the machine to itself; 0.5 overlaps them)",
    )
    parser.add_argument(
        "--status-delays",
        default="0.3,0.8,1.5",
        help="seconds after a send before the fake posts sent, delivered, read (default 0.3,0.8,1.5)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for every send")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="seconds to wait, after the last send, for Meta's status events to be applied (default 300)",
    )
    parser.add_argument(
        "--keep-database", action="store_true", help="keep the throwaway database (drop it yourself)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run task worker 1 under cProfile and add it to the report"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: 300 patients, 3 s of POSTs, no kill"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs (their directory is printed)"
    )
    parser.add_argument(
        "--report", default="", help="the report's name (default <date>-sends, <date>-sends-smoke)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.patients, args.duration, args.replays, args.kill_after = min(args.patients, 300), 3.0, 5, 0.0
    if not Path(WRK).exists():
        log("wrk is not installed (apt-get install -y wrk)")
        return 2

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so the finally clause stops the servers and drops the database

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    run = asdict(execute(args))
    stem = args.report or f"{run['started_at'][:10]}-sends{'-smoke' if args.smoke else ''}"
    path = write_report(run, stem)
    log(f"report: {path}")
    for goal, met in run["goals"].items():
        log(f"{'ok' if met else 'MISSED'}: {goal}")
    for failure in run["failures"]:
        log("FAILED: " + (failure.splitlines()[-1] if failure else ""))
    # A rate missed is a finding; a message sent twice, lost, or a replay answered otherwise fails the command.
    wrong = [goal for goal in CORRECTNESS if not run["goals"].get(goal, False)]
    return 1 if run["failures"] or wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
