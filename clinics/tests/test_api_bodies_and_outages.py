"""Chunked bodies are refused with 411 before any work; with the database down the API still answers JSON."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError, connection
from django.test.client import FakePayload
from rest_framework.test import APIClient

from clinics.models import Clinic
from whatsapp.models import WebhookDelivery
from whatsapp.tests.helpers import APP_SECRET, sign, webhook_url

SETTINGS_URL = "/api/clinics/settings/"
PROFILE_URL = "/api/clinics/me/"


def _chunked(client, method: str, url: str, body: bytes, **headers: str):
    """A request as gunicorn hands a chunked one to Django: the body in the stream, no CONTENT_LENGTH."""
    return client.generic(
        method,
        url,
        b"",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_TYPE="application/json",
        **{"wsgi.input": FakePayload(body)},
        **headers,
    )


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_chunked_settings_write_is_411_and_saves_nothing(api_client, clinic_admin, clinic, method):
    # The finding: answered 200, saved nothing (Django read the body as empty).
    before = Clinic.objects.values().get(pk=clinic.pk)

    response = _chunked(
        api_client(clinic_admin), method, PROFILE_URL, json.dumps({"city": "Santa Ana"}).encode()
    )

    assert response.status_code == 411
    assert response.json() == {"detail": "Send the request body with a Content-Length header, not chunked."}
    assert Clinic.objects.values().get(pk=clinic.pk) == before


@pytest.mark.django_db
def test_a_chunked_sign_in_is_411(clinic_admin):
    body = json.dumps({"email": clinic_admin.email, "password": "correct-horse-battery-9"}).encode()

    response = _chunked(APIClient(HTTP_ACCEPT_LANGUAGE="en"), "POST", "/api/auth/token/", body)

    assert response.status_code == 411


@pytest.mark.django_db
def test_a_chunked_webhook_delivery_is_411_and_stores_nothing(client, clinic):
    # The finding: a correctly signed chunked delivery got 403, while one signed over
    # the empty string was accepted and stored.
    clinic.whatsapp.app_secret = APP_SECRET
    clinic.whatsapp.save(update_fields=["app_secret"])
    body = b'{"object":"whatsapp_business_account","entry":[]}'

    signed_over_body = _chunked(
        client, "POST", webhook_url(clinic), body, HTTP_X_HUB_SIGNATURE_256=sign(body, APP_SECRET)
    )
    signed_over_nothing = _chunked(
        client, "POST", webhook_url(clinic), body, HTTP_X_HUB_SIGNATURE_256=sign(b"", APP_SECRET)
    )

    assert signed_over_body.status_code == 411
    assert signed_over_nothing.status_code == 411
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_body_with_its_length_still_works(client, clinic):
    clinic.whatsapp.app_secret = APP_SECRET
    clinic.whatsapp.save(update_fields=["app_secret"])
    body = b'{"object":"whatsapp_business_account","entry":[]}'

    response = client.post(
        webhook_url(clinic),
        body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE_256=sign(body, APP_SECRET),
    )

    assert response.status_code == 200
    assert WebhookDelivery.objects.count() == 1


# --- the database is unreachable -------------------------------------------------------------


def _unreachable(execute, sql, params, many, context):
    # What the driver raises when the server is gone (Django's own query hook, no code of ours replaced).
    raise OperationalError('connection to server at "db" (10.0.0.9), port 5432 failed: Connection refused')


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", SETTINGS_URL, None),
        ("patch", PROFILE_URL, {"city": "Santa Ana"}),
        ("get", "/api/clinics/whatsapp/status/", None),
    ],
)
def test_with_the_database_down_the_api_answers_json_503(api_client, clinic_admin, method, url, body):
    client = api_client(clinic_admin)

    with connection.execute_wrapper(_unreachable):
        response = getattr(client, method)(url, body, format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "The service is briefly unavailable. Try again in a moment."}
    assert int(response["Retry-After"]) > 0


@pytest.mark.django_db
def test_with_the_database_down_sign_in_answers_json_503(clinic_admin):
    client = APIClient(HTTP_ACCEPT_LANGUAGE="es")

    with connection.execute_wrapper(_unreachable):
        response = client.post(
            "/api/auth/token/", {"email": clinic_admin.email, "password": "x-y-z"}, format="json"
        )

    assert response.status_code == 503
    assert (
        response.json()["detail"]
        == "El servicio no está disponible por un momento. Vuelva a intentarlo enseguida."
    )
