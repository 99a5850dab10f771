"""The meaning of Meta's webhook events about an account or its number, and applying them.

Events change the status like actions do, so they respect the action lease
(whatsapp.services.state.between_actions): one that arrives while an action
runs is refused with 409, and the delivery that carries it is retried later
(whatsapp.deliveries), after the action recorded its result; it would
otherwise overwrite that result, or be overwritten by it. Applying an event
asks Meta nothing, so it takes no lease: it writes in one short transaction
with the row locked, and an action starting meanwhile waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..details import NO_DETAIL, Detail, disconnect_detail
from ..models import WhatsAppAccount, WhatsAppStatus
from .state import between_actions, save, set_status, snapshot

# The webhook changes that report on the account or its number (other fields,
# such as messages, are stored and need nothing applied).
ACCOUNT_EVENT_FIELDS = frozenset(
    {"account_update", "phone_number_quality_update", "phone_number_name_update"}
)
_STATUS_EVENTS = frozenset({"DISABLED_UPDATE", "ACCOUNT_DELETED", "PARTNER_APP_UNINSTALLED"})
_REPORTED_EVENTS = frozenset({"ACCOUNT_RESTRICTION", "ACCOUNT_VIOLATION"})


@dataclass(frozen=True)
class AccountEvent:
    """One change Meta reported about an account or a number: its `field` and Meta's `value`."""

    field: str
    value: Mapping[str, Any]

    @property
    def event(self) -> str:
        return str(self.value.get("event") or "").upper()

    @property
    def ban_state(self) -> str:
        ban_info = self.value.get("ban_info")
        state = ban_info.get("waba_ban_state") if isinstance(ban_info, dict) else None
        return str(state or self.value.get("waba_ban_state") or "").upper()

    @property
    def disconnects(self) -> bool:
        """Whether Meta took the number away (the clinic's admins are warned)."""
        if self.field != "account_update":
            return False
        return self.event in ("ACCOUNT_DELETED", "PARTNER_APP_UNINSTALLED") or (
            self.event == "DISABLED_UPDATE" and self.ban_state == "DISABLE"
        )

    @property
    def is_applied(self) -> bool:
        """Whether this event changes anything of ours (else the delivery is only stored)."""
        if self.field == "account_update":
            return self.event in _STATUS_EVENTS or self.event in _REPORTED_EVENTS
        return self.field in ACCOUNT_EVENT_FIELDS


def _event_detail(event: AccountEvent) -> Detail:
    """What Meta reported (restrictions, violations, quality, names), as a detail for the page."""
    value = event.value
    if event.event == "ACCOUNT_RESTRICTION":
        types = [
            str(r.get("restriction_type", ""))
            for r in value.get("restriction_info") or []
            if isinstance(r, dict)
        ]
        if types:
            return Detail.of("event.restricted", types=", ".join(types))
        return Detail.of("event.restricted_unspecified")
    if event.event == "ACCOUNT_VIOLATION":
        violation = value.get("violation_info")
        violation_type = violation.get("violation_type") if isinstance(violation, dict) else None
        return Detail.of(
            "event.violation",
            type=str(violation_type) if violation_type else Detail.of("event.unspecified"),
        )
    if event.field == "phone_number_quality_update":
        return Detail.of(
            "event.quality", event=str(value.get("event", "")), limit=str(value.get("current_limit", ""))
        )
    if event.field == "phone_number_name_update":
        return Detail.of(
            "event.name",
            name=str(value.get("requested_verified_name", "")),
            decision=str(value.get("decision", "")),
        )
    return NO_DETAIL


def whatsapp_apply_account_event(*, account: WhatsAppAccount, event: AccountEvent) -> str:
    """Apply what Meta reported about the account; returns what was done (stored on the delivery)."""
    if not event.is_applied:
        return "stored"
    name = event.event if event.field == "account_update" else event.field.upper()
    with between_actions(account) as locked:
        before = snapshot(locked)
        if event.disconnects:
            # What the event means, on the page and in the admins' e-mail, lives in whatsapp.details.
            set_status(locked, WhatsAppStatus.FAILED, detail=disconnect_detail(name))
            if name == "PARTNER_APP_UNINSTALLED":
                locked.subscribed_at = None
        elif name == "DISABLED_UPDATE" and event.ban_state == "REINSTATE":
            # Meta gave the account back: read the number's real status on the next poll.
            locked.status_checked_at = None
            if locked.status == WhatsAppStatus.FAILED and locked.phone_number_id:
                set_status(locked, WhatsAppStatus.VERIFYING, detail=Detail.of("event.reinstated_checking"))
            else:
                locked.detail_parts = Detail.of("event.reinstated").as_json()
        elif detail := _event_detail(event):
            # Restrictions, violations, quality and name updates: the status stays,
            # the clinic sees what Meta reported (until something newer happens).
            locked.detail_parts = detail.as_json()
        else:
            return "stored"
        save(locked, action="whatsapp.meta_event", before=before, extra={"event": name})
        return f"{name.lower() or 'event'} -> {locked.status}"
