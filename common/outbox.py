"""Outboxes: work written as a row in the transaction of a change, then taken by a worker.

Webhook deliveries, the warning e-mails to a clinic's admins, the deliveries to bots (and
next the sends to Meta) are each an outbox: a model with the fields of `OutboxRow` and one
task that works one row. The loop around the work is written once, here:

* `Outbox.enqueue(row)` queues the row's task in the caller's transaction and leases the
  row to the queue: a worker should have taken it by the time the lease ends;
* `Outbox.claim(pk)` takes the row with a conditional UPDATE - waiting (queued or
  retrying), or processing under a lease that ran out (its worker died) - counts the
  attempt and holds it for a lease; two workers never both take it. An outbox whose
  rows belong to tenants (`tenant="clinic"`) takes work tenant by tenant: a task takes
  the oldest row that is due of the next tenant in turn, which need not be its own row
  (a task is a turn of work, the row it names one that is waiting), so one tenant's
  backlog delays another's row by one piece of work per busy tenant, not by the backlog;
* `Outbox.claim_batch(pk, limit)` takes up to `limit` due rows of the tenant in turn at
  once (rows locked and skipped by other workers where the database can, else one
  conditional UPDATE each): a worker that talks to one remote service per tenant (the
  sends to Meta) then pays for the choice and the claim once per batch, not per row;
* `Outbox.renew(row)` extends the lease of a long piece of work, `Outbox.hand_over(row)`
  queues the rest of it as a new task behind whatever else is queued;
* `Outbox.defer(row, delay)` puts it back to wait (a pace to keep) without counting the attempt;
* `Outbox.succeed(row)` marks it done; `Outbox.fail(row, error)` records the error and
  retries after `common.tasks.retry_delay(attempts)`, or gives up (failed) after
  `TASK_RETRY_ATTEMPTS`; an outbox with its own schedule passes `retry_at` or `give_up`;
* an outbox whose rows form lines (`lane="conversation"`) works each line one row at a
  time, oldest first: a row is taken only when no older row of its line is unfinished
  (queued, processing or retrying; a failed one no longer holds the line), and when a
  row leaves the loop the next of its line is queued at once;
* `Outbox.requeue_stalled()` (run every few minutes) queues again each unfinished row
  whose lease ran out: a task lost on the way, a worker that died mid-work. It claims
  each with a conditional UPDATE, so sweeps on several machines queue it once.

A row is worked at least once; the work itself makes a repeat harmless (a marker per
event applied, a sent timestamp checked under the claim).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_tasks.base import Task

from .tasks import enqueue_after, retry_delay

logger = logging.getLogger(__name__)


class OutboxState(models.TextChoices):
    QUEUED = "queued", _("Queued")
    PROCESSING = "processing", _("Processing")
    RETRYING = "retrying", _("Failed, will retry")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


# Waiting for a worker, being worked, or waiting to be retried: a sweep looks at these.
UNFINISHED = (OutboxState.QUEUED, OutboxState.PROCESSING, OutboxState.RETRYING)
WAITING = (OutboxState.QUEUED, OutboxState.RETRYING)
# The longest error text kept on a row.
ERROR_LENGTH = 2000


class OutboxRow(models.Model):
    """The fields the loop reads and writes; an outbox's model adds its own (and an index on
    `state, lease_expires_at` for the sweep; with tenants, one on `tenant, oldest_first, id`
    over the unfinished rows for the claim)."""

    state = models.CharField(
        _("processing state"), max_length=12, choices=OutboxState.choices, default=OutboxState.QUEUED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    # Until then the row is taken to be in a worker's hands (or the queue's); after it, the sweep
    # queues it again.
    lease_expires_at = models.DateTimeField(_("held by a worker until"), null=True, blank=True)

    class Meta:
        abstract = True


R = TypeVar("R", bound=OutboxRow)


def _task_arg(pk: Any) -> Any:
    """A primary key as a task argument: an int stays an int, anything else (a UUID) is a string."""
    return pk if isinstance(pk, int) else str(pk)


@dataclass(frozen=True)
class Outbox(Generic[R]):
    """One outbox: its model, the task that works one row (given the row's id as `row_arg`) and
    how long a worker holds a row."""

    model: type[R]
    task: Task[..., Any]
    row_arg: str
    lease: Callable[[], timedelta]
    # The foreign key naming a row's tenant (work is then taken tenant by tenant), and the
    # field that orders one tenant's rows, oldest first.
    tenant: str | None = None
    oldest_first: str = "pk"
    # The foreign key naming a row's line: one row of a line at a time, in `oldest_first` order.
    lane: str | None = None
    # The tenant this process served last: the next claim starts after it (round robin).
    _turn: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def _rows(self) -> models.QuerySet[R]:
        return self.model._default_manager.all()

    def _enqueue_task(self, pk: Any, delay: timedelta = timedelta(0), **task_kwargs: Any) -> None:
        enqueue_after(self.task, delay, **{self.row_arg: _task_arg(pk)}, **task_kwargs)

    def enqueue(self, row: R, **task_kwargs: Any) -> None:
        """Queue the row's task, in the caller's transaction, with the row leased to the queue.

        With the database task backend both are committed with the row, or neither is.
        """
        row.lease_expires_at = timezone.now() + self.lease()
        self._rows().filter(pk=row.pk).update(lease_expires_at=row.lease_expires_at)
        self._enqueue_task(row.pk, **task_kwargs)

    def claim(self, pk: Any, *, continuation: bool = False) -> R | None:
        """Take a row for this worker: the one named, or with tenants the one whose turn it is.

        None when there is nothing to take (the row is done, given up, or another worker
        holds it, and no other row is due). A continuation (`hand_over`) takes its own
        row, still processing, and goes on with the attempt it continues; a row that went
        back to the queue meanwhile (its worker died and a sweep queued it again) is taken
        as a new attempt. Anything else counts a new attempt.
        """
        if continuation:
            row = self._take(pk, continuation=True)
            if row is not None:
                return row
            return self._take(pk, continuation=False)
        if self.tenant is not None:
            # A few tries: another worker may take the row chosen between the choice and the claim.
            for _try in range(3):
                chosen = self._next_in_turn()
                if chosen is None:
                    break
                row = self._take(chosen, continuation=False)
                if row is not None:
                    self._turn["last"] = getattr(row, self._tenant_attname())
                    return row
        return self._take(pk, continuation=False)

    def _tenant_attname(self) -> str:
        """The tenant's column (`clinic_id` for `clinic`): rows are compared by it, never loaded."""
        return self._attname(self.tenant)

    def _attname(self, name: str | None) -> str:
        found = self.model._meta.get_field(name or "")
        if not isinstance(found, models.Field):
            raise TypeError(f"{self.model.__name__}.{name} is not a field of its own.")
        return found.attname

    def _heads(self) -> Q:
        """Rows that head their line (no older unfinished row in it); every row without lanes."""
        if self.lane is None:
            return Q()
        lane, order = self._attname(self.lane), self.oldest_first
        older_unfinished = self._rows().filter(
            Q(**{f"{order}__lt": OuterRef(order)}) | Q(**{order: OuterRef(order), "pk__lt": OuterRef("pk")}),
            **{lane: OuterRef(lane)},
            state__in=UNFINISHED,
        )
        return ~Q(Exists(older_unfinished))

    def _queue_next_in_lane(self, row: R) -> None:
        """A row left the loop: its line's next waiting row is queued now, not at the next sweep."""
        if self.lane is None:
            return
        lane = self._attname(self.lane)
        line = getattr(row, lane)
        if line is None:
            return
        following = (
            self._rows()
            .filter(self._heads(), **{lane: line}, state=OutboxState.QUEUED)
            .order_by(self.oldest_first, "pk")
            .values_list("pk", flat=True)
            .first()
        )
        if following is not None:
            self._enqueue_task(following)

    def _due(self) -> models.QuerySet[R]:
        """Rows a worker may take now: waiting and due, or held under a lease that ran out."""
        now = timezone.now()
        return self._rows().filter(
            Q(state=OutboxState.QUEUED)
            | Q(state=OutboxState.RETRYING, next_attempt_at__lte=now)
            | Q(state=OutboxState.PROCESSING, lease_expires_at__lt=now),
            self._heads(),
        )

    def _tenant_in_turn(self) -> Any:
        """The first tenant after the one served last (wrapping round) that has a due row."""
        tenant = self._tenant_attname()
        # The smallest tenant id (after the last one served) among the due rows: no DISTINCT,
        # so with an index on (tenant, oldest_first) over unfinished rows the database stops at
        # the first due row instead of reading every queued one.
        tenants = self._due().order_by(tenant).values_list(tenant, flat=True)
        last = self._turn.get("last")
        following = tenants.filter(**{f"{tenant}__gt": last}).first() if last is not None else None
        return following if following is not None else tenants.first()

    def _next_in_turn(self) -> Any:
        """The oldest due row of the first tenant after the one served last (wrapping round)."""
        turn = self._tenant_in_turn()
        if turn is None:
            return None
        return (
            self._due()
            .filter(**{self._tenant_attname(): turn})
            .order_by(self.oldest_first, "pk")
            .values_list("pk", flat=True)
            .first()
        )

    def claim_batch(self, pk: Any, *, limit: int) -> list[R]:
        """Take up to `limit` due rows of the tenant whose turn it is, oldest first (see `claim`).

        Each row counts an attempt, as `claim` does. Without tenants, or when no tenant has
        a due row, it is `claim` of the row named (a list of one, or empty).
        """
        if self.tenant is not None and limit > 1:
            turn = self._tenant_in_turn()
            if turn is not None:
                rows = self._take_due_of(turn, limit)
                if rows:
                    self._turn["last"] = turn
                    return rows
        row = self.claim(pk)
        return [row] if row is not None else []

    def _take_due_of(self, turn: Any, limit: int) -> list[R]:
        """Claim up to `limit` of the tenant's due rows, oldest first; those another worker took are left."""
        due = self._due().filter(**{self._tenant_attname(): turn}).order_by(self.oldest_first, "pk")
        if not connection.features.has_select_for_update_skip_locked:
            # One conditional UPDATE each (SQLite): a row another worker took is simply not ours.
            taken = (self._take(pk, continuation=False) for pk in due.values_list("pk", flat=True)[:limit])
            return [row for row in taken if row is not None]
        now = timezone.now()
        with transaction.atomic():
            # Locked until this transaction ends; rows other workers hold locked are skipped.
            pks = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if not pks:
                return []
            self._rows().filter(pk__in=pks).update(
                state=OutboxState.PROCESSING,
                lease_expires_at=now + self.lease(),
                next_attempt_at=None,
                attempts=F("attempts") + 1,
            )
            return list(self._rows().filter(pk__in=pks).order_by(self.oldest_first, "pk"))

    def _take(self, pk: Any, *, continuation: bool) -> R | None:
        """The conditional UPDATE that claims one row (see `claim`)."""
        now = timezone.now()
        if continuation:
            takeable = Q(state=OutboxState.PROCESSING)
        else:
            takeable = Q(state__in=WAITING) | Q(state=OutboxState.PROCESSING, lease_expires_at__lt=now)
        changes: dict[str, Any] = {
            "state": OutboxState.PROCESSING,
            "lease_expires_at": now + self.lease(),
            "next_attempt_at": None,
        }
        if not continuation:
            changes["attempts"] = F("attempts") + 1
        with transaction.atomic():
            if not self._rows().filter(takeable, self._heads(), pk=pk).update(**changes):
                return None
            return self._rows().get(pk=pk)

    def renew(self, row: R) -> None:
        """Hold the row for another lease (a long piece of work that is still going)."""
        row.lease_expires_at = timezone.now() + self.lease()
        self._rows().filter(pk=row.pk).update(lease_expires_at=row.lease_expires_at)

    def hand_over(self, row: R, **task_kwargs: Any) -> None:
        """Queue the rest of the row's work as a new task (claimed with `continuation=True`)."""
        self.renew(row)
        self._enqueue_task(row.pk, **task_kwargs)

    def succeed(self, row: R, **fields: Any) -> None:
        """The work is done: the row leaves the loop (with `fields`, the outbox's own columns)."""
        self.succeed_all([row], **fields)

    def succeed_all(self, rows: list[R], **fields: Any) -> None:
        """`succeed` for several rows at once (with the same `fields`)."""
        if not rows:
            return
        done: dict[str, Any] = {
            "state": OutboxState.DONE,
            "last_error": "",
            "lease_expires_at": None,
            "next_attempt_at": None,
        }
        with transaction.atomic():
            self._rows().filter(pk__in=[row.pk for row in rows]).update(**{**done, **fields})
            for row in rows:
                self._queue_next_in_lane(row)

    def defer(self, row: R, delay: timedelta, *, counts: bool = False) -> None:
        """Not now: the row waits `delay` (a pace to keep, a wait the other side asked for).

        Unless `counts`, the attempt this claim counted is given back: waiting is not failing.
        """
        now = timezone.now()
        with transaction.atomic():
            self._rows().filter(pk=row.pk).update(
                state=OutboxState.RETRYING,
                attempts=F("attempts") if counts else F("attempts") - 1,
                next_attempt_at=now + delay,
                lease_expires_at=now + delay + self.lease(),
            )
            self._enqueue_task(row.pk, delay)

    def fail(
        self,
        row: R,
        error: BaseException | str,
        *,
        retry_at: datetime | None = None,
        give_up: bool = False,
        **fields: Any,
    ) -> str:
        """Record the failure; retry after the backoff, or give up after the last attempt.

        An outbox with its own schedule says when (`retry_at`) or that it is over
        (`give_up`); `fields` are the outbox's own columns. Returns what happens next
        ("retrying in 30 s", "given up"), for the task's result.
        """
        text = (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:ERROR_LENGTH]
        if give_up or (retry_at is None and row.attempts >= settings.TASK_RETRY_ATTEMPTS):
            with transaction.atomic():
                self._rows().filter(pk=row.pk).update(
                    state=OutboxState.FAILED,
                    last_error=text,
                    lease_expires_at=None,
                    next_attempt_at=None,
                    **fields,
                )
                self._queue_next_in_lane(row)
            logger.error("%s %s given up after %d attempts", self.model.__name__, row.pk, row.attempts)
            return "given up"
        now = timezone.now()
        delay = retry_delay(row.attempts) if retry_at is None else max(retry_at - now, timedelta(0))
        with transaction.atomic():
            # Leased past the retry: a retry task that got lost is queued again by the sweep.
            self._rows().filter(pk=row.pk).update(
                state=OutboxState.RETRYING,
                last_error=text,
                next_attempt_at=now + delay,
                lease_expires_at=now + delay + self.lease(),
                **fields,
            )
            self._enqueue_task(row.pk, delay)
        return f"retrying in {int(delay.total_seconds())} s"

    def requeue_stalled(self, *, limit: int = 1000) -> int:
        """Queue again the unfinished rows whose lease ran out; returns how many this call queued.

        Each is claimed back to `queued` with a conditional UPDATE in the transaction
        that queues its task, so sweeps running at once queue it once.
        """
        now = timezone.now()
        stalled = Q(state__in=UNFINISHED, lease_expires_at__lt=now)
        queued = 0
        for pk in self._rows().filter(stalled).values_list("pk", flat=True)[:limit]:
            with transaction.atomic():
                lease_end: datetime = now + self.lease()
                if (
                    self._rows()
                    .filter(stalled, pk=pk)
                    .update(state=OutboxState.QUEUED, lease_expires_at=lease_end)
                ):
                    self._enqueue_task(pk)
                    queued += 1
        return queued
