"""Bind a service's queues to their patterns: pipelined on several channels at once, refusals named.

RabbitMQ makes a channel's durable bindings one after the other (about 1 ms each), but serves its
channels in parallel. So the binds go without waiting for each `bind-ok` (`nowait`), spread over a
few channels per queue, in rounds of one batch per channel, each batch closed by one synchronous
method on its channel. A bind the broker refuses closes its channel without saying which bind it
was: the binds not yet confirmed are then sent again one by one, each waiting for its answer, in
the registry's order, to name the first refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amqp import exceptions as amqp_errors
from kombu import Connection, Queue

from tchu_rpc import topology
from tchu_rpc.errors import AccessRefused, ConfigError, TchuError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: Binds sent before one synchronous method confirms them: small enough that the broker answers
#: well within the socket's read timeout even while it creates new durable bindings (~1 ms each).
_BIND_BATCH = 500
#: Channels a queue's binds are spread over (each at least a batch): measured in the `topics`
#: scenario, 8 per queue made 20,000 new bindings about 2x faster than one channel (RESULTS.md).
_CHANNELS_PER_QUEUE = 8
#: A queue with this many bindings or more logs `bindings_declared` each time this many more are made.
_LOG_EVERY = 2000


@dataclass
class _Stream:
    """A contiguous slice of one queue's bindings, bound on a channel of its own."""

    channel: Any
    queue: str
    keys: list[tuple[str, str]]  # (exchange, pattern), in the registry's order
    sent: int = 0
    batch: list[tuple[str, str]] = field(default_factory=list)

    def send_batch(self) -> None:
        """Send the next batch of binds, without waiting for the broker."""
        self.batch = self.keys[self.sent : self.sent + _BIND_BATCH]
        self.sent += len(self.batch)
        for exchange, pattern in self.batch:
            self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key=pattern, nowait=True)

    def confirm(self) -> None:
        """Wait until the broker applied every bind sent on this channel (raise if it refused one)."""
        # RabbitMQ runs a channel's methods in order: this reply means every bind before it was
        # applied, and a bind it refused closed the channel, which this call raises.
        self.channel.queue_declare(queue=self.queue, passive=True)


def bind(conn: Connection, queues: list[Queue], service: str, advance: Callable[[int], None]) -> None:
    """Bind every queue of `queues` (declared already) to its patterns, on channels opened here.

    `advance(n)` is told of every `n` more bindings the broker confirmed.

    Raises:
        AccessRefused: the user may not make a binding (a 403), which it names.
        ConfigError: the broker refused a binding otherwise, which it names.
    """
    streams = [
        _Stream(conn.channel(), queue.name, keys) for queue in queues for keys in _slices(_keys(queue))
    ]
    log = _Log(service, {queue.name: len(queue.bindings) for queue in queues})
    try:
        while live := [stream for stream in streams if stream.sent < len(stream.keys)]:
            for stream in live:
                stream.send_batch()
            for i, stream in enumerate(live):
                try:
                    stream.confirm()
                except amqp_errors.ChannelError:
                    _name_refusal(conn, streams, live[i:])
                    raise  # no bind refused when sent alone: the broker's error as it came
                advance(len(stream.batch))
                log.advance(stream.queue, len(stream.batch))
    finally:
        for stream in streams:
            _close(stream.channel)


def _keys(queue: Queue) -> list[tuple[str, str]]:
    return [(b.exchange.name, b.routing_key) for b in topology.sorted_bindings(queue)]


def _slices(keys: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split `keys` into up to `_CHANNELS_PER_QUEUE` contiguous slices of at least a batch each."""
    if not keys:  # a queue bound with nothing (the events queue when a legacy queue takes its patterns)
        return []
    count = max(1, min(_CHANNELS_PER_QUEUE, len(keys) // _BIND_BATCH))
    size = -(-len(keys) // count)
    return [keys[start : start + size] for start in range(0, len(keys), size)]


class _Log:
    """Log `bindings_declared` for a queue with many bindings, every `_LOG_EVERY` and at its end."""

    def __init__(self, service: str, totals: dict[str, int]) -> None:
        self.service, self.totals = service, totals
        self.done = dict.fromkeys(totals, 0)
        self.began = time.perf_counter()

    def advance(self, queue: str, count: int) -> None:
        before, total = self.done[queue], self.totals[queue]
        done = self.done[queue] = before + count
        if total >= _LOG_EVERY and (done // _LOG_EVERY > before // _LOG_EVERY or done == total):
            duration_ms = round((time.perf_counter() - self.began) * 1000, 3)
            logger.info(
                "bindings_declared",
                service=self.service,
                queue=queue,
                declared=done,
                total=total,
                duration_ms=duration_ms,
            )


def _name_refusal(conn: Connection, streams: list[_Stream], unconfirmed: list[_Stream]) -> None:
    """Raise the error naming the first refused bind of `unconfirmed`'s batches, if one is.

    Every channel is first made to answer once, so that no refusal of another channel is still on
    its way; then the batches are bound again, one bind at a time, on a new channel.
    """
    for stream in streams:
        for _ in range(len(streams) + 1):  # each refusal the broker sent is raised once
            try:
                stream.confirm()  # py-amqp reopened a channel the broker closed
                break
            except amqp_errors.ChannelError:
                continue
    channel = conn.channel()
    try:
        for stream in unconfirmed:
            for exchange, pattern in stream.batch:
                try:
                    channel.queue_bind(queue=stream.queue, exchange=exchange, routing_key=pattern)
                except amqp_errors.ChannelError as refused:
                    raise _refusal(refused, stream.queue, exchange, pattern, conn.userid) from refused
    finally:
        _close(channel)


def _refusal(exc: amqp_errors.ChannelError, queue: str, exchange: str, pattern: str, user: Any) -> TchuError:
    """Return the typed error for the broker's refusal `exc` of one bind, naming the pattern."""
    what = f"binding queue {queue!r} to exchange {exchange!r} with pattern {pattern!r}"
    if isinstance(exc, amqp_errors.AccessRefused):
        who = f" for user {user!r}" if user else ""
        return AccessRefused(
            f"Queue.bind refused{who}: {what}: {exc.reply_text or exc}",
            operation="Queue.bind",
            user=str(user) if user else None,
        )
    return ConfigError(f"the broker refused {what}: {exc.reply_text or exc}")


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception as exc:  # the set-up failed already, or the connection is going
        logger.debug("close_failed", channel="bindings", error=str(exc))
