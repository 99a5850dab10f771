"""Domain errors of the WhatsApp services. Each knows the status the clinic is now in."""

from __future__ import annotations


class WhatsAppError(Exception):
    """Base: `status` is the connection status after the failure, `detail` a sentence to act on."""

    def __init__(self, *, status: str, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)


class StatusConflictError(WhatsAppError):
    """The action is not allowed in the current status (409)."""


class AttemptsExhaustedError(WhatsAppError):
    """A local limit protects the number or the clinic (429 with Retry-After)."""

    def __init__(self, *, status: str, detail: str, retry_after: int) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(status=status, detail=detail)


class MetaRefusalError(WhatsAppError):
    """Meta answered with an error (its 4xx): 400 with Meta's code."""

    def __init__(self, *, status: str, detail: str, meta_code: int) -> None:
        self.meta_code = meta_code
        super().__init__(status=status, detail=detail)


class MetaUnreachableError(WhatsAppError):
    """Meta was unreachable or failed (5xx, network, bad answer): 502."""


class MetaTimedOutError(WhatsAppError):
    """Meta did not answer in time: 504."""
