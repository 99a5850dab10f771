"""Why a connection to a clinic's bot did not give an answer.

The texts name what went wrong, never the URL's path or query, a secret or a
message: they end up in `BotDelivery.last_error` and in logs.
"""

from __future__ import annotations


class BotError(Exception):
    """The bot could not be reached or did not answer in time."""

    #: A short stable word for the row and the API ("timeout", "refused_address"...).
    code = "unreachable"


class BotAddressRefusedError(BotError):
    """The URL is not allowed, or its host resolves to an address we never connect to.

    `reason`: "invalid", "too_long", "scheme", "credentials" or "address".
    """

    code = "refused_address"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The bot's URL is not allowed ({reason}).")
        self.reason = reason


class BotResolutionError(BotError):
    """The bot's host name did not resolve."""

    code = "dns"


class BotConnectionError(BotError):
    """The connection failed or broke (refused, reset, TLS)."""

    code = "connection"


class BotTimeoutError(BotError):
    """No complete answer within the time allowed."""

    code = "timeout"


class BotDeliveryNotDeadError(Exception):
    """Only a dead delivery can be redelivered; `state` says where this one stands."""

    def __init__(self, state: str) -> None:
        super().__init__(f"Only a dead delivery can be redelivered; this one is {state}.")
        self.state = state
