"""One row by a unique column, with related rows joined, as a statement built once per process.

Why: on a hot path the ORM compiles the same query anew on every request, and for a
joined lookup that compilation costs more than the database does. The token's query of
every API request measured 1.0 to 1.6 ms through `select_related(...).get()` and 0.37 to
0.47 ms this way, within 0.1 ms of the same SQL sent by a bare cursor
(bench/reports/2026-12-02-token-statement.md).

Nothing here is hand-maintained: the column lists and joins are generated from the
models' metadata (`_meta.get_fields()`, `Field.column`, `_meta.db_table`), so a field added
to a model is selected with no edit. The statement runs through Django's cursor (so prepared
statements, query logging and the request's deadline apply), each value goes through its
field's `from_db_value` (on PostgreSQL the backend adds no converters of its own, so this is
all the conversion the ORM would do), rows become models through `Model.from_db`, Django's
documented hook for loading a row, and each joined object is assigned to its relation, which
caches it as `select_related` does.

PostgreSQL only. SQLite (development, the default test run) returns datetimes as text and
booleans as integers, which only its backend's converters inside the ORM turn back; there
the ORM's own `select_related(...).get()` answers. Tests on PostgreSQL compare the two
column by column (common/tests/test_prebuilt_query.py, clinics/tests/test_token_query.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections, router
from django.db.models import Field, ForeignKey, ForeignObjectRel, Model

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Table:
    model: type[Model]
    alias: str
    fields: tuple[Field[Any, Any], ...]  # its concrete fields, in the order `Model.from_db` expects
    pk_index: int  # where its primary key is among them
    parent: int | None  # index of the table it is reached from; None for the first
    name: str  # the attribute on the parent that holds it
    optional: bool  # reached by an outer join: its columns are NULL when there is none


@dataclass(frozen=True)
class _Statement:
    sql: str
    tables: tuple[_Table, ...]


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


class PrebuiltQuery(Generic[M]):
    """`model`'s row whose `by` field equals a value, with the objects along `path` loaded.

    `path` is what `select_related` takes ("user__clinic__whatsapp"): foreign keys and
    reverse one-to-ones. Build one per lookup at import time; the SQL is made at first use.
    """

    def __init__(self, model: type[M], *, by: str, path: str = "") -> None:
        self.model = model
        self.by = by
        self.path = path
        self._statements: dict[str, _Statement] = {}  # per database alias

    def get(self, value: Any) -> M:
        """The row, like `select_related(path).get(by=value)`; raises `model.DoesNotExist` when there is none."""
        alias = router.db_for_read(self.model)
        connection = connections[alias]
        if connection.vendor != "postgresql":
            rows = self.model._default_manager.using(alias)
            return (rows.select_related(self.path) if self.path else rows).get(**{self.by: value})
        statement = self._statements.get(alias)
        if statement is None:
            statement = self._statements[alias] = self._build(connection.ops.quote_name)
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, [value])
            row = cursor.fetchone()
        if row is None:
            missing: type[Exception] = self.model.DoesNotExist  # type: ignore[attr-defined]  # made per model
            raise missing(f"{self.model._meta.object_name} matching query does not exist.")
        first = _load(statement, row, alias, connection)
        assert isinstance(first, self.model)  # noqa: S101
        return first

    def _build(self, quote: Any) -> _Statement:
        tables = [_table(self.model, "t0", None, "", optional=False)]
        joins: list[str] = []
        optional = False
        for name in self.path.split("__") if self.path else []:
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
        columns = ", ".join(
            f"{table.alias}.{quote(field.column)}" for table in tables for field in table.fields
        )
        key = quote(self.model._meta.get_field(self.by).column)  # type: ignore[union-attr]
        # Identifiers come from the models' metadata, quoted; the value is a parameter.
        first_table = quote(self.model._meta.db_table)
        sql = f"SELECT {columns} FROM {first_table} t0 {' '.join(joins)} WHERE t0.{key} = %s"  # noqa: S608
        return _Statement(sql, tuple(tables))


def _load(statement: _Statement, row: tuple[Any, ...], alias: str, connection: Any) -> Model | None:
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
    return loaded[0]
