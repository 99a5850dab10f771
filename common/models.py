"""Models of the domain-free plumbing: the background workers' heartbeats."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class WorkerHeartbeat(models.Model):
    """One background worker (`manage.py run_worker`), written every few seconds while it lives.

    A worker whose row is older than `WORKER_STALE_SECONDS` is taken to be dead: the task it
    was running is taken again, and the health check and the health panel say no worker runs.
    """

    worker_id = models.CharField(_("worker id"), max_length=64, unique=True)
    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    started_at = models.DateTimeField(_("started at"))
    last_seen_at = models.DateTimeField(_("last seen at"), db_index=True)
    # "" while it works; the database error it is waiting out otherwise.
    waiting_for = models.CharField(_("waiting for"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("background worker")
        verbose_name_plural = _("background workers")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} ({self.worker_id})"
