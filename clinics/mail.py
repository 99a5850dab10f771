"""Outgoing e-mails to people (invitations, password resets, sign-in alerts), through the outbox loop.

Each e-mail is a row of `EMAILS` (`common.outbox`), written with its task in the
transaction that causes it: an invitation saved and its e-mail are kept together,
or neither is. A worker sends it through `EMAIL_URL`, claimed first so two workers
never both send it; a refused or failing mail server is recorded and retried with
backoff; the requeue sweep takes again a row whose worker died. The text is
rendered by the caller in the clinic's language. A body can carry a one-use
link, so it is emptied once the mail server accepted it.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django_tasks import task

from common.outbox import Outbox

from .models import Clinic, OutgoingEmail

logger = logging.getLogger(__name__)

# A sender holds an e-mail this long; after it the requeue sweep queues it again.
SEND_LEASE = timedelta(minutes=5)


@task()
def send_email(email_id: int) -> str:
    """The background task: send one queued e-mail."""
    return email_send(email_id=email_id)


EMAILS: Outbox[OutgoingEmail] = Outbox(
    model=OutgoingEmail, task=send_email, row_arg="email_id", lease=lambda: SEND_LEASE
)


def clinic_language(clinic: Clinic | None) -> str:
    """The language of e-mails about `clinic` (the site's default without one)."""
    return (clinic.language if clinic is not None else "") or settings.LANGUAGE_CODE


def email_queue(
    *, kind: str, to: str, subject: str, body: str, clinic: Clinic | None = None
) -> OutgoingEmail:
    """Write one e-mail and queue its sending, in the caller's transaction (or one of its own)."""
    with transaction.atomic():
        row = OutgoingEmail.objects.create(
            kind=kind, to=to, subject=" ".join(subject.split())[:300], body=body, clinic=clinic
        )
        EMAILS.enqueue(row)
    return row


def email_send(*, email_id: int) -> str:
    """Send one e-mail unless it was sent (or is being sent); never raises for the mail server."""
    row = EMAILS.claim(email_id)
    if row is None:
        return "already sent or being sent"
    try:
        send_mail(row.subject, row.body, None, [row.to])
    except (smtplib.SMTPException, OSError) as exc:
        logger.warning(
            "e-mail %s (%s): the mail server failed (attempt %d): %s", row.pk, row.kind, row.attempts, exc
        )
        return EMAILS.fail(row, exc)
    EMAILS.succeed(row, sent_at=timezone.now(), body="")
    logger.info("e-mail %s (%s) sent", row.pk, row.kind)
    return "sent"


def emails_requeue_stalled() -> int:
    """Queue again the e-mails whose lease ran out unsent (a worker died, a task was lost)."""
    return EMAILS.requeue_stalled()
