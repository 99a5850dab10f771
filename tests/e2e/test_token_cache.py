"""Two gunicorn servers sharing the database and Redis: a token ended anywhere is refused everywhere at once.

Both servers keep API tokens in the shared cache (clinics.token_cache). A sign-out on
one server, and a deactivation or a password change made by another process (an
operator's `manage.py`), must end access at the very next request on the other.
SQLite by default; PostgreSQL when DATABASE_URL names it.
"""

from __future__ import annotations

import secrets

import pytest
import redis
import requests

from .conftest import create_throwaway_database, product_env, run_manage, seed_clinic

pytestmark = [pytest.mark.e2e]

REDIS_DB = 9  # this module's own
ADMIN = "admin@tokens.example"
PASSWORD = "tok-" + secrets.token_urlsafe(16)
SETTINGS = "/api/clinics/settings/"


def _flush() -> None:
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


def _cached_tokens() -> int:
    return len(redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).keys("*clinics:api-token:*"))


@pytest.fixture
def two_servers(processes, tmp_path):
    db = create_throwaway_database("clinics_tokens", tmp_path)
    _flush()
    try:
        env = product_env(DATABASE_URL=db.url, CACHE_URL=f"redis://127.0.0.1:6379/{REDIS_DB}")
        seed_clinic(env, "Clínica Fichas", admin=ADMIN, password=PASSWORD)
        _a, origin_a = processes.gunicorn(env, name="gunicorn-a")
        _b, origin_b = processes.gunicorn(env, name="gunicorn-b")
        yield {"a": origin_a, "b": origin_b, "env": env}
    finally:
        processes.stop_all()
        _flush()
        db.drop()


def _sign_in(origin: str, password: str = PASSWORD) -> dict[str, str]:
    answer = requests.post(
        f"{origin}/api/auth/token/", json={"email": ADMIN, "password": password}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Token {answer.json()['token']}"}


def _read(origin: str, auth: dict[str, str]) -> int:
    return requests.get(f"{origin}{SETTINGS}", headers=auth, timeout=10).status_code


def _kept_by_both(servers: dict[str, str], auth: dict[str, str]) -> None:
    # The first read records the token's use (dropping any copy); the next ones keep and use it.
    assert [_read(servers["a"], auth), _read(servers["b"], auth), _read(servers["a"], auth)] == [200] * 3
    assert _cached_tokens() >= 1


def _as_operator(env: dict[str, str], code: str) -> None:
    run_manage(
        env,
        "shell",
        "-c",
        f"from clinics.models import User; user = User.objects.get(email={ADMIN!r}); {code}; user.save()",
    )


def test_a_token_ended_anywhere_is_refused_everywhere_at_once(two_servers):
    servers, env = two_servers, two_servers["env"]

    # 1. A sign-out on B ends the token A keeps in the cache.
    auth = _sign_in(servers["a"])
    _kept_by_both(servers, auth)
    assert requests.post(f"{servers['b']}/api/auth/logout/", headers=auth, timeout=10).status_code == 204
    assert [_read(servers["a"], auth), _read(servers["b"], auth)] == [401, 401]

    # 2. A deactivation by another process ends it on both servers.
    auth = _sign_in(servers["b"])
    _kept_by_both(servers, auth)
    _as_operator(env, "user.is_active = False")
    assert [_read(servers["a"], auth), _read(servers["b"], auth)] == [401, 401]

    # 3. So does a password change; the new password signs in.
    _as_operator(env, "user.is_active = True")
    auth = _sign_in(servers["a"])
    _kept_by_both(servers, auth)
    _as_operator(env, "user.set_password('a-new-password-0123')")
    assert [_read(servers["a"], auth), _read(servers["b"], auth)] == [401, 401]
    assert _read(servers["b"], _sign_in(servers["b"], "a-new-password-0123")) == 200
