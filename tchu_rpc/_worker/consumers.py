"""Set a service up on a new connection: declare its queues and bindings, then open its lanes.

A worker may serve thousands of topics: `bindings` makes them, pipelined on several channels, and
`SetupProgress` lets `Worker.start` wait as long as the broker keeps confirming them.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from typing import Any

from kombu import Connection, Consumer, Queue

from tchu_rpc import topology
from tchu_rpc._amqp import passive
from tchu_rpc._amqp.connection import is_amqp
from tchu_rpc._amqp.publisher import OnReturn, Publisher
from tchu_rpc._worker import bindings, retries
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConnectionLost
from tchu_rpc.log import get_logger
from tchu_rpc.registry import Kind, Registry

logger = get_logger(__name__)

#: How many patterns of each kind the `worker_consuming` log names.
_SAMPLE = 10


class SetupProgress:
    """How far the set-up on the current connection has come: `Worker.start` waits while it moves.

    The I/O thread reports every batch of bindings the broker confirmed; `stopping()` true makes the
    next report end the set-up (the worker is stopping: no need to bind the rest).
    """

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.declared = 0  # bindings confirmed on the current connection
        self.total = 0
        self.moved = float("-inf")  # monotonic time of the last report
        self._stopping = stopping

    def begin(self, total: int) -> None:
        """Start counting the `total` bindings of a new connection's set-up."""
        self.declared, self.total = 0, total

    def advance(self, count: int) -> None:
        """Count `count` more bindings confirmed by the broker."""
        if self._stopping():
            raise ConnectionLost("set-up abandoned: the worker is stopping")
        self.declared += count
        self.moved = time.monotonic()

    def wait(self, done: threading.Event, timeout: float | None, settings: Settings) -> ConnectionLost | None:
        """Wait for `done` as `Worker.start` does; return None once it is set, else why it is not.

        With `timeout`, wait that long in all. Without, wait `start_wait(settings)`, renewed by each
        batch of bindings the broker confirms (see `wait_for`).
        """
        if timeout is not None:
            return self.wait_for(done, timeout, renewed=False)
        return self.wait_for(done, start_wait(settings), renewed=True)

    def wait_for(self, done: threading.Event, wait: float, *, renewed: bool) -> ConnectionLost | None:
        """Wait up to `wait` s for `done`, and with `renewed` up to `wait` s after the latest progress.

        A set-up that progresses is then waited for, and one that stalls ends the wait `wait` s after
        its last progress (a broker that stops answering, sooner: the socket's read timeout drops the
        connection, which fails the start at once). Return None once `done` is set, else the error
        that says how far the set-up came.
        """
        began = time.monotonic()
        limit = began + wait
        while not done.wait(max(0.0, limit - time.monotonic())):
            if not renewed or self.moved + wait <= time.monotonic():
                declared = f" ({self.declared:,} of {self.total:,} bindings declared)" if self.total else ""
                return ConnectionLost(f"not consuming after {time.monotonic() - began:.1f} s{declared}")
            limit = self.moved + wait
        return None


def start_wait(settings: Settings) -> float:
    """Return how long `Worker.start` waits by default for the connection and a set-up step."""
    return settings.connect_timeout * 2 + 5


def declare_service(
    conn: Connection, service: str, settings: Settings, registry: Registry, progress: SetupProgress
) -> None:
    """Declare `service`'s exchanges, lanes' queues and bindings, dead-letter and retry delay queues.

    With `settings.declare == "passive"` (on AMQP), only check that the exchanges and queues exist,
    and bind nothing: bindings are the operator's then (see `_amqp.passive`).
    """
    plan = topology.service_topology(service, settings, registry, retries.delays(registry.handlers))
    if settings.declare == "passive" and is_amqp(conn):
        progress.begin(0)
        passive.check(conn, plan.exchanges(), plan.queues(), f"worker {service!r}")
        return
    channel = conn.channel()
    bound = [*plan.lanes, *plan.legacy]
    progress.begin(sum(len(queue.bindings) for queue in bound))
    for queue in bound:
        if is_amqp(conn):
            _declare(channel, queue, passive=queue in plan.legacy)
        else:  # kombu's virtual transport binds in memory, without round trips
            queue(channel).declare()
            progress.advance(len(queue.bindings))
    if is_amqp(conn):  # every lane's binds at once, on channels of their own
        bindings.bind(conn, bound, service, progress.advance)
    plan.dead(channel).declare()
    for delay_queue in plan.retries:  # after the event queue, where they dead-letter to
        delay_queue(channel).declare()
    if plan.retries and not is_amqp(conn):
        logger.warning("retries_not_delayed", service=service, reason="no TTL on this transport")
    channel.close()


def log_consuming(service: str, registry: Registry, settings: Settings) -> None:
    """Log `worker_consuming`: counts and a few patterns of each kind (there may be thousands)."""
    calls, events = registry.patterns("call"), registry.patterns("event")
    sample = {"call_sample": calls[:_SAMPLE], "event_sample": events[:_SAMPLE]}
    logger.info(
        "worker_consuming",
        service=service,
        calls=len(calls),
        events=len(events),
        accept_tchu_tchu=settings.accept_tchu_tchu,
        legacy_queue=settings.legacy_queue,
        **sample,
    )


def _declare(channel: Any, queue: Queue, *, passive: bool = False) -> None:
    """Declare `queue` (only check it exists with `passive`) and the exchanges it binds to."""
    for exchange in {b.exchange.name: b.exchange for b in queue.bindings}.values():
        exchange(channel).declare()  # before any bind: binding to a missing exchange fails
    if passive:  # a queue someone else declared: take it as it is (404 if it does not exist)
        channel.queue_declare(queue=queue.name, passive=True)
    else:
        queue(channel).queue_declare()


def open_lane(
    conn: Connection,
    kind: Kind,
    service: str,
    settings: Settings,
    registry: Registry,
    on_return: OnReturn,
    on_message: Callable[[Any], None],
    on_decode_error: Callable[[Any, BaseException], None],
    fast: bool,
) -> tuple[Consumer, Publisher]:
    """Consume `kind`'s queue of `service` (`declare_service` declared it) on a channel of its own.

    The events lane consumes the legacy queue too, if any, with the same prefetch.
    """
    channel = conn.channel()
    queues = [topology.lane_queue(kind, service, settings, registry)]
    if kind == "event":
        queues += topology.service_legacy_queue(settings, registry)
    prefetch = settings.call_concurrency if kind == "call" else settings.event_prefetch
    # Calls settle as transactions (reply and ack committed together, see `publisher`); events,
    # mostly acked with nothing to publish, need no round trip for that.
    publisher = Publisher(conn, channel, on_return=on_return, transactional=kind == "call", fast=fast)
    consumer = Consumer(
        channel, queues=queues, auto_declare=False, on_message=on_message, on_decode_error=on_decode_error
    )
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return consumer, publisher


def raw_body(message: Any) -> None:
    """Give `message` back the bytes that came: py-amqp decodes bodies that name a content encoding."""
    if isinstance(message.body, str):
        message.body = message.body.encode(_text_encoding(message.content_encoding))


def _text_encoding(name: str | None) -> str:
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"
