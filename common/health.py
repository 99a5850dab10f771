from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from .workers import worker_alive


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 once the database answers, else 503 (for the load balancer).

    With `?worker=1`, also 503 unless a background worker wrote its heartbeat within
    `WORKER_STALE_SECONDS` (for the monitor that restarts workers).
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        alive = worker_alive() if request.GET.get("worker") else None
    except DatabaseError:
        return JsonResponse({"status": "unavailable"}, status=503)
    if not request.GET.get("worker"):
        return JsonResponse({"status": "ok"})
    if alive is None:
        return JsonResponse({"status": "unavailable", "worker": "not running"}, status=503)
    seconds = round((timezone.now() - alive.last_seen_at).total_seconds(), 1)
    return JsonResponse({"status": "ok", "worker": "running", "last_seen_seconds_ago": seconds})
