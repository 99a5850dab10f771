"""A slow but alive Meta never outlasts the request: the answer is the contract's JSON within the
deadline, and where Meta may have acted (register), the status is `verifying` until a poll
learns the truth. The fake Graph server trickles its answer one byte at a time."""

from __future__ import annotations

import secrets
import time

import pytest
import requests
from django.test import Client, override_settings

from clinics.models import ApiToken
from devtools.fake_graph import FakeGraphServer
from whatsapp.models import WhatsAppAccount

from .conftest import create_throwaway_database, product_env, run_manage

WABA = "102290129340398"
TOKEN = "EAADEADLINE" + "x" * 40


def _number_on_the_waba(fake_control: str) -> str:
    """A number already added to the WABA at the fake, whose codes are 123456; returns its id."""
    number = requests.post(
        f"{fake_control}/numbers",
        json={"waba_id": WABA, "cc": "503", "phone_number": "77654321", "verified_name": "Clinica"},
        timeout=5,
    ).json()
    requests.post(f"{fake_control}/settings", json={"code": "123456"}, timeout=5)
    return str(number["id"])


def _trickle(fake_control: str, path: str, seconds: float) -> None:
    response = requests.post(
        f"{fake_control}/faults",
        json={"kind": "trickle", "method": "POST", "path": path, "seconds": seconds, "times": 1},
        timeout=5,
    )
    assert response.status_code in (200, 201), response.text


@pytest.mark.django_db(transaction=True)
@override_settings(REQUEST_DEADLINE_SECONDS=4.0, WHATSAPP_STATUS_REFRESH_SECONDS=0)
def test_a_trickling_register_answers_json_in_time_and_polling_learns_the_truth(clinic_admin, settings):
    with FakeGraphServer() as fake:
        settings.META_GRAPH_URL = fake.base_url
        pnid = _number_on_the_waba(fake.control_url)
        _token, key = ApiToken.issue(clinic_admin)
        client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT_LANGUAGE="en")
        register = client.post(
            "/api/clinics/whatsapp/register/",
            {"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
            content_type="application/json",
        )
        assert register.json() == {"status": "pending_otp"}
        _trickle(fake.control_url, rf"/{pnid}/register$", seconds=0.5)
        account = WhatsAppAccount.objects.get(clinic=clinic_admin.clinic)

        started = time.monotonic()
        response = client.post(
            "/api/clinics/whatsapp/verify/", {"code": "123456"}, content_type="application/json"
        )
        elapsed = time.monotonic() - started

        assert response.status_code == 504
        assert response["Content-Type"] == "application/json"
        assert response.json()["status"] == "verifying"
        assert "may have registered" in response.json()["detail"]
        assert elapsed < 4.0 + 1.5, elapsed  # the deadline, with room for a busy machine
        assert WhatsAppAccount.objects.get(pk=account.pk).status == "verifying"

        # Meta did register the number (the fake carried the request out): the next poll learns it.
        poll = client.get("/api/clinics/whatsapp/status/")
        assert poll.status_code == 200
        assert poll.json()["status"] == "active"


PASSWORD = "deadline-" + secrets.token_urlsafe(16)
ADMIN = "admin@deadline.example"


@pytest.mark.e2e
def test_gunicorn_answers_within_25_seconds_when_meta_sends_a_byte_a_second(processes, tmp_path):
    db = create_throwaway_database("clinics_deadline", tmp_path)
    try:
        base = product_env(DATABASE_URL=db.url, WHATSAPP_STATUS_REFRESH_SECONDS="1")
        _fake, fake_origin = processes.fake_graph(base)
        env = {**base, "META_GRAPH_URL": f"{fake_origin}/v26.0"}
        run_manage(env, "migrate", "--no-input")
        run_manage(
            {**env, "CLINIC_USER_PASSWORD": PASSWORD},
            "create_clinic",
            "Clínica Plazo",
            "--admin-email",
            ADMIN,
        )
        _server, origin = processes.gunicorn(env)
        session = requests.Session()
        token = session.post(
            f"{origin}/api/auth/token/", json={"email": ADMIN, "password": PASSWORD}, timeout=30
        ).json()["token"]
        session.headers["Authorization"] = f"Token {token}"
        control = f"{fake_origin}/_fake"
        pnid = _number_on_the_waba(control)
        register = session.post(
            f"{origin}/api/clinics/whatsapp/register/",
            json={"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN},
            timeout=30,
        )
        assert register.json() == {"status": "pending_otp"}, register.text
        _trickle(control, rf"/{pnid}/register$", seconds=1.0)

        started = time.monotonic()
        verify = session.post(f"{origin}/api/clinics/whatsapp/verify/", json={"code": "123456"}, timeout=60)
        elapsed = time.monotonic() - started

        assert verify.status_code == 504, verify.text
        assert verify.headers["Content-Type"] == "application/json"
        assert verify.json()["status"] == "verifying"
        assert elapsed < 25.0 + 2.0, elapsed
        time.sleep(1.1)
        assert session.get(f"{origin}/api/clinics/whatsapp/status/", timeout=30).json()["status"] == "active"
    finally:
        processes.stop_all()
        db.drop()
