"""Read what the broker sent: whole frames with one `recv` (fast path), else through py-amqp or kombu."""

from __future__ import annotations

import select
import time
from typing import Any

from kombu import Connection

from tchu_rpc._amqp.frames import can_read, read_frames
from tchu_rpc._amqp.wakeup import WakeUp

_DRAIN_BATCH = 256
# kombu's virtual transports (memory://) have no socket to wait on: they are polled, often while
# messages flow and seldom when idle.
_MEMORY_POLL = 0.002
_MEMORY_POLL_BUSY = 0.0001
_MEMORY_BUSY_FOR = 0.5


def drain(amqp_conn: Any, sock: Any, fast: bool) -> None:
    """Dispatch what is waiting on `sock`, py-amqp connection `amqp_conn`'s socket, without blocking."""
    if fast and can_read(sock):
        read_frames(amqp_conn, sock)  # one `recv` for all that is waiting (`frames`)
        return
    # Through py-amqp, which buffers nothing beyond the message it reads but what a TLS socket
    # has decrypted (`pending`): a zero-timeout select then tells whether more is waiting,
    # cheaper than a read that times out.
    for _ in range(_DRAIN_BATCH):
        try:
            amqp_conn.drain_events(timeout=0)
        except TimeoutError:
            return
        if not has_buffered(sock) and not select.select([sock], [], [], 0)[0]:
            return


def has_buffered(sock: Any) -> bool:
    """Tell whether a TLS socket holds decrypted bytes that `select()` cannot see."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


class VirtualPoll:
    """Poll a kombu virtual transport (no socket to wait on): fast while busy, slowly when idle."""

    def __init__(self, wakeup: WakeUp) -> None:
        self._wakeup = wakeup
        self._busy_until = 0.0

    def busy(self) -> None:
        """Note that work was handed to the loop: poll at the fast rate for a while."""
        self._busy_until = time.monotonic() + _MEMORY_BUSY_FOR

    def poll(self, conn: Connection, wait: float) -> None:
        """Deliver what the transport holds, waiting up to one poll interval (at most `wait`)."""
        self._wakeup.drain()
        # While busy, return soon too: commands of other threads wait for the drain to end.
        poll = _MEMORY_POLL_BUSY if time.monotonic() < self._busy_until else _MEMORY_POLL
        conn.transport.polling_interval = poll
        try:
            conn.drain_events(timeout=max(min(wait, poll), 0.0001))
        except TimeoutError:
            return
        self.busy()
