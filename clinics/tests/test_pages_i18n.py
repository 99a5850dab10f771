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


# --- every label the admin shows, in Spanish -----------------------------------------------------

# The same in both languages ("Id" is django-tasks-db's unnamed primary key).
SAME_IN_BOTH = {"ID", "Id", "WhatsApp"}
COLUMN = re.compile(r'<th scope="col"[^>]*>.*?<div class="text">(?:<a [^>]*>|<span>)(.*?)</', re.DOTALL)
FIELD_LABEL = re.compile(r"<label[^>]*>([^<:]+):?</label>")


def _labels(client: Client, url: str, pattern: re.Pattern[str]) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, url
    return [label.strip() for label in pattern.findall(response.content.decode())]


@pytest.mark.django_db
def test_every_admin_column_and_field_label_is_spanish(superuser, clinic, database_tasks):
    from django.apps import apps
    from django.contrib import admin

    from clinics.tests.factories import fill_clinic
    from whatsapp.deliveries import process_webhook_delivery
    from whatsapp.models import AlertKind, WebhookDelivery, WhatsAppAlert

    fill_clinic(clinic)
    delivery = WebhookDelivery.objects.create(
        clinic=clinic, dedupe_key="k1", fields="messages", raw_body="{}", outcome="stored"
    )
    WhatsAppAlert.objects.create(clinic=clinic, kind=AlertKind.BROKEN, key="2026-12-01")
    process_webhook_delivery.enqueue(str(delivery.pk))
    clients = {}
    for language in ("es", "en"):
        clients[language] = Client(HTTP_ACCEPT_LANGUAGE=language)
        clients[language].force_login(superuser)

    english_left = []
    for model in apps.get_models():
        if not admin.site.is_registered(model):
            continue
        opts = model._meta
        urls = [f"/admin/{opts.app_label}/{opts.model_name}/"]
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(f"/admin/{opts.app_label}/{opts.model_name}/{first.pk}/change/")
        for url in urls:
            pattern = COLUMN if url.count("/") == 4 else FIELD_LABEL
            spanish = _labels(clients["es"], url, pattern)
            english = _labels(clients["en"], url, pattern)
            assert spanish or first is None, url  # an empty list shows no table
            english_left += [
                f"{url}: {es}"
                for es, en in zip(spanish, english, strict=True)
                if es == en and es not in SAME_IN_BOTH
            ]
    assert not english_left, "\n".join(english_left)
