"""What a failed Graph call means for the connection, and the error the front doors answer with."""

from __future__ import annotations

from ..details import Detail, meta_refusal_detail
from ..exceptions import MetaError, MetaRefusedError, MetaTimeoutError, MetaUnavailableError, WhatsAppError
from ..meta_errors import META_ERROR_SENTENCES, TRANSIENT_CODES
from ..models import WhatsAppAccount, WhatsAppStatus
from .state import recorded, set_status


def explain(exc: MetaError, *, status: str) -> WhatsAppError:
    """The error to raise for a failed Graph call, carrying the status the clinic is in now.

    A refusal keeps Meta's code (400); a refusal Meta calls temporary becomes
    "unavailable" (502, worth a retry); a timeout stays a timeout (504).
    """
    if isinstance(exc, MetaTimeoutError):
        return exc.explained(status=status, reason=Detail.of("meta.timeout"))
    code, message, details = exc.code, exc.message or "", exc.details
    if isinstance(exc, MetaRefusedError) and exc.code not in TRANSIENT_CODES:
        return exc.explained(status=status, reason=meta_refusal_detail(exc.code, message, details))
    if code is not None and code in META_ERROR_SENTENCES:
        reason = meta_refusal_detail(code, message, details)
    elif code and (message or details):
        # Meta's own words for its trouble: the clinic (or support) can act on them.
        reason = Detail.of("meta.temporary", code=code, message=(details or message)[:300])
    else:
        reason = Detail.of("meta.unreachable")
    if isinstance(exc, MetaUnavailableError):
        return exc.explained(status=status, reason=reason)
    unavailable = MetaUnavailableError(
        "Meta reported a temporary problem",
        code=code,
        message=exc.message,
        details=details,
        fbtrace_id=exc.fbtrace_id,
        http_status=exc.http_status,
        subcode=exc.subcode,
    )
    unavailable.__cause__ = exc
    return unavailable.explained(status=status, reason=reason)


def apply_meta_failure(account: WhatsAppAccount, exc: MetaError) -> WhatsAppError:
    """A refusal makes the connection `failed` with Meta's reason; other failures leave the status.

    Only status, detail and meta_code change: every other field stays as it was.
    The caller records the account and raises (or reports) the returned error.
    """
    error = explain(exc, status=account.status)
    if isinstance(error, MetaRefusedError):
        set_status(account, WhatsAppStatus.FAILED, detail=error.reason, meta_code=error.code)
        error.status = account.status
    return error


def record_meta_failure(account: WhatsAppAccount, exc: MetaError) -> WhatsAppError:
    """`apply_meta_failure`, with a refusal's `failed` recorded at once; returns the error to raise."""
    error = apply_meta_failure(account, exc)
    if isinstance(error, MetaRefusedError):
        return recorded(account, error, ["status", "detail_parts", "meta_code"])
    return error
