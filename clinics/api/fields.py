"""Serializer fields that run the shared validators of clinics/validators.py."""

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


class EmptyAsNullCharField(serializers.CharField):
    """Output: an unset text value is `null`, never `""` (the contract's rule)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str | None:
        return value or None
