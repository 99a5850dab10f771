"""Endpoint 19: admins run their team without a superuser; every change is audited; nobody is deleted."""

from __future__ import annotations

import pytest
from django.test import Client

from clinics.models import ApiToken, User
from common.models import AuditEvent

pytestmark = pytest.mark.django_db

MEMBERS_URL = "/api/clinics/members/"


def member_url(user: User) -> str:
    return f"{MEMBERS_URL}{user.pk}/"


def test_it_lists_the_clinics_members_newest_first(
    clinic_admin, clinic_staff, other_clinic_admin, api_client
):
    response = api_client(clinic_admin).get(MEMBERS_URL)

    assert response.status_code == 200
    body = response.json()
    assert [row["email"] for row in body["results"]] == [clinic_staff.email, clinic_admin.email]
    assert body["next"] is None
    assert set(body["results"][0]) == {
        "id",
        "email",
        "full_name",
        "role",
        "is_active",
        "date_joined",
        "last_login",
    }


def test_staff_read_the_team_and_change_nothing(clinic_admin, clinic_staff, api_client, anon_client):
    assert anon_client.get(MEMBERS_URL).status_code == 401
    listed = api_client(clinic_staff).get(MEMBERS_URL)
    assert listed.status_code == 200
    assert {row["email"] for row in listed.json()["results"]} == {clinic_admin.email, clinic_staff.email}
    assert (
        api_client(clinic_staff).post(MEMBERS_URL, {"email": "new@x.example", "role": "staff"}, format="json")
    ).status_code == 403
    assert (
        api_client(clinic_staff).patch(member_url(clinic_staff), {"role": "admin"}, format="json").status_code
        == 403
    )
    clinic_staff.refresh_from_db()
    assert clinic_staff.role == "staff"


def test_it_changes_a_role_and_records_it(clinic, clinic_admin, clinic_staff, api_client):
    response = api_client(clinic_admin).patch(member_url(clinic_staff), {"role": "admin"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["role"] == "admin"
    clinic_staff.refresh_from_db()
    assert clinic_staff.role == "admin"
    row = AuditEvent.objects.get(clinic_id=clinic.pk, action="member.role_changed")
    assert (row.actor, row.door) == (clinic_admin.email, "api")
    assert row.changes == {"member": clinic_staff.email, "role": ["staff", "admin"]}


def test_deactivating_ends_the_members_token_and_session_at_once(
    clinic, clinic_admin, clinic_staff, api_client
):
    staff_api = api_client(clinic_staff)
    staff_page = Client()
    staff_page.force_login(clinic_staff)
    assert staff_api.get("/api/clinics/settings/").status_code == 200
    assert staff_page.get("/settings/").status_code == 200

    response = api_client(clinic_admin).delete(member_url(clinic_staff))

    assert response.status_code == 200, response.content
    assert response.json()["is_active"] is False
    assert staff_api.get("/api/clinics/settings/").status_code == 401
    assert staff_page.get("/settings/").status_code == 302  # back to sign-in
    assert not ApiToken.objects.filter(user=clinic_staff).exists()
    assert User.objects.filter(pk=clinic_staff.pk).exists()  # never deleted
    row = AuditEvent.objects.get(clinic_id=clinic.pk, action="member.deactivated")
    assert row.changes == {"member": clinic_staff.email, "is_active": [True, False]}


def test_it_reactivates_a_member(clinic, clinic_admin, clinic_staff, api_client):
    admin = api_client(clinic_admin)
    admin.delete(member_url(clinic_staff))

    response = admin.patch(member_url(clinic_staff), {"is_active": True}, format="json")

    assert response.status_code == 200
    clinic_staff.refresh_from_db()
    assert clinic_staff.is_active
    assert AuditEvent.objects.filter(clinic_id=clinic.pk, action="member.reactivated").count() == 1


@pytest.mark.parametrize("change", [{"role": "staff"}, {"is_active": False}])
def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(
    clinic, clinic_admin, api_client, change
):
    start = AuditEvent.objects.count()

    response = api_client(clinic_admin).patch(member_url(clinic_admin), change, format="json")

    assert response.status_code == 409
    assert "last active administrator" in response.json()["detail"]
    clinic_admin.refresh_from_db()
    assert (clinic_admin.role, clinic_admin.is_active) == ("admin", True)
    assert AuditEvent.objects.count() == start


def test_an_admin_may_step_down_when_another_admin_remains(clinic, clinic_admin, clinic_staff, api_client):
    admin = api_client(clinic_admin)
    assert admin.patch(member_url(clinic_staff), {"role": "admin"}, format="json").status_code == 200

    response = admin.patch(member_url(clinic_admin), {"role": "staff"}, format="json")

    assert response.status_code == 200
    clinic_admin.refresh_from_db()
    assert clinic_admin.role == "staff"


def test_another_clinics_member_is_not_found(other_clinic_admin, clinic_admin, api_client):
    response = api_client(clinic_admin).patch(
        member_url(other_clinic_admin), {"is_active": False}, format="json"
    )

    assert response.status_code == 404
    other_clinic_admin.refresh_from_db()
    assert other_clinic_admin.is_active


def test_bad_input_is_a_400_with_nothing_changed(clinic_admin, clinic_staff, api_client):
    admin = api_client(clinic_admin)
    start = AuditEvent.objects.count()
    for body in ({}, {"role": "owner"}, {"is_active": "maybe"}):
        assert admin.patch(member_url(clinic_staff), body, format="json").status_code == 400, body
    clinic_staff.refresh_from_db()
    assert (clinic_staff.role, clinic_staff.is_active) == ("staff", True)
    assert AuditEvent.objects.count() == start
