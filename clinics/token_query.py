"""The token's one query (token, user, clinic, and the WhatsApp state when asked), built once per process.

Why not `select_related(...).get()` on PostgreSQL: the ORM compiles this four-table join
anew on every request, and that was the largest single cost of a read. In-process the ORM's
lookup took 1.0 to 1.6 ms and this one 0.37 to 0.47 ms, within 0.1 ms of the same SQL sent
by a bare cursor; under gunicorn, in one run against the ORM's, the settings read went from
0.27 to 0.47 of the floor app and the status poll from 0.28 to 0.42
(bench/reports/2026-12-02-token-statement.md).

Nothing here is hand-maintained: the column lists and joins are generated from the
models' metadata (`_meta.get_fields()`, `Field.column`, `_meta.db_table`), so a field
added to any of the four models is selected with no edit here. The statement runs through
Django's cursor (so prepared statements, query logging and the deadline apply), each value
goes through its field's `from_db_value` (the only conversion PostgreSQL's backend does),
and rows become models through `Model.from_db`, Django's documented hook for loading a row.

PostgreSQL only. SQLite (development, the default test run) returns datetimes as text and
booleans as integers, which its backend converts inside the ORM; there the ORM's
`select_related` answers. The PostgreSQL suite compares the two, field by field
(clinics/tests/test_token_query.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import Field, ForeignKey, ForeignObjectRel, Model

from .models import ApiToken


@dataclass(frozen=True)
class _Table:
    model: type[Model]
    alias: str
    fields: tuple[Field[Any, Any], ...]  # its concrete fields, in the order `Model.from_db` expects
    pk_index: int  # where its primary key is among them
    parent: int | None  # index of the table it is reached from; None for the token
    name: str  # the attribute on the parent that holds it
    optional: bool  # reached by an outer join: its columns are NULL when there is none


@dataclass(frozen=True)
class _Statement:
    sql: str
    tables: tuple[_Table, ...]


_statements: dict[tuple[str, str], _Statement] = {}


def _concrete_fields(model: type[Model]) -> tuple[Field[Any, Any], ...]:
    # The model's columns (a many-to-many has none of its own) in declaration order, the order
    # Model.from_db expects.
    return tuple(
        field  # type: ignore[misc]
        for field in model._meta.get_fields()
        if field.concrete and not field.many_to_many
    )


def _table(model: type[Model], alias: str, parent: int | None, name: str, *, optional: bool) -> _Table:
    fields = _concrete_fields(model)
    pk_index = next(index for index, field in enumerate(fields) if field.primary_key)
    return _Table(model, alias, fields, pk_index, parent, name, optional)


def _pk_column(model: type[Model]) -> str:
    pk = model._meta.pk
    assert pk is not None  # noqa: S101  # every concrete model has one
    return pk.column


def _build(path: str, quote: Any) -> _Statement:
    tables = [_table(ApiToken, "t0", None, "", optional=False)]
    joins: list[str] = []
    optional = False
    for name in path.split("__"):
        parent = tables[-1]
        relation = parent.model._meta.get_field(name)
        alias = f"t{len(tables)}"
        related: Any = relation.related_model
        if not (isinstance(related, type) and issubclass(related, Model)):
            raise ValueError(f"{parent.model.__name__}.{name} is not a relation to join")
        model: type[Model] = related
        if isinstance(relation, ForeignObjectRel):  # a reverse one-to-one: the child holds the key
            child_key, parent_key = relation.field.column, _pk_column(parent.model)
            optional = True
        elif isinstance(relation, ForeignKey):  # the parent holds the key
            child_key, parent_key = _pk_column(model), relation.column
            optional = optional or relation.null
        else:
            raise ValueError(f"{parent.model.__name__}.{name} is not a relation to join")
        joins.append(
            f"{'LEFT OUTER' if optional else 'INNER'} JOIN {quote(model._meta.db_table)} {alias} "
            f"ON {alias}.{quote(child_key)} = {parent.alias}.{quote(parent_key)}"
        )
        tables.append(_table(model, alias, len(tables) - 1, name, optional=optional))
    columns = ", ".join(f"{table.alias}.{quote(field.column)}" for table in tables for field in table.fields)
    digest = quote(ApiToken._meta.get_field("digest").column)
    # Identifiers come from the models' metadata, quoted; the digest is a parameter.
    token_table = quote(ApiToken._meta.db_table)
    sql = f"SELECT {columns} FROM {token_table} t0 {' '.join(joins)} WHERE t0.{digest} = %s"  # noqa: S608
    return _Statement(sql, tuple(tables))


def api_token_by_digest(digest: str, *, path: str) -> ApiToken:
    """The token whose digest this is, with the objects along `path` ("user__clinic"...) loaded.

    Raises ApiToken.DoesNotExist when there is none, like `get()`.
    """
    alias = router.db_for_read(ApiToken)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return ApiToken.objects.using(alias).select_related(path).get(digest=digest)
    statement = _statements.get((alias, path))
    if statement is None:
        statement = _statements[(alias, path)] = _build(path, connection.ops.quote_name)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [digest])
        row = cursor.fetchone()
    if row is None:
        raise ApiToken.DoesNotExist("ApiToken matching query does not exist.")

    loaded: list[Model | None] = []
    start = 0
    for table in statement.tables:
        values = list(row[start : start + len(table.fields)])
        start += len(table.fields)
        parent = None if table.parent is None else loaded[table.parent]
        if table.parent is not None and (
            parent is None or (table.optional and values[table.pk_index] is None)
        ):
            # No row on this side of an outer join (a user without a clinic).
            loaded.append(None)
            if parent is not None and not isinstance(parent._meta.get_field(table.name), ForeignObjectRel):
                setattr(parent, table.name, None)
            continue
        for index, field in enumerate(table.fields):
            if hasattr(field, "from_db_value"):  # called for NULL too, as the ORM does
                values[index] = field.from_db_value(values[index], None, connection)
        instance = table.model.from_db(alias, [field.attname for field in table.fields], values)
        if parent is not None:
            setattr(parent, table.name, instance)  # caches it, as select_related does
        loaded.append(instance)
    token = loaded[0]
    assert isinstance(token, ApiToken)  # noqa: S101
    return token
