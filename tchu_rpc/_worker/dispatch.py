"""Handle one delivery on a handler thread: decode it, run its handlers, decide its outcome.

No I/O happens here: the outcome (a reply to send, a reason to dead-letter, or neither) goes back
to the worker's I/O thread, which publishes it and acks the delivery (`settling`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tchu_rpc import log, reply_cache, topology, wire
from tchu_rpc.config import Settings
from tchu_rpc.delivery import Delivery, _current, _reporter
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge, RpcError
from tchu_rpc.log import logger
from tchu_rpc.registry import Handler, Kind, Registry
from tchu_rpc.reply_cache import ReplyCache


@dataclass(slots=True)
class Outcome:
    """What the I/O thread must do with a delivery before it acks it."""

    reply: bytes | None = None
    content_type: str = wire.JSON
    dead_reason: str | None = None
    #: The reply is the handler's result (not an error): a reply cache may keep it.
    cacheable: bool = False


class Dispatcher:
    """Turn deliveries into outcomes by running a registry's handlers."""

    def __init__(
        self, service: str, registry: Registry, settings: Settings, cache: ReplyCache | None = None
    ) -> None:
        self.service = service
        self.registry = registry
        self.limit = settings.max_message_bytes
        self.cache = cache
        self.cache_ttl = settings.reply_cache_ttl

    def call(
        self, message: Any, report: Callable[[Any], bool] | None = None, received: float | None = None
    ) -> Outcome:
        """Return the reply to a call: from the reply cache, else by running its one handler.

        `report(info)` sends progress for this call; the handler reaches it via `report_progress()`.
        `received` is when the worker received it (`time.monotonic()`; default: now).
        """
        reply_to = message.properties.get("reply_to")
        if reply_to and not reply_to.startswith(topology.REPLY_ADDRESSES):
            reason = f"reply_to {reply_to!r} is not a reply address (direct reply-to or a client's queue)"
            logger.warning("request_refused", service=self.service, reason=reason, **describe(message))
            return Outcome(dead_reason=f"BadReplyTo: {reason}")
        cache, message_id = self.cache, message.properties.get("message_id")
        if cache is None or not message_id:
            return self._call(message, report, received)
        cached = reply_cache.lookup(cache, message_id, {"service": self.service, **describe(message)})
        if cached is not None:
            return Outcome(reply=cached[0], content_type=cached[1])
        outcome = self._call(message, report, received)
        if outcome.cacheable and outcome.reply is not None:
            # Stored before the reply is published, so a crash between reply and ack is covered.
            reply_cache.store(cache, message_id, outcome.reply, outcome.content_type, self.cache_ttl)
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
                return Outcome(reply=body, content_type=codec.content_type, cacheable=True)
            except (EncodeError, MessageTooLarge):
                pass  # encode_reply turns it into a Failure saying why
        return Outcome(reply=wire.encode_reply(codec, reply, self.limit), content_type=codec.content_type)

    def event(self, message: Any) -> Outcome:
        """Run every handler matching an event; dead-letter it if any of them failed."""
        delivery = delivery_of("event", message)
        handlers = self.registry.match(delivery.topic, "event")
        if not handlers:
            logger.warning("event_unhandled", service=self.service, **describe(message))
            return Outcome()
        failures = []
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.limit)
            for handler in handlers:
                reply = self._invoke(handler, codec.decode(message.body, handler.data_type), delivery)
                if isinstance(reply, wire.Failure):
                    failures.append(f"{handler.name}: {reply.error.type}: {reply.error.message}")
        except (DecodeError, MessageTooLarge) as exc:
            return Outcome(dead_reason=f"{type(exc).__name__}: {exc}")
        return Outcome(dead_reason="handler failed: " + "; ".join(failures) if failures else None)

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
        token = _current.set(delivery)
        report_token = _reporter.set(report)
        started = time.perf_counter()
        try:
            return wire.Result(handler.fn(data))
        except Exception as exc:
            logger.warning(
                "handler_failed",
                service=self.service,
                handler=handler.name,
                error_type=type(exc).__name__,
                error=str(exc),
                topic=delivery.topic,
                correlation_id=delivery.correlation_id,
                redelivered=delivery.redelivered,
                exc_info=not isinstance(exc, RpcError),
            )
            return wire.Failure(wire.error_info(exc))
        finally:
            _reporter.reset(report_token)
            _current.reset(token)
            if log.debugging():
                log.debug(
                    "handler_ran",
                    service=self.service,
                    handler=handler.name,
                    topic=delivery.topic,
                    correlation_id=delivery.correlation_id,
                    redelivered=delivery.redelivered,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )


class _Unanswerable(Exception):
    """A call this service cannot route to exactly one handler."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


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


def previous_deliveries(message: Any, *, classic: bool) -> int:
    """Count how often the broker delivered this message before without an ack.

    Headers a publisher could forge count only where the broker or this worker set them: the quorum
    count on quorum queues, ours on a copy the worker re-published itself (see `_republished`).
    """
    headers = message.headers or {}
    quorum = headers.get(wire.HEADER_QUORUM_COUNT)
    if not classic and isinstance(quorum, int) and quorum >= 0:
        return quorum
    counted = headers.get(wire.HEADER_DELIVERIES, 0) if _republished(message) else 0
    counted = counted if isinstance(counted, int) and counted >= 0 else 0
    return counted + int(classic and bool(message.delivery_info.get("redelivered")))


def topic_of(message: Any) -> str:
    """Return the message's topic (kept in a header when the worker re-published it)."""
    topic = (message.headers or {}).get(wire.HEADER_TOPIC) if _republished(message) else None
    return topic if isinstance(topic, str) else str(message.delivery_info.get("routing_key", ""))


def _republished(message: Any) -> bool:
    # Publishers go through the calls and events exchanges; only the worker's own copies reach its
    # queues by the default exchange. Trusting a topic header on anything else would let a publisher
    # allowed one routing key (RabbitMQ topic permissions) reach the handler of another.
    return bool(message.delivery_info.get("exchange") == "")


def delivery_of(kind: Kind, message: Any, received: float | None = None) -> Delivery:
    """Describe a kombu message as the `Delivery` a handler can see.

    A call's deadline is the time the caller had left when it published (`HEADER_TIMEOUT`), counted
    from when this worker received it on its own clock: no two clocks are compared, so clock skew
    between caller and worker costs nothing. Time in the queue is the broker's to bound (the request's
    `expiration`): a request is delivered only before it expires.
    """
    props = message.properties
    info = message.delivery_info
    headers = message.headers or {}
    remaining = headers.get(wire.HEADER_TIMEOUT)
    deadline = None
    if isinstance(remaining, int | float) and not isinstance(remaining, bool):
        waited = 0.0 if received is None else time.monotonic() - received
        deadline = time.time() - waited + float(remaining)
    return Delivery(
        kind=kind,
        topic=topic_of(message),
        message_id=props.get("message_id"),
        correlation_id=props.get("correlation_id"),
        redelivered=bool(info.get("redelivered")) or previous_deliveries(message, classic=False) > 0,
        delivery_tag=info.get("delivery_tag"),
        deadline=deadline,
        headers=headers,
    )


def describe(message: Any) -> dict[str, Any]:
    """Return a message's log context: topic, correlation id, delivery tag, redelivered."""
    info = message.delivery_info
    return {
        "topic": topic_of(message),
        "correlation_id": message.properties.get("correlation_id"),
        "delivery_tag": info.get("delivery_tag"),
        "redelivered": bool(info.get("redelivered")),
    }
