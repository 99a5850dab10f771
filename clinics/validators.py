"""Formats of a clinic's own fields, shared by every write path: the API, the settings page, admin.

Each ``normalize_*`` function checks one value and returns it in the form we
store (E.164 numbers, upper-case currency codes); it raises Django's
``ValidationError`` with a message a clinic admin can act on. `CLINIC_NORMALIZERS`
is the one map from field to rule that every front door uses.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import phonenumbers
import pycountry
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from common.validators import (
    format_e164,
    normalize_limited_text,
    parse_international_phone,
    validate_plain_text,
)

NAME_MAX_LENGTH = 200
ADDRESS_MAX_LENGTH = 255
CITY_MAX_LENGTH = 100


def normalize_name(value: str) -> str:
    name = (value or "").strip()
    if not name:
        raise ValidationError(_("Enter the clinic's name."), code="required")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(
            _("Use at most %(limit)d characters for the name."),
            code="max_length",
            params={"limit": NAME_MAX_LENGTH},
        )
    validate_plain_text(name)
    return name


def normalize_clinic_phone(value: str | None) -> str:
    """Empty, or a possible international number, returned in E.164."""
    text = (value or "").strip()
    if not text:
        return ""
    number = parse_international_phone(text)
    if not phonenumbers.is_possible_number(number):
        raise ValidationError(
            _("This is not a possible phone number: check the country code and the number of digits."),
            code="invalid_phone",
        )
    return format_e164(number)


def normalize_address(value: str | None) -> str:
    return normalize_limited_text(value, limit=ADDRESS_MAX_LENGTH, what=str(_("address")))


def normalize_city(value: str | None) -> str:
    return normalize_limited_text(value, limit=CITY_MAX_LENGTH, what=str(_("city")))


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_timezone(value: str) -> str:
    text = (value or "").strip()
    if text not in _timezones():
        raise ValidationError(
            _("Use an IANA time zone name such as America/El_Salvador."), code="invalid_timezone"
        )
    return text


def normalize_currency(value: str) -> str:
    code = (value or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code) or pycountry.currencies.get(alpha_3=code) is None:
        raise ValidationError(_("Use an ISO 4217 currency code such as USD."), code="invalid_currency")
    return code


# The clinic's editable text fields and the one rule each: the serializers, the
# page's form and the admin form all take their normalisation from here.
CLINIC_NORMALIZERS: dict[str, Callable[[Any], str]] = {
    "name": normalize_name,
    "phone": normalize_clinic_phone,
    "address": normalize_address,
    "city": normalize_city,
    "timezone": normalize_timezone,
    "currency": normalize_currency,
}


# Django model validators (run by full_clean) that reuse the same rules.
def validate_clinic_phone(value: str) -> None:
    normalize_clinic_phone(value)


def validate_timezone(value: str) -> None:
    normalize_timezone(value)


def validate_currency(value: str) -> None:
    if normalize_currency(value) != value:
        raise ValidationError(_("Store currency codes in upper case."), code="invalid_currency")
