"""The account's one writer: the action lease, `set_status` and the save.

Two actions on one clinic never run at once, and no transaction or row lock is
held while Meta is asked. An action takes a short lease recorded on the
account (`action_lease_until` and an owner token) with a conditional UPDATE,
a statement of its own; a second action meanwhile gets 409 with the current
status. The lease is released in `finally` by an UPDATE on the owner token,
and it expires by itself after the request deadline plus one Meta call's
timeouts, so a process killed mid-action never strands a clinic.

Webhook events respect the lease without taking it (`between_actions`): one
that arrives while an action runs is refused with the same 409, and its
delivery is retried later (whatsapp.deliveries), after the action recorded its
result. No background task writes the account otherwise (the health check
writes its own row, and of the account only `proven_business_account_id`, with
a conditional UPDATE on the ids it checked).

Under the lease each save is a short transaction of its own: what Meta has
done is recorded the moment its answer arrives, so a failure after it never
loses it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from common.audit import audit_changes, audit_record

from ..cache import whatsapp_account_changed
from ..details import NO_DETAIL, Detail
from ..exceptions import MetaError, NumberOwnedElsewhereError, StatusConflictError, WhatsAppError
from ..health import whatsapp_health_queue_check
from ..meta import MetaClient
from ..models import WhatsAppAccount, WhatsAppStatus, new_verify_token

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Beyond the longest an action can take in a request (its deadline, then one
# Meta call's connect and read timeouts), so a live action never loses its lease.
LEASE_MARGIN = timedelta(seconds=15)
LEASE_FIELDS = frozenset({"action_lease_until", "action_lease_owner"})
# A claim made only by a code request holds the number this long (the code's lifetime);
# a verified code, or a number Meta registered, holds it for good.
CLAIM_LIFETIME = timedelta(minutes=30)


def whatsapp_account_create(*, clinic_id: Any) -> WhatsAppAccount:
    """A clinic's connection, with a random verify token so the webhook can be set up at once."""
    account = WhatsAppAccount(clinic_id=clinic_id, verify_token=new_verify_token())
    account.save()
    whatsapp_account_changed(clinic_id=clinic_id)
    return account


def whatsapp_account_get_or_create(*, clinic_id: Any) -> WhatsAppAccount:
    """The clinic's connection; one made before it existed (a clinic outside the services) gets it now."""
    account, created = WhatsAppAccount.objects.get_or_create(
        clinic_id=clinic_id, defaults={"verify_token": new_verify_token()}
    )
    if created:
        whatsapp_account_changed(clinic_id=clinic_id)
    return account


# --- the action lease ----------------------------------------------------------------------


def lease_length() -> timedelta:
    """How long an action may hold the account before the lease expires by itself."""
    seconds = (
        float(settings.REQUEST_DEADLINE_SECONDS)
        + float(settings.META_CONNECT_TIMEOUT)
        + 2 * float(settings.META_READ_TIMEOUT)
    )
    return timedelta(seconds=seconds) + LEASE_MARGIN


def _take_lease(account: WhatsAppAccount) -> str | None:
    """The owner token of a lease just taken, or None while another action holds one."""
    owner = secrets.token_hex(16)
    now = timezone.now()
    taken = (
        WhatsAppAccount.objects.filter(pk=account.pk)
        .filter(Q(action_lease_until__isnull=True) | Q(action_lease_until__lte=now))
        .update(action_lease_until=now + lease_length(), action_lease_owner=owner)
    )
    return owner if taken else None


def _release_lease(account: WhatsAppAccount, owner: str) -> None:
    # On the owner token: a lease that expired and was taken by another action stays theirs.
    WhatsAppAccount.objects.filter(pk=account.pk, action_lease_owner=owner).update(
        action_lease_until=None, action_lease_owner=""
    )


@contextmanager
def leased(account: WhatsAppAccount) -> Iterator[WhatsAppAccount | None]:
    """The account re-read under a new lease, or None (nothing taken) while another action runs."""
    owner = _take_lease(account)
    if owner is None:
        yield None
        return
    held: WhatsAppAccount | None = None
    try:
        held = WhatsAppAccount.objects.get(pk=account.pk)
        yield held
    finally:
        _release_lease(account, owner)
        if held is not None:
            # The caller keeps the object: a later save of it must not bring the lease back.
            held.action_lease_until, held.action_lease_owner = None, ""


@contextmanager
def acting_on(account: WhatsAppAccount) -> Iterator[WhatsAppAccount]:
    """The account re-read under this action's lease; while another action runs, 409."""
    with leased(account) as held:
        if held is None:
            current = WhatsAppAccount.objects.filter(pk=account.pk).values_list("status", flat=True).first()
            raise StatusConflictError(status=current or account.status, reason=Detail.of("conflict.busy"))
        yield held


@contextmanager
def between_actions(account: WhatsAppAccount) -> Iterator[WhatsAppAccount]:
    """The account re-read and row-locked for a short write that asks Meta nothing (a webhook
    event); while an action holds the lease, 409.

    No lease is taken: an action starting meanwhile waits for this short
    transaction to end (the row lock, or SQLite's write lock), never gets a 409
    because of it.
    """
    with transaction.atomic():
        locked = WhatsAppAccount.objects.select_for_update().get(pk=account.pk)
        until = locked.action_lease_until
        if until is not None and until > timezone.now():
            raise StatusConflictError(status=locked.status, reason=Detail.of("conflict.busy"))
        yield locked


# --- status and saving ---------------------------------------------------------------------


def set_status(
    account: WhatsAppAccount,
    status: str,
    *,
    detail: Detail = NO_DETAIL,
    meta_code: int | None = None,
) -> None:
    """The one place a status changes; callers save."""
    if status != account.status:
        logger.info(
            "whatsapp status clinic=%s %s -> %s meta_code=%s",
            account.clinic_id,
            account.status,
            status,
            meta_code,
        )
    if status == WhatsAppStatus.ACTIVE and account.status != WhatsAppStatus.ACTIVE:
        account.connected_at = timezone.now()
    if status in (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING):
        # Registered at Meta: the claim is proven, no longer one that lapses.
        account.claim_expires_at = None
    account.status = status
    account.detail_parts = detail.as_json()
    account.meta_code = meta_code


# Saved only when named: the health check writes the proof with an UPDATE of its own, and a save
# of every field from a copy read before it must not carry an old proof back.
NAMED_ONLY_FIELDS = frozenset({"proven_business_account_id"})


def all_fields(*named: str) -> list[str]:
    """Every field a save writes by default (not the lease, not NAMED_ONLY_FIELDS), and `named`."""
    return [
        field.name
        for field in WhatsAppAccount._meta.concrete_fields
        if not field.primary_key
        and field.name not in LEASE_FIELDS
        and field.name != "created_at"
        and (field.name not in NAMED_ONLY_FIELDS or field.name in named)
    ]


# A change of these (or one of these actions) makes the stored health check stale: a new one is queued.
HEALTH_FIELDS = ("status", "phone_number_id", "business_account_id")
HEALTH_ACTIONS = frozenset({"whatsapp.pin_changed"})


# What the audit trail shows of a change to the connection (secrets by the model's `audit_secrets`).
AUDITED_FIELDS = (
    "phone_number_id",
    "business_account_id",
    "access_token",
    "verify_token",
    "app_secret",
    "registration_pin",
    "number",
    "status",
)


def snapshot(account: WhatsAppAccount) -> dict[str, Any]:
    """The audited fields as they are now: taken before a change, compared when it is saved."""
    return {name: getattr(account, name) for name in AUDITED_FIELDS}


def save(
    account: WhatsAppAccount,
    fields: list[str] | None = None,
    *,
    action: str = "",
    before: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save `fields` (default: all but the lease) in a short transaction of its own, at once.

    With an `action`, its audit row (what changed since `before`, plus `extra`)
    is written in the same transaction. A number another clinic took in the
    meantime is a 409, never a 500. A status saved saves its claim with it
    (`set_status` may have proven it). A change of the connection (a new status, phone number
    id or WhatsApp Business Account, or a PIN change) queues a health check in the same
    transaction, merged with one already waiting, so the health shown never describes what
    the clinic no longer has (a new token queues one too: `credentials.save_credentials`).
    """
    if fields is not None and "status" in fields and "claim_expires_at" not in fields:
        fields = [*fields, "claim_expires_at"]
    update_fields = [*fields, "updated_at"] if fields is not None else all_fields()
    try:
        with transaction.atomic():
            stored = WhatsAppAccount.objects.filter(pk=account.pk).values_list(*HEALTH_FIELDS).first()
            changed = action in HEALTH_ACTIONS or stored != tuple(getattr(account, f) for f in HEALTH_FIELDS)
            account.save(update_fields=update_fields)
            if changed:
                whatsapp_health_queue_check(account=account)
            # Copies of the connection kept above whatsapp (beside cached API tokens) end with the write.
            whatsapp_account_changed(clinic_id=account.clinic_id)
            if action:
                changes = audit_changes(WhatsAppAccount, before or snapshot(account), snapshot(account))
                audit_record(clinic_id=account.clinic_id, action=action, changes={**changes, **(extra or {})})
    except IntegrityError:
        raise NumberOwnedElsewhereError(
            status=account.status, reason=Detail.of("conflict.number_owned")
        ) from None


def recorded(
    account: WhatsAppAccount, error: WhatsAppError, fields: list[str] | None = None
) -> WhatsAppError:
    """Save what the failure changed, then hand back `error` to raise, carrying the status now.

    The one way a service records a failure and reports it: the save commits
    before the caller raises, so the record survives the error.
    """
    save(account, fields)
    error.status = account.status
    return error


def ask_meta(call: Callable[[], T], *, on_failure: Callable[[MetaError], WhatsAppError]) -> T:
    """Make a Graph call; when it fails, `on_failure` records what the failure means and
    returns the error to raise.

    The one place an action turns Meta's failure into its own: the record is
    committed (`recorded`) before the error leaves the service.
    """
    try:
        return call()
    except MetaError as exc:
        error = on_failure(exc)
    raise error


# --- what every action needs ---------------------------------------------------------------


def client_for(account: WhatsAppAccount, access_token: str | None = None) -> MetaClient:
    """A Graph client with the token sent now, or the stored one (409 without either)."""
    token = access_token or account.access_token
    if not token:
        raise StatusConflictError(status=account.status, reason=Detail.of("conflict.no_token"))
    return MetaClient(token)


def _claims_elsewhere(account: WhatsAppAccount, now: datetime, **number: str) -> list[datetime | None]:
    """When the other clinics' claims on the number lapse: None for a proven claim.

    Only a proven claim (a verified code, a number registered or being
    registered, saved credentials) or a code request younger than
    CLAIM_LIFETIME holds a number; a disconnected clinic holds nothing.
    """
    return list(
        WhatsAppAccount.objects.exclude(pk=account.pk)
        .exclude(status=WhatsAppStatus.DISCONNECTED)
        .filter(**number)
        .filter(Q(claim_expires_at__isnull=True) | Q(claim_expires_at__gt=now))
        .values_list("claim_expires_at", flat=True)
    )


def ensure_not_owned_elsewhere(
    account: WhatsAppAccount, *, phone_number_id: str = "", number: str = "", pending_too: bool = True
) -> None:
    """Refuse a number (or phone number id) another clinic holds, before anything reaches Meta.

    The 409 says whether the other clinic has it connected or is connecting it
    (a code request, held at most CLAIM_LIFETIME), never which clinic.
    `pending_too=False` lets a code be verified while another clinic only waits
    for its own: the right code wins.
    """
    now = timezone.now()
    for field, value in (("number", number), ("phone_number_id", phone_number_id)):
        if not value:
            continue
        claims = _claims_elsewhere(account, now, **{field: value})
        if None in claims:
            key = "conflict.number_owned" if field == "number" else "conflict.phone_number_id_owned"
            raise NumberOwnedElsewhereError(status=account.status, reason=Detail.of(key))
        if claims and pending_too:
            lapses = max(claim for claim in claims if claim is not None)
            raise NumberOwnedElsewhereError(
                status=account.status,
                reason=Detail.of(
                    "conflict.number_claimed",
                    minutes=max(1, int((lapses - now).total_seconds() // 60) + 1),
                ),
            )


def mark_lapsed_claims(account: WhatsAppAccount, *, number: str, phone_number_id: str) -> None:
    """Tell the clinics whose code request for this number lapsed that another clinic now asked
    for a code: they stay `pending_otp` (their right code still wins) and read why."""
    lapsed = (
        WhatsAppAccount.objects.exclude(pk=account.pk)
        .filter(status=WhatsAppStatus.PENDING_OTP, claim_expires_at__lte=timezone.now())
        .filter(Q(number=number) | Q(phone_number_id=phone_number_id))
    )
    for other in lapsed:
        try:
            with between_actions(other) as locked:
                if locked.status == WhatsAppStatus.PENDING_OTP and "claim.lapsed" not in locked.detail_keys:
                    set_status(locked, locked.status, detail=Detail.of("claim.lapsed"))
                    save(locked, ["detail_parts"])
        except StatusConflictError:
            continue  # that clinic is acting now: it reads its own outcome
