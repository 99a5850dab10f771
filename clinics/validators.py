"""Field formats shared by every write path: the API, the settings page and admin.

Each ``normalize_*`` function checks one value and returns it in the form we
store (E.164 numbers, upper-case currency codes); it raises Django's
``ValidationError`` with a message a clinic admin can act on.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache

import phonenumbers
import pycountry
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

NAME_MAX_LENGTH = 200
ADDRESS_MAX_LENGTH = 255
CITY_MAX_LENGTH = 100
META_ID_MAX_LENGTH = 64
SECRET_MAX_LENGTH = 2048
VERIFY_TOKEN_MAX_LENGTH = 255

# Meta ids go into Graph URLs: nothing that could change the path or query.
# Always used with fullmatch(): `$` would let a trailing newline through.
META_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Printable ASCII without space: what Meta issues, and nothing a header could split on.
_VISIBLE_RE = re.compile(r"[\x21-\x7e]+")
_CODE_SEPARATORS_RE = re.compile(r"[\s-]+")
_CODE_RE = re.compile(r"[0-9]{4,8}")


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
    return name


def _parse_phone(value: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            _("Enter the number in international format, with + and the country code (+503 7765-4321)."),
            code="invalid_phone",
        ) from None


def normalize_clinic_phone(value: str | None) -> str:
    """Empty, or a possible international number, returned in E.164."""
    text = (value or "").strip()
    if not text:
        return ""
    number = _parse_phone(text)
    if not phonenumbers.is_possible_number(number):
        raise ValidationError(
            _("This is not a possible phone number: check the country code and the number of digits."),
            code="invalid_phone",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_whatsapp_phone(value: str | None) -> str:
    """A valid number (one Meta can send a code to), returned in E.164."""
    text = (value or "").strip()
    if not text:
        raise ValidationError(_("Enter the WhatsApp number to register."), code="required")
    number = _parse_phone(text)
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(
            _("This is not a valid phone number for its country: check the country code and the digits."),
            code="invalid_phone",
        )
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


def normalize_meta_id(value: str) -> str:
    text = (value or "").strip()
    if not META_ID_RE.fullmatch(text):
        raise ValidationError(
            _("Use the id from Meta's dashboard: 1 to 64 letters, digits, '_' or '-'."),
            code="invalid_meta_id",
        )
    return text


def normalize_secret(value: str, *, limit: int = SECRET_MAX_LENGTH) -> str:
    """An access token, app secret or verify token: visible characters, no white space."""
    text = value or ""
    if not text:
        raise ValidationError(_("This value cannot be empty."), code="required")
    if len(text) > limit:
        raise ValidationError(
            _("Use at most %(limit)d characters."), code="max_length", params={"limit": limit}
        )
    if not _VISIBLE_RE.fullmatch(text):
        raise ValidationError(
            _("Paste the value exactly as Meta shows it: visible characters only, no spaces."),
            code="invalid_secret",
        )
    return text


def normalize_verify_token(value: str) -> str:
    return normalize_secret(value, limit=VERIFY_TOKEN_MAX_LENGTH)


def normalize_otp_method(value: str) -> str:
    method = (value or "").strip().lower()
    if method not in ("sms", "voice"):
        raise ValidationError(_("Choose sms or voice."), code="invalid_choice")
    return method


def normalize_code(value: str) -> str:
    code = _CODE_SEPARATORS_RE.sub("", value or "")
    if not _CODE_RE.fullmatch(code):
        raise ValidationError(_("Enter the code from the SMS or call: 4 to 8 digits."), code="invalid_code")
    return code


# Django model validators (run by full_clean) that reuse the same rules.
def validate_clinic_phone(value: str) -> None:
    normalize_clinic_phone(value)


def validate_timezone(value: str) -> None:
    normalize_timezone(value)


def validate_currency(value: str) -> None:
    if normalize_currency(value) != value:
        raise ValidationError(_("Store currency codes in upper case."), code="invalid_currency")


def validate_meta_id(value: str) -> None:
    if value:
        normalize_meta_id(value)
