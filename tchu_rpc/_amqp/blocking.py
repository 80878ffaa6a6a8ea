"""The broker's `connection.blocked`: while a resource alarm lasts, it stops reading from publishers.

RabbitMQ blocks the connections that publish during a memory or disk alarm and says so with
`connection.blocked` (with a reason, "low on disk") and `connection.unblocked`. A `BlockWatch` keeps
the reason while a connection is blocked, so that a client holds what it has not sent yet (writing
it would only fill the socket's buffers) and its errors say why; it calls `on_unblocked` when the
alarm is over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class BlockWatch:
    """Whether (and why) the broker blocks one loop's connection."""

    def __init__(self, name: str, on_unblocked: Callable[[], None]) -> None:
        self._name = name
        self._on_unblocked = on_unblocked
        self._connection: Any = None
        #: The broker's reason while it blocks the connection ("low on disk"), else None.
        self.reason: str | None = None

    def attach(self, connection: Any) -> None:
        """Follow py-amqp `connection`'s blocked and unblocked notices (a new connection: unblocked)."""
        self.reason = None
        self._connection = connection
        connection.on_blocked = self._blocked
        connection.on_unblocked = self._unblocked

    def stalled(self) -> str:
        """Note that a write to the broker timed out (`BlockingIOError`); return why, as far as known.

        py-amqp's write timeout (`SO_SNDTIMEO`) ran out: the broker read nothing for that long, as
        it does while it blocks publishers (its `connection.blocked` may not have been read yet).
        The connection is dropped (a frame may be half written), and the reason is kept until the
        next connection is attached, so that errors name the block.
        """
        if self.reason is None:
            self.reason = "a resource alarm, it seems: it stopped reading what the client wrote"
            logger.warning("broker_blocked", loop=self._name, reason=self.reason)
        return self.reason

    def _blocked(self, reason: str | None = None) -> None:
        # The broker's own reason, which `properties.tolerate` keeps, rather than py-amqp's placeholder.
        self.reason = getattr(self._connection, "tchu_blocked_reason", None) or reason or "a resource alarm"
        logger.warning("broker_blocked", loop=self._name, reason=self.reason)

    def _unblocked(self) -> None:
        self.reason = None
        logger.warning("broker_unblocked", loop=self._name)
        self._on_unblocked()
