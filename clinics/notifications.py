"""Warning e-mails to a clinic's admins, in the clinic's language, from the conditions whatsapp records.

whatsapp records each condition once (`whatsapp.alerts`, a unique key per
condition) and says so with `alert_recorded`; here the product decides who is
told (the clinic's active admins) and how. The e-mail is sent by a background
task, never inside a request, so a refused or failing mail server never breaks
one. Each alert is a row of the `ALERT_EMAILS` outbox (`common.outbox`): claimed
before it is sent and marked sent after the mail server accepted it, so two workers
never send it twice; a failure is recorded and retried with backoff; an e-mail whose
worker died (or whose task was lost) is queued again by the requeue sweep once its
lease has run out.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.dispatch import receiver
from django.utils import formats, timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_tasks import task

from common.outbox import Outbox
from whatsapp.alerts import alert_recorded
from whatsapp.details import disconnect_detail
from whatsapp.health import check_sentences
from whatsapp.models import AlertKind, WhatsAppAlert

from .models import Clinic, User

logger = logging.getLogger(__name__)

# A sender holds an alert this long; after it, the requeue sweep queues it again (a worker
# that died while sending, a task lost on the way). Far above any mail server's timeout.
SEND_LEASE = timedelta(minutes=5)


@task()
def send_whatsapp_alert(alert_id: int) -> str:
    """The background task: e-mail one alert to its clinic's admins."""
    return clinic_alert_send(alert_id=alert_id)


ALERT_EMAILS: Outbox[WhatsAppAlert] = Outbox(
    model=WhatsAppAlert, task=send_whatsapp_alert, row_arg="alert_id", lease=lambda: SEND_LEASE
)


@receiver(alert_recorded)
def _queue_alert_email(sender: type, alert: WhatsAppAlert, **kwargs: Any) -> None:
    """Queued in the transaction that recorded the alert: both are kept, or neither."""
    ALERT_EMAILS.enqueue(alert)


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
    elif alert.kind == AlertKind.BOT_FAILING:
        subject = _("The bot of %(clinic)s is not answering") % {"clinic": clinic.name}
        lines = [
            _("Patients' messages have not reached the bot of %(clinic)s for 10 minutes.")
            % {"clinic": clinic.name},
            _(
                "They are kept and sent again on schedule; meanwhile their conversations are marked "
                "as needing a person. Check that the bot is running and answers at its URL."
            ),
        ]
        closing = _("Open the clinic's conversations to answer the patients who are waiting.")
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
    alert = ALERT_EMAILS.claim(alert_id)
    if alert is None:
        return "already sent or being sent"
    clinic = Clinic.objects.get(pk=alert.clinic_id)
    recipients = list(
        User.objects.filter(clinic=clinic, role=User.Role.ADMIN, is_active=True)
        .order_by("email")
        .values_list("email", flat=True)
    )
    if not recipients:
        ALERT_EMAILS.succeed(alert, notified_at=timezone.now(), last_error="no active admin to tell")
        return "no recipients"
    with translation.override(clinic.language or settings.LANGUAGE_CODE):
        subject, body = alert_message(alert, clinic)
    try:
        send_mail(subject, body, None, recipients)
    except (smtplib.SMTPException, OSError) as exc:
        logger.warning(
            "whatsapp alert %s: the mail server failed (attempt %d): %s: %s",
            alert.pk,
            alert.attempts,
            type(exc).__name__,
            exc,
        )
        return ALERT_EMAILS.fail(alert, exc)
    ALERT_EMAILS.succeed(alert, notified_at=timezone.now())
    logger.info(
        "whatsapp alert %s (%s) sent to %d admins of %s", alert.pk, alert.kind, len(recipients), clinic.pk
    )
    return f"sent to {len(recipients)}"


def clinic_alerts_requeue_stalled() -> int:
    """Queue again the e-mails whose lease ran out unsent (a worker died, a task was lost)."""
    return ALERT_EMAILS.requeue_stalled()
