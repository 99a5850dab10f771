"""The settings page in Spanish: a wrong PIN says so with the attempts left, and the code-request
limit and a number being connected elsewhere are explained. Meta is faked with `responses`."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import responses
from django.test import Client
from django.utils import timezone

from clinics.tests.factories import LONG_TOKEN, set_whatsapp
from whatsapp.models import CodeRequest, NumberPin, WhatsAppAccount, WhatsAppStatus
from whatsapp.tests.helpers import ERRORS

pytestmark = pytest.mark.django_db

GRAPH = "https://graph.facebook.com/v26.0"
PNID = "110200345501442"
WABA = "102290129340398"
PHONE = "+50377654321"
REGISTER = "/settings/whatsapp/register/"
PIN = "/settings/whatsapp/pin/"
FORM = {"number": "+503 7765-4321", "otp_method": "sms", "business_account_id": WABA, "access_token": ""}


@pytest.fixture
def graph():
    """Meta's Graph API, faked; unmatched calls fail like an unreachable Meta."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def signed_in_es(user) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="es")
    client.force_login(user)
    return client


def test_a_wrong_pin_on_the_page_says_so_with_the_attempts_left(clinic_admin, clinic, graph):
    set_whatsapp(
        clinic,
        access_token=LONG_TOKEN,
        business_account_id=WABA,
        phone_number_id=PNID,
        number=PHONE,
        status=WhatsAppStatus.FAILED,
        meta_code=133005,
    )
    status, body = ERRORS[133005]
    graph.add(responses.POST, f"{GRAPH}/{PNID}/register", status=status, json=body)

    html = signed_in_es(clinic_admin).post(PIN, {"pin": "222222"}, follow=True).content.decode()

    assert "Ese no es el PIN de verificación en dos pasos de este número" in html
    assert "Meta permite 9 intentos de registro más" in html
    assert "222222" not in html
    account = WhatsAppAccount.objects.get(clinic=clinic)
    assert (account.status, account.meta_code) == ("failed", 133005)
    assert NumberPin.objects.count() == 0


def test_the_code_request_limit_on_the_page_in_spanish(clinic_admin, clinic, graph):
    set_whatsapp(clinic, access_token=LONG_TOKEN)
    for minutes in range(5):
        CodeRequest.objects.create(
            clinic=clinic, number=PHONE, created_at=timezone.now() - timedelta(minutes=50 - minutes)
        )

    html = signed_in_es(clinic_admin).post(REGISTER, FORM, follow=True).content.decode()

    assert "Se pueden pedir como máximo 5 códigos por hora para un número" in html
    assert re.search("Vuelva a intentarlo en 1[01] minutos", html)
    assert [call.request.url for call in graph.calls] == []
    assert WhatsAppAccount.objects.get(clinic=clinic).status == "disconnected"


def test_a_number_being_connected_elsewhere_on_the_page(clinic_admin, clinic, other_clinic, graph):
    set_whatsapp(clinic, access_token=LONG_TOKEN)
    set_whatsapp(
        other_clinic,
        access_token=LONG_TOKEN,
        phone_number_id=PNID,
        number=PHONE,
        status=WhatsAppStatus.PENDING_OTP,
        claim_expires_at=timezone.now() + timedelta(minutes=10),
    )

    html = signed_in_es(clinic_admin).post(REGISTER, FORM, follow=True).content.decode()

    assert "Otra clínica de este servicio está conectando este número" in html
    assert "ya está conectado" not in html
    assert other_clinic.name not in html
    assert [call.request.url for call in graph.calls] == []
