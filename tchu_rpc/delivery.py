"""The delivery a handler works on (`current_delivery()`), and `report_progress()` for long calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the broker told the worker about the message a handler is running for.

    `redelivered` is True when the broker delivered this message before (to this or another worker)
    without an ack: the handler may have run for it already, so handlers with side effects can use
    `message_id` to stay idempotent. `caller_headers` are the caller's `headers=`, `context` the
    context it ran under (`tchu_rpc.context`): both are what a publisher says. `user_id` is the login
    of the connection that published the message, which RabbitMQ checks: the identity to trust.
    `headers` are the message's raw AMQP headers.
    """

    kind: Literal["call", "event"]
    topic: str
    message_id: str | None
    correlation_id: str | None
    redelivered: bool
    delivery_tag: int | None
    deadline: float | None
    headers: dict[str, Any] = field(default_factory=dict)
    caller_headers: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    user_id: str | None = None


_current: ContextVar[Delivery | None] = ContextVar("tchu_rpc_delivery", default=None)


def current_delivery() -> Delivery | None:
    """Return the delivery the calling handler runs for, or None outside a handler."""
    return _current.get()


#: Sends a progress message for the call the current handler runs for; set by the worker.
_reporter: ContextVar[Callable[[Any], bool] | None] = ContextVar("tchu_rpc_reporter", default=None)


def report_progress(info: Any = None) -> bool:
    """Tell the caller of the running call that its handler is still working.

    The caller's client extends the call's deadline by its original timeout (up to the call's
    `max_timeout`) and passes `info` to the call's `on_progress` callback. Call it from the handler's
    own thread, now and then (every few seconds, not in a tight loop): each report is one message.

    Returns:
        True if a progress message was queued; False outside a call handler (in an event handler,
        on another thread) or once the call was answered already (its time limit passed).

    Raises:
        EncodeError, MessageTooLarge: `info` cannot be sent.
    """
    reporter = _reporter.get()
    return False if reporter is None else reporter(info)
