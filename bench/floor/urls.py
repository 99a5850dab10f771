from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path


def floor(request: HttpRequest) -> JsonResponse:
    """One round trip to the database and a small JSON body."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return JsonResponse({"status": "ok", "database": one == 1})


urlpatterns = [path("floor/", floor)]
