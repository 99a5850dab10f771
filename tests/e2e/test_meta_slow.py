"""Page actions and API calls while Meta answers slowly and the task worker writes beside them.

Issue 17: a transaction held across Graph calls made SQLite refuse ("database is
locked": a 500 on the page, 503 in the API) after Meta had sent the code. Now an
action holds a lease on the connection instead, and SQLite runs in WAL with
immediate transactions and a busy timeout. Here the simulated Meta answers every
call in 3 s; 20 page actions and 60 API calls that call Meta run on several
clinics at once (a double click on "register" among them), webhook deliveries
arrive meanwhile, and `manage.py db_worker` applies them and runs the health
checks each new token queues. No answer is a 500 or a 503; on SQLite the server
runs as `scripts/run` starts it (runserver), on PostgreSQL under gunicorn.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from .conftest import MANAGE, PYTHON, create_throwaway_database, free_port, product_env, run_manage

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PASSWORD = "e2e-" + secrets.token_urlsafe(16)
ACCESS_TOKEN = "EAAE2E" + secrets.token_hex(40)
APP_SECRET = "e2e-app-secret-" + secrets.token_hex(8)
CODE = "123456"
META_SECONDS = 3.0
API_CLINICS = 6  # 10 API calls each
PAGE_CLINICS = 2  # 10 page actions each


@dataclass
class Tally:
    """Every answer the clients got, by door; the 409s that said another action was running."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    meta_calls: Counter[str] = field(default_factory=Counter)
    busy: int = 0
    failures: list[str] = field(default_factory=list)

    def note(self, door: str, what: str, response: requests.Response) -> requests.Response:
        with self.lock:
            self.statuses[(door, response.status_code)] += 1
            if door in ("api", "page"):
                self.meta_calls[door] += 1
            if response.status_code >= 500:
                self.failures.append(f"{door} {what}: {response.status_code} {response.text[:300]}")
            if response.status_code == 409 and "in progress" in response.text:
                self.busy += 1
        return response


@dataclass
class Clinic:
    index: int
    id: str
    admin: str
    waba: str
    pnid: str = ""
    number: str = ""


# The clinics and their admins, made by the product's own services in one process.
CREATE_CLINICS = """
import os
from clinics import services
for i in range(int(os.environ["E2E_CLINICS"])):
    clinic = services.clinic_create(name=f"Clínica {i}")
    services.clinic_add_user(
        clinic=clinic, email=f"admin{i}@e2e.example", password=os.environ["E2E_PASSWORD"], role="admin"
    )
    print(f"id: {clinic.pk}")
"""


def _create_clinics(env: dict[str, str], fake: str, count: int) -> list[Clinic]:
    created = run_manage(
        {**env, "E2E_CLINICS": str(count), "E2E_PASSWORD": PASSWORD}, "shell", "-c", CREATE_CLINICS
    )
    ids = [line.split(":", 1)[1].strip() for line in created.stdout.splitlines() if line.startswith("id:")]
    assert len(ids) == count, created.stdout
    clinics = []
    for i, clinic_id in enumerate(ids):
        clinic = Clinic(index=i, id=clinic_id, admin=f"admin{i}@e2e.example", waba=f"1022901293403{i:02d}")
        number = requests.post(
            f"{fake}/_fake/numbers",
            json={
                "waba_id": clinic.waba,
                "cc": "503",
                "phone_number": f"776543{i:02d}",
                "verified_name": "E2E",
            },
            timeout=5,
        ).json()
        clinic.pnid, clinic.number = number["id"], f"+503776543{i:02d}"
        clinics.append(clinic)
    return clinics


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def stack(request, processes, tmp_path):
    db = create_throwaway_database("clinics_slow", tmp_path, postgres=request.param == "postgres")
    try:
        base = product_env(DATABASE_URL=db.url, LOG_LEVEL="INFO", SIGN_IN_FAILURE_LIMIT="1000")
        _fake, fake = processes.fake_graph(base)
        env = {**base, "META_GRAPH_URL": f"{fake}/v26.0"}
        run_manage(env, "migrate", "--no-input")
        # The pages' static files, as a deployment (or `scripts/run`'s DEBUG) has them.
        run_manage(env, "collectstatic", "--no-input", "-v", "0")
        clinics = _create_clinics(env, fake, API_CLINICS + PAGE_CLINICS)
        if request.param == "sqlite":
            port = free_port()
            server = processes.start(
                "runserver", [PYTHON, MANAGE, "runserver", "--noreload", f"127.0.0.1:{port}"], env
            )
            origin = f"http://127.0.0.1:{port}"
            server.wait_ready(f"{origin}/healthz/")
        else:
            # Enough threads for the clients below: each request waits seconds on Meta.
            server, origin = processes.gunicorn({**env, "GUNICORN_CMD_ARGS": "--threads 12"}, workers=2)
        worker = processes.worker(env)
        assert requests.post(f"{fake}/_fake/settings", json={"code": CODE}, timeout=5).ok
        # From here on, Meta answers every call in 3 s.
        fault = {"kind": "delay", "seconds": META_SECONDS, "times": 100000, "method": "*", "path": ""}
        assert requests.post(f"{fake}/_fake/faults", json=fault, timeout=5).ok
        yield {"origin": origin, "fake": fake, "clinics": clinics, "server": server, "worker": worker}
    finally:
        processes.stop_all()
        db.drop()


# --- the two doors ---------------------------------------------------------------------------------


def _api_session(origin: str, clinic: Clinic) -> requests.Session:
    session = requests.Session()
    answer = session.post(
        f"{origin}/api/auth/token/", json={"email": clinic.admin, "password": PASSWORD}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    session.headers["Authorization"] = f"Token {answer.json()['token']}"
    session.headers["Accept-Language"] = "en"
    return session


class Page:
    """A browser on the settings page behind the TLS proxy: session and CSRF cookies, the form's token."""

    def __init__(self, origin: str, clinic: Clinic) -> None:
        self.origin = origin
        self.cookies: dict[str, str] = {}
        self.headers = {"X-Forwarded-Proto": "https", "Origin": f"https://{origin.split('://')[1]}"}
        self.headers["Accept-Language"] = "en"
        form = self._send("GET", "/accounts/login/")
        self._send(
            "POST",
            "/accounts/login/",
            {"username": clinic.admin, "password": PASSWORD, "csrfmiddlewaretoken": self._token(form)},
        )
        assert "sessionid" in self.cookies

    def _send(self, method: str, path: str, data: dict[str, str] | None = None) -> requests.Response:
        # The cookies are Secure (https only): sent by hand over this plain-http hop.
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = requests.request(
            method,
            self.origin + path,
            data=data,
            headers={**self.headers, "Cookie": cookie},
            allow_redirects=False,
            timeout=60,
        )
        self.cookies.update(response.cookies.get_dict())
        return response

    @staticmethod
    def _token(response: requests.Response) -> str:
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text)
        assert found is not None, response.text[:500]
        return found.group(1)

    def act(self, path: str, data: dict[str, str]) -> requests.Response:
        """POST one of the page's forms, as the page itself renders it (a fresh CSRF token)."""
        page = self._send("GET", "/settings/")
        assert page.status_code == 200, page.status_code
        return self._send("POST", path, {**data, "csrfmiddlewaretoken": self._token(page)})


# --- what each clinic does ---------------------------------------------------------------------------


def _api_clinic(origin: str, clinic: Clinic, tally: Tally) -> None:
    """10 API calls that call Meta: configure, register (double-clicked) and verify, then twice
    deregister, register and verify."""
    session = _api_session(origin, clinic)

    def call(what: str, method: str, path: str, body: dict | None = None) -> requests.Response:
        response = session.request(method, f"{origin}/api/clinics/whatsapp/{path}", json=body, timeout=60)
        return tally.note("api", what, response)

    call(
        "configure",
        "PUT",
        "",
        {
            "phoneNumberId": clinic.pnid,
            "businessAccountId": clinic.waba,
            "accessToken": ACCESS_TOKEN,
            "verifyToken": "e2e-verify",
            "appSecret": APP_SECRET,
        },
    )
    register = {"phone": clinic.number, "otpMethod": "sms", "wabaId": clinic.waba}
    with ThreadPoolExecutor(2) as double_click:
        list(double_click.map(lambda _: call("register", "POST", "register/", register), range(2)))
    call("verify", "POST", "verify/", {"code": CODE})
    for _round in range(2):
        call("deregister", "DELETE", "")
        call("register", "POST", "register/", register)
        call("verify", "POST", "verify/", {"code": CODE})


def _page_clinic(origin: str, clinic: Clinic, tally: Tally) -> None:
    """10 page actions that call Meta: (register, verify, check, deregister) twice, register and verify."""
    page = Page(origin, clinic)

    def act(what: str, data: dict[str, str]) -> None:
        tally.note("page", what, page.act(f"/settings/whatsapp/{what}/", data))

    steps = [
        (
            "register",
            {
                "number": clinic.number,
                "otp_method": "sms",
                "business_account_id": clinic.waba,
                "access_token": ACCESS_TOKEN,
            },
        ),
        ("verify", {"code": CODE}),
        ("check", {}),
        ("deregister", {"confirmation": clinic.number}),
    ]
    for what, data in (steps * 3)[:10]:
        act(what, data)


def _webhooks(origin: str, clinics: list[Clinic], tally: Tally, stop: threading.Event) -> None:
    """Meta's deliveries, arriving all along: the worker applies them under the connection's lease."""
    n = 0
    while not stop.is_set():
        for clinic in clinics:
            n += 1
            payload = {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": clinic.waba,
                        "time": 1748454394 + n,
                        "changes": [
                            {
                                "field": "phone_number_quality_update",
                                "value": {
                                    "display_phone_number": clinic.number.lstrip("+"),
                                    "event": "THROUGHPUT_UPGRADE",
                                    "current_limit": "TIER_1K",
                                },
                            }
                        ],
                    }
                ],
            }
            body = json.dumps(payload).encode("ascii")
            signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            tally.note(
                "webhook",
                "delivery",
                requests.post(
                    f"{origin}/whatsapp/webhook/{clinic.id}/",
                    data=body,
                    headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
                    timeout=30,
                ),
            )
        stop.wait(1.0)


def test_slow_meta_and_a_busy_worker_give_no_500_and_no_503(stack):
    origin, clinics = stack["origin"], stack["clinics"]
    tally = Tally()
    stop = threading.Event()
    started = time.monotonic()
    with ThreadPoolExecutor(API_CLINICS + PAGE_CLINICS + 1) as pool:
        webhooks = pool.submit(_webhooks, origin, clinics[:API_CLINICS], tally, stop)
        jobs = [pool.submit(_api_clinic, origin, clinic, tally) for clinic in clinics[:API_CLINICS]]
        jobs += [pool.submit(_page_clinic, origin, clinic, tally) for clinic in clinics[API_CLINICS:]]
        try:
            for job in jobs:
                job.result()
        finally:
            stop.set()
        webhooks.result()
    elapsed = time.monotonic() - started
    print(f"{dict(tally.statuses)} busy={tally.busy} in {elapsed:.0f} s")

    assert tally.meta_calls == {"api": 10 * API_CLINICS, "page": 10 * PAGE_CLINICS}
    assert tally.failures == []
    logs = stack["server"].log() + stack["worker"].log()
    assert "database is locked" not in logs
    assert "Traceback" not in logs
    # The actions went through: every page action answered with the page (a redirect back
    # to it with its message), and the API's (all but a double click's second) succeeded.
    assert tally.statuses[("page", 302)] == 10 * PAGE_CLINICS
    assert tally.statuses[("api", 200)] >= 9 * API_CLINICS
    # Each clinic ended where its last action left it: verified, so active.
    for clinic in clinics:
        status = _api_session(origin, clinic).get(f"{origin}/api/clinics/whatsapp/status/", timeout=60)
        assert status.json()["status"] == "active", (clinic.index, status.json())
    # The worker asked Meta too meanwhile: the health checks each new token queued.
    checks = requests.get(f"{stack['fake']}/_fake/requests", params={"path": "debug_token"}, timeout=5).json()
    assert checks, "no health check ran"
    # The double click: the second register met the first one's lease.
    assert tally.busy >= 1
    # The worker applied Meta's deliveries meanwhile (each answered at once).
    assert tally.statuses[("webhook", 200)] >= len(clinics[:API_CLINICS])
