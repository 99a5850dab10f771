"""Meta's `messages` changes (patients' messages and the statuses of ours), handed to the layer above.

whatsapp applies each webhook event exactly once (an `AppliedWebhookEvent` marker in
the transaction of its effect) but knows nothing of conversations or bots. For each
`messages` change it sends `messages_change_received` inside that transaction, once
per account the change is about; the product records the messages (and queues
their deliveries to the bot) in the same transaction, so they commit with the
marker or not at all. A receiver that raises fails the event, which is retried.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `clinic_id=` (the account's clinic) and `value=` (Meta's change value, patient data:
# never log it).
messages_change_received = Signal()

# The webhook field that carries patients' messages and the statuses of outbound ones.
MESSAGES_FIELD = "messages"
