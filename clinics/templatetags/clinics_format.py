from __future__ import annotations

from django import template

from common.validators import format_international

register = template.Library()


@register.filter
def international_phone(value: str | None) -> str:
    """A stored E.164 number as people write it: `+503 7765 4321`."""
    return format_international(value)
