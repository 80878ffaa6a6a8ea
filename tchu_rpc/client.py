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
from collections.abc import Callable, Sequence
from concurrent import futures
from functools import partial
from typing import Any

from kombu import Connection, Consumer, Queue

from tchu_rpc import topology, wire
from tchu_rpc._amqp import passive
from tchu_rpc._amqp.blocking import BlockWatch
from tchu_rpc._amqp.caller_reads import LeadingLoop
from tchu_rpc._amqp.connection import access_refused, is_amqp, login
from tchu_rpc._amqp.publisher import OnConfirm, Publisher
from tchu_rpc._client import forks, legacy
from tchu_rpc._client.api import ClientAPI
from tchu_rpc._client.arguments import (
    check_request,
)
from tchu_rpc._client.callbacks import Callbacks, CallFuture
from tchu_rpc._client.inflight import Inflight, Pending, Watchdog, wait
from tchu_rpc._client.probes import Probes
from tchu_rpc._client.refusals import Refusals, Refused
from tchu_rpc._client.replies import expired, no_route, on_reply
from tchu_rpc.config import Settings
from tchu_rpc.contracts import Topic
from tchu_rpc.errors import (
    AccessRefused,
    ConfigError,
    ConnectionLost,
    PublishFailed,
    TchuError,
)
from tchu_rpc.log import get_logger, mask_url
from tchu_rpc.middleware import Middleware, checked
from tchu_rpc.registry import validate_topic

logger = get_logger(__name__)

_TOPICS = 4096  # checked topics a client remembers
_EXPIRY_MARGIN = 0.1  # at most this long before its caller's deadline, a request expires in its queue
#: A connection that refused every publish this long, confirming none, is opened anew. RabbitMQ 3.10
#: refuses everything, for good, on a channel that first published to a quorum queue while it
#: elected a leader (seen here); a new channel is served. An election takes about 1.5 s.
_REFUSED_FOR_GOOD = 3.0


class Client(ClientAPI):
    """Publish events and call remote handlers over one broker connection.

    Args:
        url: broker URL; defaults to `settings.broker_url` (`TCHU_RPC_BROKER_URL`).
        settings: all other knobs; defaults to `Settings.from_env()`.
        middleware: hooks around every call and publish, in this order (`tchu_rpc.Middleware`).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self._middleware = checked(middleware)
        settings = settings or Settings.from_env()
        self.settings = settings.replace(broker_url=url) if url else settings
        self._tchu_tchu = self.settings.tchu_tchu_format  # send as tchu-tchu does: `_client.legacy`
        self._codec = wire.codec_for("json" if self._tchu_tchu else self.settings.serializer)
        self._topics: set[str] = set()  # topics checked already
        self._closed = False
        self._hand_over = False  # every send goes through the I/O thread (`AsyncClient`'s engine)
        self._fresh()
        forks.follow(self)

    def _fresh(self) -> None:
        """Start with nothing in flight and a loop that connects on first use."""
        self._inflight = Inflight()
        self._refusals = Refusals()
        self._callbacks = Callbacks("tchu-client-callbacks")
        self._watchdog = Watchdog("tchu-client-deadlines", self._inflight, self._expire)
        self._publisher: Publisher | None = None
        self._block = BlockWatch("tchu-client", self._send_held)
        self._reply_to = ""
        self._user: str | None = None
        self._login = login(self.settings.broker_url)  # for errors before a connection names its user
        self._probes: Probes | None = None  # on AMQP: the channels of unproven topics (`_client.probes`)
        self._refusing: tuple[float, int] | None = None  # since when, and the last confirm before
        self._loop = LeadingLoop(
            "tchu-client",
            self.settings,
            on_connect=self._connected,
            on_lost=self._lost,
            on_tick=self._expire,
            wants_connection=lambda: bool(self._inflight),
        )

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connection and calls; connect anew on first use."""
        forks.keep(self._loop)
        self._fresh()

    # -- public API (call, call_async, publish: `_client.api`) --------------------------------
    def close(self) -> None:
        """Fail what is still pending with `ConnectionLost`, then close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._loop.stop()
        self._watchdog.close()
        self._fail_all(lambda p: ConnectionLost(f"client closed with {p.kind} {p.topic!r} pending"))
        self._callbacks.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {mask_url(self.settings.broker_url)} pending={len(self._inflight)}>"

    # -- caller threads -----------------------------------------------------------------------
    def _wait(self, pending: Pending) -> Any:
        # Alone in flight, the caller reads its own outcome (`LeadingLoop.lead`): no hand-over from the I/O
        # thread. With others in flight, the I/O thread serves them all.
        if len(self._inflight) == 1 and self._loop.fast:
            self._loop.lead(lambda: pending.settled)
        else:
            self._loop.resume()
        return wait(pending, pending.topic)

    def _resume(self) -> None:
        self._loop.resume()

    def _submit(
        self,
        kind: str,
        topic: str,
        data: Any,
        timeout: float,
        retry: bool,
        max_timeout: float = math.inf,
        on_progress: Callable[[Any], None] | None = None,
        contract: Topic[Any, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Pending:
        if self._closed:
            raise ConnectionLost("the client is closed")
        if type(topic) is not str or topic not in self._topics:  # checked once per topic
            self._topics = set() if len(self._topics) > _TOPICS else self._topics
            self._topics.add(validate_topic(topic))
        body = wire.encode(self._codec, data, self.settings.max_message_bytes)
        if contract is not None and contract.request is not Any:
            check_request(self._codec, body, contract)
        if self._tchu_tchu:
            body = legacy.task_body(kind, topic, body, self.settings.max_message_bytes)
        message_id = uuid.uuid4().hex
        future = CallFuture()
        future.callbacks = self._callbacks
        now = time.monotonic()
        deadline, latest = now + timeout, now + max_timeout
        pending = Pending(future, kind, topic, body, deadline, retry, timeout, latest, on_progress)
        pending.extra = extra
        if contract is not None:
            pending.envelope, pending.error_type = wire.envelope_for(contract.response), contract.error
        pending.message_id = message_id
        self._inflight.add(message_id, pending)
        self._watchdog.watch(deadline)
        self._loop.start()
        if self._hand_over:
            self._loop.submit(partial(self._send, message_id))
        else:
            self._loop.run_or_submit(partial(self._send, message_id))
        return pending

    def _cancel(self, pending: Pending) -> None:
        """Drop `pending` unsettled: its caller gave up (a cancelled asyncio task)."""
        self._inflight.cancel(pending.message_id)

    # -- the I/O thread -----------------------------------------------------------------------
    def _connected(self, conn: Connection) -> None:
        channel = conn.channel()
        exchanges = [topology.events_exchange(self.settings), topology.calls_exchange(self.settings)]
        if self.settings.declare == "passive" and is_amqp(conn):
            passive.check(conn, exchanges, [], "client")  # a permission to configure is not needed
        else:
            for exchange in exchanges:
                exchange(channel).declare()
        self._publisher = Publisher(conn, channel, on_return=self._returned, fast=self._loop.fast)
        # Direct reply-to needs no queue; a virtual transport (memory://) gets a private one.
        direct = Queue(topology.DIRECT_REPLY_TO, no_ack=True, no_declare=True)
        queue = direct if is_amqp(conn) else topology.reply_queue()
        read = legacy.on_reply if self._tchu_tchu else on_reply
        on_message = partial(read, self._inflight, self._callbacks, self.settings.max_message_bytes)
        _consume(queue, on_message, channel)
        self._reply_to = queue.name
        # The login RabbitMQ checks a message's user_id against: the identity a handler can trust.
        self._user = conn.userid if is_amqp(conn) else None
        if is_amqp(conn):
            self._probes = Probes(
                conn,
                on_return=self._returned,
                consume=partial(_consume, direct, on_message),
                refused=self._inflight.settle,
                fast=self._loop.fast,
                user=self._user,
            )
            self._block.attach(conn.connection)
        self._refusing = None
        self._send_held()

    def _send_held(self) -> None:
        for message_id, pending in self._inflight.items():
            if not pending.sent:
                self._loop.submit(partial(self._send, message_id))

    def _send(self, message_id: str) -> None:
        pending = self._inflight.get(message_id)
        publisher = self._publisher
        if pending is None or pending.sent or publisher is None or self._block.reason is not None:
            return  # settled already, or held for the next connection or the end of a block
        remaining = pending.deadline - time.monotonic()
        if remaining <= 0:
            return  # the tick expires it
        if self._tchu_tchu:
            self._send_task(publisher, message_id, pending, remaining)
            return
        codec = self._codec
        headers: dict[str, Any] = {wire.HEADER_VERSION: wire.PROTOCOL_VERSION}
        props: dict[str, Any] = {
            "content_type": codec.content_type,
            "content_encoding": codec.content_encoding,
        }
        if pending.kind == "call":
            headers[wire.HEADER_TIMEOUT] = remaining  # relative: no clocks are compared (`delivery_of`)
            props.update(exchange=self.settings.calls_exchange, mandatory=True, delivery_mode=1)
            # The broker counts from when it took the request, later than this clock: a request must
            # expire before its caller gives up, never just after (the worker cannot see queue time).
            expiration = max(remaining - min(0.1 * remaining, _EXPIRY_MARGIN), 0.001)
            props.update(expiration=expiration, reply_to=self._reply_to, correlation_id=message_id)
        else:
            props.update(exchange=self.settings.events_exchange, delivery_mode=2)
        on_confirm: OnConfirm = partial(self._confirmed, message_id)
        if pending.extra is not None:
            headers.update(pending.extra)
        props.update(routing_key=pending.topic, message_id=message_id, headers=headers, user_id=self._user)
        probes = self._probes
        if probes is not None and pending.topic not in probes.proven[pending.kind]:
            publisher, on_confirm = self._probe(probes, message_id, pending, on_confirm)
        publisher.publish(pending.body, on_confirm=on_confirm, **props)
        pending.sent = True

    def _send_task(self, publisher: Publisher, message_id: str, pending: Pending, remaining: float) -> None:
        expiration = max(remaining - min(0.1 * remaining, _EXPIRY_MARGIN), 0.001)
        props = legacy.properties(pending, message_id, self._reply_to, expiration)
        on_confirm: OnConfirm = partial(self._confirmed, message_id)
        probes = self._probes
        if probes is not None and pending.topic not in probes.proven[pending.kind]:
            publisher, on_confirm = self._probe(probes, message_id, pending, on_confirm)
        exchange = self.settings.events_exchange  # tchu-tchu sends calls there too
        publisher.publish(pending.body, on_confirm=on_confirm, exchange=exchange, user_id=self._user, **props)
        pending.sent = True

    def _probe(
        self, probes: Probes, message_id: str, pending: Pending, on_confirm: OnConfirm
    ) -> tuple[Publisher, OnConfirm]:
        """Send a topic not yet proven on this connection on a channel of its own (`_client.probes`)."""
        probe, publisher, on_confirm = probes.take(message_id, pending, on_confirm)
        release = partial(self._loop.submit, partial(probes.release, probe))
        # On the settling thread, not the callback thread (`CallFuture`): the release is queued before
        # the caller's next call is, which then finds the probe free.
        futures.Future.add_done_callback(pending.future, lambda _: release())
        return publisher, on_confirm

    def _confirmed(self, message_id: str, ok: bool) -> None:
        pending = self._inflight.get(message_id)
        if pending is None:
            return
        if not ok:
            self._refused(message_id, pending)
        elif pending.kind == "event":
            self._inflight.settle(message_id, None)

    def _refused(self, message_id: str, pending: Pending) -> None:
        # Not the caller's failure yet: a quorum queue electing a leader refuses everything for a
        # while. Published again (same message id) while its deadline allows, else its deadline
        # settles it (`_expire`), saying so.
        now = time.monotonic()
        refused = pending.refused = pending.refused or Refused(0, now)
        pending.sent = False
        again = self._refusals.refused(message_id, refused, now, pending.deadline)
        logger.debug("publish_refused", topic=pending.topic, correlation_id=message_id, again=again)
        confirmed = self._publisher.last_acked if self._publisher is not None else 0
        if self._refusing is None or self._refusing[1] != confirmed:
            self._refusing = (now, confirmed)  # the first refusal since a publish was confirmed
        elif now - self._refusing[0] > _REFUSED_FOR_GOOD:
            self._reconnect(pending)

    def _reconnect(self, pending: Pending) -> None:
        # A sent call then fails with ConnectionLost (its reply would come on this channel); events,
        # idempotent calls and what was refused go out again on the new connection.
        logger.warning("publishes_refused", topic=pending.topic, seconds=_REFUSED_FOR_GOOD, reconnecting=True)
        what = f"{pending.kind} {pending.topic!r}"
        why = f"the broker refused every publish for {_REFUSED_FOR_GOOD:g} s ({what})"
        self._refusing = None
        self._loop.fail(self._loop.generation, ConnectionLost(f"{why}; connecting again"))

    def _returned(self, routing_key: str, exchange: str, text: str, props: dict[str, Any]) -> None:
        message_id = props.get("correlation_id") or props.get("message_id") or ""
        self._inflight.settle(message_id, no_route(routing_key, exchange, text, self._tchu_tchu))

    def _expire(self, now: float) -> float | None:
        due, next_due = self._inflight.due(now)
        for message_id, pending in due:
            self._inflight.settle(message_id, self._expired(pending))
        if self._refusals.again:
            return self._publish_refused(now, next_due)
        return next_due

    def _publish_refused(self, now: float, next_due: float | None) -> float | None:
        """Hand the refused messages that are due to the I/O thread; return when the next one is."""
        again, next_again = self._refusals.due(now)
        for message_id in again:
            self._loop.submit(partial(self._send, message_id))  # this may be the watchdog's thread
        if next_again is None or (next_due is not None and next_due < next_again):
            return next_due
        return next_again

    def _expired(self, pending: Pending) -> TchuError:
        if not pending.sent and self._loop.connection is None:
            final = self._final(self._loop.last_error)
            if final is not None:  # a refusal: no reconnection would change it
                return final
        return expired(pending, self._loop.connection is not None, self._loop.last_error, self._block.reason)

    def _lost(self, exc: BaseException) -> None:
        self._publisher = None
        if self._probes is not None:
            self._probes.gone = True
            self._probes = None
        final = self._final(exc)
        # A write that timed out: the broker is up, and blocks publishers (`BlockWatch.stalled`).
        blocked = self._block.stalled() if isinstance(exc, BlockingIOError) else None
        for message_id, pending in self._inflight.items():
            if final is not None and _refused_for(final, pending, self.settings):
                self._inflight.settle(message_id, final)  # no retry changes it: at once
                continue
            if not pending.sent:
                continue
            if pending.retry:
                pending.sent = False  # publish again once reconnected: at least once
                continue
            lost = _cut_off(pending.topic, exc, blocked)
            lost.__cause__ = exc
            self._inflight.settle(message_id, lost)

    def _final(self, exc: BaseException | None) -> TchuError | None:
        """Return the error for `exc` if no reconnection changes it: a 403, or missing exchanges."""
        if isinstance(exc, ConfigError):
            return exc
        return access_refused(exc, self._user or self._login)

    def _fail_all(self, make_error: Any) -> None:
        for message_id, pending in self._inflight.items():
            self._inflight.settle(message_id, make_error(pending))


def _consume(queue: Queue, on_message: Any, channel: Any) -> None:
    Consumer(channel, queues=[queue], no_ack=True, on_message=on_message).consume()


def _refused_for(error: TchuError, pending: Pending, settings: Settings) -> bool:
    """Tell whether `error` (a refusal) is `pending`'s: a publish refused names its topic or exchange."""
    if not isinstance(error, AccessRefused) or error.operation != "Basic.publish":
        return True  # refused at connect: nothing can be sent
    text = str(error)
    if f"topic '{pending.topic}'" in text:
        return True
    exchange = settings.calls_exchange if pending.kind == "call" else settings.events_exchange
    return "topic '" not in text and f"exchange '{exchange}'" in text


def _cut_off(topic: str, exc: BaseException, blocked: str | None) -> TchuError:
    """Return the error of a call in flight on a connection that failed with `exc`."""
    if blocked is None:
        return ConnectionLost(f"connection lost while calling {topic!r}: {exc}")
    # Not a lost broker: another node would not help, and its caller should back off.
    return PublishFailed(
        f"call {topic!r} cut off: the broker blocks publishers ({blocked}), and the connection is "
        "opened anew, so its reply cannot come; its handler may still run"
    )
