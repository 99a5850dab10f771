"""A response body's field list, written once: it renders the body and documents it.

DRF's serializers deep-copy every declared field on each instantiation, which on
the hottest reads cost more than the rest of the request (bench/README.md).
An `OutputShape` keeps one ordered list of (name, how to read it, how to
describe it): `render()` builds the body as a plain dict, and `serializer` is a
Serializer class built from the same list for drf-spectacular. The two cannot
drift, because there is only one list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from rest_framework import serializers


@dataclass(frozen=True)
class OutputField:
    name: str
    read: Callable[[Any], Any]
    # A read-only serializer field, used only to describe the value in the OpenAPI document.
    schema: serializers.Field[Any, Any, Any, Any]


class OutputShape:
    def __init__(self, name: str, fields: Sequence[OutputField]) -> None:
        self.name = name
        self.fields = tuple(fields)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    def render(self, obj: Any) -> dict[str, Any]:
        return {field.name: field.read(obj) for field in self.fields}

    @cached_property
    def serializer(self) -> type[serializers.Serializer[Any]]:
        declared = {field.name: field.schema for field in self.fields}
        return type(self.name, (serializers.Serializer,), declared)


def utc_iso(value: datetime | None) -> str | None:
    """The contract's time format: ISO 8601 in UTC with `Z`, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
