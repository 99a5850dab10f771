"""`python -m bench.stages`: where a token-authenticated read spends its time, stage by stage, in-process.

It answers "what stands in the way" with numbers from one process and one run: the
whole request through Django's test client, the token lookup through the ORM, the
same SQL sent by a plain cursor (what the database and the driver cost), and the
floor's `SELECT 1`. Each figure is the median of several batches of calls on a
throwaway PostgreSQL database seeded like the benchmark's; our settings as in
production, with the cache `CACHE_URL` names (Django's local memory without it).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import runner


def _per_call_us(call: Callable[[], Any], calls: int = 300, batches: int = 7) -> float:
    for _ in range(50):
        call()
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def measure() -> list[tuple[str, float]]:
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from clinics.authentication import ApiTokenAuthentication
    from clinics.models import ApiToken
    from clinics.selectors import api_token_for_key
    from whatsapp.models import WhatsAppAccount

    target = runner.seed(10)
    digest = ApiToken.hash_key(target.token)
    client = Client()
    authorization = f"Token {target.token}"
    joined = ApiToken.objects.select_related("user__clinic__whatsapp")

    def lookup() -> Any:
        return joined.get(digest=digest)

    with CaptureQueriesContext(connection) as captured:
        token = lookup()
    joined_sql = captured.captured_queries[-1]["sql"]
    clinic_id = token.user.clinic_id
    cache.set("bench:stages:token", token, 600)

    def by_cursor(sql: str) -> Callable[[], Any]:
        def run() -> Any:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()

        return run

    class Bare(APIView):
        """DRF alone: no authentication, no permission, a constant body (no URL resolving, no middleware)."""

        authentication_classes: list[type] = []
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Response:
            return Response({"status": "ok"})

    class WithToken(Bare):
        """The same, behind our token authentication."""

        permission_classes = [IsAuthenticated]
        authentication_classes = [ApiTokenAuthentication]

    factory = APIRequestFactory()
    bare, with_token = Bare.as_view(), WithToken.as_view()

    def drf(view: Callable[..., Any], authorization: str = "") -> Callable[[], Any]:
        def run() -> Any:
            response = view(factory.get("/", HTTP_AUTHORIZATION=authorization))
            response.render()
            assert response.status_code == 200, response.status_code  # noqa: S101
            return response

        return run

    runner.refresh_target(target)
    return [
        ("GET /healthz/ through our middleware (test client)", _per_call_us(lambda: client.get("/healthz/"))),
        (
            "GET /api/clinics/whatsapp/status/ (test client, whole request)",
            _per_call_us(
                lambda: client.get("/api/clinics/whatsapp/status/", headers={"authorization": authorization})
            ),
        ),
        (
            "GET /api/clinics/settings/ (test client, whole request)",
            _per_call_us(
                lambda: client.get("/api/clinics/settings/", headers={"authorization": authorization})
            ),
        ),
        ("DRF view, constant body, no authentication (request factory)", _per_call_us(drf(bare))),
        ("the same behind our token authentication", _per_call_us(drf(with_token, authorization))),
        (
            "our token lookup (clinics.selectors.api_token_for_key)",
            _per_call_us(lambda: api_token_for_key(target.token)),
        ),
        ("ORM: token + user + clinic + WhatsApp connection, select_related().get()", _per_call_us(lookup)),
        (
            "ORM: the connection alone, get()",
            _per_call_us(lambda: WhatsAppAccount.objects.get(clinic_id=clinic_id)),
        ),
        (
            "cache.get() of the token with its user, clinic and connection",
            _per_call_us(lambda: cache.get("bench:stages:token")),
        ),
        ("the same joined SQL, plain cursor (database + driver)", _per_call_us(by_cursor(joined_sql))),
        ("SELECT 1, plain cursor (the floor's query)", _per_call_us(by_cursor("SELECT 1"))),
    ]


def main() -> int:
    db = runner.ThrowawayDatabase()
    db.create()
    try:
        runner.configure_django(
            {
                "DJANGO_SETTINGS_MODULE": "clinics_project.settings",
                "DEBUG": "false",
                "SECURE_SSL_REDIRECT": "false",
                "SECRET_KEY": "bench-stages-not-secret-" + "x" * 40,
                "ALLOWED_HOSTS": "testserver",
                "FIELD_ENCRYPTION_KEYS": runner.new_key(),
                "DATABASE_URL": db.url,
                "CONN_MAX_AGE": "600",
                "META_GRAPH_URL": "http://127.0.0.1:9/v26.0",
                "META_GRAPH_ALLOW_ANY_HOST": "true",
                "LOG_LEVEL": "WARNING",
                **({"CACHE_URL": os.environ["CACHE_URL"]} if os.environ.get("CACHE_URL") else {}),
            }
        )
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        rows = measure()
    finally:
        db.drop()
    print("| stage | µs per call |")
    print("|---|---:|")
    for label, micros in rows:
        print(f"| {label} | {micros:.0f} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
