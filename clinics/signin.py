"""The sign-in limiter's hooks into django-axes: whose buckets, what a locked-out caller sees, who is told.

django-axes counts failed sign-ins on every door that calls Django's
`authenticate()` (the API's token endpoint, `/accounts/login/`, `/admin/login/`)
in the shared cache, and refuses further attempts before any password is hashed.
Its buckets (settings.AXES_LOCKOUT_PARAMETERS) are the client address, and the
account *and* address together: an attacker at one address stops only
themselves, and failures from other addresses never keep an account's owner
out. What an account alone collects from many addresses locks nothing; at
SIGN_IN_ALERT_FAILURES within an hour its user and the clinic's admins get one
e-mail (queued in the e-mail outbox, `clinics.mail`, so no sign-in waits on the mail server). Successful
sign-ins count against no one.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from axes.checks import Codes, Messages
from axes.handlers.cache import AxesCacheHandler
from axes.helpers import get_client_username
from django.conf import settings
from django.core import checks
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from common.http import client_address_bucket

from .mail import clinic_language, email_queue
from .models import Clinic, OutgoingEmail, User, canonical_email

logger = logging.getLogger(__name__)

API_NAMESPACE = "clinics-api"


def sign_in_account(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """The per-account bucket: the canonical e-mail, so every spelling of one account shares it.

    axes keys both buckets by the bare value, so a "username" written like an IP
    address would count against that address (and lock out everyone behind it).
    A string without "@" is no account: it gets a prefix no address can have.
    """
    raw = (credentials or {}).get("username")
    if raw is None:
        raw = request.POST.get("username", "")
    account = canonical_email(str(raw))
    return account if "@" in account else f"not-an-email:{account}"


# axes keys a bucket by its values written one after the other ("account" + "address"):
# a tag in front of the address, which no address contains, keeps the account's part
# from running into it (account "a@b.c1" at 2.3.4.5 is not account "a@b.c" at 12.3.4.5).
ADDRESS_TAG = "address="


def sign_in_address(request: HttpRequest) -> str:
    """The per-address bucket: the client address (an IPv6 client's /64), tagged."""
    return ADDRESS_TAG + client_address_bucket(request)


# The window in which an account's failures from all addresses are counted, and how
# long after an e-mail about them no other is sent for that account.
ALERT_WINDOW_SECONDS = 60 * 60
ALERT_QUIET_SECONDS = 24 * 60 * 60


def _account_key(kind: str, account: str) -> str:
    return f"sign-in-{kind}:" + hashlib.sha256(account.encode("utf-8")).hexdigest()


def count_in_window(key: str, seconds: int) -> int:
    """One more in the shared cache's counter `key`; the count in its fixed window of `seconds`.

    The window starts at the first count (`add`); `incr` never extends it.
    """
    cache.add(key, 0, timeout=seconds)
    try:
        return int(cache.incr(key))
    except ValueError:  # the window ended between the two calls
        cache.add(key, 1, timeout=seconds)
        return 1


def count_account_failure(account: str) -> int:
    """One more failure on `account` from any address; at the alert threshold, queue the e-mail once.

    Only counted failures come here (axes refuses locked attempts before this):
    an attacker at one address reaches its own limit long before this one.
    """
    if "@" not in account:
        return 0  # not an e-mail: no one to tell
    failures = count_in_window(_account_key("failures", account), ALERT_WINDOW_SECONDS)
    if failures == settings.SIGN_IN_ALERT_FAILURES and cache.add(
        _account_key("told", account), 1, timeout=ALERT_QUIET_SECONDS
    ):
        sign_in_alert_queue(email=account, failures=failures)
    return failures


class SignInHandler(AxesCacheHandler):
    """axes' cache handler, plus the count of an account's failures from every address."""

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
    ) -> None:
        # An attempt refused while locked hashes no password and is counted nowhere.
        refused = request is None or bool(getattr(request, "axes_locked_out", False))
        super().user_login_failed(sender, credentials, request, **kwargs)
        if not refused:
            count_account_failure(str(get_client_username(request, credentials)))


@checks.register(checks.Tags.security, checks.Tags.caches)
def check_sign_in_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """axes' own warning (axes.W001), which it gives only for its own handler's name: a cache
    that each process keeps to itself counts every worker's failures apart."""
    backend = settings.CACHES.get(getattr(settings, "AXES_CACHE", "default"), {}).get("BACKEND", "")
    per_process = {
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.filebased.FileBasedCache",
    }
    if settings.AXES_HANDLER == "clinics.signin.SignInHandler" and backend in per_process:
        return [checks.Warning(Messages.CACHE_INVALID, id=Codes.CACHE_INVALID)]
    return []


def sign_in_alert_queue(*, email: str, failures: int) -> int:
    """Queue the e-mail to the account's user and their clinic's admins: many failed sign-ins, nothing locked.

    One row of the e-mail outbox per recipient, in the clinic's language, written in
    one transaction; the worker sends them. Returns how many were queued.
    """
    user = User.objects.filter(email=email, is_active=True).select_related("clinic").first()
    if user is None:
        return 0
    clinic = user.clinic
    recipients = [user.email]
    if clinic is not None:
        admins = User.objects.filter(clinic=clinic, role=User.Role.ADMIN, is_active=True).order_by("email")
        recipients += [admin for admin in admins.values_list("email", flat=True) if admin != user.email]
    with translation.override(clinic_language(clinic)):
        subject, body = sign_in_alert_message(user, clinic, failures)
    with transaction.atomic():
        for recipient in recipients:
            email_queue(
                kind=OutgoingEmail.Kind.SIGN_IN_ALERT, to=recipient, subject=subject, body=body, clinic=clinic
            )
    logger.info("sign-in alert for user %s queued for %d recipients", user.pk, len(recipients))
    return len(recipients)


def sign_in_alert_message(user: User, clinic: Clinic | None, failures: int) -> tuple[str, str]:
    """Subject and body in the active language."""
    subject = _("Many failed sign-ins to %(email)s") % {"email": user.email}
    where = (
        _("the account %(email)s of %(clinic)s") % {"email": user.email, "clinic": clinic.name}
        if clinic is not None
        else _("the account %(email)s") % {"email": user.email}
    )
    lines = [
        _("Hello,"),
        ngettext(
            "In the last hour %(count)d sign-in to %(where)s failed, from several addresses.",
            "In the last hour %(count)d sign-ins to %(where)s failed, from several addresses.",
            failures,
        )
        % {"count": failures, "where": where},
        _(
            "Someone may be guessing its password. The account is not locked: its owner still signs "
            "in with the right password, and each guessing address is slowed down on its own."
        ),
        _(
            "If the password is short or used elsewhere, change it on the settings page. "
            "You will not get another e-mail about this account for a day."
        ),
    ]
    return subject, "\n\n".join(lines)


def retry_after_seconds() -> int:
    """How long a lock lasts: the cool-off, counted from the failure that set it."""
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def sign_in_locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """429 with Retry-After: the API's JSON body, or a page that says how long to wait."""
    seconds = retry_after_seconds()
    minutes = max(1, round(seconds / 60))
    message = ngettext(
        "Too many failed sign-in attempts. Try again in %(minutes)d minute.",
        "Too many failed sign-in attempts. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}
    match = getattr(request, "resolver_match", None)
    if match is not None and API_NAMESPACE in match.namespaces:
        locked: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        locked = render(
            request,
            "registration/locked_out.html",
            {"message": message, "title": _("Sign-in paused")},
            status=429,
        )
        locked["Cache-Control"] = "no-store"
    locked["Retry-After"] = str(seconds)
    return locked
