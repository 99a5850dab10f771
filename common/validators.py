"""Domain-free value formats: international phone numbers and plain, length-limited text.

Each ``normalize_*`` function checks one value and returns it in the form we
store; it raises Django's ``ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

import re

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


# Characters that change what text looks like without being seen: control characters
# (C0, DEL, C1: terminal escapes), bidirectional embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069: "abc" shown as "cba"), zero-width characters
# (U+200B-U+200D, U+2060, U+FEFF). Free text shown to people (admin lists, e-mails)
# must read as what it is.
_HIDDEN_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069]")


def validate_plain_text(value: str) -> None:
    """Refuse a control, bidirectional-control or zero-width character, naming the first one."""
    found = _HIDDEN_CHARACTER.search(value or "")
    if found is not None:
        raise ValidationError(
            _("Remove the hidden character %(code)s (a control, text-direction or zero-width character)."),
            code="hidden_character",
            params={"code": f"U+{ord(found.group()):04X}"},
        )


def normalize_limited_text(value: str | None, *, limit: int, what: str) -> str:
    """Trimmed, at most `limit` characters, every character a visible or plain space one."""
    text = (value or "").strip()
    if len(text) > limit:
        raise ValidationError(
            _("Use at most %(limit)d characters for the %(what)s."),
            code="max_length",
            params={"limit": limit, "what": what},
        )
    validate_plain_text(text)
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
