"""The token's statement built once (clinics.token_query) loads what the ORM's select_related loads.

On PostgreSQL every column of the token, its user, the clinic and the WhatsApp state must
come back as the ORM's own query returns it (types included: datetimes, UUIDs, JSON; the
encrypted fields as the plaintext they decrypt to), the objects must be linked so that walking from the token to
the WhatsApp state sends no query, and a missing token or clinic must look as it does with
the ORM. On SQLite the function is the ORM's query, which the rest of the suite covers.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics import services
from clinics.authentication import OWNER_ONLY, WITH_CONNECTION
from clinics.models import ApiToken
from clinics.token_query import api_token_by_digest

from .factories import columns_of, fill_active_connection

pytestmark = pytest.mark.postgres


def _same_row(ours: Model, orm: Model) -> None:
    assert type(ours) is type(orm)
    ours_columns, orm_columns = columns_of(ours), columns_of(orm)
    assert ours_columns == orm_columns
    for name, value in orm_columns.items():
        assert type(ours_columns[name]) is type(value), name
    assert ours._state.adding is False
    assert ours._state.db == orm._state.db


@pytest.fixture
def issued(clinic, clinic_admin):
    fill_active_connection(clinic, quality_rating="GREEN")
    key = services.api_token_issue(user=clinic_admin)
    ApiToken.objects.filter(user=clinic_admin).update(last_used_at=timezone.now())
    return key


@pytest.mark.parametrize("path", [OWNER_ONLY, WITH_CONNECTION])
def test_every_column_is_the_orms(issued, path, django_assert_num_queries):
    digest = ApiToken.hash_key(issued)
    orm = ApiToken.objects.select_related(path).get(digest=digest)

    with django_assert_num_queries(1):
        ours = api_token_by_digest(digest, path=path)
        user, clinic = ours.user, ours.user.clinic
        if path == WITH_CONNECTION:
            account = clinic.whatsapp

    _same_row(ours, orm)
    _same_row(user, orm.user)
    _same_row(clinic, orm.user.clinic)
    if path == WITH_CONNECTION:
        _same_row(account, orm.user.clinic.whatsapp)
        assert account.clinic is clinic
        with django_assert_num_queries(0):
            assert account.app_secret == "app-secret-of-the-clinic"  # the ciphertext decrypts
            assert account.has_access_token


def test_the_connection_is_not_loaded_unless_asked(issued):
    ours = api_token_by_digest(ApiToken.hash_key(issued), path=OWNER_ONLY)

    with CaptureQueriesContext(connection) as queries:
        ours.user.clinic.whatsapp  # noqa: B018

    assert len(queries) == 1
    assert "whatsapp_whatsappaccount" in queries[0]["sql"]


def test_a_user_without_a_clinic(clinicless_user, django_assert_num_queries):
    key = services.api_token_issue(user=clinicless_user)

    with django_assert_num_queries(1):
        ours = api_token_by_digest(ApiToken.hash_key(key), path=WITH_CONNECTION)
        assert ours.user == clinicless_user
        assert ours.user.clinic is None


def test_an_unknown_digest_is_does_not_exist(issued):
    with pytest.raises(ApiToken.DoesNotExist):
        api_token_by_digest(ApiToken.hash_key("not-a-token"), path=WITH_CONNECTION)


def test_one_prepared_statement_for_every_token(issued, clinic_staff):
    digests = [ApiToken.hash_key(issued), ApiToken.hash_key(services.api_token_issue(user=clinic_staff))]
    for _ in range(3):
        for digest in digests:
            api_token_by_digest(digest, path=WITH_CONNECTION)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall() if 'FROM "clinics_apitoken" t0' in row[0]]

    assert len(prepared) == 1
    assert prepared[0].endswith('WHERE t0."digest" = $1')
