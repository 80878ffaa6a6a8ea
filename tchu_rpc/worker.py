"""Worker: consume a service's call and event queues, run handlers, reply, confirm, then ack.

The I/O thread receives deliveries and hands them to handler threads (one lane for calls, one for
events), so heartbeats keep flowing while a handler runs. A finished call's reply is published on
the delivery's channel in confirm mode and the request is acked only after the broker confirmed the
reply; if the worker dies before that, the broker redelivers the request to another worker.

Where a message goes when it cannot be handled:
- handler raised (call): error reply to the caller, request acked;
- no handler, or several, for a call's topic: error reply, request acked;
- body undecodable, wrong content type or too large: copied to `<service>.dead` with the reason in
  the `x-tchu-error` header (plus an error reply when it is a call that can be answered), then acked;
- call without reply-to or correlation id: dead-lettered, acked;
- call past its deadline: acked and logged, the handler does not run (its caller has given up);
- event handler raised: dead-lettered with the reason, acked;
- event nobody here handles: acked and logged.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kombu import Connection, Consumer

from tchu_rpc import log, topology, wire
from tchu_rpc.config import Settings
from tchu_rpc.delivery import Delivery, _current
from tchu_rpc.errors import ConfigError, ConnectionLost, DecodeError, MessageTooLarge
from tchu_rpc.lanes import Lane
from tchu_rpc.log import logger, mask_url
from tchu_rpc.loop import Loop
from tchu_rpc.publisher import Publisher
from tchu_rpc.registry import Handler, Kind, Registry, default_registry


@dataclass(slots=True, eq=False)
class _Job:
    kind: Kind
    generation: int
    message: Any
    received: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class _Outcome:
    reply: bytes | None = None
    content_type: str = wire.JSON
    dead_reason: str | None = None


class Worker:
    """Serve a registry's handlers as the service `queue`.

    Args:
        url: broker URL; defaults to `settings.broker_url` (`TCHU_RPC_BROKER_URL`).
        queue: the service's name; its queues are `<queue>.calls`, `<queue>.events`, `<queue>.dead`.
        registry: the handlers to serve; defaults to the registry that `@subscribe` fills.
        settings: all other knobs; defaults to `Settings.from_env()`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queue: str,
        registry: Registry | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings.replace(broker_url=url) if url else settings
        self.service = topology.check_service(queue)
        self.registry = default_registry if registry is None else registry
        self._publishers: dict[Kind, Publisher] = {}
        self._consumers: list[Consumer] = []
        self._lanes: dict[Kind, Lane] = {}
        self._inflight = 0
        self._confirming: set[_Job] = set()
        self._idle = threading.Condition()
        self._started = threading.Event()
        self._stop_requested = threading.Event()
        self._start_error: BaseException | None = None
        self._cancelled = False
        self._stopped = False
        self._loop = Loop(f"tchu-worker-{queue}", self.settings, on_connect=self._setup, on_lost=self._lost)

    # -- public API ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Worker:
        """Connect, declare the service's queues, start consuming; return once consuming.

        Raises:
            ConfigError: the registry has no handlers.
            ConnectionLost: the broker could not be reached or refused the set-up.
        """
        if not len(self.registry):
            raise ConfigError(f"worker {self.service!r} has no handlers registered")
        self._lanes = {
            "call": Lane(f"tchu-call-{self.service}", self.settings.call_concurrency, self._handle),
            "event": Lane(f"tchu-event-{self.service}", self.settings.event_concurrency, self._handle),
        }
        self._loop.start()
        wait = timeout if timeout is not None else self.settings.connect_timeout * 2 + 5
        if not self._started.wait(wait):
            self._start_error = ConnectionLost(f"worker not consuming after {wait} s")
        if self._start_error is not None:
            error = self._start_error
            self.stop(0)
            raise ConnectionLost(
                f"worker {self.service!r} cannot start on {mask_url(self.settings.broker_url)}: {error}"
            ) from error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, let in-flight messages finish and be acked, then close; idempotent.

        Messages still unfinished after `timeout` (default `settings.shutdown_grace`) stay unacked
        and the broker redelivers them when the connection closes.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        grace = self.settings.shutdown_grace if timeout is None else timeout
        self._loop.submit(self._cancel)
        with self._idle:
            drained = self._idle.wait_for(self._drained, grace)
        if not drained:
            logger.warning("shutdown_grace_expired", service=self.service, inflight=self._inflight)
        self._loop.stop()
        for lane in self._lanes.values():
            lane.close()
        logger.info("worker_stopped", service=self.service)

    def run(self) -> None:
        """Start, serve until `stop()`, SIGTERM or SIGINT, then stop gracefully."""
        self.start()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self._stop_requested.set())
        while not self._stop_requested.wait(1.0):
            pass
        self.stop()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the I/O thread -----------------------------------------------------------------------
    def _setup(self, conn: Connection) -> None:
        self._consumers = []
        kinds = self.registry.kinds()
        for kind in ("call", "event"):
            if kind in kinds:
                self._consume(conn, kind)
        topology.dead_letter_queue(self.service)(self._publishers[next(iter(kinds))].channel).declare()
        self._cancelled = False
        if self._stop_requested.is_set():
            self._cancel()
        logger.info(
            "worker_consuming",
            service=self.service,
            calls=self.registry.patterns("call"),
            events=self.registry.patterns("event"),
        )
        self._started.set()

    def _consume(self, conn: Connection, kind: Kind) -> None:
        channel = conn.channel()
        patterns = self.registry.patterns(kind)
        if kind == "call":
            queue = topology.call_queue(self.service, self.settings, patterns)
            prefetch = self.settings.call_concurrency
        else:
            queue = topology.event_queue(self.service, self.settings, patterns)
            prefetch = self.settings.event_prefetch
        queue(channel).declare()
        self._publishers[kind] = Publisher(conn, channel, on_return=self._returned)
        consumer = Consumer(
            channel,
            queues=[queue],
            auto_declare=False,
            on_message=partial(self._receive, kind, self._loop.generation),
        )
        consumer.qos(prefetch_count=prefetch)
        consumer.consume()
        self._consumers.append(consumer)

    def _receive(self, kind: Kind, generation: int, message: Any) -> None:
        self._inflight += 1
        self._lanes[kind].submit(_Job(kind, generation, message))

    def _finish(self, job: _Job, outcome: _Outcome) -> None:
        if job.generation != self._loop.generation or self._loop.connection is None:
            logger.warning("message_abandoned", service=self.service, **_describe(job.message))
            self._done()
            return
        message = job.message
        sends = int(outcome.dead_reason is not None) + int(outcome.reply is not None)
        if sends == 0:
            self._ack(job, True)
            return
        results: list[bool] = []

        def confirmed(ok: bool) -> None:
            results.append(ok)
            if len(results) == sends:
                self._confirming.discard(job)
                self._ack(job, all(results))

        self._confirming.add(job)
        publisher = self._publishers[job.kind]
        if outcome.dead_reason is not None:
            self._dead_letter(publisher, message, outcome.dead_reason, confirmed)
        if outcome.reply is not None:
            reply_to = message.properties["reply_to"]
            publisher.publish(
                outcome.reply,
                exchange="",
                routing_key=reply_to,
                on_confirm=confirmed,
                # RabbitMQ 3.10 returns mandatory replies to direct reply-to as NO_ROUTE even
                # though it delivered them; a reply queue of our own is checked.
                mandatory=not reply_to.startswith(topology.DIRECT_REPLY_TO),
                delivery_mode=1,
                correlation_id=message.properties["correlation_id"],
                content_type=outcome.content_type,
                content_encoding=wire.codec_of(outcome.content_type).content_encoding,
            )

    def _dead_letter(self, publisher: Publisher, message: Any, reason: str, confirmed: Any) -> None:
        headers = dict(message.headers or {})
        headers[wire.HEADER_ERROR] = reason[:1000]
        headers[wire.HEADER_TOPIC] = message.delivery_info.get("routing_key", "")
        publisher.publish(
            message.body,
            exchange="",
            routing_key=f"{self.service}.dead",
            on_confirm=confirmed,
            mandatory=True,
            delivery_mode=2,
            headers=headers,
            message_id=message.properties.get("message_id"),
            correlation_id=message.properties.get("correlation_id"),
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
        )
        logger.warning("message_dead_lettered", service=self.service, reason=reason, **_describe(message))

    def _ack(self, job: _Job, ok: bool) -> None:
        if ok:
            job.message.ack()
        else:
            job.message.reject(requeue=True)
        log.debug(
            "message_acked" if ok else "message_requeued",
            service=self.service,
            duration_ms=round((time.perf_counter() - job.received) * 1000, 3),
            **_describe(job.message),
        )
        self._done()

    def _done(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight <= 0:
                self._idle.notify_all()

    def _returned(self, routing_key: str, exchange: str, text: str, props: dict[str, Any]) -> None:
        logger.warning(
            "reply_unroutable",
            service=self.service,
            routing_key=routing_key,
            reason=text,
            correlation_id=props.get("correlation_id"),
        )

    def _cancel(self) -> None:
        for consumer in self._consumers:
            consumer.cancel()
        with self._idle:
            self._cancelled = True
            self._idle.notify_all()

    def _drained(self) -> bool:
        return self._inflight <= 0 and (self._cancelled or self._loop.connection is None)

    def _lost(self, exc: BaseException) -> None:
        self._publishers.clear()
        self._consumers = []
        for _job in list(self._confirming):
            self._done()  # its confirm can no longer come; the broker redelivers the message
        self._confirming.clear()
        if not self._started.is_set():
            self._start_error = exc
            self._started.set()

    # -- handler threads ----------------------------------------------------------------------
    def _handle(self, job: _Job) -> None:
        try:
            if job.kind == "call":
                outcome = self._process_call(job.message)
            else:
                outcome = self._process_event(job.message)
        except BaseException as exc:  # a bug of ours; keep the message, say why
            logger.exception("message_failed", service=self.service, error=str(exc))
            outcome = _Outcome(dead_reason=f"worker error: {type(exc).__name__}: {exc}")
        self._loop.submit(partial(self._finish, job, outcome))

    def _process_call(self, message: Any) -> _Outcome:
        props = message.properties
        answerable = bool(props.get("reply_to") and props.get("correlation_id"))
        delivery = _delivery("call", message)
        if delivery.deadline is not None and time.time() > delivery.deadline:
            logger.warning("request_expired", service=self.service, **_describe(message))
            return _Outcome()
        codec = wire.codec_for("json")
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.settings.max_message_bytes)
            handler = self._call_handler(delivery.topic)
            data = codec.decode(message.body, handler.data_type)
        except (DecodeError, MessageTooLarge) as exc:
            return self._failure(codec, exc, dead=True, answer=answerable)
        except _Unanswerable as exc:
            return self._failure(codec, exc, dead=not answerable, answer=answerable)
        if not answerable:
            return _Outcome(dead_reason="call without reply_to or correlation_id: nobody to answer")
        reply = self._invoke(handler, data, delivery)
        return _Outcome(
            reply=wire.encode_reply(codec, reply, self.settings.max_message_bytes),
            content_type=codec.content_type,
        )

    def _process_event(self, message: Any) -> _Outcome:
        delivery = _delivery("event", message)
        handlers = self.registry.match(delivery.topic, "event")
        if not handlers:
            logger.warning("event_unhandled", service=self.service, **_describe(message))
            return _Outcome()
        try:
            codec = wire.codec_of(message.content_type)
            wire.check_size(len(message.body), self.settings.max_message_bytes)
            failures = []
            for handler in handlers:
                reply = self._invoke(handler, codec.decode(message.body, handler.data_type), delivery)
                if isinstance(reply, wire.Failure):
                    failures.append(f"{handler.name}: {reply.error.type}: {reply.error.message}")
        except (DecodeError, MessageTooLarge) as exc:
            return _Outcome(dead_reason=f"{type(exc).__name__}: {exc}")
        return _Outcome(dead_reason="handler failed: " + "; ".join(failures) if failures else None)

    def _call_handler(self, topic: str) -> Handler:
        handlers = self.registry.match(topic, "call")
        if len(handlers) == 1:
            return handlers[0]
        if not handlers:
            raise _Unanswerable("UnknownTopic", f"service {self.service!r} has no handler for {topic!r}")
        names = ", ".join(h.name for h in handlers)
        raise _Unanswerable("AmbiguousTopic", f"call {topic!r} matches {len(handlers)} handlers: {names}")

    def _invoke(self, handler: Handler, data: Any, delivery: Delivery) -> wire.Reply:
        token = _current.set(delivery)
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
                exc_info=not _is_business_error(exc),
            )
            return wire.Failure(wire.error_info(exc))
        finally:
            _current.reset(token)
            log.debug(
                "handler_ran",
                service=self.service,
                handler=handler.name,
                topic=delivery.topic,
                correlation_id=delivery.correlation_id,
                redelivered=delivery.redelivered,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    def _failure(self, codec: wire.Codec, exc: Exception, *, dead: bool, answer: bool) -> _Outcome:
        if isinstance(exc, _Unanswerable):
            info = wire.ErrorInfo(exc.type_name, str(exc))
        else:
            info = wire.error_info(exc)
        return _Outcome(
            reply=codec.encode(wire.Failure(info)) if answer else None,
            content_type=codec.content_type,
            dead_reason=f"{info.type}: {info.message}" if dead else None,
        )


class _Unanswerable(Exception):
    """A call this service cannot route to exactly one handler."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _is_business_error(exc: Exception) -> bool:
    from tchu_rpc.errors import RpcError

    return isinstance(exc, RpcError)


def _delivery(kind: Kind, message: Any) -> Delivery:
    props = message.properties
    info = message.delivery_info
    headers = message.headers or {}
    deadline = headers.get(wire.HEADER_DEADLINE)
    return Delivery(
        kind=kind,
        topic=info.get("routing_key", ""),
        message_id=props.get("message_id"),
        correlation_id=props.get("correlation_id"),
        redelivered=bool(info.get("redelivered")),
        delivery_tag=info.get("delivery_tag"),
        deadline=float(deadline) if isinstance(deadline, int | float) else None,
        headers=headers,
    )


def _describe(message: Any) -> dict[str, Any]:
    info = message.delivery_info
    return {
        "topic": info.get("routing_key"),
        "correlation_id": message.properties.get("correlation_id"),
        "delivery_tag": info.get("delivery_tag"),
        "redelivered": bool(info.get("redelivered")),
    }
