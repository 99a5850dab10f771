"""Two gunicorn servers sharing PostgreSQL and Redis: limits hold in total, not per server."""

from __future__ import annotations

import re
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
AUTH_LIMIT = 10  # SIGN_IN_FAILURE_LIMIT's default
# Both servers stand behind one proxy (NUM_PROXIES=1) that appends each client's address.
ATTACKER = "203.0.113.66"
ADMIN_ADDRESS = "198.51.100.4"


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
            NUM_PROXIES="1",
        )
        _fake, fake_origin = processes.fake_graph(base)
        env = {**base, "META_GRAPH_URL": f"{fake_origin}/v26.0"}
        run_manage(env, "migrate", "--no-input")
        # Admin's login page needs the hashed static files production serves (whitenoise's manifest).
        run_manage(env, "collectstatic", "--no-input", "-v", "0")
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

    # 3. The sign-in limiter, alternating servers. The attacker spends the limit on made-up
    #    accounts (forging entries in front of the proxy's): locked in total, not per server.
    _flush()

    def sign_in(i: int, email: str, password: str, address: str, forged: str = "") -> int:
        return requests.post(
            f"{server(i)}/api/auth/token/",
            json={"email": email, "password": password},
            headers={"X-Forwarded-For": f"{forged}{address}"},
            timeout=10,
        ).status_code

    results = [
        sign_in(i, f"made-up-{i}@two.example", "wrong-password", ATTACKER, forged=f"10.1.1.{i}, ")
        for i in range(AUTH_LIMIT + 2)
    ]
    assert results == [400] * (AUTH_LIMIT - 1) + [429] * 3, results
    assert sign_in(1, ADMIN, PASSWORD, ATTACKER) == 429
    # The real admin, behind the same proxy, signs in at once on either server.
    assert sign_in(0, ADMIN, PASSWORD, ADMIN_ADDRESS) == 200
    assert sign_in(1, ADMIN, PASSWORD, ADMIN_ADDRESS) == 200

    # 4. One account guessed from many addresses, alternating admin's login on server A (the
    #    door that had no limit) and the API on server B: nothing locks the owner out.
    _flush()
    answers = []
    for i in range(2 * AUTH_LIMIT):
        address = f"192.0.2.{i + 1}"
        if i % 2:
            answers.append(sign_in(1, ADMIN, "wrong-password", address))
        else:
            answers.append(_admin_sign_in(servers[0], "wrong-password", address))
    # A wrong password on admin's page shows the form again (200); on the API it is 400.
    assert answers == [200, 400] * AUTH_LIMIT, answers
    assert sign_in(0, ADMIN, PASSWORD, ADMIN_ADDRESS) == 200
    assert sign_in(1, ADMIN, PASSWORD, ADMIN_ADDRESS) == 200

    # 5. The same account guessed from one address, alternating servers: that address is
    #    locked on both, the right password too; the owner elsewhere is not.
    _flush()
    answers = [sign_in(i, ADMIN, "wrong-password", ATTACKER) for i in range(AUTH_LIMIT)]
    assert answers == [400] * (AUTH_LIMIT - 1) + [429], answers
    assert sign_in(0, ADMIN, PASSWORD, ATTACKER) == 429
    assert _admin_sign_in(servers[1], PASSWORD, ATTACKER) == 429
    assert sign_in(1, ADMIN, PASSWORD, ADMIN_ADDRESS) == 200


def _admin_sign_in(origin: str, password: str, address: str) -> int:
    """Admin's login form as a browser behind the TLS proxy sends it (CSRF cookie and token, Origin)."""
    port = origin.rsplit(":", 1)[1]
    proxy = {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}
    form = requests.get(f"{origin}/admin/login/", headers=proxy, timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text[:500]
    answer = requests.post(
        f"{origin}/admin/login/",
        data={"username": ADMIN, "password": password, "csrfmiddlewaretoken": token.group(1)},
        headers={
            **proxy,
            # The CSRF cookie is Secure (https only): sent by hand over this plain-http hop.
            "Cookie": f"csrftoken={form.cookies['csrftoken']}",
            "Origin": f"https://127.0.0.1:{port}",
        },
        allow_redirects=False,
        timeout=10,
    )
    # A clinic admin is no superuser: admin refuses the right password with the form again (200).
    assert answer.status_code in (200, 429), answer.status_code
    return answer.status_code
