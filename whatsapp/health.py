"""The connection's health: checks against Meta and our own data, one verdict (endpoint 13).

A run asks Meta four things at once (``debug_token``, the WABA's numbers, its
subscribed apps, the number's status fields), reads our own webhook data (the last
authentic delivery, signature failures in 24 hours), and stores the result on the
account's `WhatsAppHealth`. Whether the WABA lists the number also proves, or ends, the
account's `proven_business_account_id` (the WABA whose events reach it). The checks are stored as keys, `ok` and parameters; their
sentences are rendered when read, in the reader's language (`check_sentences`).

Verdict (the contract's "Health object (13)"): `unknown` before the first check or
while a check that stops messages could not be made; `broken` when such a check
failed; `attention` when only a warning failed; else `ready`.

A run also records the conditions worth a warning (whatsapp.alerts): the token
expiring in 14, 7 or 1 days (once per threshold and token) and the verdict turning
broken (once per episode). On demand, a run starts at most once a minute per clinic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_tasks import task

from common import deadline
from common.workers import work_waiting_without_worker

from .alerts import whatsapp_alert_record
from .cache import whatsapp_account_changed
from .details import Detail
from .exceptions import AttemptsExhaustedError, MetaError, MetaRefusedError, MetaTimeoutError
from .health_words import name_words
from .ingress import volume_refusals_24h
from .meta import ANSWER_RESERVE_SECONDS, MetaClient, PhoneNumberInfo, SubscribedApp, TokenInfo
from .models import (
    AlertKind,
    HealthVerdict,
    WebhookDelivery,
    WebhookSignatureFailure,
    WhatsAppAccount,
    WhatsAppHealth,
    WhatsAppStatus,
)

logger = logging.getLogger(__name__)

CHECK_KEYS = (
    "token_valid",
    "token_expiry",
    "token_scopes",
    "number_in_waba",
    "app_subscribed",
    "number_registered",
    "name_approved",
    "can_send",
    "webhook_recent",
)
# A failure of one of these stops messages: the verdict is broken.
STOPPING_CHECKS = frozenset(
    {"token_valid", "token_scopes", "number_in_waba", "number_registered", "can_send"}
)
REQUIRED_SCOPES = ("whatsapp_business_management", "whatsapp_business_messaging")
TOKEN_WARNING_DAYS = 14
# The days before expiry on which the admins are warned, tightest first.
EXPIRY_WARNINGS = (1, 7, 14)
# Meta's temporary tokens (App Dashboard, "API Setup") live 24 hours; an hour of slack.
TEMPORARY_TOKEN_LIFETIME = timedelta(hours=25)
WEBHOOK_QUIET_LIMIT = timedelta(days=7)
ON_DEMAND_INTERVAL = timedelta(minutes=1)
# A queued check that no worker started within this long is taken to be lost: the next save
# queues another (one waiting check per clinic otherwise).
QUEUED_CHECK_LIMIT = timedelta(hours=1)
# Statuses in which a number is registered on the Cloud API (sending may still be limited).
_REGISTERED = frozenset({"CONNECTED", "FLAGGED", "RESTRICTED", "RATE_LIMITED", "BANNED"})
_NAME_OK = frozenset({"APPROVED", "AVAILABLE_WITHOUT_REVIEW"})
# Accounts the scheduler checks: a number is (or was) connected.
CONNECTED_STATUSES = (WhatsAppStatus.ACTIVE, WhatsAppStatus.VERIFYING, WhatsAppStatus.FAILED)


# --- sentences, rendered in the reader's language ----------------------------------------------


def _sentences(days: int = 0) -> dict[tuple[str, str], tuple[str, str]]:
    """(check key, reason) -> (detail, fix), translated now; parameters are filled by the caller."""
    new_token = _(
        "Create a system user's token that does not expire in Meta Business Settings and save it here."
    )
    return {
        ("token_valid", "no_token"): (
            _("No access token is stored."),
            _("Save the WhatsApp credentials on this page."),
        ),
        ("token_valid", "invalid"): (
            _("Meta says the access token is not valid: it expired or was revoked."),
            new_token,
        ),
        ("token_expiry", "expires_soon"): (
            ngettext(
                "The access token expires in %(days)s day, on %(date)s.",
                "The access token expires in %(days)s days, on %(date)s.",
                days,
            ),
            new_token,
        ),
        ("token_expiry", "temporary"): (
            _("This is a temporary token: it stops working within 24 hours, on %(date)s."),
            new_token,
        ),
        ("token_scopes", "missing"): (
            _("The access token lacks the permissions %(scopes)s."),
            _(
                "Give the system user both WhatsApp permissions on this WhatsApp Business Account, "
                "then create and save a new token."
            ),
        ),
        ("token_scopes", "other_waba"): (
            _("The access token's permissions do not cover WhatsApp Business Account %(waba)s."),
            _(
                "Give the system user access to this WhatsApp Business Account, then create and save a new token."
            ),
        ),
        ("number_in_waba", "not_found"): (
            _("Phone number id %(pnid)s is not a number of WhatsApp Business Account %(waba)s."),
            _("Copy both ids from WhatsApp Manager and save them again."),
        ),
        ("number_in_waba", "refused"): (
            _("Meta refused to list the numbers of WhatsApp Business Account %(waba)s: %(why)s"),
            _("Check the WhatsApp Business Account id and the token's access to it."),
        ),
        ("app_subscribed", "not_subscribed"): (
            _(
                "This service's app is not subscribed to the WhatsApp Business Account: Meta sends it no messages."
            ),
            _("Use 'Check now' on this page: it subscribes the app."),
        ),
        ("number_registered", "not_registered"): (
            _("Meta reports the number as %(status)s: it is not registered on the Cloud API."),
            _("Register the number again on this page."),
        ),
        ("name_approved", "not_approved"): (
            _("The display name is not approved (%(status)s)."),
            _("Follow the display name review in WhatsApp Manager."),
        ),
        ("can_send", "cannot_send"): (
            _("Meta reports the number as %(status)s: it cannot send messages normally now."),
            _("Read Meta's notice in WhatsApp Manager: it says why and until when."),
        ),
        ("webhook_recent", "quiet"): (
            _("No message or event has come from Meta in the last 7 days."),
            _(
                "Check that Meta's App Dashboard has this page's webhook URL and verify token, "
                "and that the 'messages' field is subscribed."
            ),
        ),
        ("webhook_recent", "signature_failures"): (
            _("%(count)s deliveries in the last 24 hours had a wrong signature and were refused."),
            _(
                "Save the app secret of the Meta app that sends the webhooks (App Dashboard, Settings, Basic)."
            ),
        ),
        ("*", "unreachable"): (
            _("Meta could not be reached for this check: %(why)s"),
            _("It is tried again at the next check; use 'Check now' in a few minutes."),
        ),
    }


def check_sentences(check: dict[str, Any]) -> tuple[str | None, str | None]:
    """The check's detail and fix in the active language, or (None, None) when there is nothing to say."""
    reason = check.get("reason") or ""
    if not reason:
        return None, None
    params = dict(check.get("params") or {})
    sentences = _sentences(int(params.get("days") or 0))
    pair = sentences.get((check.get("key", ""), reason)) or sentences.get(("*", reason))
    if pair is None:
        return None, None
    if "date" in params:
        params["date"] = formats.date_format(datetime.fromisoformat(params["date"]), "DATE_FORMAT")
    if check.get("key") == "name_approved" and (words := name_words(str(params.get("status") or ""))):
        params["status"] = words.label  # Meta's PENDING_REVIEW, DECLINED... in plain words
    detail, fix = pair
    return detail % params, fix


# --- the checks ---------------------------------------------------------------------------------


def _check(key: str, ok: bool | None, reason: str = "", **params: Any) -> dict[str, Any]:
    return {"key": key, "ok": ok, "reason": reason, "params": params}


@dataclass
class _Answers:
    """What Meta answered to each call of a run: a value, or the error it raised."""

    token: TokenInfo | MetaError | None = None
    numbers: list[PhoneNumberInfo] | MetaError | None = None
    apps: list[SubscribedApp] | MetaError | None = None
    number: PhoneNumberInfo | MetaError | None = None


def _ask_meta(account: WhatsAppAccount, *, read_retries: int) -> _Answers:
    """The four Graph calls at once (one client each: a requests session is not shared across threads).

    They run in threads that carry the request's deadline (`common.deadline`), so
    the run answers in time however slowly Meta trickles its answers.
    """
    token = account.access_token or ""

    def call(operation: Callable[[MetaClient], Any]) -> Any:
        try:
            with MetaClient(token, read_retries=read_retries) as client:
                return operation(client)
        except MetaError as exc:
            return exc

    calls: dict[str, Callable[[MetaClient], Any]] = {"token": lambda c: c.debug_token()}
    if account.business_account_id:
        calls["numbers"] = lambda c: c.list_phone_numbers(account.business_account_id)
        calls["apps"] = lambda c: c.get_subscribed_apps(account.business_account_id)
    if account.phone_number_id:
        calls["number"] = lambda c: c.get_phone_number_health(account.phone_number_id)
    # In the request's deadline: a call Meta has not answered by then counts as a timeout.
    answers = deadline.run_in_threads(
        {name: partial(call, operation) for name, operation in calls.items()},
        timed_out=lambda name: MetaTimeoutError(f"Meta did not answer the {name} check in time"),
        reserve=ANSWER_RESERVE_SECONDS,
    )
    return _Answers(**answers)


def _unreachable(key: str, error: MetaError) -> dict[str, Any]:
    return _check(key, None, "unreachable", why=error.detail or error.message or str(error))


def _token_checks(answers: _Answers, account: WhatsAppAccount, now: datetime) -> list[dict[str, Any]]:
    info = answers.token
    if isinstance(info, MetaRefusedError):
        # 190 and its kin: Meta refuses the token itself.
        return [
            _check("token_valid", False, "invalid"),
            _check("token_expiry", None),
            _check("token_scopes", None),
        ]
    if isinstance(info, MetaError) or info is None:
        error = info if isinstance(info, MetaError) else MetaError("no answer")
        return [
            _unreachable("token_valid", error),
            _check("token_expiry", None),
            _check("token_scopes", None),
        ]
    if not info.is_valid:
        return [
            _check("token_valid", False, "invalid"),
            _check("token_expiry", None),
            _check("token_scopes", None),
        ]
    checks = [_check("token_valid", True)]
    if info.expires_at is None:
        checks.append(_check("token_expiry", True))
    else:
        expires = datetime.fromtimestamp(info.expires_at, tz=UTC)
        issued = datetime.fromtimestamp(info.issued_at, tz=UTC) if info.issued_at else None
        days = _days_left(expires, now)
        if issued is not None and expires - issued <= TEMPORARY_TOKEN_LIFETIME:
            checks.append(_check("token_expiry", False, "temporary", date=expires.isoformat()))
        elif days <= TOKEN_WARNING_DAYS:
            checks.append(_check("token_expiry", False, "expires_soon", days=days, date=expires.isoformat()))
        else:
            checks.append(_check("token_expiry", True))
    missing = [scope for scope in REQUIRED_SCOPES if scope not in info.scopes]
    if missing:
        checks.append(_check("token_scopes", False, "missing", scopes=", ".join(missing)))
    elif any(
        (targets := info.target_ids.get(scope)) is not None and account.business_account_id not in targets
        for scope in REQUIRED_SCOPES
    ):
        checks.append(_check("token_scopes", False, "other_waba", waba=account.business_account_id))
    else:
        checks.append(_check("token_scopes", True))
    return checks


def _days_left(expires: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded up: 13 days and an hour is "14 days"."""
    return max(0, math.ceil((expires - now).total_seconds() / 86400))


def _number_checks(answers: _Answers, account: WhatsAppAccount) -> list[dict[str, Any]]:
    numbers, apps, number = answers.numbers, answers.apps, answers.number
    checks: list[dict[str, Any]] = []
    if isinstance(numbers, MetaRefusedError):
        checks.append(
            _check(
                "number_in_waba", False, "refused", waba=account.business_account_id, why=numbers.detail or ""
            )
        )
    elif isinstance(numbers, MetaError):
        checks.append(_unreachable("number_in_waba", numbers))
    elif numbers is None:
        checks.append(_check("number_in_waba", None))
    elif any(info.id == account.phone_number_id for info in numbers):
        checks.append(_check("number_in_waba", True))
    else:
        checks.append(
            _check(
                "number_in_waba",
                False,
                "not_found",
                pnid=account.phone_number_id,
                waba=account.business_account_id,
            )
        )

    if isinstance(apps, MetaError):
        checks.append(_unreachable("app_subscribed", apps))
    elif apps is None:
        checks.append(_check("app_subscribed", None))
    else:
        token = answers.token
        ours = token.app_id if isinstance(token, TokenInfo) else None
        subscribed = any(app.id == ours for app in apps) if ours else bool(apps)
        checks.append(
            _check("app_subscribed", True)
            if subscribed
            else _check("app_subscribed", False, "not_subscribed")
        )

    if isinstance(number, MetaError):
        for key in ("number_registered", "name_approved", "can_send"):
            checks.append(_unreachable(key, number))
        return checks
    if number is None:
        return [
            *checks,
            _check("number_registered", None),
            _check("name_approved", None),
            _check("can_send", None),
        ]
    status = (number.status or "").upper()
    registered = status in _REGISTERED
    checks.append(
        _check("number_registered", True)
        if registered
        else _check("number_registered", False, "not_registered", status=status or "?")
    )
    name_status = (number.name_status or "").upper()
    if not name_status:
        checks.append(_check("name_approved", None))
    elif name_status in _NAME_OK:
        checks.append(_check("name_approved", True))
    else:
        checks.append(_check("name_approved", False, "not_approved", status=name_status))
    if not registered:
        checks.append(_check("can_send", None))
    elif status == "CONNECTED":
        checks.append(_check("can_send", True))
    else:
        checks.append(_check("can_send", False, "cannot_send", status=status))
    return checks


def _webhook_check(
    account: WhatsAppAccount, last_event_at: datetime | None, failures: int, now: datetime
) -> dict[str, Any]:
    if failures and (last_event_at is None or now - last_event_at > timedelta(hours=24)):
        # Refused deliveries and no authentic one: the secret stored here is not Meta's.
        return _check("webhook_recent", False, "signature_failures", count=failures)
    if last_event_at is not None and now - last_event_at <= WEBHOOK_QUIET_LIMIT:
        return _check("webhook_recent", True)
    since = account.connected_at or account.created_at
    if since is None or now - since < WEBHOOK_QUIET_LIMIT:
        return _check("webhook_recent", None)  # a new number has not been quiet for long yet
    return _check("webhook_recent", False, "quiet")


def verdict_of(checks: list[dict[str, Any]]) -> HealthVerdict:
    """The contract's rule over a run's checks."""
    if not checks:
        return HealthVerdict.UNKNOWN
    failed = {check["key"] for check in checks if check["ok"] is False}
    unchecked = {check["key"] for check in checks if check["ok"] is None}
    if failed & STOPPING_CHECKS:
        return HealthVerdict.BROKEN
    if unchecked & STOPPING_CHECKS:
        return HealthVerdict.UNKNOWN
    if failed:
        return HealthVerdict.ATTENTION
    return HealthVerdict.READY


# --- running and storing -------------------------------------------------------------------------


def signature_failures_since(*, clinic_id: Any, since: datetime) -> int:
    """POSTs to the clinic's webhook whose signature did not match, since `since` (by the hour)."""
    hours = WebhookSignatureFailure.objects.filter(
        clinic_id=clinic_id, hour__gte=since.replace(minute=0, second=0, microsecond=0)
    )
    return sum(hours.values_list("count", flat=True))


def is_checkable(account: WhatsAppAccount) -> bool:
    """Whether there is a number to check: one is connected, being confirmed, or failed at Meta.

    Before any connection, while a code is awaited and after a disconnection there is
    nothing to check: no result is shown and the verdict stays `unknown`.
    """
    return account.status in CONNECTED_STATUSES and bool(account.phone_number_id)


def is_current(account: WhatsAppAccount, health: WhatsAppHealth) -> bool:
    """Whether the stored result describes the account's number as it is now."""
    return (
        is_checkable(account)
        and health.checked_at is not None
        and health.checked_phone_number_id == account.phone_number_id
    )


def is_pending(health: WhatsAppHealth, now: datetime | None = None) -> bool:
    """Whether a check waits for a worker or runs now (a mark older than an hour is taken to be lost)."""
    now = now or timezone.now()
    if health.check_queued_at is not None and health.check_queued_at >= now - QUEUED_CHECK_LIMIT:
        return True
    started = health.run_started_at
    return (
        started is not None
        and started >= now - QUEUED_CHECK_LIMIT
        and (health.checked_at is None or started > health.checked_at)
    )


def whatsapp_health_of(*, account: WhatsAppAccount) -> WhatsAppHealth:
    """The stored result when it describes the account's number now; else an unsaved `unknown` one
    (nothing to check yet, not checked yet, or a result about a number the clinic no longer has)."""
    try:
        health = account.health
    except WhatsAppHealth.DoesNotExist:
        return WhatsAppHealth(account=account)
    return health if is_current(account, health) else WhatsAppHealth(account=account)


def is_connected(account: WhatsAppAccount) -> bool:
    """Whether the account has a number worth watching (and warning about)."""
    return account.status in CONNECTED_STATUSES and bool(account.phone_number_id and account.access_token)


@dataclass(frozen=True)
class HealthPanel:
    """What the page's health panel shows: `state` and the result it may describe.

    `none`: no number to check yet; `pending`: a check waits or runs (the last result,
    if about this number, is shown as being refreshed); `unchecked`: a number but no
    result about it; `current`: the last result, about this number.
    """

    state: str
    health: WhatsAppHealth


def whatsapp_health_panel(*, account: WhatsAppAccount) -> HealthPanel:
    """The panel's state, from the same rule as endpoint 13 (`whatsapp_health_of`)."""
    shown = whatsapp_health_of(account=account)
    if not is_checkable(account):
        return HealthPanel("none", shown)
    stored = WhatsAppHealth.objects.filter(pk=account.pk).first()
    if stored is not None and is_pending(stored):
        return HealthPanel("pending", shown)
    return HealthPanel("current" if shown.checked_at else "unchecked", shown)


def whatsapp_health_check(*, account: WhatsAppAccount, read_retries: int = 2) -> WhatsAppHealth:
    """Run every check now and store the result; never raises for Meta (a failure is a check's answer).

    With no number to check (`is_checkable`), Meta is not asked and the stored result is
    cleared: the panel, endpoint 13 and admin never describe a number the clinic no longer has.
    """
    account = WhatsAppAccount.objects.get(pk=account.pk)
    now = timezone.now()
    WhatsAppHealth.objects.get_or_create(account=account)
    # Started: a save from now on queues a new check (this run may already be reading old data).
    WhatsAppHealth.objects.filter(pk=account.pk).update(run_started_at=now, check_queued_at=None)
    if not is_checkable(account):
        return _clear(account)
    if account.access_token:
        answers = _ask_meta(account, read_retries=read_retries)
        checks = _token_checks(answers, account, now) + _number_checks(answers, account)
    else:
        answers = _Answers()
        checks = [_check("token_valid", False, "no_token")] + [_check(key, None) for key in CHECK_KEYS[1:-1]]
    last_event_at = WebhookDelivery.objects.filter(clinic_id=account.clinic_id).aggregate(
        at=Max("received_at")
    )["at"]
    failures = signature_failures_since(clinic_id=account.clinic_id, since=now - timedelta(hours=24))
    checks.append(_webhook_check(account, last_event_at, failures, now))
    verdict = verdict_of(checks)
    token = answers.token if isinstance(answers.token, TokenInfo) else None
    number = answers.number if isinstance(answers.number, PhoneNumberInfo) else None
    with transaction.atomic():
        health = WhatsAppHealth.objects.select_for_update().get(pk=account.pk)
        turned_broken = verdict == HealthVerdict.BROKEN and health.verdict != HealthVerdict.BROKEN
        health.verdict = verdict
        health.checked_at = now
        health.checked_phone_number_id = account.phone_number_id
        health.checks = checks
        health.token_type = (token.type or "") if token else ""
        health.token_expires_at = (
            datetime.fromtimestamp(token.expires_at, tz=UTC) if token and token.expires_at else None
        )
        health.token_scopes = list(token.scopes) if token else []
        health.number_status = (number.status or "") if number else ""
        health.name_status = (number.name_status or "") if number else ""
        health.quality_rating = (number.quality_rating or "") if number else ""
        health.messaging_limit = (number.messaging_limit_tier or "") if number else ""
        health.last_event_at = last_event_at
        health.signature_failures_24h = failures
        if turned_broken:
            health.broken_since = now
        elif verdict != HealthVerdict.BROKEN:
            health.broken_since = None
        health.save()
        _record_waba_proof(account, checks)
        if is_connected(account):
            _record_alerts(account, health, checks, now, turned_broken=turned_broken)
    logger.info("whatsapp health clinic=%s verdict=%s", account.clinic_id, verdict)
    return health


def _record_waba_proof(account: WhatsAppAccount, checks: list[dict[str, Any]]) -> None:
    """What Meta just said of the number and the WABA becomes the account's proven WABA (the one
    whose events reach it, whatsapp.deliveries): listed in the WABA proves it, missing from the
    list takes the proof away; a refusal or no answer changes nothing.

    A conditional UPDATE on the ids this run read: a change of either meanwhile (which clears
    the proof) is never given a proof about the old ones. It takes no action lease: it writes
    only this column, and no action reads it.
    """
    found = next((check for check in checks if check["key"] == "number_in_waba"), None)
    if found is None or not account.phone_number_id or not account.business_account_id:
        return
    if found["ok"] is True:
        proven = account.business_account_id
    elif found["ok"] is False and found["reason"] == "not_found":
        proven = ""
    else:
        return
    same_ids = WhatsAppAccount.objects.filter(
        pk=account.pk,
        phone_number_id=account.phone_number_id,
        business_account_id=account.business_account_id,
    )
    if same_ids.exclude(proven_business_account_id=proven).update(proven_business_account_id=proven):
        whatsapp_account_changed(clinic_id=account.clinic_id)


def _clear(account: WhatsAppAccount) -> WhatsAppHealth:
    """Forget the stored result (no number to check): `unknown`, as before the first check."""
    blank = WhatsAppHealth(account=account)
    fields = [
        "verdict",
        "checked_at",
        "checks",
        "checked_phone_number_id",
        "token_type",
        "token_expires_at",
        "token_scopes",
        "number_status",
        "name_status",
        "quality_rating",
        "messaging_limit",
        "last_event_at",
        "signature_failures_24h",
        "broken_since",
    ]
    WhatsAppHealth.objects.filter(pk=account.pk).update(**{name: getattr(blank, name) for name in fields})
    return WhatsAppHealth.objects.get(pk=account.pk)


def _record_alerts(
    account: WhatsAppAccount,
    health: WhatsAppHealth,
    checks: list[dict[str, Any]],
    now: datetime,
    *,
    turned_broken: bool,
) -> None:
    """The warnings this run calls for; the unique keys make each one happen once."""
    if turned_broken:
        # The failed checks as stored: the e-mail renders their sentences in the clinic's language.
        failed = [check for check in checks if check["ok"] is False]
        whatsapp_alert_record(
            clinic_id=account.clinic_id,
            kind=AlertKind.BROKEN,
            key=f"broken:{now.isoformat()}",
            params={"checks": failed},
        )
    valid = any(check["key"] == "token_valid" and check["ok"] for check in checks)
    expires = health.token_expires_at
    if not valid or expires is None:
        return
    days = _days_left(expires, now)
    # Only the tightest threshold reached: a first check 5 days before expiry warns once, not twice.
    threshold = next((limit for limit in EXPIRY_WARNINGS if days <= limit), None)
    if threshold is not None:
        whatsapp_alert_record(
            clinic_id=account.clinic_id,
            kind=AlertKind.TOKEN_EXPIRY,
            key=f"{threshold}:{expires.isoformat()}",
            params={"days": days, "expires_at": expires.isoformat()},
        )


def whatsapp_health_claim_run(*, account: WhatsAppAccount) -> int | None:
    """Reserve an on-demand run: None when it may start now, else the seconds to wait.

    A conditional UPDATE of `on_demand_at`, so two servers (or two clicks) at once let one
    run through. Checks the product queues do not touch it: they use no one's allowance.
    """
    now = timezone.now()
    WhatsAppHealth.objects.get_or_create(account=account)
    claimed = (
        WhatsAppHealth.objects.filter(pk=account.pk)
        .filter(Q(on_demand_at__isnull=True) | Q(on_demand_at__lte=now - ON_DEMAND_INTERVAL))
        .update(on_demand_at=now)
    )
    if claimed:
        return None
    started = WhatsAppHealth.objects.get(pk=account.pk).on_demand_at or now
    return max(1, math.ceil((started + ON_DEMAND_INTERVAL - now).total_seconds()))


def whatsapp_health_run_now(*, account: WhatsAppAccount) -> WhatsAppHealth:
    """On demand (endpoint 13's POST, the page's "check now"): at most once a minute per clinic.

    Meta is asked without the client's retries: a person is waiting. With no number to
    check Meta is not asked (the result is `unknown`), but the request still counts: the
    allowance is the caller's, whatever the connection's state.
    """
    wait = whatsapp_health_claim_run(account=account)
    if wait is not None:
        raise AttemptsExhaustedError(
            status=account.status, reason=Detail.of("limit.health_recent", seconds=wait), retry_after=wait
        )
    return whatsapp_health_check(account=account, read_retries=0)


def whatsapp_health_notes(*, account: WhatsAppAccount) -> list[str]:
    """What the health panel says beside the last check, read now, in the active language and time
    zone (the caller activates the clinic's):
    work waiting while no background worker runs, and deliveries refused for the clinic's volume
    in the last 24 hours."""
    notes = []
    if (waiting_since := work_waiting_without_worker()) is not None:
        notes.append(
            _(
                "Messages are waiting: the background worker is not running (work has waited since "
                "%(when)s). Events from Meta and e-mails are applied once it runs again; tell "
                "whoever runs this service."
            )
            % {"when": formats.date_format(timezone.localtime(waiting_since), "DATETIME_FORMAT")}
        )
    refused, last_at = volume_refusals_24h(clinic_id=account.clinic_id, now=timezone.now())
    if refused:
        notes.append(
            ngettext(
                "%(count)s delivery from Meta was refused in the last 24 hours, the last at %(when)s: "
                "more than %(per_minute)s deliveries a minute or %(megabytes)s MB an hour "
                "came for this clinic. Meta sends refused deliveries again later.",
                "%(count)s deliveries from Meta were refused in the last 24 hours, the last at %(when)s: "
                "more than %(per_minute)s deliveries a minute or %(megabytes)s MB an hour "
                "came for this clinic. Meta sends refused deliveries again later.",
                refused,
            )
            % {
                "count": refused,
                "when": formats.date_format(timezone.localtime(last_at), "DATETIME_FORMAT")
                if last_at
                else "?",
                "per_minute": settings.WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE,
                "megabytes": settings.WHATSAPP_WEBHOOK_BYTES_PER_HOUR // (1024 * 1024),
            }
        )
    return notes


# --- in the background --------------------------------------------------------------------------


@task()
def check_whatsapp_health(account_id: str) -> str:
    """The background task: one account's checks (scheduled daily, or after a new token was saved)."""
    account = WhatsAppAccount.objects.filter(pk=account_id).first()
    if account is None:
        return "no such account"
    return str(whatsapp_health_check(account=account).verdict)


def whatsapp_health_schedule(*, day: date) -> int:
    """Queue one check per connected account for `day`; returns how many this call queued.

    Each account is claimed with a conditional UPDATE of `scheduled_on` in the
    transaction that queues its task, so schedulers running at once on several
    machines queue one check per account between them; a check already waiting
    for a worker (queued by a save) serves as the day's.
    """
    accounts = WhatsAppAccount.objects.filter(status__in=CONNECTED_STATUSES).exclude(phone_number_id="")
    queued = 0
    for account_id in accounts.values_list("pk", flat=True).iterator():
        WhatsAppHealth.objects.get_or_create(account_id=account_id)
        with transaction.atomic():
            claimed = (
                WhatsAppHealth.objects.filter(pk=account_id)
                .filter(Q(scheduled_on__isnull=True) | Q(scheduled_on__lt=day))
                .update(scheduled_on=day)
            )
            if claimed and _queue_check(account_id):
                queued += 1
    return queued


def _queue_check(account_id: Any) -> bool:
    """Queue the account's check unless one is already waiting for a worker; True when queued.

    A conditional UPDATE of `check_queued_at` in the caller's transaction (with the task
    row): of any number of saves at once, one queues the check, the others find it waiting.
    """
    now = timezone.now()
    WhatsAppHealth.objects.get_or_create(account_id=account_id)
    with transaction.atomic():
        claimed = (
            WhatsAppHealth.objects.filter(pk=account_id)
            .filter(Q(check_queued_at__isnull=True) | Q(check_queued_at__lt=now - QUEUED_CHECK_LIMIT))
            .update(check_queued_at=now)
        )
        if claimed:
            check_whatsapp_health.enqueue(account_id=str(account_id))
    return bool(claimed)


def whatsapp_health_queue_check(*, account: WhatsAppAccount) -> None:
    """Check the account in the background, soon: after every change of the connection (saved by
    `whatsapp.services.state.save`) and daily. Queued in the caller's transaction; merged with a
    check already waiting. Never uses the clinic's on-demand allowance."""
    _queue_check(account.pk)
