"""Middleware: one small, explicit extension point around the client and the worker.

Subclass `Middleware`, override the hooks you need, and give instances to `Client(middleware=[...])`
or `Worker(middleware=[...])`. Hooks run in the order the middleware was given.

- `before_publish(message)`: on the calling thread, before a call or an event is sent; may add to
  `message.headers`. An exception here is raised to the caller, and nothing is sent.
- `after_reply(message, outcome)`: a call's result or error (or an event's confirm: None), on the
  client's callback thread, never on a thread that serves the connection.
- `before_handler(delivery)`: before a handler runs, with `current_delivery()` set (the place to build
  a handler's context, load a user, start a span). An exception here fails the message as a handler's
  would (a call is answered with it, an event dead-lettered), and the handler does not run.
- `after_handler(delivery, result)` and `on_error(delivery, error)`: after a handler returned or
  raised. `on_dead_letter(delivery, reason)`: when the worker copies a message to the dead-letter
  queue. An exception in these is logged (`middleware_failed`) and changes nothing else.

With no middleware, none of this costs anything per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tchu_rpc.delivery import Delivery
from tchu_rpc.errors import ArgumentTypeError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)


@dataclass(slots=True)
class OutgoingMessage:
    """A call or an event a client is about to send: what `before_publish` sees and may add headers to."""

    kind: str  # "call" or "event"
    topic: str
    data: Any
    headers: dict[str, Any] = field(default_factory=dict)


class Middleware:
    """Override the hooks you need; each does nothing by default."""

    def before_publish(self, message: OutgoingMessage) -> None:
        """Run before `message` is sent (on the calling thread); may add to `message.headers`."""

    def after_reply(self, message: OutgoingMessage, outcome: Any) -> None:
        """Run once a call settled (its result, or the exception it raised) or an event was confirmed."""

    def before_handler(self, delivery: Delivery) -> None:
        """Run before a handler runs for `delivery`; raise to fail the message instead."""

    def after_handler(self, delivery: Delivery, result: Any) -> None:
        """Run after a handler returned `result`."""

    def on_error(self, delivery: Delivery, error: BaseException) -> None:
        """Run after a handler raised `error`."""

    def on_dead_letter(self, delivery: Delivery | None, reason: str) -> None:
        """Run when a message is copied to the dead-letter queue with `reason`."""


def report(hook: str, middleware: Middleware, exc: BaseException, **about: Any) -> None:
    """Log a middleware hook that raised (`middleware_failed`), with what it ran for."""
    logger.error(
        "middleware_failed",
        hook=hook,
        middleware=type(middleware).__qualname__,
        error_type=type(exc).__name__,
        error=str(exc),
        exc_info=exc,
        **about,
    )


def run_after(hook: str, chain: tuple[Middleware, ...], *args: Any, **about: Any) -> None:
    """Run `hook` of each middleware in order; report (never raise) what fails."""
    for middleware in chain:
        try:
            getattr(middleware, hook)(*args)
        except Exception as exc:
            report(hook, middleware, exc, **about)


def checked(middleware: Any) -> tuple[Middleware, ...]:
    """Return the middleware as a tuple; refuse what is not a `Middleware`."""
    chain = tuple(middleware or ())
    for item in chain:
        if not isinstance(item, Middleware):
            raise ArgumentTypeError(f"middleware must be Middleware instances, not {type(item).__name__}")
    return chain
