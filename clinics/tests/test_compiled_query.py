"""The compiled token lookup returns exactly what the ORM would, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from clinics.authentication import token_lookup
from clinics.compiled_query import CompiledLookup
from clinics.models import ApiToken
from whatsapp.services import whatsapp_store_credentials

pytestmark = pytest.mark.django_db


def _columns(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_it_builds_the_same_objects_as_the_orm(clinic, clinic_admin):
    whatsapp_store_credentials(
        clinic=clinic, access_token="EAAcompiled" + "x" * 40, phone_number_id="123", business_account_id="456"
    )
    _token, key = ApiToken.issue(clinic_admin)
    digest = ApiToken.hash_key(key)

    with CaptureQueriesContext(connection) as queries:
        compiled = token_lookup.get(digest)
        # Everything the settings endpoint reads is loaded by that one query.
        account = compiled.user.clinic.whatsapp
        secret = account.access_token
    orm = ApiToken.objects.select_related("user__clinic__whatsapp").get(digest=digest)

    assert len(queries) == 1
    assert _columns(compiled) == _columns(orm)
    assert _columns(compiled.user) == _columns(orm.user)
    assert _columns(compiled.user.clinic) == _columns(orm.user.clinic)
    assert _columns(account) == _columns(orm.user.clinic.whatsapp)
    assert secret == "EAAcompiled" + "x" * 40
    assert compiled._state.adding is False and compiled._state.db == "default"


def test_it_returns_none_for_an_unknown_value(clinic_admin):
    ApiToken.issue(clinic_admin)
    assert token_lookup.get(ApiToken.hash_key("no-such-key")) is None


def test_it_falls_back_to_the_orm_when_the_value_is_not_one_parameter(clinic_admin):
    token, key = ApiToken.issue(clinic_admin)
    # The value appears twice: it cannot be compiled safely, so the ORM runs.
    lookup = CompiledLookup(lambda digest: ApiToken.objects.filter(Q(digest=digest) | Q(prefix=digest)))

    assert lookup.get(ApiToken.hash_key(key)) == token
    assert lookup.get("missing") is None
