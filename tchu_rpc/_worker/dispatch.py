"""Handle one delivery on a handler thread: decode it, run its handlers, decide its outcome.

No I/O happens here: the outcome (a reply to send, a reason to dead-letter, or neither) goes back
to the worker's I/O thread, which publishes it and acks the delivery (`settling`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from tchu_rpc import reply_cache, topology, wire
from tchu_rpc._worker import legacy, retries, unaccepted
from tchu_rpc._worker.invoke import invoke
from tchu_rpc._worker.messages import delivery_of, describe, republished, topic_of, user_of
from tchu_rpc.config import Settings
from tchu_rpc.contracts import Topic
from tchu_rpc.delivery import Delivery
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge, ValidationError
from tchu_rpc.log import get_logger
from tchu_rpc.middleware import Middleware
from tchu_rpc.registry import Handler, Kind, Registry
from tchu_rpc.reply_cache import ReplyCache

logger = get_logger(__name__)


@dataclass(slots=True)
class Outcome:
    """What the I/O thread must do with a delivery before it acks it."""

    reply: bytes | None = None
    content_type: str = wire.JSON
    dead_reason: str | None = None
    #: The reply is the handler's result (not an error): a reply cache may keep it.
    cacheable: bool = False


@dataclass(slots=True)
class EventOutcome(Outcome):
    """An event's outcome when some of its handlers run again later (`_worker.retries`)."""

    #: The copies to park in delay queues, one per failed handler that has runs left.
    rescheduled: tuple[retries.Rescheduled, ...] = ()
    #: Extra headers of the dead-letter copy: every run's error, after a retried handler's last run.
    dead_headers: dict[str, Any] = field(default_factory=dict)


class Dispatcher:
    """Turn deliveries into outcomes by running a registry's handlers."""

    def __init__(
        self,
        service: str,
        registry: Registry,
        settings: Settings,
        cache: ReplyCache | None = None,
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        self.service = service
        self.registry = registry
        self.limit = settings.max_message_bytes
        self.cache = cache
        self.cache_ttl = settings.reply_cache_ttl
        self.middleware: tuple[Middleware, ...] = middleware
        #: Also read tchu-tchu's Celery task messages (`_worker.legacy`); off, nothing else is looked at.
        self.accept_tchu_tchu = settings.accept_tchu_tchu

    def call(
        self, message: Any, report: Callable[[Any], bool] | None = None, received: float | None = None
    ) -> Outcome:
        """Return the reply to a call: from the reply cache, else by running its one handler.

        `report(info)` sends progress for this call; the handler reaches it via `report_progress()`.
        `received` is when the worker received it (`time.monotonic()`; default: now).
        """
        legacy_outcome = legacy.recognized_call(self, message, received) if self.accept_tchu_tchu else None
        if legacy_outcome is not None:
            return cast(Outcome, legacy_outcome)
        reply_to = message.properties.get("reply_to")
        if reply_to and not reply_to.startswith(topology.REPLY_ADDRESSES):
            reason = f"reply_to {reply_to!r} is not a reply address (direct reply-to or a client's queue)"
            logger.warning("request_refused", service=self.service, reason=reason, **describe(message))
            return Outcome(dead_reason=f"BadReplyTo: {reason}")
        cache, message_id = self.cache, message.properties.get("message_id")
        if cache is None or not message_id or not _answerable(message):
            return self._call(message, report, received)  # nobody to answer: `_call` says so
        key = reply_cache.key_of(self.service, topic_of(message), user_of(message), message_id, message.body)
        about = {"service": self.service, "message_id": message_id, **describe(message)}
        cached = reply_cache.lookup(cache, key, about)
        if cached is not None:
            return Outcome(reply=cached[0], content_type=cached[1])
        outcome = self._call(message, report, received)
        if outcome.cacheable and outcome.reply is not None:
            # Stored before the reply is published, so a crash between reply and ack is covered.
            reply_cache.store(cache, key, outcome.reply, outcome.content_type, self.cache_ttl)
        return outcome

    def _call(self, message: Any, report: Callable[[Any], bool] | None, received: float | None) -> Outcome:
        answerable = _answerable(message)
        delivery = delivery_of("call", message, received)
        if delivery.deadline is not None and time.time() > delivery.deadline:
            logger.warning("request_expired", service=self.service, **describe(message))
            return Outcome()
        codec = wire.codec_for("json")
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.limit)
            handler = self._call_handler(delivery.topic)
            if wire.HEADER_PING in delivery.headers and answerable:
                body = wire.encode(codec, wire.Result(self._pong()), self.limit)
                return Outcome(reply=body, content_type=codec.content_type)
            data = codec.decode(message.body, handler.data_type)
        except (DecodeError, MessageTooLarge) as exc:
            return _failure(codec, wire.error_info(exc), dead=True, answer=answerable)
        except _Unanswerable as exc:
            info = wire.ErrorInfo(exc.type_name, str(exc))
            return _failure(codec, info, dead=not answerable, answer=answerable)
        if not answerable:
            return Outcome(dead_reason="call without reply_to or correlation_id: nobody to answer")
        reply = self._invoke(handler, data, delivery, report)
        if isinstance(reply, wire.Result):
            try:
                body = wire.encode(codec, reply, self.limit)
                if handler.contract is not None and handler.contract.response is not Any:
                    _check_result(codec, body, handler.contract)
                return Outcome(reply=body, content_type=codec.content_type, cacheable=True)
            except ValidationError as exc:
                reply = wire.Failure(wire.error_info(exc))
            except (EncodeError, MessageTooLarge):
                pass  # encode_reply turns it into a Failure saying why
        return Outcome(reply=wire.encode_reply(codec, reply, self.limit), content_type=codec.content_type)

    def event(self, message: Any) -> Outcome:
        """Run every handler matching an event; retry or dead-letter those that failed.

        A retry copy (`_worker.retries`) runs only the handler it names: its siblings ran already.
        """
        if self.accept_tchu_tchu:
            message, refused = legacy.native_event(message, self.limit)
            if refused is not None:
                return cast(Outcome, refused)
        else:
            refusal = unaccepted.refusal(self.service, message, self.limit)
            if refusal is not None:  # Celery's task body is not the data: no handler sees it
                return Outcome(reply=refusal[1], dead_reason=refusal[0])
        return self._event(message)

    def _event(self, message: Any) -> Outcome:
        delivery = delivery_of("event", message)
        handlers = self.registry.match(delivery.topic, "event")
        named = delivery.headers.get(wire.HEADER_RETRY_HANDLER)
        if named is not None and republished(message):
            return self._retry_run(message, delivery, handlers, named)
        if not handlers:
            logger.warning("event_unhandled", service=self.service, **describe(message))
            return Outcome()
        failures = []
        later: list[retries.Rescheduled] = []
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.limit)
            for handler in handlers:
                data = codec.decode(message.body, handler.data_type)
                if handler.retry is None:
                    reply = self._invoke(handler, data, delivery)
                    if isinstance(reply, wire.Failure):
                        failures.append(f"{handler.name}: {reply.error.type}: {reply.error.message}")
                    continue
                error, rescheduled = self._attempt(handler, handlers, data, delivery, retries.FIRST)
                if rescheduled is not None:
                    later.append(rescheduled)
                elif error is not None:
                    failures.append(f"{handler.name}: {error}")
        except (DecodeError, MessageTooLarge) as exc:
            return Outcome(dead_reason=f"{type(exc).__name__}: {exc}")
        dead_reason = "handler failed: " + "; ".join(failures) if failures else None
        if later:
            return EventOutcome(dead_reason=dead_reason, rescheduled=tuple(later))
        return Outcome(dead_reason=dead_reason)

    def _retry_run(
        self, message: Any, delivery: Delivery, handlers: tuple[Handler, ...], named: Any
    ) -> Outcome:
        """Run the one handler a retry copy names; retry it again or dead-letter it with every error."""
        attempt = retries.attempt_of(delivery.headers)
        handler = retries.find(handlers, named)
        if handler is None:
            reason = f"retry {attempt.number} of handler {named!r}, which this service no longer has"
            return Outcome(dead_reason=f"UnknownHandler: {reason} for {delivery.topic!r}")
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.limit)
            data = codec.decode(message.body, handler.data_type)
        except (DecodeError, MessageTooLarge) as exc:
            return Outcome(dead_reason=f"{type(exc).__name__}: {exc}")
        error, rescheduled = self._attempt(handler, handlers, data, delivery, attempt)
        if rescheduled is not None:
            return EventOutcome(rescheduled=(rescheduled,))
        if error is None:
            return Outcome()
        reason, headers = retries.given_up(str(named), (*attempt.errors, error))
        return EventOutcome(dead_reason=reason, dead_headers=headers)

    def _attempt(
        self,
        handler: Handler,
        handlers: tuple[Handler, ...],
        data: Any,
        delivery: Delivery,
        attempt: retries.Attempt,
    ) -> tuple[str | None, retries.Rescheduled | None]:
        """Run an event handler (run `attempt`); return its error if it failed, and its next run if any."""
        catching = retries.Catching(handler.fn)
        reply = self._invoke(replace(handler, fn=catching), data, delivery)
        if not isinstance(reply, wire.Failure):
            return None, None
        error = retries.error_text(reply.error)
        if catching.error is None:  # failed after the handler returned: nothing to retry
            return error, None
        key = retries.key_of(handler, handlers)
        return error, retries.reschedule(handler, key, catching.error, error, attempt)

    def exhausted(self, kind: Kind, message: Any, deliveries: int) -> Outcome:
        """Give up on a message delivered `deliveries` times without an ack."""
        reason = (
            f"delivered {deliveries} times without being acked (delivery limit): "
            "its handler may be crashing the worker"
        )
        logger.error(
            "delivery_limit_reached", service=self.service, deliveries=deliveries, **describe(message)
        )
        return self.refuse(kind, message, "DeliveryLimitExceeded", reason)

    def timed_out(self, message: Any, limit: float) -> Outcome:
        """Answer a call whose handler outran the time limit; its thread keeps running."""
        info = wire.ErrorInfo(
            "HandlerTimeLimit",
            f"the handler ran longer than the worker's time limit of {limit:g} s; it may still be "
            "running, and its result will be discarded",
        )
        return _failure(_codec_or_json(message), info, dead=False, answer=_answerable(message))

    def refuse(self, kind: Kind, message: Any, type_name: str, reason: str) -> Outcome:
        """Dead-letter a message without running it; answer it with an error if it is a call."""
        if kind == "call" and _answerable(message):
            info = wire.ErrorInfo(type_name, reason)
            return _failure(_codec_or_json(message), info, dead=True, answer=True)
        return Outcome(dead_reason=f"{type_name}: {reason}")

    def _pong(self) -> dict[str, Any]:
        return {"service": self.service, "host": socket.gethostname(), "pid": os.getpid()}

    def _call_handler(self, topic: str) -> Handler:
        handlers = self.registry.match(topic, "call")
        if len(handlers) == 1:
            return handlers[0]
        if not handlers:
            raise _Unanswerable("UnknownTopic", f"service {self.service!r} has no handler for {topic!r}")
        names = ", ".join(h.name for h in handlers)
        raise _Unanswerable("AmbiguousTopic", f"call {topic!r} matches {len(handlers)} handlers: {names}")

    def _invoke(
        self, handler: Handler, data: Any, delivery: Delivery, report: Callable[[Any], bool] | None = None
    ) -> wire.Reply:
        return invoke(self.service, handler, data, delivery, report, self.middleware)


class _Unanswerable(Exception):
    """A call this service cannot route to exactly one handler."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _check_result(codec: wire.Codec, body: bytes, contract: Topic[Any, Any]) -> None:
    """Raise `ValidationError` unless a reply's result fits the topic's response type."""
    try:
        codec.decode(body, wire.envelope_for(contract.response))
    except DecodeError as exc:
        expected = getattr(contract.response, "__name__", repr(contract.response))
        logger.error("handler_result_invalid", topic=contract.name, expected=expected, error=str(exc))
        raise ValidationError(f"the handler's result does not fit {expected}: {exc}") from None


def _failure(codec: wire.Codec, info: wire.ErrorInfo, *, dead: bool, answer: bool) -> Outcome:
    return Outcome(
        reply=codec.encode(wire.Failure(info)) if answer else None,
        content_type=codec.content_type,
        dead_reason=f"{info.type}: {info.message}" if dead else None,
    )


def _answerable(message: Any) -> bool:
    # A caller names where to answer; anything but a reply address would let it make the worker
    # publish into another service's queue through the default exchange.
    props = message.properties
    reply_to = props.get("reply_to")
    return bool(reply_to and props.get("correlation_id") and reply_to.startswith(topology.REPLY_ADDRESSES))


def _codec_or_json(message: Any) -> wire.Codec:
    try:
        return wire.codec_of(message.content_type)
    except DecodeError:
        return wire.codec_for("json")
