"""The audit trail: who changed what, when, through which door. One call, `audit_record`.

Services write a row in the transaction of the change they make (never views or
signals: a signal misses `.update()`, and a view is one door of several). Who
did it, through which door, from which address and in which request comes from
a context the doors set (`AuditContextMiddleware` for the API, the page and
admin; `audit_context()` in commands, the webhook worker and tasks), so the
services take no actor or door parameters: those would have to be threaded
through every layer between a door and the service that writes, and a
forgotten one would silently record the wrong door.

A secret is never written: an encrypted field's value appears only as a keyed
fingerprint (HMAC-SHA256 under a key of its own, never the field encryption
key) and its last 4 characters, or only as "changed", as the model's
`audit_secrets` says. A model with an encrypted field and no rule for it fails
the system check at start-up (fail closed). Rows of one clinic form a chain
(each carries the hash of the one before), so `verify_audit_trail` finds a
removed or edited row.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models, transaction
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django_tasks.signals import task_finished, task_started

from .fields import EncryptedTextField
from .http import client_address
from .models import AuditChainHead, AuditEvent

Door = AuditEvent.Door
PLATFORM_CHAIN = "platform"
GENESIS = "0" * 64

# How the trail shows an encrypted field (a model's `audit_secrets` maps each one to a rule).
FINGERPRINT = "fingerprint"  # keyed fingerprint and the last 4 characters: tokens, app secrets
CHANGED = "changed"  # only "changed": PINs and anything short enough to guess from a fingerprint
NEVER = "never"  # never in the trail at all: patients' messages and bodies as received
RULES = (FINGERPRINT, CHANGED, NEVER)


# --- who, through which door ---------------------------------------------------------------


@dataclass(frozen=True)
class AuditContext:
    door: str
    actor: str = "system"
    address: str = ""
    request_id: str = ""
    # Set by the middleware: the actor is read when a row is written, because the
    # API authenticates its token inside the view, after every middleware ran.
    request: HttpRequest | None = None

    def who(self) -> str:
        user = getattr(self.request, "user", None) if self.request is not None else None
        if user is not None and user.is_authenticated:
            return str(getattr(user, "email", "") or user.get_username())
        return self.actor


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("audit_context", default=None)


def current_context() -> AuditContext:
    """The context a door set; without one (a shell, a command not wrapped) the door is `command`."""
    return _current.get() or AuditContext(door=Door.COMMAND)


@contextmanager
def audit_context(*, door: str, actor: str = "system", **overrides: Any) -> Iterator[AuditContext]:
    """Record the changes made inside under this door and actor (commands, the webhook worker, tasks)."""
    context = AuditContext(door=door, actor=actor, **overrides)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


# A task runs under the `task` door (django-tasks announces each one it starts and ends, in the
# thread that runs it); a context the task sets itself (the webhook worker's `meta`) wins inside.
_task_tokens: dict[str, contextvars.Token[AuditContext | None]] = {}


@receiver(task_started)
def _task_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    context = AuditContext(door=Door.TASK, request_id=str(task_result.id)[:64])
    _task_tokens[str(task_result.id)] = _current.set(context)


@receiver(task_finished)
def _task_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    token = _task_tokens.pop(str(task_result.id), None)
    if token is not None:
        # A backend that ends a task in another context than it started it: nothing to undo there.
        with suppress(ValueError):
            _current.reset(token)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def door_of(request: HttpRequest) -> str:
    """By URL: `/api/` is the API, `/admin/` admin, `/whatsapp/` Meta's webhook, anything else the page."""
    if request.path.startswith("/api/"):
        return Door.API
    if request.path.startswith("/admin/"):
        return Door.ADMIN
    if request.path.startswith("/whatsapp/"):
        return Door.WEBHOOK
    return Door.PAGE


class AuditContextMiddleware:
    """Sets the audit context of every request: its door, client address and request id.

    The request id is the one our proxy sent (`X-Request-ID`, only when a proxy
    is trusted) or a fresh one, and is returned in the response's header.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = str(request.META.get("HTTP_X_REQUEST_ID") or "")
        trusted = int(settings.NUM_PROXIES) > 0 and _REQUEST_ID.match(sent)
        request_id = sent if trusted else uuid.uuid4().hex
        context = AuditContext(
            door=door_of(request),
            actor="anonymous",
            address=client_address(request),
            request_id=request_id,
            request=request,
        )
        token = _current.set(context)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response.headers.setdefault("X-Request-ID", request_id)
        return response


# --- how a change is shown -----------------------------------------------------------------


@cache
def _fingerprint_key() -> bytes:
    """`AUDIT_FINGERPRINT_KEY`, or a key derived from SECRET_KEY under a label of its own."""
    configured = str(getattr(settings, "AUDIT_FINGERPRINT_KEY", "") or "")
    material = (configured or settings.SECRET_KEY).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"audit-fingerprint/v1").derive(
        material
    )


def fingerprint(secret: str | None) -> str | None:
    """`fp:<12 hex of HMAC-SHA256>…<last 4>`: tells two values apart without revealing either."""
    if not secret:
        return None
    digest = hmac.new(_fingerprint_key(), secret.encode(), hashlib.sha256).hexdigest()[:12]
    return f"fp:{digest}…{secret[-4:]}"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def audit_changes(
    model: type[models.Model], before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, Any]:
    """`{field: [before, after]}` for the fields whose value differs, each shown by its rule."""
    rules: Mapping[str, str] = getattr(model, "audit_secrets", {})
    changes: dict[str, Any] = {}
    for name, new in after.items():
        old = before.get(name)
        if old == new:
            continue
        field = model._meta.get_field(name)
        if isinstance(field, EncryptedTextField):
            rule = rules.get(name)
            if rule == FINGERPRINT:
                changes[name] = [fingerprint(old), fingerprint(new)]
            elif rule == CHANGED:
                changes[name] = CHANGED
            # NEVER, or no rule (the system check refuses to start): nothing at all.
            continue
        changes[name] = [_plain(old), _plain(new)]
    return changes


def encrypted_fields_without_rule(model_list: Iterable[type[models.Model]]) -> list[str]:
    """`app_label.Model.field` of every encrypted field whose model gives the trail no rule for it."""
    missing = []
    for model in model_list:
        rules: Mapping[str, str] = getattr(model, "audit_secrets", {})
        for field in model._meta.get_fields():
            if isinstance(field, EncryptedTextField) and rules.get(field.name) not in RULES:
                missing.append(f"{model._meta.label}.{field.name}")
    return missing


# --- writing and checking the chain --------------------------------------------------------


def _row_hash(event: AuditEvent) -> str:
    body = {
        "chain": event.chain,
        "seq": event.seq,
        "clinic_id": str(event.clinic_id) if event.clinic_id else None,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "door": event.door,
        "action": event.action,
        "changes": event.changes,
        "address": event.address,
        "request_id": event.request_id,
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def audit_record(
    *, clinic_id: Any, action: str, changes: Mapping[str, Any] | None = None, actor: str | None = None
) -> AuditEvent:
    """Append one row to the clinic's chain (`clinic_id=None`: the platform's), in the caller's transaction.

    `actor` only where the door does not know its user yet (a sign-in issuing a
    token); everywhere else the context's actor is the one.

    The chain head is locked until that transaction ends, so two writers for
    one clinic queue instead of forking the chain; no network call runs inside
    the transactions that call this.
    """
    context = current_context()
    chain = str(clinic_id) if clinic_id else PLATFORM_CHAIN
    # No savepoint of its own: a row that fails to write fails the change it records.
    with transaction.atomic(savepoint=False):
        head, _created = AuditChainHead.objects.select_for_update().get_or_create(chain=chain)
        event = AuditEvent(
            chain=chain,
            seq=head.seq + 1,
            clinic_id=clinic_id or None,
            at=timezone.now(),
            actor=(actor or context.who())[:254],
            door=context.door,
            action=action,
            changes=dict(changes or {}),
            address=context.address[:64],
            request_id=context.request_id[:64],
            prev_hash=head.hash or GENESIS,
        )
        # What the JSON column gives back (tuples become lists) is what gets hashed.
        event.changes = json.loads(json.dumps(event.changes))
        event.hash = _row_hash(event)
        event.save()
        head.seq, head.hash = event.seq, event.hash
        head.save(update_fields=["seq", "hash"])
    return event


def audit_verify_chain(chain: str) -> list[str]:
    """What is wrong with one chain: a missing row, an edited row, or a removed newest row."""
    problems: list[str] = []
    expected_seq, prev_hash = 1, GENESIS
    for event in AuditEvent.objects.filter(chain=chain).order_by("seq").iterator():
        if event.seq != expected_seq:
            problems.append(f"{chain}: rows {expected_seq}..{event.seq - 1} are missing")
        elif event.prev_hash != prev_hash:
            problems.append(f"{chain}: row {event.seq} does not follow the row before it")
        if _row_hash(event) != event.hash:
            problems.append(f"{chain}: row {event.seq} was edited")
        expected_seq, prev_hash = event.seq + 1, event.hash
    head = AuditChainHead.objects.filter(chain=chain).first()
    if head is not None and head.seq != expected_seq - 1:
        problems.append(f"{chain}: rows {expected_seq}..{head.seq} are missing")
    return problems


def audit_chains() -> list[str]:
    """Every chain there is, from the heads and the rows (a head may be gone too)."""
    heads = set(AuditChainHead.objects.values_list("chain", flat=True))
    rows = set(AuditEvent.objects.values_list("chain", flat=True).distinct())
    return sorted(heads | rows)
