"""One typed spelling of "the caller did not send this field".

`None` is a value ("clear it"); `NOT_SENT` means "leave what is stored". A type
of its own lets mypy tell the three apart: `str | None | NotSent`.
"""

from __future__ import annotations

import enum
from typing import Final, TypeVar

T = TypeVar("T")


class NotSent(enum.Enum):
    NOT_SENT = "NOT_SENT"

    def __repr__(self) -> str:
        return "NOT_SENT"

    def __bool__(self) -> bool:
        # Never truthy, so `if value:` cannot mistake "not sent" for a value.
        return False


NOT_SENT: Final = NotSent.NOT_SENT


def sent_or(value: T | NotSent, default: T) -> T:
    """The value, or `default` when it was not sent."""
    return default if isinstance(value, NotSent) else value
