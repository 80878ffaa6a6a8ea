"""Answer callers on other nodes over a connection of its own, which a dead caller may cost.

RabbitMQ 3.10 closes the whole connection that publishes a reply to a direct reply-to address
whose node is not running (a caller whose node died: `_amqp.reply_to`). On the worker's connection
that requeued every request it had fetched, and their handlers ran again, up to `delivery_limit`
times. So a worker answers on its own connection only callers on the node that connection reached
(running while it is up), and hands replies to callers elsewhere to a `Relay`: a second connection,
made on first use, in confirm mode, whose loss costs nothing but a reconnection. The request is
acked once its reply is confirmed.

When the broker closes the relay's connection, the replies it had not confirmed are sent again on
the next one, one at a time (a confirm may have been lost with the connection, so a caller may get a
reply twice, and drops the second), until the one that closes it again: its address is taken for
gone, and replies to it are dropped for a minute (`reply_undeliverable`), their requests acked.
Replies handed over meanwhile wait behind them, and all go out together once the last of those
suspects is settled: under steady traffic the one-at-a-time mode ends all the same.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kombu import Connection

from tchu_rpc._amqp.loop import Loop
from tchu_rpc._amqp.publisher import OnReturn, Publisher
from tchu_rpc.config import Settings
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: What to run once a reply is confirmed (True), refused (False) or dropped as undeliverable (True).
OnDone = Callable[[bool], None]
_INTERNAL_ERROR = 541  # how RabbitMQ 3.10 closes a connection over a reply to a dead node
_REMEMBERED = 4096  # addresses known gone, at most
#: Seconds an address is taken for gone: a caller whose node died sends nothing new, and its requests
#: left in the queue expire with their timeouts; a live caller taken for gone by mistake (a 541 for
#: another reason) is not cut off for good.
_GONE_FOR = 60.0


class _Reply:
    """A reply in the relay's hands: its publish arguments, and its confirm callback."""

    __slots__ = ("on_done", "relay", "send")

    def __init__(self, relay: Relay, send: dict[str, Any], on_done: OnDone | None) -> None:
        self.relay, self.send, self.on_done = relay, send, on_done

    def __call__(self, ok: bool) -> None:
        self.relay._confirmed(self, ok)


class Relay:
    """Publish replies (and progress) on a connection of their own; call back once each is confirmed."""

    def __init__(self, service: str, settings: Settings, on_return: OnReturn) -> None:
        self.service = service
        self._on_return = on_return
        self._used = False  # connects on first use, and stays connected from then on
        self._loop = Loop(
            f"tchu-relay-{service}",
            settings,
            on_connect=self._connected,
            on_lost=self._lost,
            wants_connection=lambda: self._used,
        )
        # All below belongs to the relay's own I/O thread.
        self._publisher: Publisher | None = None
        self._sent: dict[_Reply, None] = {}  # published, awaiting their confirms, in order
        self._held: deque[_Reply] = deque()  # to publish once connected (or one by one, `_careful`)
        #: Unconfirmed when the connection closed, not settled since: while there are any, replies go
        #: one at a time (`_careful`), to find the one that closed it.
        self._suspects: set[_Reply] = set()
        self._gone: dict[str, float] = {}  # addresses whose node is not running -> since, oldest first

    # -- any thread ---------------------------------------------------------------------------
    def send(self, send: dict[str, Any], on_done: OnDone | None) -> None:
        """Publish `send` (publish arguments of a reply); `on_done(ok)` runs on the relay's thread.

        Or on this thread, if the relay's connection is idle (`Loop.run_or_submit`).
        """
        self._used = True
        self._loop.start()
        # Published on this thread while the relay's is idle: no hand-over on the way to the caller.
        self._loop.run_or_submit(lambda: self._take(_Reply(self, send, on_done)))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the relay's thread and close its connection; replies not yet confirmed are dropped."""
        self._loop.stop(timeout)

    # -- the relay's I/O thread -------------------------------------------------------------
    def _connected(self, conn: Connection) -> None:
        self._publisher = Publisher(conn, conn.channel(), on_return=self._on_return, fast=self._loop.fast)
        self._next()

    def _take(self, reply: _Reply) -> None:
        if self._is_gone(reply.send["routing_key"]):
            self._drop(reply)
        elif self._careful or self._publisher is None:
            self._held.append(reply)
            self._next()
        else:
            self._publish(reply)

    def _publish(self, reply: _Reply) -> None:
        assert self._publisher is not None
        self._sent[reply] = None
        self._publisher.publish(on_confirm=reply, **reply.send)

    @property
    def _careful(self) -> bool:
        return bool(self._suspects)

    def _confirmed(self, reply: _Reply, ok: bool) -> None:
        self._sent.pop(reply, None)
        if reply.on_done is not None:
            reply.on_done(ok)
        if self._suspects:
            self._suspects.discard(reply)
            self._next()

    def _next(self) -> None:
        """Publish held replies: the next suspect once the last was confirmed, all once none is left."""
        while self._careful and not self._sent and self._publisher is not None:
            reply = self._held.popleft()  # suspects come first (`_lost`)
            if self._is_gone(reply.send["routing_key"]):
                self._drop(reply)
                continue
            self._publish(reply)
        if not self._careful and self._publisher is not None:
            held, self._held = self._held, deque()
            for reply in held:
                self._take(reply)

    def _lost(self, exc: BaseException) -> None:
        self._publisher = None
        unconfirmed, self._sent = list(self._sent), {}
        if len(unconfirmed) == 1 and _reply_code(exc) == _INTERNAL_ERROR:  # the one that closed it
            culprit = unconfirmed.pop()
            self._gone[culprit.send["routing_key"]] = time.monotonic()
            if len(self._gone) > _REMEMBERED:
                del self._gone[next(iter(self._gone))]
            self._drop(culprit)
        if unconfirmed:
            self._suspects.update(unconfirmed)
            self._held.extendleft(reversed(unconfirmed))
        logger.warning(
            "relay_connection_lost", service=self.service, unconfirmed=len(unconfirmed), careful=self._careful
        )

    def _is_gone(self, address: str) -> bool:
        since = self._gone.get(address)
        if since is None:
            return False
        if time.monotonic() - since < _GONE_FOR:
            return True
        del self._gone[address]
        return False

    def _drop(self, reply: _Reply) -> None:
        self._suspects.discard(reply)
        send = reply.send
        logger.warning(
            "reply_undeliverable",
            service=self.service,
            reply_to=send["routing_key"],
            correlation_id=send.get("correlation_id"),
            reason="the caller's node is not running",
        )
        if reply.on_done is not None:
            reply.on_done(True)  # nobody is left to answer: the request is done with


def _reply_code(exc: BaseException | None) -> int | None:
    while exc is not None:
        code = getattr(exc, "reply_code", None)
        if isinstance(code, int):
            return code
        exc = exc.__cause__
    return None
