"""Warning e-mails to a clinic's admins, in the clinic's language, from the conditions whatsapp records.

whatsapp records each condition once (`whatsapp.alerts`, a unique key per
condition) and says so with `alert_recorded`; here the product decides who is
told (the clinic's active admins) and how. The e-mail is sent by a background
task, never inside a request, so a refused or failing mail server never breaks
one: the task records the error and tries again with backoff. An alert is
claimed before it is sent and marked sent after the mail server accepted it, so
two workers never send it twice.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_tasks import task

from common.tasks import enqueue_after, retry_delay
from whatsapp.alerts import alert_recorded
from whatsapp.details import disconnect_detail
from whatsapp.health import check_sentences
from whatsapp.models import AlertKind, WhatsAppAlert

from .models import Clinic, User

logger = logging.getLogger(__name__)

# A sender holds an alert this long; a worker that died while sending lets it go after.
SEND_LEASE = timedelta(minutes=5)
# Alerts older than this and still unsent are queued again by the daily command (a lost task).
UNSENT_GRACE = timedelta(minutes=30)


@receiver(alert_recorded)
def _queue_alert_email(sender: type, alert: WhatsAppAlert, **kwargs: Any) -> None:
    """Queued in the transaction that recorded the alert: both are kept, or neither."""
    send_whatsapp_alert.enqueue(alert_id=alert.pk)


@task()
def send_whatsapp_alert(alert_id: int) -> str:
    """The background task: e-mail one alert to its clinic's admins."""
    return clinic_alert_send(alert_id=alert_id)


def _date(value: str) -> str:
    return formats.date_format(datetime.fromisoformat(value), "DATE_FORMAT")


def alert_message(alert: WhatsAppAlert, clinic: Clinic) -> tuple[str, str]:
    """Subject and body in the active language."""
    params = alert.params or {}
    greeting = _("Hello,")
    closing = _("Open the clinic's settings page to see the connection's health and fix it.")
    if alert.kind == AlertKind.TOKEN_EXPIRY:
        days = int(params.get("days", 0))
        subject = ngettext(
            "WhatsApp of %(clinic)s: the access token expires in %(days)d day",
            "WhatsApp of %(clinic)s: the access token expires in %(days)d days",
            days,
        ) % {"clinic": clinic.name, "days": days}
        lines = [
            _("The access token that connects %(clinic)s to WhatsApp expires on %(date)s.")
            % {"clinic": clinic.name, "date": _date(params["expires_at"])},
            _("After that date the bot can neither send nor receive messages."),
            _(
                "Create a system user's token that does not expire in Meta Business Settings and "
                "save it on the settings page."
            ),
        ]
    elif alert.kind == AlertKind.BROKEN:
        subject = _("WhatsApp of %(clinic)s stopped working") % {"clinic": clinic.name}
        lines = [
            _("The last check of the WhatsApp connection of %(clinic)s found:") % {"clinic": clinic.name}
        ]
        for check in params.get("checks") or []:
            detail, fix = check_sentences(check)
            if detail:
                lines.append(f"- {detail} {fix or ''}".rstrip())
    else:
        subject = _("WhatsApp of %(clinic)s was disconnected by Meta") % {"clinic": clinic.name}
        lines = [
            disconnect_detail(str(params.get("event", ""))).render(),
            _("Patients' messages no longer reach the bot."),
        ]
    body = "\n\n".join([greeting, *lines, closing])
    return subject, body


def clinic_alert_send(*, alert_id: int) -> str:
    """Send one alert now unless it was sent (or is being sent); never raises for the mail server."""
    now = timezone.now()
    claimed = (
        WhatsAppAlert.objects.filter(pk=alert_id, notified_at__isnull=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + SEND_LEASE, attempts=F("attempts") + 1)
    )
    if not claimed:
        return "already sent or being sent"
    alert = WhatsAppAlert.objects.get(pk=alert_id)
    clinic = Clinic.objects.get(pk=alert.clinic_id)
    recipients = list(
        User.objects.filter(clinic=clinic, role=User.Role.ADMIN, is_active=True)
        .order_by("email")
        .values_list("email", flat=True)
    )
    if not recipients:
        WhatsAppAlert.objects.filter(pk=alert_id).update(
            notified_at=now, claimed_until=None, last_error="no active admin to tell"
        )
        return "no recipients"
    with translation.override(clinic.language or settings.LANGUAGE_CODE):
        subject, body = alert_message(alert, clinic)
    try:
        send_mail(subject, body, None, recipients)
    except (smtplib.SMTPException, OSError) as exc:
        return _record_failure(alert, exc)
    WhatsAppAlert.objects.filter(pk=alert_id).update(
        notified_at=timezone.now(), claimed_until=None, last_error=""
    )
    logger.info(
        "whatsapp alert %s (%s) sent to %d admins of %s", alert.pk, alert.kind, len(recipients), clinic.pk
    )
    return f"sent to {len(recipients)}"


def _record_failure(alert: WhatsAppAlert, exc: Exception) -> str:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    logger.warning(
        "whatsapp alert %s: the mail server failed (attempt %d): %s", alert.pk, alert.attempts, error
    )
    WhatsAppAlert.objects.filter(pk=alert.pk).update(claimed_until=None, last_error=error)
    if alert.attempts >= settings.TASK_RETRY_ATTEMPTS:
        return f"given up: {error}"
    delay = retry_delay(alert.attempts)
    enqueue_after(send_whatsapp_alert, delay, alert_id=alert.pk)
    return f"retrying in {int(delay.total_seconds())} s"


def clinic_alerts_requeue_unsent() -> int:
    """Queue again the alerts still unsent long after they were recorded (a task lost on the way)."""
    now = timezone.now()
    stale = (
        WhatsAppAlert.objects.filter(
            notified_at__isnull=True,
            created_at__lt=now - UNSENT_GRACE,
            attempts__lt=settings.TASK_RETRY_ATTEMPTS,
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .values_list("pk", flat=True)
    )
    queued = 0
    for alert_id in stale[:1000]:
        send_whatsapp_alert.enqueue(alert_id=alert_id)
        queued += 1
    return queued
