"""The audit trail through every door: one row per change, with the right door, actor and no secret.

Endpoint 20 and the Activity page show a clinic's admins their own rows (and record the
reading); admin shows them read-only; verify_audit_trail finds an edited or removed row.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_tasks import task

from clinics import services
from clinics.models import Clinic
from clinics.tests.test_admin_clinics import clinic_form
from common.audit import audit_context, audit_record, fingerprint
from common.models import AuditChainHead, AuditEvent
from conftest import PASSWORD
from whatsapp.deliveries import whatsapp_delivery_process, whatsapp_delivery_store
from whatsapp.tests.helpers import account_deleted, account_of, arrange_active, meta_bytes

pytestmark = pytest.mark.django_db

SETTINGS_URL = "/api/clinics/settings/"
ACTIVITY_URL = "/api/clinics/activity/"
TOKEN = "EAAauditCANARYtoken00000000000000SECRETwxyz"
APP_SECRET = "auditCANARYappsecret0123456789abcd"


def new_rows(clinic: Clinic, after: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(clinic_id=clinic.pk, id__gt=after).order_by("id"))


def last_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.fixture
def page_client(clinic_admin) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(clinic_admin)
    return client


# --- one row per change, through every door ---------------------------------------------


def test_it_records_an_api_change_once_with_door_actor_address_and_request_id(
    clinic, clinic_admin, api_client
):
    start = last_id()
    response = api_client(clinic_admin).patch(SETTINGS_URL, {"city": "Santa Ana"}, format="json")

    assert response.status_code == 200, response.content
    [row] = new_rows(clinic, start)
    assert (row.door, row.actor, row.action) == ("api", clinic_admin.email, "clinic.settings_updated")
    assert row.changes == {"city": ["San Salvador", "Santa Ana"]}
    assert row.address == "127.0.0.1"
    assert row.request_id == response["X-Request-ID"]
    assert len(row.request_id) == 32


def test_it_records_nothing_when_nothing_changes(clinic, clinic_admin, api_client):
    start = last_id()
    response = api_client(clinic_admin).patch(SETTINGS_URL, {"city": clinic.city}, format="json")

    assert response.status_code == 200
    assert new_rows(clinic, start) == []


def test_it_records_nothing_for_a_refused_change(clinic, clinic_admin, api_client):
    start = last_id()
    response = api_client(clinic_admin).patch(SETTINGS_URL, {"timezone": "Mars/Olympus"}, format="json")

    assert response.status_code == 400
    assert new_rows(clinic, start) == []


def test_it_records_a_page_change_once_as_the_bot_switch(clinic, clinic_admin, page_client):
    start = last_id()
    response = page_client.post("/settings/bot/", {"bot_enabled": "on"})

    assert response.status_code == 302
    [row] = new_rows(clinic, start)
    assert (row.door, row.actor, row.action) == ("page", clinic_admin.email, "bot.enabled")
    assert row.changes == {"bot_enabled": [False, True]}


def test_it_records_an_admin_change_once_as_the_superuser(clinic, superuser):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    start = last_id()

    response = client.post(
        f"/admin/clinics/clinic/{clinic.pk}/change/", clinic_form(clinic, city="Sonsonate")
    )

    assert response.status_code == 302, response.content
    [row] = new_rows(clinic, start)
    assert (row.door, row.actor, row.action) == ("admin", superuser.email, "clinic.settings_updated")
    assert row.changes == {"city": ["San Salvador", "Sonsonate"]}


def test_it_records_a_command_once_as_the_system(clinic, monkeypatch):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", "Tamarindo-Verde-2031")
    start = last_id()

    call_command("add_clinic_user", clinic.slug, "nurse@example.com", role="staff", stdout=StringIO())

    [row] = new_rows(clinic, start)
    assert (row.door, row.actor, row.action) == ("command", "system", "member.added")
    assert row.changes == {"member": "nurse@example.com", "role": [None, "staff"]}
    assert (row.address, row.request_id) == ("", "")


def test_create_clinic_records_the_clinic_and_its_admin(db, monkeypatch):
    monkeypatch.setenv("CLINIC_USER_PASSWORD", "Tamarindo-Verde-2031")
    start = last_id()

    call_command("create_clinic", "Clínica del Puerto", admin_email="puerto@example.com", stdout=StringIO())

    clinic = Clinic.objects.get(name="Clínica del Puerto")
    rows = new_rows(clinic, start)
    assert [(row.action, row.door, row.actor) for row in rows] == [
        ("clinic.created", "command", "system"),
        ("member.added", "command", "system"),
    ]


def test_it_records_metas_disconnecting_event_as_meta_through_the_webhook(clinic, queued_tasks):
    arrange_active(clinic)
    delivery = whatsapp_delivery_store(
        account=account_of(clinic), body=meta_bytes(account_deleted()), signed_with_clinic_secret=True
    )
    start = last_id()

    whatsapp_delivery_process(delivery_id=str(delivery.pk))

    [row] = new_rows(clinic, start)
    assert (row.door, row.actor, row.action) == ("webhook", "meta", "whatsapp.meta_event")
    assert row.changes == {"event": "ACCOUNT_DELETED", "status": ["active", "failed"]}


def test_a_door_context_names_who_acted_outside_a_request(clinic):
    with audit_context(door="task", actor="system"):
        row = audit_record(clinic_id=clinic.pk, action="test.action")

    assert (row.door, row.actor, row.address, row.request_id) == ("task", "system", "", "")


def test_it_records_tokens_issued_and_revoked(clinic, clinic_admin, page_client):
    start = last_id()
    key = services.api_token_issue(user=clinic_admin)
    page_client.post("/settings/api-tokens/revoke/", {})

    issued, revoked = new_rows(clinic, start)
    assert (issued.action, issued.actor, issued.door) == ("api_token.issued", clinic_admin.email, "command")
    assert (revoked.action, revoked.actor, revoked.door) == ("api_token.revoked", clinic_admin.email, "page")
    assert issued.changes == revoked.changes == {"user": clinic_admin.email, "token": f"{key[:8]}…"}
    assert key not in json.dumps(issued.changes)


def test_it_records_a_key_rotation_on_the_platform_chain(clinic, settings):
    account = clinic.whatsapp
    account.access_token = TOKEN
    account.save()
    settings.FIELD_ENCRYPTION_KEYS = [
        "newkey:" + "A" * 43,
        *settings.FIELD_ENCRYPTION_KEYS,
    ]
    start = last_id()

    call_command("rotate_encryption_keys", stdout=StringIO())

    row = AuditEvent.objects.get(id__gt=start, action="encryption.keys_rotated")
    assert (row.chain, row.clinic_id, row.door) == ("platform", None, "command")
    assert row.changes["key"] == "newkey"
    assert row.changes["values"] >= 1


# --- secrets -------------------------------------------------------------------------------


def test_it_shows_a_secret_only_as_a_keyed_fingerprint_and_its_last_4(clinic, clinic_admin, api_client):
    start = last_id()
    response = api_client(clinic_admin).patch(
        SETTINGS_URL,
        {"whatsapp_access_token": TOKEN, "whatsapp_verify_token": "guessable-verify-token"},
        format="json",
    )

    assert response.status_code == 200, response.content
    [row] = new_rows(clinic, start)
    assert row.action == "whatsapp.credentials_updated"
    assert row.changes["access_token"] == [None, fingerprint(TOKEN)]
    assert row.changes["access_token"][1].startswith("fp:") and row.changes["access_token"][1].endswith(
        "wxyz"
    )
    # A verify token is typed by a person: only that it changed.
    assert row.changes["verify_token"] == "changed"
    text = json.dumps(row.changes)
    for secret in (TOKEN, "guessable-verify-token"):
        assert secret not in text


def test_an_app_secret_set_in_admin_is_a_fingerprint_in_the_row_and_the_history(clinic, superuser):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    start = last_id()

    response = client.post(
        f"/admin/clinics/clinic/{clinic.pk}/change/",
        clinic_form(clinic, **{"whatsapp-0-new_app_secret": APP_SECRET}),
    )

    assert response.status_code == 302, response.content
    [row] = new_rows(clinic, start)
    assert (row.door, row.action) == ("admin", "whatsapp.credentials_updated")
    assert row.changes == {"app_secret": [None, fingerprint(APP_SECRET)]}
    history = client.get(f"/admin/common/auditevent/?clinic_id={clinic.pk}").content.decode()
    assert fingerprint(APP_SECRET) in history
    assert APP_SECRET not in history
    assert APP_SECRET not in client.get(f"/admin/common/auditevent/{row.pk}/change/").content.decode()


def test_the_fingerprint_is_keyed_by_its_own_key(settings):
    plain = __import__("hashlib").sha256(TOKEN.encode()).hexdigest()[:12]
    first = fingerprint(TOKEN)
    assert plain not in first
    # Same key, same fingerprint; another key, another one (the encryption keys play no part).
    assert fingerprint(TOKEN) == first
    settings.AUDIT_FINGERPRINT_KEY = "another-audit-key"
    from common import audit

    audit._fingerprint_key.cache_clear()
    try:
        assert fingerprint(TOKEN) != first
    finally:
        audit._fingerprint_key.cache_clear()


def test_it_shows_a_pin_only_as_changed():
    from common.audit import audit_changes
    from whatsapp.models import WhatsAppAccount

    changes = audit_changes(
        WhatsAppAccount,
        {"registration_pin": "123456", "status": "pending_otp"},
        {"registration_pin": "654321", "status": "verifying"},
    )
    assert changes == {"registration_pin": "changed", "status": ["pending_otp", "verifying"]}


# --- reading: endpoint 20, the page, admin ----------------------------------------------


def test_the_endpoint_shows_admins_their_clinic_newest_first_and_records_the_reading(
    clinic, other_clinic, clinic_admin, api_client
):
    services.clinic_update_profile(clinic=clinic, data={"city": "Santa Ana"})
    services.clinic_update_profile(clinic=other_clinic, data={"city": "La Libertad"})

    response = api_client(clinic_admin).get(ACTIVITY_URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    actions = [row["action"] for row in body["results"]]
    assert actions[0] == "audit.viewed"
    assert "clinic.profile_updated" in actions
    assert "La Libertad" not in response.content.decode()
    ids = [row["id"] for row in body["results"]]
    assert ids == sorted(ids, reverse=True)
    assert AuditEvent.objects.filter(clinic_id=clinic.pk, action="audit.viewed").count() == 1


def test_the_endpoint_pages_with_a_cursor(clinic, clinic_admin, api_client):
    for city in ("A", "B", "C", "D"):
        services.clinic_update_profile(clinic=clinic, data={"city": city})
    client = api_client(clinic_admin)

    first = client.get(ACTIVITY_URL, {"limit": 2}).json()
    second = client.get(first["next"]).json()

    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert first["results"][-1]["id"] > second["results"][0]["id"]
    assert client.get(ACTIVITY_URL, {"cursor": "x"}).status_code == 400


def test_the_endpoint_is_for_admins_only(clinic, clinic_staff, api_client, anon_client):
    assert anon_client.get(ACTIVITY_URL).status_code == 401
    assert api_client(clinic_staff).get(ACTIVITY_URL).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.viewed").exists()


def test_the_activity_page_shows_the_rows_to_admins_and_refuses_staff(clinic, clinic_staff, page_client):
    services.clinic_update_profile(clinic=clinic, data={"city": "Santa Ana"})

    response = page_client.get("/activity/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "clinic.profile_updated" in page
    assert "San Salvador → Santa Ana" in page
    staff = Client()
    staff.force_login(clinic_staff)
    assert staff.get("/activity/").status_code == 403


def test_admin_shows_the_clinic_history_read_only(clinic, superuser):
    services.clinic_update_profile(clinic=clinic, data={"city": "Santa Ana"})
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)

    history = client.get(f"/admin/clinics/clinic/{clinic.pk}/history/", follow=True)

    assert history.status_code == 200
    assert "clinic.profile_updated" in history.content.decode()
    reading = AuditEvent.objects.get(clinic_id=clinic.pk, action="audit.viewed")
    assert (reading.actor, reading.door) == (superuser.email, "admin")
    row = AuditEvent.objects.filter(clinic_id=clinic.pk).first()
    assert client.get("/admin/common/auditevent/add/").status_code == 403
    assert client.post(f"/admin/common/auditevent/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=row.pk).exists()


def test_a_row_refuses_to_be_changed_or_deleted(clinic):
    row = audit_record(clinic_id=clinic.pk, action="test.action")
    row.action = "edited"
    with pytest.raises(RuntimeError):
        row.save()
    with pytest.raises(RuntimeError):
        row.delete()


# --- the chain -----------------------------------------------------------------------------


def _verify() -> tuple[bool, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_trail", stdout=out, stderr=err)
    except CommandError:
        return False, err.getvalue()
    return True, out.getvalue()


def test_verify_passes_on_an_untouched_trail(clinic):
    for city in ("A", "B"):
        services.clinic_update_profile(clinic=clinic, data={"city": city})

    ok, output = _verify()

    assert ok, output
    assert "every row is in place" in output


def test_verify_reports_an_edited_row(clinic):
    services.clinic_update_profile(clinic=clinic, data={"city": "A"})
    services.clinic_update_profile(clinic=clinic, data={"city": "B"})
    row = AuditEvent.objects.filter(clinic_id=clinic.pk, action="clinic.profile_updated").first()
    # Behind the product's back: a queryset update skips the model's refusal.
    AuditEvent.objects.filter(pk=row.pk).update(actor="someone-else@example.com")

    ok, output = _verify()

    assert not ok
    assert f"row {row.seq} was edited" in output


def test_verify_reports_a_removed_row_in_the_middle_and_at_the_end(clinic):
    for city in ("A", "B", "C"):
        services.clinic_update_profile(clinic=clinic, data={"city": city})
    rows = list(AuditEvent.objects.filter(clinic_id=clinic.pk).order_by("seq"))
    AuditEvent.objects.filter(pk=rows[1].pk).delete()

    ok, output = _verify()
    assert not ok
    assert f"rows {rows[1].seq}..{rows[1].seq} are missing" in output

    AuditEvent.objects.filter(pk=rows[-1].pk).delete()
    ok, output = _verify()
    assert f"rows {rows[-1].seq}..{rows[-1].seq} are missing" in output
    assert AuditChainHead.objects.get(chain=str(clinic.pk)).seq == rows[-1].seq


def test_each_row_links_to_the_one_before(clinic):
    services.clinic_update_profile(clinic=clinic, data={"city": "A"})
    services.clinic_update_profile(clinic=clinic, data={"city": "B"})
    first, second = AuditEvent.objects.filter(clinic_id=clinic.pk).order_by("-seq")[:2][::-1]

    assert second.seq == first.seq + 1
    assert second.prev_hash == first.hash


@task()
def write_in_a_task(clinic_id: str) -> str:
    """A task that changes something the trail records, to see which door it is written under."""
    return audit_record(clinic_id=clinic_id, action="test.in_task").door


def test_a_task_writes_under_the_task_door_and_the_door_ends_with_it(clinic, tasks_run_inline):
    result = write_in_a_task.enqueue(str(clinic.pk))
    after = audit_record(clinic_id=clinic.pk, action="test.after_task")

    inside = AuditEvent.objects.get(clinic_id=clinic.pk, action="test.in_task")
    assert result.return_value == "task"
    assert (inside.door, inside.actor, inside.request_id) == ("task", "system", str(result.id))
    assert after.door == "command"


def test_the_request_id_comes_from_a_trusted_proxy_only(clinic, clinic_admin, api_client, settings):
    client = api_client(clinic_admin)
    start = last_id()

    settings.NUM_PROXIES = 0
    ignored = client.patch(SETTINGS_URL, {"city": "A"}, format="json", HTTP_X_REQUEST_ID="forged-id")
    settings.NUM_PROXIES = 1
    kept = client.patch(SETTINGS_URL, {"city": "B"}, format="json", HTTP_X_REQUEST_ID="proxy-id-42")

    first, second = new_rows(clinic, start)
    assert first.request_id == ignored["X-Request-ID"] != "forged-id"
    assert second.request_id == kept["X-Request-ID"] == "proxy-id-42"


def _user_form(user, **overrides: str) -> dict:
    data = {
        "email": user.email,
        "full_name": "",
        "clinic": str(user.clinic_id),
        "role": user.role,
        "is_active": "on",
        "date_joined_0": "2025-01-01",
        "date_joined_1": "00:00:00",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_admin_deactivates_a_member_through_the_team_service(clinic, clinic_staff, superuser):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    start = last_id()

    response = client.post(
        f"/admin/clinics/user/{clinic_staff.pk}/change/", _user_form(clinic_staff, is_active=None)
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    clinic_staff.refresh_from_db()
    assert not clinic_staff.is_active
    [row] = new_rows(clinic, start)
    assert (row.action, row.door, row.actor) == ("member.deactivated", "admin", superuser.email)


def test_admin_cannot_demote_the_last_admin(clinic, clinic_admin, superuser):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    start = last_id()

    response = client.post(
        f"/admin/clinics/user/{clinic_admin.pk}/change/", _user_form(clinic_admin, role="staff"), follow=True
    )

    assert "last active administrator" in response.content.decode()
    clinic_admin.refresh_from_db()
    assert clinic_admin.role == "admin"
    assert new_rows(clinic, start) == []


def _admin_client(superuser) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    return client


def _admin_saves(superuser, user, **fields: str) -> None:
    """Admin's user form posted with `fields` changed, and saved (a redirect, not the form again)."""
    response = _admin_client(superuser).post(
        f"/admin/clinics/user/{user.pk}/change/", _user_form(user, **fields)
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()


def test_admin_changing_a_members_email_and_name_leaves_one_row(clinic, clinic_staff, superuser):
    start = last_id()

    _admin_saves(superuser, clinic_staff, email="Recepcion@SanSalvador.example", full_name="Ana López")

    assert (clinic_staff.email, clinic_staff.full_name) == ("recepcion@sansalvador.example", "Ana López")
    [row] = new_rows(clinic, start)
    assert (row.action, row.door, row.actor) == ("member.updated", "admin", superuser.email)
    assert row.changes == {
        "member": "recepcion@sansalvador.example",
        "email": ["staff@sansalvador.example", "recepcion@sansalvador.example"],
        "full_name": ["", "Ana López"],
    }


def test_admin_moving_a_member_to_another_clinic_shows_in_both_trails(
    clinic, other_clinic, clinic_staff, superuser
):
    start = last_id()

    _admin_saves(superuser, clinic_staff, clinic=str(other_clinic.pk))

    assert clinic_staff.clinic_id == other_clinic.pk
    [left] = new_rows(clinic, start)
    [added] = new_rows(other_clinic, start)
    assert (left.action, left.door) == ("member.left", "admin")
    assert left.changes == {"member": clinic_staff.email, "clinic": [clinic.name, other_clinic.name]}
    assert added.action == "member.added"
    assert added.changes["clinic"] == [clinic.name, other_clinic.name]
    assert added.changes["role"] == [None, "staff"]


def test_admin_cannot_move_the_last_admin_out_of_the_clinic(clinic, other_clinic, clinic_admin, superuser):
    start = last_id()

    response = _admin_client(superuser).post(
        f"/admin/clinics/user/{clinic_admin.pk}/change/",
        _user_form(clinic_admin, clinic=str(other_clinic.pk), full_name="Moved"),
    )

    assert response.status_code == 200  # the form again, with the rule as its error
    assert "last active administrator" in response.content.decode()
    clinic_admin.refresh_from_db()
    assert (clinic_admin.clinic_id, clinic_admin.full_name) == (clinic.pk, "")
    assert AuditEvent.objects.filter(id__gt=start).count() == 0


def test_admin_making_a_superuser_is_recorded(clinic, clinic_staff, superuser):
    start = last_id()

    _admin_saves(superuser, clinic_staff, is_staff="on", is_superuser="on")

    [row] = new_rows(clinic, start)
    assert row.action == "member.updated"
    assert (row.changes["is_staff"], row.changes["is_superuser"]) == ([False, True], [False, True])


def test_admin_adding_a_user_is_recorded_once(clinic, superuser):
    start = last_id()

    response = _admin_client(superuser).post(
        "/admin/clinics/user/add/",
        {
            "email": "nuevo@sansalvador.example",
            "full_name": "Nuevo",
            "clinic": str(clinic.pk),
            "role": "staff",
            "usable_password": "true",
            "password1": "a-long-enough-Passw0rd!",
            "password2": "a-long-enough-Passw0rd!",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    [row] = new_rows(clinic, start)
    assert (row.action, row.door, row.actor) == ("member.added", "admin", superuser.email)
    assert row.changes["member"] == "nuevo@sansalvador.example"
    assert row.changes["role"] == [None, "staff"]
    assert "password" not in json.dumps(row.changes)


def test_a_password_change_is_one_row_with_the_tokens_it_ended(clinic, clinic_admin):
    services.api_token_issue(user=clinic_admin)
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(clinic_admin)
    start = last_id()

    response = client.post(
        "/accounts/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "an-other-Passw0rd!",
            "new_password2": "an-other-Passw0rd!",
        },
    )

    assert response.status_code == 302
    [row] = new_rows(clinic, start)
    assert (row.action, row.door, row.actor) == ("member.password_changed", "page", clinic_admin.email)
    assert row.changes == {"member": clinic_admin.email, "api_tokens_ended": 1}
    assert "an-other-Passw0rd" not in json.dumps(row.changes)
