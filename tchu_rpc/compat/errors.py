"""tchu-tchu's exception names on tchu_rpc's exception tree (`tchu_tchu.utils.error_handling`).

Each name is an alias of the tchu_rpc error raised in the same situation, or a small subclass of
one, so `except` clauses written for tchu-tchu keep catching what they meant to catch:

- `TimeoutError` is `tchu_rpc.CallTimeout`, which is also the builtin `TimeoutError` (tchu-tchu's
  was not: its README's `except TimeoutError:` never caught a tchu-tchu timeout).
- `PublishError` is `tchu_rpc.TchuError`: tchu-tchu raised it for a failed publish, a call nobody
  handled and a handler that failed alike; tchu_rpc tells them apart (`PublishFailed`, `NoRoute`,
  `RemoteError`), and all of them are `TchuError`.
- `ConnectionError` is `tchu_rpc.ConnectionLost` (also the builtin `ConnectionError`).
"""

from __future__ import annotations

from typing import Any

from tchu_rpc.errors import CallTimeout, ConnectionLost, RegistryError, RpcError, TchuError, ValidationError

__all__ = [
    "ConnectionError",
    "PublishError",
    "SerializationError",
    "SubscriptionError",
    "TchuError",
    "TchuRPCException",
    "TimeoutError",
]

TimeoutError = CallTimeout  # also the builtin TimeoutError
ConnectionError = ConnectionLost  # also the builtin ConnectionError
PublishError = TchuError
SubscriptionError = RegistryError


class SerializationError(ValidationError):
    """A `TchuEvent` serializer refused the data (tchu-tchu's `SerializationError`)."""


class TchuRPCException(RpcError):
    """A business error of an RPC handler, answered as data (`to_response_dict`).

    Raised in a `TchuEvent` handler, it becomes the handler's *successful* result, the dict of
    `to_response_dict()`, exactly as in tchu-tchu; `TchuEvent.call` recognises it by `error_code`.
    Raised in a plain `@subscribe` handler, the caller gets `tchu_rpc.RemoteError` with this
    `code` and `details` (tchu-tchu gave a `PublishError` with the message only).
    """

    def __init__(self, message: str, code: str = "RPC_ERROR", details: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code, details=details or {})
        self.code: str = code
        self.details: dict[str, Any] = details or {}

    def to_response_dict(self) -> dict[str, Any]:
        """Return the error as the answer a caller receives; override it to change the shape."""
        return {
            "success": False,
            "error_message": self.message,
            "error_code": self.code,
            "error_details": self.details,
        }
