"""One sign-in limiter for the API and the page; one e-mail rule (canonical and unique) for every door."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from clinics import services
from clinics.models import ApiToken, User, canonical_email

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-and-unguessable-password"


def test_the_api_and_the_page_count_in_the_same_buckets(clinic_admin, settings):
    # Alternating doors used to double the budget: each had its own counters.
    settings.AXES_FAILURE_LIMIT = 4
    api, page = APIClient(), Client()
    answers = []
    for attempt in range(4):
        if attempt % 2:
            answers.append(
                page.post("/accounts/login/", {"username": clinic_admin.email, "password": "x"}).status_code
            )
        else:
            answers.append(
                api.post(
                    "/api/auth/token/", {"email": clinic_admin.email, "password": "x"}, format="json"
                ).status_code
            )
    assert answers == [400, 200, 400, 429]  # the fourth failure locks, whichever door

    api_blocked = api.post(
        "/api/auth/token/", {"email": clinic_admin.email, "password": PASSWORD}, format="json"
    )
    page_blocked = page.post("/accounts/login/", {"username": clinic_admin.email, "password": PASSWORD})

    assert api_blocked.status_code == 429
    assert int(api_blocked["Retry-After"]) > 0
    assert page_blocked.status_code == 429
    assert not ApiToken.objects.exists()
    assert "_auth_user_id" not in page.session


def test_the_service_refuses_a_second_user_with_the_same_email(clinic, clinic_admin):
    with pytest.raises(ValidationError) as refused:
        services.clinic_add_user(clinic=clinic, email=f"  {clinic_admin.email.upper()} ", password=PASSWORD)
    assert "email" in refused.value.message_dict
    assert User.objects.filter(email=clinic_admin.email).count() == 1


def test_every_door_stores_the_canonical_email(clinic):
    user = services.clinic_add_user(clinic=clinic, email="  Ana.Lopez@Clinica.SV ", password=PASSWORD)
    assert user.email == "ana.lopez@clinica.sv" == canonical_email(" ANA.LOPEZ@clinica.sv")
    assert User.objects.get_by_natural_key("ANA.LOPEZ@CLINICA.SV") == user
