"""Spanish and English everywhere: the .po file is complete, the API and admin speak both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from clinics.tests.factories import PROFILE_URL

PO = Path(__file__).resolve().parents[2] / "locale" / "es" / "LC_MESSAGES" / "django.po"


def test_every_msgid_is_translated_and_none_is_fuzzy():
    text = PO.read_text(encoding="utf-8")
    entries = text.split("\n\n")[1:]
    assert entries
    for entry in entries:
        assert "#, fuzzy" not in entry, entry
        assert not re.search(r'^msgstr(\[\d\])? ""$(?!\n")', entry, re.MULTILINE), entry


def test_the_api_answers_in_spanish(api_client, clinic_staff):
    client = api_client(clinic_staff)
    client.credentials(
        HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"], HTTP_ACCEPT_LANGUAGE="es"
    )
    response = client.patch(PROFILE_URL, {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "Solo los administradores" in response.json()["detail"]


def test_the_api_validation_errors_are_spanish(api_client, clinic_admin):
    client = api_client(clinic_admin)
    client.credentials(
        HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"], HTTP_ACCEPT_LANGUAGE="es"
    )
    response = client.patch(PROFILE_URL, {"currency": "XYZ"}, format="json")
    assert response.status_code == 400
    assert "código de moneda ISO 4217" in str(response.json())


@pytest.mark.django_db
def test_the_sign_in_page_in_both_languages():
    assert "Iniciar sesión" in Client(HTTP_ACCEPT_LANGUAGE="es").get("/accounts/login/").content.decode()
    assert "Sign in" in Client(HTTP_ACCEPT_LANGUAGE="en").get("/accounts/login/").content.decode()


def test_the_admin_customisations_in_spanish(superuser, clinic):
    client = Client(HTTP_ACCEPT_LANGUAGE="es")
    client.force_login(superuser)
    html = client.get("/admin/clinics/clinic/").content.decode()
    assert "Actualizar el estado de WhatsApp desde Meta" in html
    assert "Desconectado" in html
    change = client.get(f"/admin/clinics/clinic/{clinic.pk}/change/").content.decode()
    assert "Nuevo token de acceso" in change
