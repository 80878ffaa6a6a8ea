"""The delivery a handler is working on, readable from inside the handler with `current_delivery()`."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the broker told the worker about the message a handler is running for.

    `redelivered` is True when the broker delivered this message before (to this or another worker)
    without an ack: the handler may have run for it already, so handlers with side effects can use
    `message_id` to stay idempotent.
    """

    kind: Literal["call", "event"]
    topic: str
    message_id: str | None
    correlation_id: str | None
    redelivered: bool
    delivery_tag: int | None
    deadline: float | None
    headers: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[Delivery | None] = ContextVar("tchu_rpc_delivery", default=None)


def current_delivery() -> Delivery | None:
    """Return the delivery the calling handler runs for, or None outside a handler."""
    return _current.get()
