"""A statement built once (common.prebuilt_query) returns what the ORM's own query returns.

On PostgreSQL, every column and its type must equal the ORM's, with one query and no
more; a missing row raises the model's DoesNotExist; a path that is not a relation is
refused. (clinics/tests/test_token_query.py covers joins: foreign keys, a nullable one,
and a reverse one-to-one.) On SQLite the ORM answers, which the rest of the suite covers.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from clinics.tests.factories import columns_of, fill_active_connection
from common.prebuilt_query import PrebuiltQuery
from whatsapp.models import WhatsAppAccount

pytestmark = pytest.mark.postgres


def test_a_row_by_a_foreign_key_is_the_orms(clinic, django_assert_num_queries):
    fill_active_connection(clinic, quality_rating="GREEN")
    orm = WhatsAppAccount.objects.get(clinic=clinic.pk)
    query = PrebuiltQuery(WhatsAppAccount, by="clinic")

    with django_assert_num_queries(1):
        ours = query.get(clinic.pk)

    assert type(ours) is WhatsAppAccount
    assert columns_of(ours) == columns_of(orm)
    for name, value in columns_of(orm).items():
        assert type(columns_of(ours)[name]) is type(value), name
    assert ours._state.adding is False
    with django_assert_num_queries(0):
        assert ours.app_secret == "app-secret-of-the-clinic"  # the ciphertext, bound to its row, decrypts


def test_one_prepared_statement_whatever_the_value(clinic, other_clinic):
    query = PrebuiltQuery(WhatsAppAccount, by="clinic")
    found = [query.get(pk).clinic_id for _ in range(4) for pk in (clinic.pk, other_clinic.pk)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall() if 'FROM "whatsapp_whatsappaccount" t0' in row[0]]

    assert found == [clinic.pk, other_clinic.pk] * 4
    # One text for both values, with the value as a parameter: prepared once, then only executed.
    assert len(prepared) == 1
    assert prepared[0].endswith('WHERE t0."clinic_id" = $1')


def test_no_row_raises_the_models_does_not_exist(db):
    with pytest.raises(WhatsAppAccount.DoesNotExist):
        PrebuiltQuery(WhatsAppAccount, by="clinic").get(uuid.uuid4())


def test_a_path_that_is_not_a_relation_is_refused(clinic):
    with pytest.raises(ValueError, match="not a relation"):
        PrebuiltQuery(WhatsAppAccount, by="clinic", path="status").get(clinic.pk)
