"""GET /healthz/, /api/schema/ and /api/docs/ (endpoints 10 and 11 of the contract)."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import DatabaseError

OPENAPI_JSON = "application/vnd.oai.openapi+json"
# Endpoints 1-9 (and the two auth endpoints), with the methods each must document.
DOCUMENTED = {
    "/api/auth/token/": {"post"},
    "/api/auth/logout/": {"post"},
    "/api/clinics/settings/": {"get", "put", "patch"},
    "/api/clinics/me/": {"get", "put", "patch"},
    "/api/clinics/whatsapp/": {"put", "delete"},
    "/api/clinics/whatsapp/register/": {"post"},
    "/api/clinics/whatsapp/verify/": {"post"},
    "/api/clinics/whatsapp/status/": {"get"},
}


@pytest.mark.parametrize("url", ["/healthz/", "/healthz"])
def test_it_reports_ok(anon_client, db, url):
    response = anon_client.get(url)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_reports_503_when_the_database_does_not_answer(anon_client, db, monkeypatch):
    class DownConnection:
        def cursor(self):
            raise DatabaseError("connection refused")

    monkeypatch.setattr("common.health.connection", DownConnection())

    response = anon_client.get("/healthz/")

    assert response.status_code == 503
    assert response.json()["status"] != "ok"


def _schema(client, url: str = "/api/schema/") -> dict:
    response = client.get(url, HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.parametrize("url", ["/api/schema/", "/api/schema"])
def test_it_serves_an_openapi_3_document(anon_client, db, url):
    schema = _schema(anon_client, url)

    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]


def test_it_serves_yaml_by_default(anon_client, db):
    response = anon_client.get("/api/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_it_documents_every_endpoint(anon_client, db):
    paths = _schema(anon_client)["paths"]

    for path, methods in DOCUMENTED.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    # re_path patterns must not leak regex syntax into the documented paths.
    assert not [path for path in paths if re.search(r"[?^$\\]", path)]


def test_it_documents_the_token_scheme(anon_client, db):
    schema = _schema(anon_client)

    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert scheme["type"] == "apiKey"
    assert scheme["in"] == "header"
    assert scheme["name"] == "Authorization"
    settings_get = schema["paths"]["/api/clinics/settings/"]["get"]
    assert {"tokenAuth": []} in settings_get["security"]


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", html)


@pytest.mark.parametrize("url", ["/api/docs/", "/api/docs"])
def test_it_serves_the_docs_page(anon_client, db, url):
    response = anon_client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger-ui" in response.content


def test_it_serves_the_docs_assets_from_our_own_host(anon_client, db):
    html = anon_client.get("/api/docs/").content.decode()
    assets = _asset_urls(html)

    assert assets
    # No CDN: every script, stylesheet and icon is a path on this host.
    assert [url for url in assets if not url.startswith("/") or url.startswith("//")] == []
    static = [url for url in assets if url.startswith(settings.STATIC_URL)]
    assert static
    for url in static:
        assert finders.find(url.removeprefix(settings.STATIC_URL)), f"{url} is not one of our static files"
    # The rest is the page's own script, served by the docs view itself.
    for url in set(assets) - set(static):
        response = anon_client.get(url)
        assert response.status_code == 200, url
        assert b"/api/schema" in response.content
