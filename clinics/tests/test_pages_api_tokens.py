"""The settings page lists the user's own API tokens and lets them revoke one or all (Post/Redirect/Get)."""

from __future__ import annotations

import pytest
from django.test import Client

from clinics.models import ApiToken
from clinics.tests.test_pages_settings import csrf_token_of, signed_in

SETTINGS = "/settings/"
REVOKE = "/settings/api-tokens/revoke/"


def test_it_lists_only_the_users_own_tokens(clinic_staff, clinic_admin):
    mine, _key = ApiToken.issue(clinic_staff)
    theirs, _key = ApiToken.issue(clinic_admin)

    html = signed_in(clinic_staff).get(SETTINGS).content.decode()

    assert "Your API tokens" in html
    assert f"{mine.prefix}…" in html
    assert theirs.prefix not in html
    assert "never" in html  # not used yet
    assert mine.digest not in html


def test_it_says_when_there_is_no_token(clinic_admin):
    html = signed_in(clinic_admin).get(SETTINGS).content.decode()

    assert "You have no API tokens." in html
    assert REVOKE not in html


def test_it_revokes_one_token(clinic_staff):
    kept, _key = ApiToken.issue(clinic_staff)
    revoked, _key = ApiToken.issue(clinic_staff)
    client = signed_in(clinic_staff)

    response = client.post(REVOKE, {"token": revoked.pk})

    assert response.status_code == 302
    assert response["Location"] == "/settings/#api-tokens"
    assert list(ApiToken.objects.values_list("pk", flat=True)) == [kept.pk]
    assert "1 API token revoked." in client.get(SETTINGS).content.decode()


def test_it_revokes_all_of_the_users_tokens(clinic_admin, other_clinic_admin):
    for _ in range(3):
        ApiToken.issue(clinic_admin)
    theirs, _key = ApiToken.issue(other_clinic_admin)
    client = signed_in(clinic_admin)

    response = client.post(REVOKE)

    assert response.status_code == 302
    assert list(ApiToken.objects.values_list("pk", flat=True)) == [theirs.pk]
    assert "3 API tokens revoked." in client.get(SETTINGS).content.decode()


def test_it_never_revokes_someone_elses_token(clinic_admin, other_clinic_admin):
    theirs, _key = ApiToken.issue(other_clinic_admin)
    client = signed_in(clinic_admin)

    response = client.post(REVOKE, {"token": theirs.pk})

    assert response.status_code == 302
    assert ApiToken.objects.filter(pk=theirs.pk).exists()
    assert "No token was revoked" in client.get(SETTINGS).content.decode()


def test_it_refuses_a_malformed_token_id(clinic_admin):
    mine, _key = ApiToken.issue(clinic_admin)
    client = signed_in(clinic_admin)

    response = client.post(REVOKE, {"token": "all of them"})

    assert response.status_code == 302
    assert ApiToken.objects.filter(pk=mine.pk).exists()
    assert "That is not one of your tokens." in client.get(SETTINGS).content.decode()


def test_it_speaks_spanish(clinic_admin):
    ApiToken.issue(clinic_admin)
    client = signed_in(clinic_admin, language="es")

    html = client.get(SETTINGS).content.decode()
    client.post(REVOKE)
    after = client.get(SETTINGS).content.decode()

    assert "Sus tokens de API" in html
    assert "Revocar todos mis tokens" in html
    assert "1 token de API revocado." in after


def test_it_enforces_csrf(clinic_admin):
    mine, _key = ApiToken.issue(clinic_admin)
    client = signed_in(clinic_admin, csrf=True)

    refused = client.post(REVOKE)
    accepted = client.post(REVOKE, {"csrfmiddlewaretoken": csrf_token_of(client)})

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert not ApiToken.objects.filter(pk=mine.pk).exists()


@pytest.mark.django_db
def test_it_sends_anonymous_to_sign_in():
    response = Client().post(REVOKE)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_takes_posts_only(clinic_admin):
    ApiToken.issue(clinic_admin)

    response = signed_in(clinic_admin).get(REVOKE)

    # A GET changes nothing and is no dead end: back to the page, like every action of the page.
    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert ApiToken.objects.count() == 1
