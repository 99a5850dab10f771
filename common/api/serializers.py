"""An input serializer whose fields are built once per class, not once per request."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from rest_framework import serializers


class PrebuiltFieldsSerializer(serializers.Serializer[Any]):
    """DRF builds every declared field anew for each serializer (`copy.deepcopy`, which runs each
    field's `__init__` again): 6 % of a settings PATCH in its profile (bench/reports/2026-12-01-issue13.md).

    Here `get_fields()`, DRF's documented hook, builds the fields once per class and hands each
    serializer shallow copies: every serializer still binds its own field objects (so concurrent
    requests share no `parent`), while what the copies share (validators, error messages, the
    normaliser) is only ever read. For flat input serializers only: a nested serializer or a
    ListField child would be shared by the copies, so those are refused.
    """

    _prebuilt: ClassVar[dict[type, dict[str, serializers.Field[Any, Any, Any, Any]]]] = {}

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        cls = type(self)
        prototypes = PrebuiltFieldsSerializer._prebuilt.get(cls)
        if prototypes is None:
            prototypes = super().get_fields()
            for name, field in prototypes.items():
                if isinstance(
                    field, (serializers.BaseSerializer, serializers.ListField, serializers.DictField)
                ):
                    raise TypeError(f"{cls.__name__}.{name}: prebuilt fields must be flat fields.")
            PrebuiltFieldsSerializer._prebuilt[cls] = prototypes
        return {name: copy.copy(field) for name, field in prototypes.items()}
