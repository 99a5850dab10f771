"""Serializer fields that run a shared `normalize_*` function, and the names services speak."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers


class NormalizedCharField(serializers.CharField):
    """A string checked and normalised by one of the shared `normalize_*` functions."""

    def __init__(self, normalizer: Callable[[str], str], **kwargs: Any) -> None:
        self.normalizer = normalizer
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            # No silent coercion of numbers or booleans into text.
            self.fail("invalid")
        value = super().to_internal_value(data)
        try:
            return self.normalizer(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from None


class StrictBooleanField(serializers.BooleanField):
    """Only JSON true/false: "yes", 1 or "on" are mistakes, not booleans."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid")
        raise AssertionError("unreachable")


def error_names(serializer_class: type[serializers.Serializer[Any]]) -> dict[str, str]:
    """Model field name -> API key, from the input serializer's `source`s.

    Services raise ValidationError keyed by the model's field names; the API
    answers with its own keys, so the exception handler renames them with this.
    """
    names: dict[str, str] = {}
    for key, field in serializer_class().fields.items():
        names[str(field.source).split(".")[-1]] = key
    return names
