"""The WhatsApp connection's state machine, cut by concern. Only `state.set_status` assigns `status`.

    disconnected --register--> pending_otp --verify ok--> active
                                   |   \\--verify ok, Meta not done--> verifying --poll--> active
                                   \\--Meta refused--> failed <--Meta refused--/
    deregister (from any state) --> disconnected

Every service takes the clinic's `WhatsAppAccount` (the caller scopes it) and
knows nothing of the product above: the clinic's name, the bot and tenancy are
`clinics`' business. Every action on one account runs under its lease
(`state`), so two parallel requests can never, for example, register the same
number twice, and no transaction or row lock is held while Meta is asked.

Three promises hold for every action:
- a way out of every state: deregister ends in `disconnected` from any status,
  and register never reuses a phone number id Meta does not know;
- nothing lost: a Meta failure leaves every stored field (ids, number, token,
  PIN) as it was; only the status, `detail` and `meta_code` say what happened;
  what Meta did is recorded the moment its answer arrives;
- one owner per number: another clinic's number or phone number id is refused
  (409) before anything reaches Meta, and a database constraint holds the line
  for proven claims; a code request alone holds a number for 30 minutes, and
  the first right code wins.
Arguments use the model's field names; `NOT_SENT` leaves a field as stored,
`None` clears it. `detail` is stored as message keys (whatsapp.details) and
rendered in the reader's language.

The modules: `state` (the lease, the one writer of `status`, the save),
`credentials`, `registration` (code, verify, PIN), `deregistration`, `status`
(the number's status at Meta, the poll, the webhook subscription), `events`
(Meta's webhook events), `limits` (the register budget, the wrong-code limit, the code-request limits),
`failures` (what a failed Graph call means). The front doors import the public
names from here.
"""

from __future__ import annotations

from .credentials import (
    SecretInput,
    whatsapp_check_connection,
    whatsapp_configure,
    whatsapp_store_credentials,
)
from .deregistration import whatsapp_deregister
from .events import ACCOUNT_EVENT_FIELDS, AccountEvent, whatsapp_apply_account_event
from .limits import META_ATTEMPT_LIMIT, WRONG_CODE_LIMIT, whatsapp_attempts_left
from .registration import (
    whatsapp_numbers_with_kept_pin,
    whatsapp_register_number,
    whatsapp_resend_code,
    whatsapp_set_pin,
    whatsapp_verify_code,
)
from .state import whatsapp_account_create, whatsapp_account_get_or_create
from .status import ConnectionReport, whatsapp_refresh_status

__all__ = [
    "ACCOUNT_EVENT_FIELDS",
    "META_ATTEMPT_LIMIT",
    "WRONG_CODE_LIMIT",
    "AccountEvent",
    "ConnectionReport",
    "SecretInput",
    "whatsapp_account_create",
    "whatsapp_account_get_or_create",
    "whatsapp_apply_account_event",
    "whatsapp_attempts_left",
    "whatsapp_check_connection",
    "whatsapp_configure",
    "whatsapp_deregister",
    "whatsapp_numbers_with_kept_pin",
    "whatsapp_refresh_status",
    "whatsapp_register_number",
    "whatsapp_resend_code",
    "whatsapp_set_pin",
    "whatsapp_store_credentials",
    "whatsapp_verify_code",
]
