"""Domain-free value formats: international phone numbers and plain, length-limited text.

Each ``normalize_*`` function checks one value and returns it in the form we
store; it raises Django's ``ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

import unicodedata

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


# Free text shown to people (admin lists, e-mails, pages) must read as what it is.
# Refused, by Unicode category: Cc controls (C0, DEL, C1: terminal escapes), Cf format
# characters (bidirectional marks, embeddings, overrides and isolates such as U+200E,
# U+061C, U+202E; zero-width characters; soft hyphen; tags), Co private use, Cs
# surrogates, Cn unassigned, Zl and Zp line and paragraph separators. And the Hangul
# fillers, letters by category that show nothing.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
FILLERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0"})
# Visible: a letter, digit, punctuation or symbol (a space or a lone combining mark is not).
VISIBLE_CATEGORY_INITIALS = frozenset("LNPS")


def hidden_character(value: str) -> str | None:
    """The first character the free-text rule refuses, or None."""
    for char in value:
        if char in FILLERS or unicodedata.category(char) in HIDDEN_CATEGORIES:
            return char
    return None


def validate_plain_text(value: str) -> None:
    """The contract's free-text rule: no hidden character (naming the first), at least one visible one.

    An empty value passes: whether a field may be empty is that field's own rule.
    """
    text = value or ""
    found = hidden_character(text)
    if found is not None:
        raise ValidationError(
            _(
                "Remove the hidden character %(code)s (a control, format, private-use or unassigned "
                "character, a line or paragraph separator, or a filler)."
            ),
            code="hidden_character",
            params={"code": f"U+{ord(found):04X}"},
        )
    if text and not any(unicodedata.category(char)[0] in VISIBLE_CATEGORY_INITIALS for char in text):
        raise ValidationError(_("Enter at least one visible character."), code="no_visible_character")


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
