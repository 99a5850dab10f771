"""What happened to a connection, stored as message keys and rendered in the reader's language.

A `detail` used to be stored already translated, in the language of whoever
caused it (an English admin, or Spanish for every webhook). Now the account
keeps a `Detail`: one or more parts, each a key of `SENTENCES` and its
parameters (a parameter may itself be a part, e.g. "by SMS"). `render()` turns
it into a sentence in the active language, on every read. Meta's own words
travel as a plain parameter: they are shown as Meta wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .meta_errors import META_ERROR_SENTENCES

SENTENCES: dict[str, Promise] = {
    # credentials and the number's status at Meta
    "check.save_credentials": _("Save the phone number id and the access token to connect WhatsApp."),
    "check.unreachable": _("Credentials saved, but Meta could not be reached to check them: %(why)s"),
    "number.pending": _("Meta is still setting up the number. This page updates by itself."),
    "number.banned": _(
        "Meta has banned this number from WhatsApp. Open WhatsApp Manager to read the notice and request a review."
    ),
    "number.restricted": _(
        "Meta has restricted this number: it can only answer patients who write first. "
        "See WhatsApp Manager for when the restriction ends."
    ),
    "number.flagged": _(
        "Meta has flagged this number for low quality. Review the messages the bot sends in "
        "WhatsApp Manager; the flag is lifted when quality improves."
    ),
    "number.gone": _(
        "Meta reports this number is no longer connected to the Cloud API (%(status)s). Register it again."
    ),
    "number.unverified": _(
        "Meta has not verified that you own this number. Register it again to receive a new code."
    ),
    "number.rate_limited": _("Meta is temporarily limiting how fast this number can send."),
    "number.unexpected": _("Meta reported an unexpected status for this number (%(status)s)."),
    "subscribe.refused": _(
        "The number is active, but Meta refused to send its messages to this service, so "
        "the bot cannot hear patients yet: %(why)s Use 'Check now' to try again."
    ),
    # register, code, PIN
    "register.code_sent": _("Meta is sending a code %(how)s to %(number)s. Enter it to continue."),
    "register.by_sms": _("by SMS"),
    "register.by_voice": _("by voice call"),
    "register.attempts_low": _(
        "Careful: Meta allows only %(left)d more register attempts for this number in the next 72 hours."
    ),
    "verify.attempts_left": _("%(left)d attempts left."),
    "verify.not_confirmed": _("The code was right, but Meta did not confirm the registration yet: %(why)s"),
    "verify.waiting": _("Registered. Waiting for Meta to confirm the number; this page updates by itself."),
    "deadline.verifying": _(
        "Meta did not answer in time, and may have registered the number anyway. "
        "This page asks Meta and updates by itself."
    ),
    "pin.changed": _("The two-step verification PIN of the number was changed."),
    "pin.wrong": _(
        "That is not this number's two-step verification PIN. Meta allows %(left)d more register "
        "attempts for this number in the next 72 hours. If nobody knows the PIN, reset it in "
        "WhatsApp Manager and register the number again."
    ),
    "pin.unconfirmed": _(
        "Meta did not confirm the new PIN, and may have changed it anyway. Both the old and the new "
        "PIN are kept, and the next registration of this number tries the new one first."
    ),
    "claim.lapsed": _(
        "Your code request for this number is more than 30 minutes old, and another clinic in this "
        "service has asked for a code for it. The first clinic to enter the right code connects it: "
        "enter yours, or ask for a new one."
    ),
    "budget.exhausted": _(
        "This number has used all %(limit)d register and deregister attempts Meta allows in "
        "72 hours; one more would make Meta block it for 72 hours. Try again after %(when)s UTC."
    ),
    # what is not possible now, and our own limits
    "conflict.busy": _("Another change to this connection is in progress; try again in a moment."),
    "conflict.no_token": _("No access token is stored for this clinic. Save the WhatsApp credentials first."),
    "conflict.active": _("This clinic already has an active number. Deregister it first."),
    "conflict.register_first": _("Register the number first."),
    "conflict.no_code": _("There is no code to verify now (status: %(status)s). Register the number first."),
    "conflict.no_pin": _(
        "A two-step verification PIN can be sent only when Meta asked for the number's existing PIN, "
        "or to change the PIN of an active number."
    ),
    "conflict.number_owned": _(
        "This number is already connected to another clinic in this service. Disconnect it there first, "
        "or register another number."
    ),
    "conflict.number_claimed": _(
        "Another clinic in this service is connecting this number and waits for its verification code. "
        "A code request holds a number for 30 minutes at most: if the number is yours, try again in "
        "%(minutes)d minutes."
    ),
    "conflict.phone_number_id_owned": _(
        "This phone number id belongs to another clinic in this service. Check the id in WhatsApp Manager."
    ),
    "limit.wrong_codes": _(
        "Too many wrong codes. To protect the number, wait %(minutes)d minutes before trying "
        "again, or ask for a new code then."
    ),
    "limit.code_requests_number": _(
        "At most %(limit)d codes an hour can be requested for one number: each one is an SMS or a call "
        "to a person. Try again in %(minutes)d minutes."
    ),
    "limit.code_requests_clinic": _(
        "This clinic has requested %(limit)d codes in the last 24 hours, the most allowed: each one is "
        "an SMS or a call to a person. Try again after %(when)s UTC."
    ),
    "limit.health_recent": _("The checks ran less than a minute ago. Try again in %(seconds)d seconds."),
    "refresh.unreachable": _("Meta could not be reached just now; this is the last known status."),
    # Meta's refusals (the sentences of meta_errors.py, by code) and its temporary trouble
    "meta.refused": _("Meta refused the request: %(message)s"),
    "meta.temporary": _(
        "Meta reported a temporary problem (%(code)s): %(message)s Try again in a few minutes."
    ),
    "meta.unreachable": _("Meta could not be reached. Nothing was lost; try again in a few minutes."),
    "meta.timeout": _("Meta did not answer in time. Nothing was lost; try again in a minute."),
    # webhook events
    "event.disabled": _(
        "Meta disabled this WhatsApp Business Account. Open WhatsApp Manager to read why and request a review."
    ),
    "event.deleted": _(
        "Meta reports this WhatsApp Business Account was deleted. Connect another account with new credentials."
    ),
    "event.uninstalled": _(
        "Access for this service was removed from the WhatsApp Business Account. "
        "Grant it again in Meta Business Settings and save a new access token."
    ),
    "event.reinstated_checking": _("Meta reinstated the account; checking the number's status."),
    "event.reinstated": _("Meta reinstated the account."),
    "event.restricted": _("Meta restricted this account: %(types)s."),
    "event.restricted_unspecified": _("Meta restricted this account: see WhatsApp Manager."),
    "event.violation": _("Meta reported a policy violation (%(type)s). Read the notice in WhatsApp Manager."),
    "event.unspecified": _("unspecified"),
    "event.quality": _("Meta updated the number's messaging limit: %(event)s %(limit)s."),
    "event.name": _("Meta's decision on the display name '%(name)s': %(decision)s."),
}
SENTENCES.update({f"meta.{code}": sentence for code, sentence in META_ERROR_SENTENCES.items()})

# Details that come from Meta's webhooks: they stay until something newer happens.
EVENT_KEYS = frozenset(key for key in SENTENCES if key.startswith("event."))

# Meta's `account_update` events that take a clinic's number away, and the sentence that
# explains each: the one home of what they mean, for the connection's status detail and for
# the warning e-mail to the clinic's admins alike.
DISCONNECT_KEYS: dict[str, str] = {
    "DISABLED_UPDATE": "event.disabled",
    "ACCOUNT_DELETED": "event.deleted",
    "PARTNER_APP_UNINSTALLED": "event.uninstalled",
}


@dataclass(frozen=True)
class Part:
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        if self.key == "literal":
            # Text stored before details were keys: shown as it was written.
            return str(self.params.get("text", ""))
        sentence = SENTENCES.get(self.key)
        if sentence is None:
            return ""
        if not self.params:
            return str(sentence)
        values = {name: _render_value(value) for name, value in self.params.items()}
        return str(sentence) % values

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "params": {name: _json_value(value) for name, value in self.params.items()}}


@dataclass(frozen=True)
class Detail:
    """A sentence (or a few) about the connection, kept as keys until someone reads it."""

    parts: tuple[Part, ...] = ()

    @classmethod
    def of(cls, key: str, **params: Any) -> Detail:
        return cls((Part(key, params),))

    def then(self, key: str, **params: Any) -> Detail:
        return Detail((*self.parts, Part(key, params)))

    def __bool__(self) -> bool:
        return bool(self.parts)

    def render(self) -> str:
        return " ".join(text for text in (part.render() for part in self.parts) if text)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(part.key for part in self.parts)

    def as_json(self) -> list[dict[str, Any]]:
        return [part.as_json() for part in self.parts]

    @classmethod
    def from_json(cls, data: Any) -> Detail:
        if not isinstance(data, list):
            return cls()
        return cls(tuple(part for part in map(_part_from_json, data) if part is not None))


NO_DETAIL = Detail()


def _render_value(value: Any) -> Any:
    if isinstance(value, Part | Detail):
        return value.render()
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, Part):
        return {"part": value.as_json()}
    if isinstance(value, Detail):
        return {"detail": value.as_json()}
    return value


def _part_from_json(item: Any) -> Part | None:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        return None
    params = item.get("params")
    if not isinstance(params, dict):
        params = {}
    return Part(item["key"], {name: _from_json_value(value) for name, value in params.items()})


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("part"), dict):
        return _part_from_json(value["part"])
    if isinstance(value, dict) and "detail" in value:
        return Detail.from_json(value["detail"])
    return value


def disconnect_detail(event: str) -> Detail:
    """What a disconnecting event means and what to do about it (a disabled account for any other)."""
    return Detail.of(DISCONNECT_KEYS.get(event.upper(), "event.disabled"))


def meta_refusal_detail(code: int | None, message: str | None, details: str | None = None) -> Detail:
    """Our sentence for one of Meta's codes, else Meta's own words (the contract asks for them)."""
    if code is not None and code in META_ERROR_SENTENCES:
        return Detail.of(f"meta.{code}")
    return Detail.of("meta.refused", message=(details or message or "")[:500])
