"""Every failure of the WhatsApp integration: one family, from the Graph call to the service.

The Graph client raises the `Meta*Error`s with what Meta said (``str()`` never
holds the token). A service that catches one explains it before re-raising:
``status`` is then the connection status the clinic is in now and ``detail`` a
sentence the clinic can act on. The front doors map each class to their answer
(400, 409, 429, 502, 504 on the API; a message on the page and in admin).
"""

from __future__ import annotations

from typing import Self

from .details import NO_DETAIL, Detail


class WhatsAppError(Exception):
    """Base: `status` is the connection status after the failure, `detail` a sentence to act on.

    `reason` is the same sentence as message keys (whatsapp.details); `detail` is it
    rendered in the language of the request that raised it, which is the one reading it.
    """

    status: str = ""
    reason: Detail = NO_DETAIL

    def __init__(self, text: str = "", *, status: str = "", reason: Detail = NO_DETAIL) -> None:
        self.status = status
        self.reason = reason
        super().__init__(text or reason.render())

    @property
    def detail(self) -> str:
        return self.reason.render()

    def explained(self, *, status: str, reason: Detail | None = None) -> Self:
        """This error with the clinic's status now (and, when given, the reason to show)."""
        self.status = status
        if reason is not None:
            self.reason = reason
        return self


class StatusConflictError(WhatsAppError):
    """The action is not allowed in the current status (409)."""


class NumberOwnedElsewhereError(StatusConflictError):
    """The phone number id or the number belongs to another clinic (409); nothing reached Meta."""


class AttemptsExhaustedError(WhatsAppError):
    """A local limit protects the number or the clinic (429 with Retry-After)."""

    def __init__(self, *, status: str, reason: Detail, retry_after: int) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(status=status, reason=reason)


class MetaError(WhatsAppError):
    """A Graph call failed. ``code``/``message``/``details`` are Meta's own, when it sent them."""

    def __init__(
        self,
        text: str = "",
        *,
        code: int | None = None,
        message: str | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        http_status: int | None = None,
        subcode: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status
        self.subcode = subcode
        if code is not None:
            text = describe(text, code, message, details, fbtrace_id, http_status)
        super().__init__(text)


class MetaRefusedError(MetaError):
    """Graph answered 4xx: it understood the request and refused it (see ``code``). API: 400."""

    code: int

    def __init__(
        self,
        code: int,
        message: str,
        *,
        details: str | None = None,
        fbtrace_id: str | None = None,
        http_status: int = 400,
        subcode: int | None = None,
    ) -> None:
        super().__init__(
            "Meta refused the request",
            code=code,
            message=message,
            details=details,
            fbtrace_id=fbtrace_id,
            http_status=http_status,
            subcode=subcode,
        )


class MetaUnavailableError(MetaError):
    """Meta could not be reached or did not answer properly: 5xx, network, malformed body. API: 502.

    ``code``/``message``/``details``/``fbtrace_id``/``subcode`` are filled when a
    5xx carried Graph's error envelope (e.g. 131000 or 2); ``http_status`` when
    there was a response at all.
    """


class MetaTimeoutError(MetaError):
    """The connect or read timeout expired; Meta may or may not have acted on the request. API: 504."""


def describe(
    prefix: str,
    code: int,
    message: str | None,
    details: str | None,
    fbtrace_id: str | None,
    http_status: int | None,
) -> str:
    """Meta's answer in one line for logs and ``str()``: never the token, which Meta does not echo."""
    text = f"{prefix} (code {code}"
    if http_status is not None:
        text += f", HTTP {http_status}"
    text += ")"
    if message:
        text += f": {message}"
    if details:
        text += f" - {details}"
    if fbtrace_id:
        text += f" [fbtrace_id {fbtrace_id}]"
    return text
