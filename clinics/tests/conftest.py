"""The WhatsApp fixtures (a faked Graph API, the admin's API client) for the product's tests."""

from __future__ import annotations

from whatsapp.tests.conftest import admin_api, graph

__all__ = ["admin_api", "graph"]
