"""Domain-free value formats: international phone numbers and length-limited text.

Each ``normalize_*`` function checks one value and returns it in the form we
store; it raises Django's ``ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


def parse_international_phone(value: str) -> phonenumbers.PhoneNumber:
    """A number written with + and its country code (`+503 7765-4321`)."""
    try:
        return phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            _("Enter the number in international format, with + and the country code (+503 7765-4321)."),
            code="invalid_phone",
        ) from None


def format_e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_limited_text(value: str | None, *, limit: int, what: str) -> str:
    text = (value or "").strip()
    if len(text) > limit:
        raise ValidationError(
            _("Use at most %(limit)d characters for the %(what)s."),
            code="max_length",
            params={"limit": limit, "what": what},
        )
    return text


def format_international(e164: str | None) -> str:
    """`+50399999999` -> `+503 9999 9999` for people to read; anything unparsable as it is."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
