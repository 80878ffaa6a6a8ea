"""Client: publish events and make RPC calls; thread-safe, one connection, one I/O thread.

Every thread may share one `Client`. Requests are published on the channel that also consumes
replies (RabbitMQ's direct reply-to requires the same channel), by the calling thread itself while
the connection is idle, else by the client's I/O thread. They are published `mandatory` with
publisher confirms, so a call to a topic that no queue is bound to fails with `NoRoute` at once;
replies are matched by correlation id. A caller whose call is the only one in flight reads its reply
itself (`LeadingLoop.lead`); otherwise the I/O thread reads replies and wakes their callers.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from functools import partial
from typing import Any

from kombu import Connection, Consumer, Queue

from tchu_rpc import log, topology, wire
from tchu_rpc._amqp.caller_reads import LeadingLoop
from tchu_rpc._amqp.connection import is_amqp
from tchu_rpc._amqp.publisher import Publisher
from tchu_rpc._client.inflight import Inflight, Pending, checked_timeout, wait
from tchu_rpc.config import Settings
from tchu_rpc.errors import (
    CallTimeout,
    ConnectionLost,
    DecodeError,
    NoRoute,
    PublishFailed,
    TchuError,
    remote_error,
)
from tchu_rpc.log import logger
from tchu_rpc.registry import validate_topic


class Client:
    """Publish events and call remote handlers over one broker connection.

    Args:
        url: broker URL; defaults to `settings.broker_url` (`TCHU_RPC_BROKER_URL`).
        settings: all other knobs; defaults to `Settings.from_env()`.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings.replace(broker_url=url) if url else settings
        self._codec = wire.codec_for(self.settings.serializer)
        self._inflight = Inflight()
        self._closed = False
        self._publisher: Publisher | None = None
        self._reply_to = ""
        self._loop = LeadingLoop(
            "tchu-client",
            self.settings,
            on_connect=self._connected,
            on_lost=self._lost,
            on_tick=self._expire,
            wants_connection=lambda: bool(self._inflight),
        )

    # -- public API ---------------------------------------------------------------------------
    def call(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> Any:
        """Call the handler of `topic` with `data` and return its result.

        With `idempotent=True`, a call whose connection is lost before the reply came is published
        again (same message id) once the client has reconnected, until its timeout: the handler may
        then run more than once, so only use it for handlers that tolerate that.

        Each `report_progress(info)` of the handler moves the call's deadline to `timeout` seconds
        after it arrived, but never past `max_timeout` seconds after the call began (default: no
        bound), and passes `info` to `on_progress`, which runs on the thread reading the connection
        (the client's I/O thread, or a caller waiting for its reply): keep it short.

        Raises:
            CallTimeout: no reply within `timeout` seconds (of the start, or of the last progress).
            NoRoute: no service is bound for `topic` on the calls exchange.
            RemoteError: the handler (or the worker) failed; see its `type` and `message`.
            HandlerTimeLimit: the handler ran past the worker's `handler_time_limit`.
            ConnectionLost: the connection failed while the call was in flight.
        """
        return self._wait(self._call(topic, data, timeout, idempotent, max_timeout, on_progress), topic)

    def call_async(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> futures.Future[Any]:
        """Start a call and return a future of its result; it fails by its deadline at the latest."""
        pending = self._call(topic, data, timeout, idempotent, max_timeout, on_progress)
        self._loop.resume()  # nobody waits on this thread to read the reply
        return pending.future

    def publish(self, topic: str, data: Any, *, timeout: float | None = None) -> None:
        """Broadcast an event and return once the broker confirmed it.

        During an outage the client keeps trying until `timeout` (default
        `settings.publish_timeout`), then raises `ConnectionLost`: an event is never dropped
        silently. Events are persistent; every queue bound to a matching pattern gets a copy.
        """
        timeout = checked_timeout(timeout, self.settings.publish_timeout)
        self._wait(self._submit("event", topic, data, timeout, True), topic)

    def close(self) -> None:
        """Fail what is still pending with `ConnectionLost`, then close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._loop.stop()
        self._fail_all(lambda p: ConnectionLost(f"client closed with {p.kind} {p.topic!r} pending"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        from tchu_rpc.log import mask_url

        return f"<Client {mask_url(self.settings.broker_url)} pending={len(self._inflight)}>"

    # -- caller threads -----------------------------------------------------------------------
    def _wait(self, pending: Pending, topic: str) -> Any:
        # Alone in flight, the caller reads its own outcome (`LeadingLoop.lead`): no hand-over from the I/O
        # thread. With others in flight, the I/O thread serves them all.
        if len(self._inflight) == 1:
            self._loop.lead(pending.future.done)
        else:
            self._loop.resume()
        return wait(pending, topic)

    def _call(
        self,
        topic: str,
        data: Any,
        timeout: float | None,
        idempotent: bool,
        max_timeout: float | None,
        on_progress: Callable[[Any], None] | None,
    ) -> Pending:
        timeout = checked_timeout(timeout, self.settings.call_timeout)
        latest = math.inf
        if max_timeout is not None:
            latest = checked_timeout(max_timeout, max_timeout)
            if latest < timeout:
                raise ValueError(f"max_timeout ({max_timeout!r}) must be at least timeout ({timeout!r})")
        return self._submit("call", topic, data, timeout, idempotent, latest, on_progress)

    def _submit(
        self,
        kind: str,
        topic: str,
        data: Any,
        timeout: float,
        retry: bool,
        max_timeout: float = math.inf,
        on_progress: Callable[[Any], None] | None = None,
    ) -> Pending:
        if self._closed:
            raise ConnectionLost("the client is closed")
        validate_topic(topic)
        body = wire.encode(self._codec, data, self.settings.max_message_bytes)
        message_id = uuid.uuid4().hex
        future: futures.Future[Any] = futures.Future()
        now = time.monotonic()
        deadline = now + timeout
        latest = now + max_timeout
        pending = Pending(future, kind, topic, body, deadline, retry, timeout, latest, on_progress)
        self._inflight.add(message_id, pending)
        self._loop.start()
        self._loop.run_or_submit(partial(self._send, message_id))
        return pending

    # -- the I/O thread -----------------------------------------------------------------------
    def _connected(self, conn: Connection) -> None:
        channel = conn.channel()
        for exchange in (
            topology.events_exchange(self.settings),
            topology.calls_exchange(self.settings),
        ):
            exchange(channel).declare()
        self._publisher = Publisher(conn, channel, on_return=self._returned)
        if is_amqp(conn):
            queue = Queue(topology.DIRECT_REPLY_TO, no_ack=True, no_declare=True)
        else:
            queue = topology.reply_queue()
        consumer = Consumer(channel, queues=[queue], no_ack=True, on_message=self._on_reply)
        consumer.consume()
        self._reply_to = queue.name
        for message_id, pending in self._inflight.items():
            if not pending.sent:
                self._loop.submit(partial(self._send, message_id))

    def _send(self, message_id: str) -> None:
        pending = self._inflight.get(message_id)
        publisher = self._publisher
        if pending is None or pending.sent or publisher is None:
            return  # settled already, or waiting for the next connection
        remaining = pending.deadline - time.monotonic()
        if remaining <= 0:
            return  # the tick expires it
        headers: dict[str, Any] = {wire.HEADER_VERSION: wire.PROTOCOL_VERSION}
        if pending.kind == "call":
            headers[wire.HEADER_DEADLINE] = time.time() + remaining
            publisher.publish(
                pending.body,
                exchange=self.settings.calls_exchange,
                routing_key=pending.topic,
                on_confirm=partial(self._confirmed, message_id),
                mandatory=True,
                delivery_mode=1,
                expiration=remaining,
                reply_to=self._reply_to,
                correlation_id=message_id,
                message_id=message_id,
                content_type=self._codec.content_type,
                content_encoding=self._codec.content_encoding,
                headers=headers,
            )
        else:
            publisher.publish(
                pending.body,
                exchange=self.settings.events_exchange,
                routing_key=pending.topic,
                on_confirm=partial(self._confirmed, message_id),
                delivery_mode=2,
                message_id=message_id,
                content_type=self._codec.content_type,
                content_encoding=self._codec.content_encoding,
                headers=headers,
            )
        pending.sent = True

    def _confirmed(self, message_id: str, ok: bool) -> None:
        pending = self._inflight.get(message_id)
        if pending is None:
            return
        if not ok:
            self._inflight.settle(
                message_id, PublishFailed(f"the broker refused {pending.kind} {pending.topic!r}")
            )
        elif pending.kind == "event":
            self._inflight.settle(message_id, None)

    def _returned(self, routing_key: str, exchange: str, text: str, props: dict[str, Any]) -> None:
        message_id = props.get("correlation_id") or props.get("message_id") or ""
        self._inflight.settle(
            message_id,
            NoRoute(
                f"no service is bound for call topic {routing_key!r} on exchange {exchange!r} "
                f"({text}); is a worker running with a call handler for it "
                "(kind='call', or a topic starting with 'rpc.')?"
            ),
        )

    def _on_reply(self, message: Any) -> None:
        correlation_id = message.properties.get("correlation_id") or ""
        pending = self._inflight.get(correlation_id)
        if pending is None or pending.kind != "call":
            self._dropped(correlation_id, message)
            return
        try:
            codec = wire.codec_of(message.content_type)
            reply = wire.decode_envelope(codec, message.body)
        except DecodeError as exc:
            self._inflight.settle(correlation_id, exc)
            return
        if isinstance(reply, wire.Progress):
            self._progressed(correlation_id, pending, reply.info)
        elif isinstance(reply, wire.Failure):
            err = reply.error
            self._inflight.settle(correlation_id, remote_error(err.type, err.message, err.code, err.details))
        else:
            self._inflight.settle(correlation_id, reply.result)

    def _progressed(self, message_id: str, pending: Pending, info: Any) -> None:
        deadline = min(time.monotonic() + pending.timeout, pending.latest)
        if deadline > pending.deadline:
            self._inflight.postpone(message_id, pending, deadline)
        log.debug("call_progressed", topic=pending.topic, correlation_id=message_id)
        if pending.on_progress is not None:
            try:
                pending.on_progress(info)
            except Exception as exc:  # the caller's callback must not break the I/O thread
                logger.warning("progress_callback_failed", topic=pending.topic, error=str(exc))

    def _dropped(self, correlation_id: str, message: Any) -> None:
        try:
            envelope = wire.decode_envelope(wire.codec_of(message.content_type), message.body)
            progress = isinstance(envelope, wire.Progress)
        except DecodeError:
            progress = False
        outcome = self._inflight.outcome_of(correlation_id)
        if progress:  # a handler still reporting after its call settled: expected, not a fault
            log.debug("progress_dropped", correlation_id=correlation_id, call_outcome=outcome)
        else:
            logger.warning("reply_dropped", correlation_id=correlation_id, call_outcome=outcome)

    def _expire(self, now: float) -> float | None:
        due, next_due = self._inflight.due(now)
        for message_id, pending in due:
            self._inflight.settle(message_id, self._expired(pending))
        return next_due

    def _expired(self, pending: Pending) -> TchuError:
        error = self._loop.last_error
        if self._loop.connection is None and error is not None:
            return ConnectionLost(f"broker unreachable for {pending.kind} {pending.topic!r}: {error}")
        if pending.kind == "event":
            return PublishFailed(f"no confirm for event {pending.topic!r} before the deadline")
        return CallTimeout(f"no reply to call {pending.topic!r} before the deadline")

    def _lost(self, exc: BaseException) -> None:
        self._publisher = None
        for message_id, pending in self._inflight.items():
            if not pending.sent:
                continue
            if pending.retry:
                pending.sent = False  # publish again once reconnected: at least once
                continue
            lost = ConnectionLost(f"connection lost while calling {pending.topic!r}: {exc}")
            lost.__cause__ = exc
            self._inflight.settle(message_id, lost)

    def _fail_all(self, make_error: Any) -> None:
        for message_id, pending in self._inflight.items():
            self._inflight.settle(message_id, make_error(pending))
