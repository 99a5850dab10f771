"""Two gunicorn servers sharing PostgreSQL and Redis: limits hold in total, not per server."""

from __future__ import annotations

import secrets

import pytest
import redis
import requests

from .conftest import create_throwaway_database, product_env, run_manage

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REDIS_DB = 5
PASSWORD = "two-" + secrets.token_urlsafe(16)
ADMIN = "admin@two.example"
WABA = "102290129340398"
TOKEN = "EAATWO" + secrets.token_hex(30)
AUTH_LIMIT = 10  # THROTTLE_AUTH_RATE default: 10/min


def _flush() -> None:
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


@pytest.fixture
def two_servers(processes, tmp_path):
    db = create_throwaway_database("clinics_two", tmp_path, postgres=True)
    _flush()
    try:
        base = product_env(
            DATABASE_URL=db.url,
            CACHE_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
            WHATSAPP_STATUS_REFRESH_SECONDS="60",
            THROTTLE_AUTH_RATE=f"{AUTH_LIMIT}/min",
        )
        _fake, fake_origin = processes.fake_graph(base)
        env = {**base, "META_GRAPH_URL": f"{fake_origin}/v26.0"}
        run_manage(env, "migrate", "--no-input")
        run_manage(
            {**env, "CLINIC_USER_PASSWORD": PASSWORD}, "create_clinic", "Clínica Dos", "--admin-email", ADMIN
        )
        _a, origin_a = processes.gunicorn(env, name="gunicorn-a")
        _b, origin_b = processes.gunicorn(env, name="gunicorn-b")
        yield {"servers": [origin_a, origin_b], "fake": fake_origin}
    finally:
        processes.stop_all()
        _flush()
        db.drop()


def test_limits_hold_across_servers(two_servers):
    servers, fake = two_servers["servers"], two_servers["fake"]

    def server(i: int) -> str:
        return servers[i % 2]

    token = requests.post(
        f"{servers[0]}/api/auth/token/", json={"email": ADMIN, "password": PASSWORD}, timeout=10
    ).json()["token"]
    auth = {"Authorization": f"Token {token}"}
    pnid = requests.post(
        f"{fake}/_fake/numbers", json={"waba_id": WABA, "cc": "503", "phone_number": "77654321"}, timeout=5
    ).json()["id"]

    # 1. The status-refresh gate: a PENDING number keeps the clinic `verifying`, so every poll
    #    would ask Meta; 20 polls across both servers within the window -> Meta sees one GET.
    configured = requests.put(
        f"{servers[1]}/api/clinics/whatsapp/",
        json={"phoneNumberId": pnid, "businessAccountId": WABA, "accessToken": TOKEN},
        headers=auth,
        timeout=30,
    )
    assert configured.json()["status"] == "verifying", configured.text
    requests.delete(f"{fake}/_fake/requests", timeout=5)
    for i in range(20):
        polled = requests.get(f"{server(i)}/api/clinics/whatsapp/status/", headers=auth, timeout=30)
        assert polled.status_code == 200 and polled.json()["status"] == "verifying"
    gets = requests.get(
        f"{fake}/_fake/requests", params={"method": "GET", "path": f"/{pnid}$"}, timeout=5
    ).json()
    assert len(gets) == 1, gets

    # 2. The wrong-code limit: 8 wrong codes alternating servers -> Meta sees at most 5.
    registered = requests.post(
        f"{servers[0]}/api/clinics/whatsapp/register/",
        json={"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA},
        headers=auth,
        timeout=30,
    )
    assert registered.json() == {"status": "pending_otp"}, registered.text
    code = requests.get(f"{fake}/_fake/numbers/{pnid}/code", timeout=5).json()["code"]
    wrong = "000000" if code != "000000" else "111111"
    requests.delete(f"{fake}/_fake/requests", timeout=5)
    statuses = []
    for i in range(8):
        answer = requests.post(
            f"{server(i)}/api/clinics/whatsapp/verify/", json={"code": wrong}, headers=auth, timeout=30
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.json()["status"] == "pending_otp"
    assert statuses == [400] * 5 + [429] * 3, statuses
    verifies = requests.get(f"{fake}/_fake/requests", params={"path": "verify_code"}, timeout=5).json()
    assert len(verifies) == 5, verifies

    # 3. The sign-in throttle: alternating servers, 429 at the limit in total.
    _flush()
    results = []
    for i in range(AUTH_LIMIT + 2):
        answer = requests.post(
            f"{server(i)}/api/auth/token/", json={"email": ADMIN, "password": "wrong-password"}, timeout=10
        )
        results.append(answer.status_code)
    assert results[:AUTH_LIMIT] == [400] * AUTH_LIMIT, results
    assert results[AUTH_LIMIT:] == [429, 429], results
