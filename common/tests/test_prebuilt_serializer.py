"""PrebuiltFieldsSerializer: fields built once per class, each serializer with its own bound copies."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from rest_framework import serializers

from common.api.fields import NormalizedCharField
from common.api.serializers import PrebuiltFieldsSerializer

built: list[str] = []


def _upper(value: str) -> str:
    if value == "bad":
        raise ValidationError("bad value")
    return value.upper()


class CountingField(NormalizedCharField):
    def __init__(self, *args, **kwargs):
        built.append("field")
        super().__init__(*args, **kwargs)


class CitySerializer(PrebuiltFieldsSerializer):
    city = CountingField(_upper, required=False, max_length=5)
    country = serializers.CharField(required=False)


def test_it_builds_the_fields_once_per_class_not_per_serializer():
    CitySerializer(data={}).is_valid()  # the class's first use builds them
    built.clear()

    for name in ("sal", "leon", "cobán"):
        serializer = CitySerializer(data={"city": name})
        assert serializer.is_valid(), serializer.errors
        assert serializer.validated_data == {"city": name.upper()}

    assert built == []


def test_each_serializer_binds_its_own_field_objects():
    first, second = CitySerializer(data={"city": "a"}), CitySerializer(data={"city": "b"})

    assert first.fields["city"] is not second.fields["city"]
    assert first.fields["city"].parent is first and second.fields["city"].parent is second


def test_errors_stay_with_their_own_serializer():
    good, bad, long = (CitySerializer(data={"city": v}) for v in ("sal", "bad", "toolong"))

    assert good.is_valid() and not bad.is_valid() and not long.is_valid()
    assert bad.errors == {"city": ["bad value"]}
    assert long.errors["city"][0].code == "max_length"
    assert good.validated_data == {"city": "SAL"}


def test_concurrent_serializers_do_not_mix_their_data():
    results: dict[int, dict] = {}

    def validate(n: int) -> None:
        for _ in range(200):
            serializer = CitySerializer(data={"city": f"c{n}", "country": f"k{n}"})
            serializer.is_valid(raise_exception=True)
            assert serializer.validated_data == {"city": f"C{n}", "country": f"k{n}"}
        results[n] = dict(serializer.validated_data)

    threads = [threading.Thread(target=validate, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {n: {"city": f"C{n}", "country": f"k{n}"} for n in range(8)}


def test_it_refuses_nested_fields():
    class Nested(PrebuiltFieldsSerializer):
        items = serializers.ListField(child=serializers.CharField())

    with pytest.raises(TypeError, match="flat fields"):
        Nested(data={}).is_valid()
