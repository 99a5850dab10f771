"""The WhatsApp fixtures (a faked Graph API, the admin's API client) for the product's tests."""

from __future__ import annotations

import pytest

from clinics.tests.factories import set_whatsapp
from whatsapp.models import WhatsAppStatus
from whatsapp.tests.conftest import admin_api, graph
from whatsapp.tests.helpers import PNID, TOKEN, WABA

__all__ = ["active", "admin_api", "graph"]


@pytest.fixture
def active(clinic):
    """The clinic with an active number at Meta (PNID on WABA, TOKEN): it may send and sync templates."""
    set_whatsapp(
        clinic,
        status=WhatsAppStatus.ACTIVE,
        phone_number_id=PNID,
        business_account_id=WABA,
        access_token=TOKEN,
    )
    return clinic
