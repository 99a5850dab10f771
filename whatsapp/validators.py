"""Formats of what a clinic types to connect WhatsApp: Meta ids, secrets, numbers, codes.

Shared by the model, the serializers, the page's forms and admin. Each
``normalize_*`` function checks one value and returns it as stored; it raises
Django's ``ValidationError`` with a message a clinic admin can act on.
"""

from __future__ import annotations

import re

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from common.masking import is_masked
from common.validators import format_e164, parse_international_phone

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
_PIN_RE = re.compile(r"[0-9]{6}")


def normalize_meta_id(value: str) -> str:
    text = (value or "").strip()
    if not META_ID_RE.fullmatch(text):
        raise ValidationError(
            _("Use the id from Meta's dashboard: 1 to 64 letters, digits, '_' or '-'."),
            code="invalid_meta_id",
        )
    return text


def normalize_optional_meta_id(value: str | None) -> str:
    """Blank (no id stored) or a Meta id."""
    return normalize_meta_id(value) if value else ""


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


def normalize_secret_or_masked(value: str) -> str:
    """A new secret, or the masked value a client read back (the service then keeps the stored one)."""
    return value if is_masked(value) else normalize_secret(value)


def normalize_verify_token(value: str) -> str:
    return normalize_secret(value, limit=VERIFY_TOKEN_MAX_LENGTH)


def normalize_whatsapp_phone(value: str | None) -> str:
    """A valid number (one Meta can send a code to), returned in E.164."""
    text = (value or "").strip()
    if not text:
        raise ValidationError(_("Enter the WhatsApp number to register."), code="required")
    number = parse_international_phone(text)
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(
            _("This is not a valid phone number for its country: check the country code and the digits."),
            code="invalid_phone",
        )
    return format_e164(number)


def normalize_otp_method(value: str) -> str:
    method = (value or "").strip().lower()
    if method not in ("sms", "voice"):
        raise ValidationError(_("Choose sms or voice."), code="invalid_choice")
    return method


def normalize_pin(value: str) -> str:
    pin = (value or "").strip()
    if not _PIN_RE.fullmatch(pin):
        raise ValidationError(_("Enter the 6 digits of the two-step verification PIN."), code="invalid_pin")
    return pin


def normalize_code(value: str) -> str:
    code = _CODE_SEPARATORS_RE.sub("", value or "")
    if not _CODE_RE.fullmatch(code):
        raise ValidationError(_("Enter the code from the SMS or call: 4 to 8 digits."), code="invalid_code")
    return code
