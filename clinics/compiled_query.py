"""A hot-path query compiled to SQL once per process instead of on every request.

Django compiles a queryset every time it runs it. For token authentication
(token -> user -> clinic -> WhatsApp state in one query) the compilation cost
more than the query itself and the rest of a settings read together: about 1.2 ms
of each request (bench/README.md has the profile). This compiles the queryset
once with a placeholder parameter, then runs the same SQL with the real value and
builds the model instances exactly as Django's ModelIterable does, so the result
is indistinguishable from `queryset.get()` (tests compare them field by field).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections, router
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.compiler import SQLCompiler

M = TypeVar("M", bound=Model)

_PLACEHOLDER = "\x00compiled-query-placeholder\x00"


@dataclass(frozen=True)
class _Compiled:
    compiler: SQLCompiler
    sql: str
    params: tuple[Any, ...]
    position: int
    init_list: list[str]
    start: int
    end: int
    populators: list[Any]
    converters: dict[int, Any]


class CompiledLookup(Generic[M]):
    """`lookup.get(value)`: the first row of `build(value)`, or None.

    `build` must return a queryset whose only use of `value` is one SQL parameter.
    If it is used otherwise (or not at all), this falls back to the ORM. For a
    column that is not text, give `placeholder` (a valid value of that type) and
    `prepare(value, connection)`, the field's own `get_db_prep_value`, so the
    parameter is found and filled exactly as the ORM would send it.
    """

    def __init__(
        self,
        build: Callable[[Any], QuerySet[M]],
        *,
        placeholder: Any = _PLACEHOLDER,
        prepare: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self._build = build
        self._placeholder = placeholder
        self._prepare = prepare
        self._compiled: dict[tuple[str, str], _Compiled | None] = {}
        self._lock = threading.Lock()
        self._model: type[M] | None = None

    def _param(self, value: Any, connection: Any) -> Any:
        return self._prepare(value, connection) if self._prepare else value

    def _compile(self, alias: str) -> _Compiled | None:
        queryset = self._build(self._placeholder)
        compiler = queryset.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        marker = self._param(self._placeholder, connections[alias])
        if list(params).count(marker) != 1:
            return None
        select, klass_info = compiler.select, compiler.klass_info
        select_fields = klass_info["select_fields"]
        start, end = select_fields[0], select_fields[-1] + 1
        return _Compiled(
            compiler=compiler,
            sql=sql,
            params=tuple(params),
            position=list(params).index(marker),
            init_list=[column[0].target.attname for column in select[start:end]],
            start=start,
            end=end,
            populators=get_related_populators(klass_info, select, alias),
            converters=compiler.get_converters([column[0] for column in select[: compiler.col_count]]),
        )

    def get(self, value: Any) -> M | None:
        if self._model is None:
            self._model = self._build(self._placeholder).model
        alias = router.db_for_read(self._model)
        connection = connections[alias]
        key = (alias, connection.vendor)
        if key not in self._compiled:
            with self._lock:
                if key not in self._compiled:
                    self._compiled[key] = self._compile(alias)
        compiled = self._compiled[key]
        if compiled is None:
            return self._build(value).first()
        params = list(compiled.params)
        params[compiled.position] = self._param(value, connection)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchmany(1)
        if not rows:
            return None
        row = rows[0]
        if compiled.converters:
            row = next(iter(compiled.compiler.apply_converters([row], compiled.converters)))
        model_cls = compiled.compiler.klass_info["model"]
        obj = model_cls.from_db(alias, compiled.init_list, row[compiled.start : compiled.end])
        for populator in compiled.populators:
            populator.populate(row, obj)
        return obj
