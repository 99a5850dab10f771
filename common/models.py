"""Models of the domain-free plumbing: the audit trail's rows (see `common.audit`) and the
background workers' heartbeats."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditChainHead(models.Model):
    """The newest row of one chain (one clinic, or the platform): locked while a row is appended.

    Locking this row, not the newest event, makes concurrent writers for one
    clinic queue for a moment instead of both linking to the same previous row.
    """

    chain = models.CharField(max_length=40, primary_key=True)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="")

    def __str__(self) -> str:
        return f"{self.chain} #{self.seq}"


class AuditEvent(models.Model):
    """One change, append-only: saved once, never updated or deleted by the product."""

    class Door(models.TextChoices):
        API = "api", _("API")
        PAGE = "page", _("settings page")
        ADMIN = "admin", _("admin")
        COMMAND = "command", _("command")
        WEBHOOK = "webhook", _("webhook")
        TASK = "task", _("task")

    # The chain: the clinic's id, or "platform" for changes that belong to no clinic.
    chain = models.CharField(_("chain"), max_length=40, editable=False)
    seq = models.PositiveBigIntegerField(_("sequence"), editable=False)
    # The tenant key (no import of the product above); indexed with `id` for newest-first pages.
    clinic_id = models.UUIDField(_("clinic"), null=True, blank=True, editable=False)
    at = models.DateTimeField(_("at"), editable=False)
    actor = models.CharField(_("actor"), max_length=254, editable=False)
    door = models.CharField(_("door"), max_length=10, choices=Door.choices, editable=False)
    action = models.CharField(_("action"), max_length=64, editable=False)
    changes = models.JSONField(_("changes"), default=dict, editable=False)
    address = models.CharField(_("client address"), max_length=64, blank=True, editable=False)
    request_id = models.CharField(_("request id"), max_length=64, blank=True, editable=False)
    prev_hash = models.CharField(_("previous hash"), max_length=64, editable=False)
    hash = models.CharField(_("hash"), max_length=64, editable=False)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ("-at", "-id")
        constraints = [models.UniqueConstraint(fields=("chain", "seq"), name="audit_event_chain_seq_unique")]
        indexes = [models.Index(fields=("clinic_id", "-id"), name="audit_event_clinic_newest")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise RuntimeError("Audit events are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise RuntimeError("Audit events are never deleted.")

    def change_lines(self) -> list[tuple[str, str]]:
        """Each change as (field, "before → after"), or its word ("changed") for a PIN."""
        lines = []
        for field, change in self.changes.items():
            if isinstance(change, list) and len(change) == 2:
                before, after = ("—" if value is None else str(value) for value in change)
                lines.append((field, f"{before} → {after}"))
            else:
                lines.append((field, str(change)))
        return lines


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
