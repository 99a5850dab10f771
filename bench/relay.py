"""`python -m bench.relay`: the relay measured end to end, from Meta's webhook to the clinic's bot.

On a throwaway PostgreSQL database: our app under gunicorn (2 workers, ./gunicorn.conf.py),
2 task workers (`manage.py run_worker`), and a counting bot (bench.counting_bot) that is the
`live` endpoint of a clinic with its bot on. Signed Meta `messages` deliveries (one patient
message each, unique wamids, spread over many patients) go to the clinic's webhook. One run
measures, in this order:

1. accept: the webhook alone (task workers not started yet) at saturation with wrk; the
   deliveries it stored are then deleted with their tasks, so the relay starts empty;
2. latency: a steady 20 deliveries a second; time from the webhook's 200 to the bot's receipt;
3. sustained: 100 a second for 30 seconds, and the rate at which the bot receives them, the
   drain included; no loss, no duplicate `webhook-id` beyond the retries, `sequence` in order;
4. where the time goes: per message, the timestamps the rows keep (delivery stored, its task
   picked, event applied, bot delivery claimed, bot receipt); and with `--profile` (or when a
   goal is missed) both task workers under cProfile during one more sustained window.

Writes bench/reports/<date>-relay.md (+ .json); `--smoke` is a few seconds of each (exit 1 on
loss, duplicates beyond retries, order broken or anything that failed to run).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import pstats
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import lua
from bench.runner import (
    GUNICORN,
    PYTHON,
    REPORTS,
    ROOT,
    WRK,
    Proc,
    Target,
    ThrowawayDatabase,
    app_env,
    clean_up,
    configure_django,
    free_port,
    gunicorn_argv,
    log,
    patient_text,
    run_wrk,
    seed,
    start,
    wait_http,
)

# Goals (issue 20): the relay keeps up with Meta's default 80 messages a second per number, and
# with at least half of what the webhook alone accepts in the same run.
RELAY_GOAL_RPS = 80.0
RELAY_GOAL_RATIO = 0.5
# Deliveries in flight from the poster at once (gunicorn's 2 sync workers answer 2 at a time).
POSTER_THREADS = 8
# The drain ends when every message arrived, or when none arrived for this long.
STALL_SECONDS = 30.0
TASK_WORKERS = 2


# --- what the bench posts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    wamid: str
    wa_id: str
    body: str
    signature: str


def patient_message(target: Target, *, wa_id: str, wamid: str, text: str) -> Delivery:
    """One patient's text as Meta delivers it since April 2026 (meta-cloud-api.md 6.4), signed."""
    body, signature = patient_text(
        target,
        wa_id=wa_id,
        wamid=wamid,
        text=text,
        name=f"Paciente {wa_id[-4:]}",
        user_id=f"SV.{int(wa_id) * 7919:020d}",
        timestamp=str(int(time.time())),
    )
    return Delivery(wamid, wa_id, body, signature)


def phase_prefix(tag: str, phase: int) -> str:
    return f"wamid.RELAY{tag}P{phase}N"


def phase_deliveries(target: Target, *, phase: int, count: int, patients: int, tag: str) -> list[Delivery]:
    """`count` messages over `patients` patients of this phase, in turn (each patient's i-th message
    follows every patient's (i-1)-th), so each conversation has several messages in flight."""
    return [
        patient_message(
            target,
            wa_id=f"5037{phase}{n % patients:06d}",
            wamid=f"{phase_prefix(tag, phase)}{n:07d}",
            text=f"Hola, mensaje {n // patients + 1}",
        )
        for n in range(count)
    ]


@dataclass
class Posted:
    wamid: str
    wa_id: str
    due: float
    sent: float
    answered: float
    status: int


def post_paced(
    host: str, port: int, path: str, deliveries: list[Delivery], rate: float, threads: int = POSTER_THREADS
) -> list[Posted]:
    """POST the deliveries at `rate` a second (the i-th due at start + i/rate), from a few threads.

    A thread late for its slot posts at once, so a webhook slower than the rate shows as an
    achieved rate below it, never as a pause.
    """
    results: list[Posted] = []
    lock = threading.Lock()
    items = iter(enumerate(deliveries))
    start_at = time.time() + 0.2

    def work() -> None:
        while True:
            with lock:
                item = next(items, None)
            if item is None:
                return
            n, delivery = item
            due = start_at + n / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            sent = time.time()
            status = 0
            try:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request(
                    "POST",
                    path,
                    body=delivery.body.encode(),
                    headers={"Content-Type": "application/json", "X-Hub-Signature-256": delivery.signature},
                )
                answer = conn.getresponse()
                answer.read()
                status = answer.status
                conn.close()
            except OSError:
                status = 0
            answered = time.time()
            with lock:
                results.append(Posted(delivery.wamid, delivery.wa_id, due, sent, answered, status))

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for each in pool:
        each.start()
    for each in pool:
        each.join()
    return sorted(results, key=lambda p: p.due)


# --- what the bot got -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of the values; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def spread(values: list[float]) -> dict[str, float]:
    """p50, p95 and max of durations in seconds, as milliseconds."""
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
        "max_ms": max(values, default=0.0) * 1000,
    }


@dataclass
class Check:
    """What one phase's messages did on their way: counts, rates and the order the bot saw."""

    posted: int = 0
    accepted: int = 0  # answered 200
    post_rate: float = 0.0  # accepted POSTs a second, first sent to last answered
    received: int = 0  # distinct wamids the bot got, signature verified
    lost: list[str] = field(default_factory=list)
    unverified: int = 0
    extra_receipts: int = 0  # receipts of a webhook-id after its first
    retries: int = 0  # attempts after the first, as the product's rows count them
    duplicates_beyond_retries: int = 0
    conversations: int = 0
    order_broken: list[str] = field(default_factory=list)
    relay_rate: float = 0.0  # distinct messages received a second, first POST sent to last receipt
    drain_seconds: float = 0.0  # from the last 200 to the last receipt
    latency: dict[str, float] = field(default_factory=dict)  # the webhook's 200 -> the bot's receipt


def check_phase(
    posted: list[Posted], received: list[dict[str, Any]], attempts: dict[str, int] | None = None
) -> Check:
    """Compare what was posted with what the bot received (`received` in arrival order).

    `attempts`: the product's attempt count per webhook-id. A webhook-id received more
    often than its attempts is a duplicate beyond the retries; each conversation's
    sequences, in arrival order, must run 1, 2, 3... (every phase has patients of its own).
    """
    check = Check(posted=len(posted))
    ok = [p for p in posted if p.status == 200]
    check.accepted = len(ok)
    if ok:
        span = max(p.answered for p in ok) - min(p.sent for p in ok)
        check.post_rate = len(ok) / span if span > 0 else 0.0
    wanted = {p.wamid: p for p in posted}
    mine = [r for r in received if r.get("wamid") in wanted]
    check.unverified = sum(1 for r in mine if not r["verified"])
    first: dict[str, dict[str, Any]] = {}
    seen_ids: dict[str, int] = defaultdict(int)
    for record in mine:
        seen_ids[record["webhook_id"]] += 1
        if record["verified"] and record["wamid"] not in first:
            first[record["wamid"]] = record
    check.received = len(first)
    check.lost = sorted({p.wamid for p in ok} - set(first))
    attempts = attempts or {}
    check.extra_receipts = sum(n - 1 for n in seen_ids.values())
    check.retries = sum(max(0, attempts.get(wid, 1) - 1) for wid in seen_ids)
    check.duplicates_beyond_retries = sum(
        max(0, n - max(1, attempts.get(wid, 1))) for wid, n in seen_ids.items()
    )
    lines: dict[str, list[int]] = defaultdict(list)
    for record in sorted(first.values(), key=lambda r: r["at"]):
        lines[str(record["conversation"])].append(int(record["sequence"] or 0))
    check.conversations = len(lines)
    for conversation, sequences in lines.items():
        if sequences != list(range(1, len(sequences) + 1)):
            check.order_broken.append(f"{conversation}: {sequences[:12]}")
    if first and ok:
        last = max(r["at"] for r in first.values())
        span = last - min(p.sent for p in ok)
        check.relay_rate = len(first) / span if span > 0 else 0.0
        check.drain_seconds = last - max(p.answered for p in ok)
        check.latency = spread([first[p.wamid]["at"] - p.answered for p in ok if p.wamid in first])
    return check


def stage_spreads(
    posted: list[Posted], received: list[dict[str, Any]], rows: dict[str, dict[str, float | None]]
) -> dict[str, dict[str, float]]:
    """Per stage of a message's way (see STAGES), p50/p95/max over the messages that have both ends."""
    arrived: dict[str, float] = {}
    for record in received:
        if record.get("verified") and record.get("wamid") and record["wamid"] not in arrived:
            arrived[record["wamid"]] = record["at"]
    points: dict[str, dict[str, float | None]] = {}
    for p in posted:
        points[p.wamid] = {
            "sent": p.sent,
            "answered": p.answered,
            **rows.get(p.wamid, {}),
            "bot": arrived.get(p.wamid),
        }
    result: dict[str, dict[str, float]] = {}
    for name, (since, until) in STAGES.items():
        values = [
            float(point[until]) - float(point[since])  # type: ignore[arg-type]
            for point in points.values()
            if point.get(since) is not None and point.get(until) is not None
        ]
        result[name] = spread(values)
    return result


# Stage: (from, to), each a point of a message's way.
STAGES: dict[str, tuple[str, str]] = {
    "POST sent -> 200 (the webhook stores the delivery and queues its task)": ("sent", "answered"),
    "stored -> its task picked by a worker": ("stored", "apply_task_started"),
    "task picked -> event applied (message and bot delivery written)": ("apply_task_started", "applied"),
    "event applied -> delivery task picked": ("applied", "deliver_task_started"),
    "delivery task picked -> row claimed, posting": ("deliver_task_started", "claimed"),
    "claimed -> bot's receipt (sign, connect, POST)": ("claimed", "bot"),
    "200 -> bot's receipt (end to end)": ("answered", "bot"),
}


def stage_rows(clinic_id: str, wamids: list[str]) -> dict[str, dict[str, float | None]]:
    """Per wamid, the times the rows keep (epoch seconds): the webhook delivery stored, the task that
    applied it picked, the bot delivery written (the event applied), its task picked, the row claimed.

    A task takes the oldest due row of the clinic, not always the one it was queued for: a task's
    start is attributed to the row it names, the usual case.
    """
    from django_tasks_db.models import DBTaskResult

    from messaging.models import BotDelivery
    from whatsapp.models import WebhookDelivery

    def ts(value: datetime | None) -> float | None:
        return None if value is None else value.timestamp()

    by_key = {hashlib.sha256(f"m:{w}".encode()).hexdigest(): w for w in wamids}
    rows: dict[str, dict[str, float | None]] = {w: {} for w in wamids}
    webhook_pk: dict[str, str] = {}
    for pk, key, received_at in WebhookDelivery.objects.filter(
        clinic_id=clinic_id, dedupe_key__in=list(by_key)
    ).values_list("pk", "dedupe_key", "received_at"):
        rows[by_key[key]]["stored"] = ts(received_at)
        webhook_pk[str(pk)] = by_key[key]
    bot_pk: dict[str, str] = {}
    for pk, wamid, created_at, first_attempt_at in BotDelivery.objects.filter(
        clinic_id=clinic_id, message__wamid__in=wamids
    ).values_list("pk", "message__wamid", "created_at", "first_attempt_at"):
        rows[wamid]["applied"] = ts(created_at)
        rows[wamid]["claimed"] = ts(first_attempt_at)
        bot_pk[str(pk)] = wamid
    for args_kwargs, task_path, started_at in DBTaskResult.objects.filter(
        task_path__in=[
            "whatsapp.deliveries.process_webhook_delivery",
            "messaging.outbox.deliver_to_bot",
        ]
    ).values_list("args_kwargs", "task_path", "started_at"):
        named = str((args_kwargs.get("kwargs") or {}).get("delivery_id", ""))
        if task_path.endswith("process_webhook_delivery") and named in webhook_pk:
            rows[webhook_pk[named]].setdefault("apply_task_started", ts(started_at))
        elif task_path.endswith("deliver_to_bot") and named in bot_pk:
            rows[bot_pk[named]].setdefault("deliver_task_started", ts(started_at))
    return rows


def worker_queries(target: Target) -> dict[str, dict[str, Any]]:
    """SQL statements of one message's two tasks, in-process (the task framework's own excluded).

    One delivery stored as the webhook does, then applied (`whatsapp_delivery_process`) and
    posted to the bot (`bot_delivery_attempt`), each under CaptureQueriesContext.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from messaging.models import BotDelivery
    from messaging.outbox import bot_delivery_attempt
    from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
    from whatsapp.models import WhatsAppAccount

    account = WhatsAppAccount.objects.get(clinic_id=target.clinic_id)
    message = patient_message(target, wa_id="50378000001", wamid="wamid.RELAYinprocess", text="Hola")
    counted: dict[str, dict[str, Any]] = {}
    with CaptureQueriesContext(connection) as ctx:
        stored = whatsapp_delivery_store(
            account=account, body=message.body.encode(), signed_with_clinic_secret=True
        )
    counted["the webhook stores the delivery (its transaction only)"] = _sql(ctx)
    if stored is None:
        raise RuntimeError("the in-process delivery was taken for a replay")
    with CaptureQueriesContext(connection) as ctx:
        whatsapp_delivery_process(delivery_id=str(stored.pk))
    counted["a worker applies it (message, bot delivery)"] = _sql(ctx)
    delivery = BotDelivery.objects.get(clinic_id=target.clinic_id, message__wamid=message.wamid)
    with CaptureQueriesContext(connection) as ctx:
        outcome = bot_delivery_attempt(delivery_id=delivery.pk)
    counted[f"a worker posts it to the bot ({outcome})"] = _sql(ctx)
    return counted


def _sql(ctx: Any) -> dict[str, Any]:
    return {"queries": len(ctx.captured_queries), "sql": [q["sql"][:200] for q in ctx.captured_queries]}


def attempts_by_webhook_id(clinic_id: str) -> dict[str, int]:
    from messaging.models import BotDelivery

    return dict(BotDelivery.objects.filter(clinic_id=clinic_id).values_list("webhook_id", "attempts"))


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    patients: int
    check: Check = field(default_factory=Check)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class RelayRun:
    started_at: str
    smoke: bool
    uptime_before: str = ""
    uptime_after: str = ""
    accept: dict[str, Any] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    goals: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: str = ""
    failures: list[str] = field(default_factory=list)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


class Bot:
    """The counting bot's process and its control API."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc, self.port = proc, port

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def distinct(self, prefix: str) -> int:
        """Distinct messages received with a verified signature whose wamid starts with `prefix`."""
        return int(self._get(f"/_bot/count?prefix={prefix}")["distinct"])

    def received(self) -> list[dict[str, Any]]:
        return list(self._get("/_bot/received"))


def wait_drained(bot: Bot, prefix: str, expected: int, workers: list[Proc]) -> None:
    """Until the bot received the `expected` messages of a phase, or none came for STALL_SECONDS."""
    last, last_change = -1, time.monotonic()
    while True:
        now_count = bot.distinct(prefix)
        if now_count >= expected:
            return
        if now_count != last:
            last, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            return
        if not all(w.alive() for w in workers):
            raise RuntimeError("a task worker died:\n" + "".join(w.tail() for w in workers))
        time.sleep(0.2)


def wait_tasks_done(workers: list[Proc], timeout: float = 300) -> None:
    """Until no task is left to run: the profiled workers start on an empty queue, not on the
    tasks left over from the last phase (a bot delivery's task whose row another task took)."""
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    deadline = time.monotonic() + timeout
    while DBTaskResult.objects.filter(status=TaskResultStatus.READY).exists():
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            return
        time.sleep(0.5)


def setup_clinic(target: Target, bot_url: str, secret_path: Path) -> str:
    """The clinic's bot on, its endpoint saved through the service (the secret written for the bot)."""
    from clinics.models import Clinic
    from messaging.bot_endpoint import bot_endpoint_save_url

    Clinic.objects.filter(pk=target.clinic_id).update(bot_enabled=True)
    saved = bot_endpoint_save_url(clinic_id=target.clinic_id, url=bot_url)
    if saved.new_secret is None:
        raise RuntimeError("the fresh database's clinic already had a bot secret")
    secret_path.write_text(saved.new_secret + "\n")
    return saved.new_secret


def drop_stored(clinic_id: str) -> int:
    """Forget the accept phase: its stored deliveries and every task (none has run: no worker yet).

    First until gunicorn answered what wrk left in flight: nothing new stored for a second.
    """
    from django_tasks_db.models import DBTaskResult

    from whatsapp.models import WebhookDelivery

    stored = -1
    while (now := WebhookDelivery.objects.filter(clinic_id=clinic_id).count()) != stored:
        stored = now
        time.sleep(1)
    deleted, _ = WebhookDelivery.objects.filter(clinic_id=clinic_id).delete()
    DBTaskResult.objects.all().delete()
    return deleted


def worker_argv(profile_to: Path | None = None) -> list[str]:
    """`manage.py run_worker` as production runs it (default poll interval), optionally under cProfile."""
    command = ["manage.py", "run_worker", "--queue-name", "default"]
    if profile_to is not None:
        return [PYTHON, "-m", "cProfile", "-o", str(profile_to), *command]
    return [PYTHON, *command]


def worker_profile(paths: list[Path]) -> str:
    """The task workers' cProfile, merged: cumulative time of the main stages, and the top own time."""
    found = [str(p) for p in paths if p.exists()]
    if not found:
        return "(no profile was written)"
    out = io.StringIO()
    stats = pstats.Stats(found[0], stream=out)
    for other in found[1:]:
        stats.add(other)
    stats.sort_stats("cumulative").print_stats(
        r"(db_worker\.py.*(run|run_task)|get_locked|claim|outbox\.py|deliveries\.py.*(process|_apply|_finish)|"
        r"relay\.py|services\.py.*apply|poster\.py.*post_to_bot|signing\.py|transaction\.py.*__exit__|"
        r"utils\.py.*_execute\b|sleep|fields\.py.*(encrypt|decrypt))",
        30,
    )
    out.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(20)
    site = str(Path(PYTHON).parent.parent) + "/lib/python3.11/site-packages/"
    lines = [
        ln.replace(str(ROOT) + "/", "").replace(site, "")
        for ln in out.getvalue().splitlines()
        if ln.strip() and not ln.lstrip().startswith(("Ordered by", "List reduced", "Random listing"))
    ]
    return "\n".join(lines)


def analyze_database() -> None:
    """Statistics for the planner, as autovacuum keeps them in a database in service.

    The throwaway database's tables were filled (and emptied) seconds ago; before
    autovacuum's first pass the planner takes them for a few rows and may read a
    backlog of thousands of tasks whole for each one it takes.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def run_phase(
    name: str,
    number: int,
    *,
    target: Target,
    port: int,
    bot: Bot,
    workers: list[Proc],
    rate: float,
    seconds: float,
    patients: int,
    tag: str,
) -> Phase:
    count = max(1, int(rate * seconds))
    phase = Phase(name, rate, seconds, min(patients, count))
    analyze_database()
    deliveries = phase_deliveries(target, phase=number, count=count, patients=patients, tag=tag)
    log(f"{name}: {count} deliveries at {rate:g}/s over {phase.patients} patients")
    posted = post_paced("127.0.0.1", port, f"/whatsapp/webhook/{target.clinic_id}/", deliveries, rate)
    wait_drained(bot, phase_prefix(tag, number), sum(1 for p in posted if p.status == 200), workers)
    received = bot.received()
    phase.check = check_phase(posted, received, attempts_by_webhook_id(target.clinic_id))
    rows = stage_rows(target.clinic_id, [p.wamid for p in posted])
    phase.stages = stage_spreads(posted, received, rows)
    c = phase.check
    log(
        f"  posted {c.accepted}/{c.posted} (200) at {c.post_rate:.1f}/s; bot got {c.received} "
        f"({c.relay_rate:.1f}/s end to end, drain {c.drain_seconds:.1f}s); lost {len(c.lost)}; "
        f"latency p50 {c.latency.get('p50_ms', 0):.0f} ms p95 {c.latency.get('p95_ms', 0):.0f} ms; "
        f"extra receipts {c.extra_receipts} (retries {c.retries}); order broken {len(c.order_broken)}"
    )
    return phase


def judge(run: RelayRun) -> None:
    """The goals of issue 20 against this run's numbers."""
    accept = float(run.accept.get("rps", 0.0))
    sustained = next((p for p in run.phases if p.name == "sustained"), None)
    if sustained is None:
        return
    c = sustained.check
    run.goals = {
        "relay_rate": {
            "goal": f">= {RELAY_GOAL_RPS:g} msg/s",
            "value": round(c.relay_rate, 1),
            "met": c.relay_rate >= RELAY_GOAL_RPS,
        },
        "relay_vs_accept": {
            "goal": f">= {RELAY_GOAL_RATIO}x the webhook's accept rate ({accept:.0f}/s)",
            "value": round(c.relay_rate / accept, 2) if accept else None,
            "met": bool(accept) and c.relay_rate >= RELAY_GOAL_RATIO * accept,
        },
        "posted_faster_than_goal": {
            "goal": f"deliveries posted faster than {RELAY_GOAL_RPS:g}/s",
            "value": round(c.post_rate, 1),
            "met": c.post_rate > RELAY_GOAL_RPS,
        },
    }
    for phase in run.phases:
        k = phase.check
        run.goals[f"{phase.name}: no loss"] = {"goal": "0 lost", "value": len(k.lost), "met": not k.lost}
        run.goals[f"{phase.name}: no duplicate beyond retries"] = {
            "goal": "0",
            "value": k.duplicates_beyond_retries,
            "met": k.duplicates_beyond_retries == 0,
        }
        run.goals[f"{phase.name}: sequence order"] = {
            "goal": "every conversation 1, 2, 3...",
            "value": len(k.order_broken),
            "met": not k.order_broken,
        }


def execute(args: argparse.Namespace) -> RelayRun:
    run = RelayRun(datetime.now(UTC).isoformat(timespec="seconds"), args.smoke)
    run.uptime_before = uptime()
    workdir = Path(tempfile.mkdtemp(prefix="clinics-relay-"))
    db = ThrowawayDatabase()
    procs: list[Proc] = []
    env = {
        # Nothing on the relay's path calls Meta: its address answers nothing.
        **app_env(db.url, "http://127.0.0.1:9/v26.0"),
        "BOT_URL_ALLOW_PRIVATE": "true",
        **dict(item.split("=", 1) for item in args.env),
    }
    log(f"relay: database {db.name}, workdir {workdir}")
    db.create()
    try:
        configure_django(env)
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        target = seed(10)
        bot_port = free_port()
        secret_path = workdir / "bot-secret"
        setup_clinic(target, f"http://127.0.0.1:{bot_port}/hook", secret_path)
        bot_proc = start(
            "bot",
            [PYTHON, "-m", "bench.counting_bot", "--port", str(bot_port), "--secret-file", str(secret_path)],
            env,
            workdir,
        )
        procs.append(bot_proc)
        bot = Bot(bot_proc, bot_port)
        wait_http(f"http://127.0.0.1:{bot_port}/_bot/count", bot_proc)
        from messaging.bot_endpoint import bot_endpoint_ping

        if not bot_endpoint_ping(clinic_id=target.clinic_id).live:
            raise RuntimeError("the counting bot did not answer the ping:\n" + bot_proc.tail())
        try:
            run.queries = worker_queries(target)
        except Exception:  # noqa: BLE001  (reported; the measured phases still run)
            run.failures.append("counting the SQL per message failed:\n" + traceback.format_exc())

        port = free_port()
        gunicorn = start("gunicorn", gunicorn_argv("clinics_project.wsgi", port), env, workdir)
        procs.append(gunicorn)
        wait_http(f"http://127.0.0.1:{port}/healthz/", gunicorn)
        tag = secrets.token_hex(3)

        # 1. The webhook alone, at saturation.
        accept_seconds = 2 if args.smoke else args.accept_seconds
        bodies = [
            (d.body, d.signature)
            for d in phase_deliveries(
                target, phase=0, count=2000 if args.smoke else 12_000, patients=500, tag=tag
            )
        ]
        script = lua.write(
            workdir,
            "webhook",
            lua.webhook_script(f"/whatsapp/webhook/{target.clinic_id}/", bodies, 2),
        )
        origin = f"http://127.0.0.1:{port}"
        run_wrk("warm", origin, script, 1, 16, 2, offset=len(bodies) // 2)
        log(f"accept: wrk -t2 -c16 for {accept_seconds}s, webhook alone (no task worker yet)")
        result = run_wrk("accept", origin, script, accept_seconds, 16, 2)
        run.accept = asdict(result)
        if not result.ok:
            run.failures.append(f"accept: {result.note or f'{result.non_2xx} non-2xx'}")
        run.accept["deleted_after"] = drop_stored(target.clinic_id)
        log(f"  {result.rps:.0f} signed POSTs answered a second (p50 {result.p50_ms:.1f} ms)")

        # 2 and 3. The relay: task workers on, steady rates.
        workers = [start(f"worker-{n}", worker_argv(), env, workdir) for n in range(TASK_WORKERS)]
        procs += workers

        def phase(name: str, number: int, rate: float, seconds: float, patients: int) -> Phase:
            return run_phase(
                name,
                number,
                target=target,
                port=port,
                bot=bot,
                workers=workers,
                rate=rate,
                seconds=seconds,
                patients=patients,
                tag=tag,
            )

        warm = phase("warm-up", 9, 10, 1, 10)
        if warm.check.lost:
            raise RuntimeError(
                "warm-up messages never reached the bot:\n" + "".join(w.tail() for w in workers)
            )
        short = 3.0 if args.smoke else 0.0
        run.phases.append(
            phase("latency", 1, args.latency_rate, short or args.latency_seconds, args.patients)
        )
        run.phases.append(phase("sustained", 2, args.rate, short or args.seconds, args.patients))
        judge(run)
        for proc in [gunicorn, bot_proc, *workers]:
            if not proc.alive():
                run.failures.append(f"{proc.name} died:\n{proc.tail()}")
        missed = [name for name, goal in run.goals.items() if not goal["met"]]
        if (missed or args.profile) and not args.smoke:
            log("profile: both task workers under cProfile during one more sustained window")
            wait_tasks_done(workers)
            for w in workers:
                w.stop()
            profiles = [workdir / f"worker-{n}.prof" for n in range(TASK_WORKERS)]
            workers = [
                start(f"profiled-{n}", worker_argv(profiles[n]), env, workdir, cwd=ROOT)
                for n in range(TASK_WORKERS)
            ]
            procs += workers
            profiled = phase("profiled", 3, args.rate, min(args.seconds, 15), args.patients)
            for w in workers:
                w.stop()
            run.profile = (
                f"Under cProfile the relay ran at {profiled.check.relay_rate:.1f} msg/s "
                f"(profiling slows it).\n\n" + worker_profile(profiles)
            )
    except Exception:  # noqa: BLE001  (any failure is reported and fails the run)
        run.failures.append(traceback.format_exc())
    finally:
        clean_up(procs, db, workdir, run.failures)
        run.uptime_after = uptime()
    return run


# --- report -----------------------------------------------------------------------------------


def _ms(s: dict[str, float]) -> str:
    return f"{s.get('p50_ms', 0):.0f} | {s.get('p95_ms', 0):.0f} | {s.get('max_ms', 0):.0f} | {s.get('n', 0)}"


def write_report(run: RelayRun, stem: str) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    data = asdict(run)
    (REPORTS / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str))
    accept = run.accept
    lines = [
        f"# Relay benchmark: Meta's webhook to the clinic's bot ({run.started_at})",
        "",
        "PostgreSQL (a throwaway database), our app under gunicorn (2 sync workers, ./gunicorn.conf.py), "
        f"{TASK_WORKERS} task workers (`manage.py run_worker --queue-name default`: django-tasks-db, polling "
        "every second when idle), the counting bot (`bench/counting_bot.py`: verifies the Standard Webhooks "
        "signature, answers 200) as the `live` endpoint of a clinic with its bot on, all on one 2-core machine "
        "shared with other work. Each delivery is one patient's text in Meta's shape (signed, unique wamid); "
        "each phase has patients of its own, taking turns.",
        "",
        f"Load before: `{run.uptime_before}`  ",
        f"Load after: `{run.uptime_after}`",
        "",
        "## Goals",
        "",
        "| goal | wanted | this run | |",
        "|---|---|---:|---|",
    ]
    for name, goal in run.goals.items():
        lines.append(
            f"| {name} | {goal['goal']} | {goal['value']} | {'met' if goal['met'] else '**missed**'} |"
        )
    lines += [
        "",
        "## The webhook alone",
        "",
        f"wrk -t2 -c16 for {accept.get('requests', 0) / accept['rps'] if accept.get('rps') else 0:.0f}s, before any "
        "task worker started, cycling through distinct signed deliveries: "
        f"**{accept.get('rps', 0):.0f} answered a second** (p50 {accept.get('p50_ms', 0):.1f} ms, "
        f"p99 {accept.get('p99_ms', 0):.1f} ms; {accept.get('non_2xx', 0)} non-2xx, "
        f"{accept.get('socket_errors', 0)} socket errors). The {accept.get('deleted_after', 0):,} deliveries it "
        "stored were deleted with their tasks before the relay phases.",
        "",
        "## The relay",
        "",
        "| phase | posted at | accepted (200) | bot got (distinct) | end to end rate | drain after the last 200 | "
        "lost | extra receipts / retries | conversations, order broken | 200 -> bot p50 / p95 / max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in run.phases:
        c = phase.check
        lat = c.latency
        lines.append(
            f"| {phase.name} ({phase.rate:g}/s for {phase.seconds:g}s, {phase.patients} patients) | "
            f"{c.post_rate:.1f}/s | {c.accepted}/{c.posted} | {c.received} | **{c.relay_rate:.1f}/s** | "
            f"{c.drain_seconds:.1f}s | {len(c.lost)} | {c.extra_receipts} / {c.retries} | "
            f"{c.conversations}, {len(c.order_broken)} | "
            f"{lat.get('p50_ms', 0):.0f} / {lat.get('p95_ms', 0):.0f} / {lat.get('max_ms', 0):.0f} |"
        )
    lines += [
        "",
        "End to end rate: distinct messages the bot received, divided by the time from the first POST "
        "sent to the last receipt (the drain included).",
        "",
        "## Where the time goes",
        "",
        "Per message, from the timestamps the rows keep (the webhook delivery's `received_at`; the "
        "`started_at` of the task named for it; the bot delivery's `created_at`, written with the event; "
        "the `started_at` of its delivery task; its `first_attempt_at`, taken right after the claim) and the "
        "poster's and the bot's clocks (the same machine). A task takes the clinic's oldest due row, not "
        "always the one it names; a task's start is attributed to the row it names.",
        "",
    ]
    for phase in run.phases:
        lines += [
            f"### {phase.name}",
            "",
            "| stage | p50 ms | p95 ms | max ms | messages |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {name} | {_ms(s)} |" for name, s in phase.stages.items()]
        lines.append("")
    lines += [
        "SQL statements per message, in-process (one message stored, applied and posted, each step under "
        "CaptureQueriesContext; the task framework's own statements, about 4 per task, come on top):",
        "",
    ]
    for step, info in run.queries.items():
        lines.append(f"- **{step}**: {info['queries']}")
        lines += [f"  - `{sql}`" for sql in info["sql"]]
    lines.append("")
    if run.profile:
        lines += ["## Profile of the task workers (cProfile, both merged)", "", "```", run.profile, "```", ""]
    problems = [
        f"{phase.name}: lost {', '.join(phase.check.lost[:20])}" for phase in run.phases if phase.check.lost
    ] + [
        f"{phase.name}: order broken in {'; '.join(phase.check.order_broken[:10])}"
        for phase in run.phases
        if phase.check.order_broken
    ]
    if problems or run.failures:
        lines += ["## Failures", ""] + [f"```\n{f}\n```" for f in [*problems, *run.failures]]
    path = REPORTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def failed(run: RelayRun) -> list[str]:
    """What makes the command exit 1: anything that failed to run, loss, duplicates, order broken."""
    found = list(run.failures)
    for phase in run.phases:
        c = phase.check
        if c.lost:
            found.append(f"{phase.name}: {len(c.lost)} lost")
        if c.duplicates_beyond_retries:
            found.append(f"{phase.name}: {c.duplicates_beyond_retries} duplicates beyond retries")
        if c.order_broken:
            found.append(f"{phase.name}: order broken in {len(c.order_broken)} conversations")
        if c.accepted < c.posted:
            found.append(f"{phase.name}: {c.posted - c.accepted} POSTs not answered 200")
    if not run.phases:
        found.append("no relay phase ran")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=100.0, help="sustained phase: deliveries a second (100)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="sustained phase: seconds (30)")
    parser.add_argument(
        "--latency-rate", type=float, default=20.0, help="latency phase: deliveries a second (20)"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="latency phase: seconds (30)")
    parser.add_argument("--accept-seconds", type=float, default=10.0, help="the webhook alone under wrk (10)")
    parser.add_argument("--patients", type=int, default=300, help="patients per phase, taking turns (300)")
    parser.add_argument(
        "--profile", action="store_true", help="profile the task workers even if every goal is met"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds of each phase: checks it works")
    parser.add_argument(
        "--name", default="", help="report name after the date (default relay, or relay-smoke)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="an environment variable for our app"
    )
    args = parser.parse_args(argv)
    if not Path(WRK).exists() or not Path(GUNICORN).exists():
        log("needs wrk (apt-get install -y wrk) and gunicorn")
        return 2
    if args.smoke:
        args.rate, args.latency_rate, args.patients = 40.0, 10.0, 20

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so the finally clauses stop the processes and drop the database

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    run = execute(args)
    stem = f"{run.started_at[:10]}-{args.name or ('relay-smoke' if args.smoke else 'relay')}"
    path = write_report(run, stem)
    log(f"report: {path} ({time.monotonic() - started:.0f}s)")
    for name, goal in run.goals.items():
        log(f"{name}: {goal['value']} (goal {goal['goal']}) {'ok' if goal['met'] else 'MISSED'}")
    problems = failed(run)
    for problem in problems:
        log("FAILED: " + (problem.splitlines()[0] if problem else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
