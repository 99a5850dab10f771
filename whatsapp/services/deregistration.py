"""Deregistering a number (endpoint 9): the way out of every state."""

from __future__ import annotations

from ..exceptions import MetaRefusedError
from ..meta import MetaClient
from ..meta_errors import NOT_REGISTERED, UNKNOWN_OBJECT
from ..models import MetaAttempt, WhatsAppAccount, WhatsAppStatus
from .failures import explain
from .limits import spend_meta_attempt
from .state import acting_on, ask_meta, client_for, save, set_status, snapshot

# Deregister's refusals that mean there is nothing at Meta to undo: not registered,
# no such number, or not ours (Graph's 100/33 "does not exist or missing permissions", 200).
NOTHING_TO_DEREGISTER = frozenset({NOT_REGISTERED, UNKNOWN_OBJECT, 200})


def _take_off(client: MetaClient, phone_number_id: str) -> None:
    """Deregister at Meta; a refusal saying there is nothing to undo counts as done."""
    try:
        client.deregister(phone_number_id)
    except MetaRefusedError as exc:
        if exc.code not in NOTHING_TO_DEREGISTER:
            raise


def whatsapp_deregister(*, account: WhatsAppAccount) -> WhatsAppAccount:
    """Take the number off the Cloud API and forget it; the credentials are kept.

    A way out of every state: only a Meta that is unreachable, too slow, or that
    refuses while the number stays registered there (its rate limit, an expired
    token) keeps the status as it was. With nothing to take off and no number to
    forget (`may_deregister`, what the page reads to offer it), nothing changes.
    """
    with acting_on(account) as held:
        if not held.may_deregister:
            return held
        before = snapshot(held)
        needs_meta = held.status not in (WhatsAppStatus.DISCONNECTED, WhatsAppStatus.PENDING_OTP)
        if needs_meta and held.phone_number_id:
            spend_meta_attempt(held, MetaAttempt.Kind.DEREGISTER)
            client = client_for(held)
            ask_meta(
                lambda: _take_off(client, held.phone_number_id),
                on_failure=lambda exc: explain(exc, status=held.status),
            )
        set_status(held, WhatsAppStatus.DISCONNECTED)
        held.number = ""
        held.subscribed_at = None
        held.status_checked_at = None
        save(held, action="whatsapp.deregistered", before=before)
        return held
