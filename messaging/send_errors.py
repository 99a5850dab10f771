"""Meta's error codes for a send, and what each one means for the message: the one table.

Every refusal Meta gives to `POST /{pnid}/messages` (or reports later in a
`failed` status) is looked up here. `FAIL`: the message is `failed`, keeps the
code, and shows the sentence in the reader's language. `WAIT`: Meta says to slow
down (throughput, pair rate): the send goes back to the queue after `wait_seconds`
and is tried again, a few times at most. `RETRY`: Meta was briefly unavailable:
tried again with the outbox's backoff. A code not in the table fails with the
generic sentence: retrying what we do not understand could text a patient twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


class SendAction(Enum):
    FAIL = "fail"
    WAIT = "wait"
    RETRY = "retry"


@dataclass(frozen=True)
class SendError:
    action: SendAction
    sentence: Promise
    wait_seconds: int = 0


_TEMPLATE_PARAMS = _("The template's parameters do not match what Meta approved (their number or format).")
_TOKEN = _("Meta refused the clinic's access token. An administrator must enter a new one in the settings.")
_RESTRICTED = _("Meta has restricted the clinic's WhatsApp account, so it cannot send for now.")
_UNAVAILABLE = _("Meta was briefly unavailable; the message is tried again.")

SEND_ERRORS: dict[int, SendError] = {
    131047: SendError(
        SendAction.FAIL,
        _("More than 24 hours have passed since the patient's last message: send an approved template."),
    ),
    131026: SendError(
        SendAction.FAIL,
        _("The message could not be delivered: the number may not use WhatsApp or its app is too old."),
    ),
    131056: SendError(
        SendAction.WAIT, _("Too many messages to this patient in a short time; it is sent a little later."), 6
    ),
    130429: SendError(
        SendAction.WAIT, _("The number reached Meta's sending rate; the message is sent a little later."), 2
    ),
    131048: SendError(
        SendAction.FAIL,
        _("Meta limited this number because patients reported its messages as spam. Check its quality."),
    ),
    131049: SendError(
        SendAction.FAIL,
        _("Meta held back this marketing message to protect the patient's experience. Try after a day."),
    ),
    131050: SendError(SendAction.FAIL, _("The patient has stopped receiving marketing messages.")),
    131021: SendError(SendAction.FAIL, _("The patient's number is the clinic's own number.")),
    131051: SendError(SendAction.FAIL, _("Meta does not support this type of message.")),
    # Sent by `recipient` (a BSUID, no phone known): Meta refuses some types of message that way.
    131062: SendError(
        SendAction.FAIL,
        _(
            "Meta does not send this type of message to a patient known only by BSUID, "
            "without their phone number."
        ),
    ),
    132000: SendError(SendAction.FAIL, _TEMPLATE_PARAMS),
    132012: SendError(SendAction.FAIL, _TEMPLATE_PARAMS),
    132001: SendError(
        SendAction.FAIL, _("Meta does not know this template in this language. Sync the templates.")
    ),
    132005: SendError(
        SendAction.FAIL, _("The template's text is too long once the parameters are filled in.")
    ),
    132007: SendError(SendAction.FAIL, _("The template's content breaks one of WhatsApp's policies.")),
    132015: SendError(SendAction.FAIL, _("Meta paused this template because of its low quality.")),
    132016: SendError(SendAction.FAIL, _("Meta disabled this template because of its low quality.")),
    190: SendError(SendAction.FAIL, _TOKEN),
    0: SendError(SendAction.FAIL, _TOKEN),
    368: SendError(SendAction.FAIL, _RESTRICTED),
    131031: SendError(SendAction.FAIL, _RESTRICTED),
    130497: SendError(
        SendAction.FAIL, _("Meta does not allow this account to message patients in that country.")
    ),
    131042: SendError(
        SendAction.FAIL, _("Meta refused the send because of a problem with the payment method.")
    ),
    133010: SendError(SendAction.FAIL, _("The clinic's number is not registered with WhatsApp.")),
    131000: SendError(SendAction.RETRY, _UNAVAILABLE),
    131016: SendError(SendAction.RETRY, _UNAVAILABLE),
    131057: SendError(SendAction.RETRY, _UNAVAILABLE),
    133004: SendError(SendAction.RETRY, _UNAVAILABLE),
    2: SendError(SendAction.RETRY, _UNAVAILABLE),
}

UNKNOWN_ERROR = SendError(SendAction.FAIL, _("Meta refused the message."))
# Our own reasons for a `failed` without Meta's word (no code from Meta).
NOT_SENT_SENTENCE = _(
    "The message was not sent: the clinic's WhatsApp number was not active or Meta could not be reached."
)


def send_error(code: int | None) -> SendError:
    """What a Meta error code means for a send (the generic failure for a code we do not know)."""
    return SEND_ERRORS.get(code if code is not None else -1, UNKNOWN_ERROR)


# A failed message whose code says "wait" or "try again" is one we stopped trying: the table's
# sentence ("it is sent a little later") would no longer be true.
GAVE_UP_SENTENCE = _("Meta kept refusing this message for a while (code %(code)s), so it was not sent.")


def send_error_detail(code: int | None) -> str:
    """The sentence for a failed message, in the active language."""
    if code is None:
        return str(NOT_SENT_SENTENCE)
    error = send_error(code)
    if error.action is not SendAction.FAIL:
        return str(GAVE_UP_SENTENCE) % {"code": code}
    return str(error.sentence)
