"""The one call every writer of a clinic's WhatsApp connection makes, so no cached copy of it outlives the write.

A layer above `whatsapp` may keep copies of a connection in the shared cache (the
product keeps it beside each API token, so a request finds both with one cache
read). `whatsapp` knows nothing of them: such a layer registers at start-up how
to end its copies of one clinic's connection (`whatsapp_account_copies_end_with`),
and every write of a `WhatsAppAccount` row (a `save()`, a queryset `update()` or
`delete()`) calls `whatsapp_account_changed` with the clinic's id, inside the
writing transaction. A signal on save would miss `update()`, hence an explicit call:
the services' one save (`whatsapp.services.state.save`) and the account's creation
make it. The action lease's own UPDATEs need none: its two columns are no part of
what a copy shows (an action re-reads the row under its lease).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_enders: list[Callable[[Any], None]] = []


def whatsapp_account_copies_end_with(end: Callable[[Any], None]) -> None:
    """Register how to end the cached copies of one clinic's connection; `end` takes the clinic's id."""
    if end not in _enders:
        _enders.append(end)


def whatsapp_account_changed(*, clinic_id: Any) -> None:
    """The clinic's connection was (or is being) written: every cached copy of it ends."""
    for end in _enders:
        end(clinic_id)
