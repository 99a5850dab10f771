"""The background queue's task results (django-tasks-db) in the admin, in the admin's language.

django-tasks-db registers its own read-only admin, but ships no Spanish, names three of
its columns with untranslatable strings, calls its app "Tasks Database Backend" and its
rows "DBTaskResult object". This registers the same admin again with those labels marked
for translation and each row named by its task and state; its rules (read-only, no add,
no delete) are its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop, pgettext_lazy
from django.utils.translation import gettext_lazy as _
from django_tasks.base import TaskResultStatus
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
# The task states, as django-tasks names them (context "Task"): kept in our catalog for the same reason.
TASK_STATES = (
    pgettext_lazy("Task", "Ready"),
    pgettext_lazy("Task", "Running"),
    pgettext_lazy("Task", "Failed"),
    pgettext_lazy("Task", "Successful"),
)

# The app's name on the admin index and breadcrumbs; the package's own is a fixed English string.
apps.get_app_config("django_tasks_database").verbose_name = _("Background tasks")


def task_result_title(obj: DBTaskResult[Any, Any]) -> str:
    """A row as a person reads it: `whatsapp.tasks.run_health_check · Successful`, not `DBTaskResult object`."""
    return f"{obj.task_name} · {TaskResultStatus(obj.status).label}"


class TaskResultAdmin(DBTaskResultAdmin):
    # The pages' breadcrumbs name the row by its title too (templates/admin/task_result_*.html).
    change_form_template = "admin/task_result_change_form.html"
    object_history_template = "admin/task_result_object_history.html"

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if obj is not None:
            title = task_result_title(obj)
            extra_context = {
                **(extra_context or {}),
                "title": gettext("Change history: %s") % title,
                "task_title": title,
            }
        return super().history_view(request, object_id, extra_context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: DBTaskResult[Any, Any] | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["subtitle"] = task_result_title(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

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
