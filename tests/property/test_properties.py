"""Property tests (hypothesis) of the validators, the secret masking and the field encryption."""

from __future__ import annotations

import re
import string
import unicodedata

import phonenumbers
import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from clinics import validators
from clinics.models import canonical_email
from common.crypto import DecryptionError, get_keyring
from common.masking import MASK_SUFFIX, mask_secret
from common.validators import validate_plain_text
from whatsapp import validators as whatsapp_validators

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
PROFILE = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Phone-like text: digits, separators, a leading +, and some noise.
phone_text = st.one_of(
    st.text(alphabet="+0123456789 -().", max_size=24),
    st.builds(
        lambda cc, rest, sep: f"+{cc}{sep}{rest}",
        st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
        st.text(alphabet="0123456789", min_size=1, max_size=14),
        st.sampled_from(["", " ", "-", " (0) "]),
    ),
    st.text(max_size=20),
)


@PROFILE
@given(phone_text)
@example("+503 9999-9999")
@example("+50399999999")
@example("+1 (415) 555-2671")
def test_clinic_phone_is_e164_and_idempotent(value):
    try:
        normalized = validators.normalize_clinic_phone(value)
    except ValidationError:
        return
    if not value.strip():
        assert normalized == ""
        return
    assert E164.fullmatch(normalized), (value, normalized)
    assert validators.normalize_clinic_phone(normalized) == normalized


@PROFILE
@given(phone_text)
def test_whatsapp_phone_is_e164_and_idempotent(value):
    try:
        normalized = whatsapp_validators.normalize_whatsapp_phone(value)
    except ValidationError:
        return
    assert E164.fullmatch(normalized), (value, normalized)
    assert whatsapp_validators.normalize_whatsapp_phone(normalized) == normalized


FORBIDDEN_IN_META_IDS = "/.?#"


@PROFILE
@given(st.text(max_size=80))
@example("123/../456")
@example("123?x=1")
@example("123\n")
@example("12 3")
@example("abc#frag")
def test_meta_id_never_accepts_path_or_query_characters(value):
    try:
        normalized = whatsapp_validators.normalize_meta_id(value)
    except ValidationError:
        return
    assert not any(ch in normalized for ch in FORBIDDEN_IN_META_IDS)
    assert not any(ch.isspace() for ch in normalized)
    assert 1 <= len(normalized) <= 64
    assert re.fullmatch(r"[A-Za-z0-9_-]+", normalized)


@PROFILE
@given(st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=64))
def test_meta_id_accepts_every_valid_id_unchanged(value):
    assert whatsapp_validators.normalize_meta_id(value) == value


@PROFILE
@given(st.text(max_size=8))
@example("usd")
@example(" eur ")
def test_currency_is_upper_case_iso(value):
    try:
        normalized = validators.normalize_currency(value)
    except ValidationError:
        return
    assert normalized == value.strip().upper()
    assert re.fullmatch(r"[A-Z]{3}", normalized)
    assert validators.normalize_currency(normalized.lower()) == normalized


@PROFILE
@given(st.text(alphabet=string.ascii_letters, min_size=3, max_size=3))
def test_currency_case_never_matters(value):
    try:
        upper = validators.normalize_currency(value.upper())
    except ValidationError:
        with pytest.raises(ValidationError):
            validators.normalize_currency(value.lower())
        return
    assert validators.normalize_currency(value.lower()) == upper


@PROFILE
@given(st.text(alphabet="0123456789 -\t", max_size=20) | st.text(max_size=12))
@example("123-456")
@example(" 12 34 ")
@example("\uff11\uff12\uff13\uff14")  # full-width digits are not ASCII digits
def test_code_strips_separators_and_is_4_to_8_ascii_digits(value):
    try:
        code = whatsapp_validators.normalize_code(value)
    except ValidationError:
        stripped = re.sub(r"[\s-]+", "", value)
        assert not re.fullmatch(r"[0-9]{4,8}", stripped)
        return
    assert re.fullmatch(r"[0-9]{4,8}", code)
    assert code == re.sub(r"[\s-]+", "", value)


@PROFILE
@given(st.text(max_size=60))
@example("EAAB token")
@example("EAAB\u00a0token")
@example("EAAB\ttoken")
@example("EAAB\u2028")
@example("tok\n")
def test_secret_rejects_any_whitespace(value):
    try:
        secret = whatsapp_validators.normalize_secret(value)
    except ValidationError:
        return
    assert secret == value
    assert not any(ch.isspace() for ch in secret)
    assert all(0x21 <= ord(ch) <= 0x7E for ch in secret)


@PROFILE
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=2048))
def test_secret_accepts_visible_ascii(value):
    assert whatsapp_validators.normalize_secret(value) == value


@PROFILE
@given(st.text(min_size=1, max_size=300).filter(lambda s: s != ""))
def test_mask_never_reveals_more_than_8_chars(value):
    masked = mask_secret(value)
    assert masked is not None and masked.endswith(MASK_SUFFIX)
    shown = masked[: -len(MASK_SUFFIX)]
    assert len(shown) <= 8
    assert value.startswith(shown)
    if len(value) <= 16:
        assert masked == MASK_SUFFIX
    else:
        assert shown == value[:8]


@pytest.mark.parametrize("empty", [None, ""])
def test_mask_of_nothing_is_none(empty):
    assert mask_secret(empty) is None


LABELS = st.sampled_from(
    [
        "whatsapp.whatsappaccount.access_token",
        "whatsapp.whatsappaccount.verify_token",
        "whatsapp.whatsappaccount.app_secret",
        "whatsapp.whatsappaccount.registration_pin",
    ]
)
ROW_IDS = st.uuids().map(str)


@PROFILE
@given(st.text(max_size=500), LABELS, ROW_IDS)
def test_encryption_round_trip(plaintext, label, row_id):
    keyring = get_keyring()
    stored = keyring.encrypt(plaintext, label=label, row_id=row_id)
    assert stored.startswith(f"enc:v1:{keyring.primary_kid}:")
    if len(plaintext) >= 4:
        assert plaintext not in stored
    assert keyring.decrypt(stored, label=label, row_id=row_id) == plaintext


@PROFILE
@given(st.text(max_size=100), LABELS, LABELS, ROW_IDS, ROW_IDS)
def test_ciphertext_is_bound_to_label_and_row(plaintext, label, other_label, row_id, other_row):
    assume(label != other_label or row_id != other_row)
    keyring = get_keyring()
    stored = keyring.encrypt(plaintext, label=label, row_id=row_id)
    with pytest.raises(DecryptionError):
        keyring.decrypt(stored, label=other_label, row_id=other_row)


@PROFILE
@given(st.text(min_size=1, max_size=50), ROW_IDS, st.integers(min_value=0, max_value=10_000), st.data())
def test_tampered_ciphertext_never_decrypts(plaintext, row_id, position, data):
    keyring = get_keyring()
    label = "whatsapp.whatsappaccount.access_token"
    stored = keyring.encrypt(plaintext, label=label, row_id=row_id)
    prefix_len = len(stored) - len(stored.split(":", 3)[3])
    index = prefix_len + position % (len(stored) - prefix_len)
    alphabet = string.ascii_letters + string.digits + "-_"
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != stored[index]]))
    tampered = stored[:index] + replacement + stored[index + 1 :]
    try:
        result = keyring.decrypt(tampered, label=label, row_id=row_id)
    except DecryptionError:
        return
    # base64 without padding: changing the unused low bits of the last character can
    # decode to the same bytes; then the plaintext must be the original, never another.
    assert result == plaintext


# --- canonical e-mails and plain text -------------------------------------------------------


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.text(max_size=40))
@example("\u017fara@x.example")
@example("\u1e9e@x.example")  # capital sharp s folds to "ss"
@example("\u0390")  # folds to three code points that NFKC composes again
@example(" \u0301a")
@example("\uab70@x.example")  # Cherokee folds to upper case
def test_canonical_email_is_a_fixed_point(value):
    once = canonical_email(value)
    assert canonical_email(once) == once
    assert once == once.strip()


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=30), st.sampled_from(["folded", "ascii upper", "fullwidth", "decomposed"]))
def test_canonical_email_ignores_case_width_and_decomposition(value, how):
    # Not value.upper(): dotless i upper-cases to I, which is another letter's capital.
    if how == "folded":
        other = value.casefold()
    elif how == "ascii upper":
        other = "".join(c.upper() if c.isascii() else c for c in value)
    elif how == "fullwidth":
        other = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
    else:
        other = unicodedata.normalize("NFD", value)
    assert canonical_email(other) == canonical_email(value)


# The contract's free-text rule, written out again from its own words.
HIDDEN_CATEGORIES = ["Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"]
FILLERS = "\u115f\u1160\u3164\uffa0"


def _refused_by_the_contract(c: str) -> bool:
    return unicodedata.category(c) in HIDDEN_CATEGORIES or c in FILLERS


def _visible(c: str) -> bool:
    return unicodedata.category(c)[0] in "LNPS" and not _refused_by_the_contract(c)


# Text mixing ordinary characters with every refused category, fillers, spaces and marks.
free_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.characters(categories=HIDDEN_CATEGORIES),
        st.sampled_from(FILLERS + " \u00a0\u2003\u0301\u0300"),
    ),
    max_size=40,
)


@PROFILE
@given(free_text)
@example("\u200e")  # bidirectional marks, separators, soft hyphen, tags: the 16 that used to pass
@example("\u2028")
@example("\u00ad")
@example("\U000e0041")
@example("\u3164\u3164")  # a name made only of fillers
@example("\u0301")  # a lone combining mark shows nothing by itself
@example("\u2003 \u00a0")
def test_plain_text_follows_the_contracts_rule(value):
    hidden = [c for c in value if _refused_by_the_contract(c)]
    try:
        validate_plain_text(value)
    except ValidationError as refused:
        if hidden:
            assert f"U+{ord(hidden[0]):04X}" in refused.messages[0]
        else:
            assert value and not any(_visible(c) for c in value)
            assert refused.error_list[0].code == "no_visible_character"
    else:
        assert not hidden
        assert not value or any(_visible(c) for c in value)


@PROFILE
@given(st.data(), st.sampled_from(HIDDEN_CATEGORIES), st.text(alphabet="abcñ1 ", min_size=1, max_size=10))
def test_each_refused_category_is_named_inside_ordinary_text(data, category, text):
    char = data.draw(st.characters(categories=[category]))
    with pytest.raises(ValidationError) as refused:
        validate_plain_text(f"Clínica{text}{char}{text}")
    assert f"U+{ord(char):04X}" in refused.value.messages[0]
