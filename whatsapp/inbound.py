"""Meta's changes the layer above owns, handed to it: patients' messages (and the statuses of ours),
and the WABA's template events.

whatsapp applies each webhook event exactly once (an `AppliedWebhookEvent` marker in
the transaction of its effect) but knows nothing of conversations, bots or templates.
For each such change it sends a signal inside that transaction, once per account the
change is about: `messages_change_received` for a `messages` change (routed by its
number's id), `template_change_received` for a template status or quality update
(routed by its WABA, to the accounts whose number Meta showed in it). The product
records what the change means in the same transaction, so it commits with the marker
or not at all. A receiver that raises fails the event, which is retried.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `clinic_id=` (the account's clinic) and `value=` (Meta's change value, patient data:
# never log it).
messages_change_received = Signal()

# The webhook field that carries patients' messages and the statuses of outbound ones.
MESSAGES_FIELD = "messages"

# Sent with `clinic_id=`, `field=` (one of TEMPLATE_FIELDS) and `value=` (Meta's change value).
template_change_received = Signal()

# The webhook fields about the WABA's message templates (entry[].id names the WABA).
TEMPLATE_FIELDS = frozenset({"message_template_status_update", "message_template_quality_update"})
