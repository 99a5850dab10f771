"""Invitations: an admin invites by e-mail; the one-use link (72 hours) is accepted by a POST."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import timezone

from clinics.mail import EMAILS, email_send
from clinics.models import Invitation, OutgoingEmail, User
from common.models import AuditEvent
from common.outbox import OutboxState

pytestmark = pytest.mark.django_db

MEMBERS_URL = "/api/clinics/members/"
NEW_PASSWORD = "a-long-new-passphrase-42"
LINK = re.compile(r"https?://[^/\s]+(/accounts/invitation/([A-Za-z0-9_-]+)/)")


def _invite(api_client, admin: User, email: str = "nurse@sansalvador.example", role: str = "staff"):
    return api_client(admin).post(MEMBERS_URL, {"email": email, "role": role}, format="json")


def _link(email: OutgoingEmail) -> str:
    found = LINK.search(email.body)
    assert found, email.body
    return found.group(1)


def _accept(path: str, name: str = "Ana Pérez", password: str = NEW_PASSWORD):
    return Client(HTTP_ACCEPT_LANGUAGE="en").post(
        path, {"full_name": name, "password1": password, "password2": password}
    )


def test_an_invited_person_sets_a_password_and_signs_in(clinic, clinic_admin, api_client, tasks_run_inline):
    response = _invite(api_client, clinic_admin, "Nurse@SanSalvador.example")

    assert response.status_code == 201, response.content
    assert response.json()["email"] == "nurse@sansalvador.example"
    # Queued in the clinic's language (Spanish) and sent by the worker.
    row = OutgoingEmail.objects.get(kind="invitation")
    assert row.state == OutboxState.DONE and row.sent_at is not None
    assert row.body == ""  # the link leaves the database once the mail server took it
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["nurse@sansalvador.example"]
    assert sent.subject == "Le invitan a unirse a Clínica San Salvador"
    path = LINK.search(sent.body).group(1)
    key = LINK.search(sent.body).group(2)
    # Only the token's hash is stored.
    invitation = Invitation.objects.get()
    assert invitation.digest == Invitation.hash_key(key) and key not in invitation.digest
    assert not User.objects.filter(email="nurse@sansalvador.example").exists()

    answer = _accept(path)

    assert answer.status_code == 302 and answer["Location"] == "/accounts/login/"
    user = User.objects.get(email="nurse@sansalvador.example")
    assert (user.clinic_id, user.role, user.full_name) == (clinic.pk, "staff", "Ana Pérez")
    browser = Client()
    signed_in = browser.post("/accounts/login/", {"username": user.email, "password": NEW_PASSWORD})
    assert signed_in.status_code == 302
    assert browser.get("/settings/").status_code == 200
    actions = list(
        AuditEvent.objects.filter(clinic_id=clinic.pk, action__startswith="member.")
        .exclude(action="member.added")
        .order_by("seq")
        .values_list("action", "actor", "door")
    )
    assert actions == [
        ("member.invited", clinic_admin.email, "api"),
        ("member.joined", user.email, "page"),
    ]


def test_a_get_of_the_link_changes_nothing_and_the_link_is_one_use(
    clinic_admin, api_client, tasks_run_inline
):
    _invite(api_client, clinic_admin)
    path = LINK.search(mail.outbox[0].body).group(1)

    for _ in range(3):  # a mail scanner, a preview, the person
        page = Client(HTTP_ACCEPT_LANGUAGE="en").get(path)
        assert page.status_code == 200
        assert "Join the team of Clínica San Salvador" in page.content.decode()
    assert not User.objects.filter(email="nurse@sansalvador.example").exists()
    assert Invitation.objects.get().accepted_at is None

    assert _accept(path).status_code == 302
    again = _accept(path, password="another-long-passphrase-7")

    assert again.status_code == 404
    assert "no longer works" in again.content.decode()
    user = User.objects.get(email="nurse@sansalvador.example")
    assert user.check_password(NEW_PASSWORD)


def test_the_password_must_pass_djangos_validators(clinic_admin, api_client, tasks_run_inline):
    _invite(api_client, clinic_admin)
    path = LINK.search(mail.outbox[0].body).group(1)

    weak = _accept(path, password="12345678")

    assert weak.status_code == 400
    assert "This password is too common." in weak.content.decode()
    assert not User.objects.filter(email="nurse@sansalvador.example").exists()


def test_the_link_expires_after_72_hours(clinic_admin, api_client, tasks_run_inline):
    _invite(api_client, clinic_admin)
    path = LINK.search(mail.outbox[0].body).group(1)

    with time_machine.travel(timezone.now() + timedelta(hours=71, minutes=59), tick=False):
        assert Client().get(path).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(hours=72, minutes=1), tick=False):
        assert Client().get(path).status_code == 404
        assert _accept(path).status_code == 404
    assert not User.objects.filter(email="nurse@sansalvador.example").exists()


def test_resend_ends_the_old_link(clinic, clinic_admin, api_client, tasks_run_inline):
    invitation_id = _invite(api_client, clinic_admin).json()["id"]
    old = LINK.search(mail.outbox[0].body).group(1)

    response = api_client(clinic_admin).post(f"{MEMBERS_URL}invitations/{invitation_id}/resend/")

    assert response.status_code == 200, response.content
    assert len(mail.outbox) == 2
    new = LINK.search(mail.outbox[1].body).group(1)
    assert new != old
    assert Client().get(old).status_code == 404
    assert _accept(old).status_code == 404
    assert _accept(new).status_code == 302
    assert User.objects.filter(email="nurse@sansalvador.example", clinic=clinic).exists()


def test_revoke_ends_the_link(clinic, clinic_admin, api_client, tasks_run_inline):
    invitation_id = _invite(api_client, clinic_admin).json()["id"]
    path = LINK.search(mail.outbox[0].body).group(1)

    response = api_client(clinic_admin).delete(f"{MEMBERS_URL}invitations/{invitation_id}/")

    assert response.status_code == 204
    assert _accept(path).status_code == 404
    assert not User.objects.filter(email="nurse@sansalvador.example").exists()
    row = AuditEvent.objects.get(clinic_id=clinic.pk, action="invitation.revoked")
    assert (row.actor, row.door, row.changes) == (
        clinic_admin.email,
        "api",
        {"member": "nurse@sansalvador.example"},
    )
    assert api_client(clinic_admin).get(f"{MEMBERS_URL}invitations/").json()["results"] == []


def test_staff_cannot_invite(clinic_staff, api_client, queued_tasks):
    response = _invite(api_client, clinic_staff)

    assert response.status_code == 403
    assert not Invitation.objects.exists() and not OutgoingEmail.objects.exists()
    assert list(queued_tasks) == []
    page = Client()
    page.force_login(clinic_staff)
    assert page.post("/team/invite/", {"email": "x@example.com", "role": "admin"}).status_code == 403
    assert page.get("/team/").status_code == 403
    assert not Invitation.objects.exists()


def test_an_address_with_an_account_is_refused(clinic_admin, other_clinic_admin, api_client, queued_tasks):
    response = _invite(api_client, clinic_admin, "ADMIN@santaana.example")

    assert response.status_code == 400
    assert response.json() == {"email": ["This e-mail address already has an account."]}
    assert not Invitation.objects.exists() and not OutgoingEmail.objects.exists()


def test_bad_input_is_refused_and_changes_nothing(clinic_admin, api_client):
    client = api_client(clinic_admin)
    assert set(
        client.post(MEMBERS_URL, {"email": "not-an-email", "role": "staff"}, format="json").json()
    ) == {"email"}
    assert set(
        client.post(MEMBERS_URL, {"email": "a@example.com", "role": "owner"}, format="json").json()
    ) == {"role"}
    assert not Invitation.objects.exists()


def test_the_team_page_invites_resends_and_revokes(clinic, clinic_admin, tasks_run_inline):
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)

    sent = page.post("/team/invite/", {"email": "doctor@sansalvador.example", "role": "admin"}, follow=True)

    assert "Invitation sent to doctor@sansalvador.example." in sent.content.decode()
    assert "doctor@sansalvador.example" in page.get("/team/").content.decode()
    invitation = Invitation.objects.get()
    assert invitation.role == "admin" and invitation.invited_by == clinic_admin
    page.post(f"/team/invitations/{invitation.pk}/resend/")
    assert len(mail.outbox) == 2
    page.post(f"/team/invitations/{invitation.pk}/revoke/")
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert _accept(LINK.search(mail.outbox[1].body).group(1)).status_code == 404
    doors = set(
        AuditEvent.objects.filter(
            clinic_id=clinic.pk, action__in=["member.invited", "invitation.revoked"]
        ).values_list("door", flat=True)
    )
    assert doors == {"page"}


def test_the_email_is_a_queued_row_sent_by_the_worker_with_retries(
    clinic_admin, api_client, queued_tasks, settings, monkeypatch
):
    settings.TASK_RETRY_ATTEMPTS = 2
    _invite(api_client, clinic_admin)
    row = OutgoingEmail.objects.get()
    assert mail.outbox == []
    assert [(result.task.name, result.kwargs) for result in queued_tasks] == [
        ("send_email", {"email_id": row.pk})
    ]

    def refuse(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr("clinics.mail.send_mail", refuse)
    assert email_send(email_id=row.pk).startswith("retrying in")
    row.refresh_from_db()
    assert (row.state, row.attempts) == (OutboxState.RETRYING, 1)
    assert "connection refused" in row.last_error
    assert "/accounts/invitation/" in row.body  # kept until it is sent

    monkeypatch.undo()
    OutgoingEmail.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert email_send(email_id=row.pk) == "sent"
    row.refresh_from_db()
    assert (row.state, row.attempts, row.body) == (OutboxState.DONE, 2, "")
    assert email_send(email_id=row.pk) == "already sent or being sent"
    assert len(mail.outbox) == 1
    # No secret other than the link: the body names the clinic, the role and the link.
    body = mail.outbox[0].body
    key = LINK.search(body).group(2)
    assert body.count(key) == 1
    assert EMAILS.model is OutgoingEmail


def test_the_token_is_nowhere_but_in_the_email(clinic, clinic_admin, api_client, tasks_run_inline, caplog):
    caplog.set_level("DEBUG")
    response = _invite(api_client, clinic_admin)
    key = LINK.search(mail.outbox[0].body).group(2)

    assert key not in response.content.decode()
    assert key not in caplog.text
    assert not any(key in str(row.changes) for row in AuditEvent.objects.filter(clinic_id=clinic.pk))
    assert not Invitation.objects.filter(digest__contains=key).exists()
    assert not OutgoingEmail.objects.filter(body__contains=key).exists()
    page = Client(HTTP_ACCEPT_LANGUAGE="en")
    page.force_login(clinic_admin)
    assert key not in page.get("/team/").content.decode()
