"""Password reset on the sign-in page: Django's views, a one-use link for an hour, queued e-mails."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import timezone

from clinics.models import ApiToken, OutgoingEmail
from common.models import AuditEvent
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

RESET_URL = "/accounts/password_reset/"
NEW_PASSWORD = "a-brand-new-passphrase-9"
LINK = re.compile(r"https?://[^/\s]+(/accounts/reset/[^/\s]+/[^/\s]+/)")


def _ask(email: str, **extra):
    return Client(HTTP_ACCEPT_LANGUAGE="en", **extra).post(RESET_URL, {"email": email})


def _link() -> str:
    assert len(mail.outbox) == 1
    found = LINK.search(mail.outbox[0].body)
    assert found, mail.outbox[0].body
    return found.group(1)


def _set_password(link: str, password: str = NEW_PASSWORD):
    """Follow the link as a browser does (Django moves the token into the session), then post."""
    browser = Client(HTTP_ACCEPT_LANGUAGE="en")
    page = browser.get(link, follow=True)
    if "new_password1" not in page.content.decode():
        return page
    return browser.post(page.redirect_chain[-1][0], {"new_password1": password, "new_password2": password})


def test_the_sign_in_page_links_to_the_reset(db):
    page = Client(HTTP_ACCEPT_LANGUAGE="en").get("/accounts/login/")
    assert f'href="{RESET_URL}"' in page.content.decode()
    form = Client(HTTP_ACCEPT_LANGUAGE="es").get(RESET_URL)
    assert form.status_code == 200 and "¿Olvidó su contraseña?" in form.content.decode()


def test_the_same_answer_whether_or_not_the_address_has_an_account(clinic_admin, tasks_run_inline):
    known = _ask("ADMIN@sansalvador.example")
    unknown = _ask("nobody@sansalvador.example")

    assert (known.status_code, known["Location"]) == (302, "/accounts/password_reset/done/")
    assert (unknown.status_code, unknown["Location"]) == (302, "/accounts/password_reset/done/")
    assert [row.to for row in OutgoingEmail.objects.all()] == [clinic_admin.email]
    assert [message.to for message in mail.outbox] == [[clinic_admin.email]]


def test_a_reset_sets_the_password_and_ends_every_api_token(clinic_admin, api_client, tasks_run_inline):
    client = api_client(clinic_admin)
    assert client.get("/api/clinics/settings/").status_code == 200
    _ask(clinic_admin.email)
    sent = mail.outbox[0]
    # In the clinic's language (Spanish), with no secret but the link.
    assert sent.subject == "Elija una nueva contraseña para Clinics"
    assert PASSWORD not in sent.body

    done = _set_password(_link())

    assert (done.status_code, done["Location"]) == (302, "/accounts/reset/done/")
    clinic_admin.refresh_from_db()
    assert clinic_admin.check_password(NEW_PASSWORD)
    assert not ApiToken.objects.filter(user=clinic_admin).exists()
    # The trail names the member who followed the link (nobody was signed in).
    row = AuditEvent.objects.get(clinic_id=clinic_admin.clinic_id, action="member.password_changed")
    assert (row.door, row.actor, row.changes["api_tokens_ended"]) == ("page", clinic_admin.email, 1)
    assert client.get("/api/clinics/settings/").status_code == 401
    browser = Client()
    assert (
        browser.post(
            "/accounts/login/", {"username": clinic_admin.email, "password": NEW_PASSWORD}
        ).status_code
        == 302
    )


def test_the_link_is_one_use(clinic_admin, tasks_run_inline):
    _ask(clinic_admin.email)
    link = _link()
    assert _set_password(link).status_code == 302

    again = _set_password(link, "yet-another-passphrase-3")

    assert "This link no longer works" in again.content.decode()
    clinic_admin.refresh_from_db()
    assert clinic_admin.check_password(NEW_PASSWORD)


def test_the_link_expires_after_an_hour(clinic_admin, tasks_run_inline):
    _ask(clinic_admin.email)
    link = _link()

    with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=False):
        late = _set_password(link)

    assert "This link no longer works" in late.content.decode()
    clinic_admin.refresh_from_db()
    assert clinic_admin.check_password(PASSWORD)


def test_the_email_is_queued_not_sent_in_the_request(clinic_admin, queued_tasks):
    _ask(clinic_admin.email)

    assert mail.outbox == []
    row = OutgoingEmail.objects.get(kind="password_reset")
    assert [(result.task.name, result.kwargs) for result in queued_tasks] == [
        ("send_email", {"email_id": row.pk})
    ]
    assert "/accounts/reset/" in row.body


def test_requests_are_limited_per_client_address(clinic_admin, settings, queued_tasks):
    settings.AXES_FAILURE_LIMIT = 3
    answers = [_ask(clinic_admin.email, REMOTE_ADDR="203.0.113.7").status_code for _ in range(5)]

    assert answers == [302, 302, 302, 429, 429]
    limited = _ask("nobody@example.com", REMOTE_ADDR="203.0.113.7")
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "Too many password reset requests" in limited.content.decode()
    assert OutgoingEmail.objects.count() == 3
    # Another address is not slowed down.
    assert _ask(clinic_admin.email, REMOTE_ADDR="198.51.100.4").status_code == 302


def test_a_deactivated_member_gets_no_link(clinic_admin, clinic_staff, tasks_run_inline):
    clinic_staff.is_active = False
    clinic_staff.save()

    assert _ask(clinic_staff.email).status_code == 302
    assert mail.outbox == [] and not OutgoingEmail.objects.exists()
