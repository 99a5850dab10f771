"""How a stored secret is shown: its first characters and `...****`, never the whole value."""

from __future__ import annotations

MASK_SUFFIX = "...****"
MASK_VISIBLE_CHARS = 8
# Secrets this short would be mostly revealed by their first 8 characters.
MASK_MIN_LENGTH_TO_SHOW_PREFIX = 17


def mask_secret(value: str | None) -> str | None:
    """`EAAOKw1x...****` for a long secret, `...****` for a short one, None for none."""
    if value is None or value == "":
        return None
    if len(value) < MASK_MIN_LENGTH_TO_SHOW_PREFIX:
        return MASK_SUFFIX
    return value[:MASK_VISIBLE_CHARS] + MASK_SUFFIX


def is_masked(value: object) -> bool:
    """True for a value that is (or contains) the mask: what a client read, not a new secret."""
    return isinstance(value, str) and MASK_SUFFIX in value
