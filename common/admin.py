"""The background queue's task results (django-tasks-db) in the admin, in the admin's language.

django-tasks-db registers its own read-only admin, but ships no Spanish and names three of
its columns with untranslatable strings. This registers the same admin again with those
three labels marked for translation; its rules (read-only, no add, no delete) are its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop
from django_tasks_db.admin import DBTaskResultAdmin
from django_tasks_db.models import DBTaskResult

from .models import WorkerHeartbeat

# django-tasks-db marks its field names for translation; naming them here keeps them in our
# catalog (makemessages reads only our code), where the admin finds their Spanish.
QUEUE_FIELD_NAMES = (
    gettext_noop("Task Result"),
    gettext_noop("Task Results"),
    gettext_noop("enqueued at"),
    gettext_noop("started at"),
    gettext_noop("finished at"),
    gettext_noop("args kwargs"),
    gettext_noop("priority"),
    gettext_noop("task path"),
    gettext_noop("worker id"),
    gettext_noop("queue name"),
    gettext_noop("backend name"),
    gettext_noop("run after"),
    gettext_noop("return value"),
    gettext_noop("exception class path"),
    gettext_noop("traceback"),
)


class TaskResultAdmin(DBTaskResultAdmin):
    @admin.display(description=_("task"))
    def task_name(self, obj: DBTaskResult[..., Any]) -> str:
        return obj.task_name

    @admin.display(description=_("traceback"))
    def formatted_traceback(self, obj: DBTaskResult[..., Any]) -> str:
        return super().formatted_traceback(obj)

    @admin.display(description=_("run after"))
    def display_run_after(self, obj: DBTaskResult[..., Any]) -> datetime | str:
        return super().display_run_after(obj)


admin.site.unregister(DBTaskResult)
admin.site.register(DBTaskResult, TaskResultAdmin)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin[WorkerHeartbeat]):
    """The background workers and when each was last seen: read-only (the workers write it)."""

    list_display = ("worker_id", "host", "pid", "started_at", "last_seen_at", "alive", "waiting_for")
    readonly_fields = ("worker_id", "host", "pid", "started_at", "last_seen_at", "waiting_for")

    @admin.display(description=_("alive"), boolean=True)
    def alive(self, obj: WorkerHeartbeat) -> bool:
        return obj.last_seen_at >= timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkerHeartbeat | None = None) -> bool:
        return False
