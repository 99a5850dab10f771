"""Meta's refusals as sentences a clinic admin can act on.

Keyed by Graph's `error.code` (never by HTTP status or title, which Meta changes).
A code missing here falls back to Meta's own message.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

# Codes Meta uses for its own temporary trouble: worth a retry later, so the
# API answers 502 ("try again") rather than 400 ("change something").
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 80007, 131000, 131016, 133004, 133015})

WRONG_CODE = 136025
PIN_MISMATCH = 133005
NOT_REGISTERED = 133010
# Graph's generic "object does not exist, cannot be loaded due to missing permissions, or does
# not support this operation": for a phone number id, no such number or not ours.
UNKNOWN_OBJECT = 100
UNKNOWN_OBJECT_SUBCODE = 33

META_ERROR_SENTENCES: dict[int, Promise] = {
    190: _(
        "Meta rejected the access token: it has expired or was revoked. Create a new system user "
        "token in Meta Business Settings and save it here."
    ),
    200: _(
        "The access token has no permission on this WhatsApp Business Account. In Meta Business "
        "Settings, give the system user access to the account with whatsapp_business_management "
        "and whatsapp_business_messaging, then try again."
    ),
    10: _(
        "Meta says this app lacks a permission it needs. Check that the app has "
        "whatsapp_business_management and whatsapp_business_messaging, then try again."
    ),
    100: _(
        "Meta does not know this phone number id or WhatsApp Business Account id, or the token "
        "cannot see it. Copy both ids again from WhatsApp Manager."
    ),
    PIN_MISMATCH: _(
        "This number already has a two-step verification PIN from its previous provider. Enter that "
        "6-digit PIN to register the number with it, or reset the PIN in WhatsApp Manager and register again."
    ),
    133006: _(
        "Meta needs the number verified again before it can be registered. Request a new code and enter it."
    ),
    133016: _(
        "Meta has blocked registration of this number for 72 hours after too many register or "
        "deregister attempts. Wait, then try once."
    ),
    136024: _(
        "Meta could not send the code to this number. Check that it can receive SMS or calls, "
        "wait a few minutes, then try again or choose the other method."
    ),
    WRONG_CODE: _(
        "That code is not right or has expired. Check the latest SMS or call and enter the "
        "6 digits again, or ask for a new code."
    ),
    131031: _(
        "Meta has locked this WhatsApp Business Account or could not verify its details. Open "
        "WhatsApp Manager to see the notice and what Meta asks for."
    ),
    133000: _(
        "A previous deregistration of this number did not finish at Meta. Deregister it again, "
        "then register it."
    ),
    2: _("Meta's service is temporarily unavailable. Try again in a few minutes."),
    131000: _("Meta had an unexpected problem. Try again in a few minutes."),
}
