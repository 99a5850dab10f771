"""Meta's values about a number (quality rating, messaging limit tier, display name review) in
plain words, in the reader's language, for the health panel. Endpoint 13 keeps Meta's values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext


@dataclass(frozen=True)
class PlainValue:
    """A value said plainly (`label`) with what it means for the clinic (`meaning`, may be "")."""

    label: str
    meaning: str = ""


def quality_words(rating: str) -> PlainValue | None:
    """Meta's quality rating of the number (GREEN, YELLOW, RED, NA/UNKNOWN), or None when not given."""
    rating = (rating or "").upper()
    if not rating:
        return None
    if rating == "GREEN":
        return PlainValue(_("Good"), _("Patients are happy with the messages they receive."))
    if rating == "YELLOW":
        return PlainValue(
            _("Fair"),
            _("Some patients blocked or reported the messages: send fewer, more useful ones."),
        )
    if rating == "RED":
        return PlainValue(
            _("Poor"),
            _(
                "Many patients blocked or reported the messages: Meta may lower how many patients "
                "the clinic can write to, or stop the number."
            ),
        )
    if rating in ("NA", "UNKNOWN"):
        return PlainValue(_("Not rated yet"), _("Meta rates the quality once the number has sent messages."))
    return PlainValue(rating)


_TIER = re.compile(r"^TIER_(\d+)(K?)$")


def limit_words(tier: str) -> PlainValue | None:
    """Meta's messaging limit tier (TIER_250, TIER_1K, TIER_UNLIMITED...), or None when not given."""
    tier = (tier or "").upper()
    if not tier:
        return None
    meaning = _(
        "How many patients the clinic may start conversations with in 24 hours; "
        "patients who write first do not count."
    )
    if tier == "TIER_UNLIMITED":
        return PlainValue(_("No daily limit"), meaning)
    if tier == "TIER_NOT_SET":
        return PlainValue(_("Not set by Meta yet"), meaning)
    match = _TIER.match(tier)
    if match is None:
        return PlainValue(tier)
    count = int(match.group(1)) * (1000 if match.group(2) else 1)
    label = ngettext("Up to %(count)s patient a day", "Up to %(count)s patients a day", count) % {
        "count": number_format(count, force_grouping=True)
    }
    return PlainValue(label, meaning)


def name_words(status: str) -> PlainValue | None:
    """Meta's review of the display name (APPROVED, PENDING_REVIEW, DECLINED...), or None when not given."""
    status = (status or "").upper()
    if not status:
        return None
    words = {
        "APPROVED": (pgettext("display name", "Approved"), _("Patients see the clinic's name.")),
        "AVAILABLE_WITHOUT_REVIEW": (
            _("Usable without review"),
            _("Patients see the clinic's name; Meta did not need to review it."),
        ),
        "PENDING_REVIEW": (
            _("Being reviewed by Meta"),
            _("Meta is reviewing the name, usually for a few days; messages can be sent meanwhile."),
        ),
        "DECLINED": (
            _("Declined by Meta"),
            _("Meta did not accept the name: change it in WhatsApp Manager following Meta's rules."),
        ),
        "EXPIRED": (
            _("Certificate expired"),
            _("The name's certificate expired: register the number again to renew it."),
        ),
        "NONE": (_("No name yet"), _("The number has no approved display name yet.")),
        "NON_EXISTS": (_("No name yet"), _("The number has no approved display name yet.")),
    }
    if status in words:
        return PlainValue(*words[status])
    return PlainValue(status)
