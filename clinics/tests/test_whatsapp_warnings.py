"""Warning e-mails to a clinic's admins: the token-expiry schedule with time moved forward, a verdict
turning broken, Meta disconnecting the number, each once; and a mail server that fails."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import translation

from clinics.models import Clinic
from clinics.notifications import ALERT_EMAILS, SEND_LEASE, clinic_alert_send, clinic_alerts_requeue_stalled
from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.health import whatsapp_health_check
from whatsapp.models import WhatsAppAlert
from whatsapp.tests.helpers import (
    account_deleted,
    account_of,
    arrange_active,
    debug_token,
    disabled_update,
    healthy_meta,
    meta_bytes,
    partner_app_uninstalled,
    phone_number,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(days=20)


@pytest.fixture
def connected(clinic, clinic_admin, clinic_staff):
    return arrange_active(clinic, connected_at=T0 - timedelta(days=60))


def daily_checks(graph, account, days: range, **meta) -> None:
    """The scheduled check once a day at 09:00, Meta answering the same each day."""
    for day in days:
        healthy_meta(graph, **meta)
        with time_machine.travel(T0 + timedelta(days=day), tick=False):
            whatsapp_health_check(account=account)


def test_the_expiry_warnings_go_out_once_at_14_7_and_1_days(connected, graph, tasks_run_inline):
    token = debug_token(expires_at=int(EXPIRES.timestamp()))

    daily_checks(graph, connected, range(20), token=token)

    subjects = [message.subject for message in mail.outbox]
    assert subjects == [
        "WhatsApp de Clínica San Salvador: el token de acceso caduca en 14 días",
        "WhatsApp de Clínica San Salvador: el token de acceso caduca en 7 días",
        "WhatsApp de Clínica San Salvador: el token de acceso caduca en 1 día",
    ]
    # To the clinic's admins only, never its staff.
    assert all(message.to == ["admin@sansalvador.example"] for message in mail.outbox)
    assert "21 de diciembre de 2026" in mail.outbox[0].body
    alerts = WhatsAppAlert.objects.filter(kind="token_expiry").order_by("created_at")
    assert [alert.key.split(":")[0] for alert in alerts] == ["14", "7", "1"]
    assert all(alert.notified_at is not None for alert in alerts)
    assert [alert.created_at.date() for alert in alerts] == [
        (T0 + timedelta(days=6)).date(),
        (T0 + timedelta(days=13)).date(),
        (T0 + timedelta(days=19)).date(),
    ]


def test_a_clinic_in_english_gets_english(connected, graph, tasks_run_inline):
    Clinic.objects.filter(pk=connected.clinic_id).update(language="en")

    daily_checks(graph, connected, range(6, 8), token=debug_token(expires_at=int(EXPIRES.timestamp())))

    assert [message.subject for message in mail.outbox] == [
        "WhatsApp of Clínica San Salvador: the access token expires in 14 days"
    ]
    assert "Dec. 21, 2026" in mail.outbox[0].body


def test_a_first_check_close_to_expiry_warns_once_not_for_every_threshold(connected, graph, tasks_run_inline):
    daily_checks(graph, connected, range(16, 18), token=debug_token(expires_at=int(EXPIRES.timestamp())))

    assert len(mail.outbox) == 1
    assert "4 días" in mail.outbox[0].subject


def test_a_new_token_starts_a_new_schedule(connected, graph, tasks_run_inline):
    daily_checks(graph, connected, range(6, 7), token=debug_token(expires_at=int(EXPIRES.timestamp())))
    later = EXPIRES + timedelta(days=60)
    daily_checks(graph, connected, range(66, 67), token=debug_token(expires_at=int(later.timestamp())))

    assert len(mail.outbox) == 2


def test_a_broken_verdict_is_told_once_per_episode(connected, graph, tasks_run_inline):
    daily_checks(graph, connected, range(3), number=phone_number("BANNED"))

    assert [message.subject for message in mail.outbox] == [
        "WhatsApp de Clínica San Salvador dejó de funcionar"
    ]
    assert "BANNED" in mail.outbox[0].body


def test_a_disconnecting_event_is_told_once(connected, tasks_run_inline):
    body = meta_bytes(account_deleted())
    delivery = whatsapp_delivery_store(account=connected, body=body, signed_with_clinic_secret=True)
    assert delivery is not None
    whatsapp_delivery_process(delivery_id=str(delivery.pk))  # a duplicate task: nothing more

    assert [message.subject for message in mail.outbox] == [
        "Meta desconectó el WhatsApp de Clínica San Salvador"
    ]
    assert "eliminada" in mail.outbox[0].body
    assert account_of(connected.clinic).status == "failed"


@pytest.mark.parametrize(
    "payload",
    [account_deleted(), disabled_update("DISABLE"), partner_app_uninstalled()],
    ids=["deleted", "disabled", "uninstalled"],
)
def test_the_email_explains_the_event_as_the_page_does(connected, tasks_run_inline, payload):
    delivery = whatsapp_delivery_store(
        account=connected, body=meta_bytes(payload), signed_with_clinic_secret=True
    )
    assert delivery is not None

    (message,) = mail.outbox
    account = account_of(connected.clinic)
    assert account.status == "failed"
    with translation.override("es"):
        explained = account.detail  # the page's status detail, in the clinic's language
    assert explained
    assert explained in message.body


# --- a failing mail server ---------------------------------------------------------------------------


@pytest.fixture
def refusing_mail_server(settings):
    """SMTP to a local port nobody listens on: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_TIMEOUT = 2


def test_a_refused_mail_server_never_breaks_the_request(
    admin_api, connected, graph, refusing_mail_server, tasks_run_inline, settings
):
    settings.TASK_RETRY_ATTEMPTS = 2
    healthy_meta(graph, number=phone_number("BANNED"))

    response = admin_api.post("/api/clinics/whatsapp/health/")

    assert response.status_code == 200
    assert response.json()["verdict"] == "broken"
    alert = WhatsAppAlert.objects.get()
    assert alert.notified_at is None
    assert alert.attempts == 2  # tried, and tried again (at once: the immediate backend cannot wait)
    assert "ConnectionRefusedError" in alert.last_error


def test_the_warning_is_retried_with_backoff_until_the_server_answers(
    connected, graph, refusing_mail_server, queued_tasks, settings
):
    healthy_meta(graph, number=phone_number("BANNED"))
    with time_machine.travel(T0, tick=False):
        whatsapp_health_check(account=connected)
    alert = WhatsAppAlert.objects.get()
    assert [r.task.name for r in queued_tasks] == ["send_whatsapp_alert"]

    with time_machine.travel(T0, tick=False):
        assert clinic_alert_send(alert_id=alert.pk) == "retrying in 30 s"
    retry = queued_tasks[-1]
    assert retry.task.run_after == T0 + timedelta(seconds=30)
    assert mail.outbox == []

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert clinic_alert_send(**retry.kwargs) == "sent to 1"
    assert clinic_alert_send(**retry.kwargs) == "already sent or being sent"
    assert len(mail.outbox) == 1
    alert.refresh_from_db()
    assert (alert.attempts, alert.last_error) == (2, "")
    assert alert.notified_at is not None


def test_an_unsent_warning_is_queued_again_when_its_lease_runs_out(connected, graph, queued_tasks):
    healthy_meta(graph, number=phone_number("BANNED"))
    with time_machine.travel(T0, tick=False):
        whatsapp_health_check(account=connected)
    queued_tasks.clear()  # the task was lost

    with time_machine.travel(T0 + SEND_LEASE - timedelta(seconds=30)):
        assert clinic_alerts_requeue_stalled() == 0  # give the first task time
    with time_machine.travel(T0 + SEND_LEASE + timedelta(seconds=30)):
        assert clinic_alerts_requeue_stalled() == 1
        assert clinic_alerts_requeue_stalled() == 0  # queued once, however many sweeps run

    assert [r.task.name for r in queued_tasks] == ["send_whatsapp_alert"]


def test_a_warning_whose_worker_died_is_sent_by_the_next_sweep(connected, graph, queued_tasks, capsys):
    healthy_meta(graph, number=phone_number("BANNED"))
    with time_machine.travel(T0, tick=False):
        whatsapp_health_check(account=connected)
        alert = WhatsAppAlert.objects.get()
        # A worker takes the e-mail and dies before the mail server answers.
        assert ALERT_EMAILS.claim(alert.pk) is not None
    queued_tasks.clear()

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        assert clinic_alert_send(alert_id=alert.pk) == "already sent or being sent"  # a duplicate task
        call_command("requeue_stalled")
    with time_machine.travel(T0 + SEND_LEASE + timedelta(minutes=1), tick=False):
        call_command("requeue_stalled")  # the sweep every 5 minutes, not the next day's
        (retry,) = queued_tasks
        assert clinic_alert_send(**retry.kwargs) == "sent to 1"

    out = capsys.readouterr().out.splitlines()
    assert out == [
        "0 stalled deliveries, 0 stalled e-mails and 0 stalled deliveries to bots queued again; "
        "0 tasks of dead workers taken again",
        "0 stalled sends queued again; 0 sends with a lost answer now unknown",
        "0 stalled deliveries, 1 stalled e-mails and 0 stalled deliveries to bots queued again; "
        "0 tasks of dead workers taken again",
        "0 stalled sends queued again; 0 sends with a lost answer now unknown",
    ]
    assert [message.subject for message in mail.outbox] == [
        "WhatsApp de Clínica San Salvador dejó de funcionar"
    ]
    alert.refresh_from_db()
    assert (alert.state, alert.attempts, alert.lease_expires_at) == ("done", 2, None)
    assert alert.notified_at == T0 + SEND_LEASE + timedelta(minutes=1)


def test_admin_shows_each_warnings_state_and_filters_by_it(superuser, connected, graph, refusing_mail_server):
    broken = WhatsAppAlert.objects.create(clinic=connected.clinic, kind="broken", key="b1")
    WhatsAppAlert.objects.create(clinic=connected.clinic, kind="token_expiry", key="14:x", state="done")
    assert clinic_alert_send(alert_id=broken.pk).startswith("retrying in")
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)

    page = client.get("/admin/whatsapp/whatsappalert/").content.decode()
    retrying = client.get("/admin/whatsapp/whatsappalert/", {"state__exact": "retrying"}).content.decode()
    detail = client.get(f"/admin/whatsapp/whatsappalert/{broken.pk}/change/").content.decode()

    assert "Failed, will retry" in page and "Done" in page
    assert "b1" in retrying and "14:x" not in retrying
    assert "ConnectionRefusedError" in detail
    assert "Next attempt" in detail
